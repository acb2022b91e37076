// The built-in backends. Each backend lives in backends/<name>/.
#include "naive/naive.hpp"
#include "normcheck/backend.hpp"
#ifdef NORMCHECK_HAVE_ONEDNN
#include "onednn/onednn.hpp"
#endif
#ifdef NORMCHECK_HAVE_CUDNN
#include "cudnn/cudnn.hpp"
#endif
#ifdef NORMCHECK_HAVE_PYTORCH
#include "pytorch/pytorch.hpp"
#endif

namespace normcheck {

void register_builtin_backends(BackendRegistry& r) {
  r.add("naive", "textbook two-pass in f32/f64; the embedded default",
        [] { return make_naive_backend(); });
#ifdef NORMCHECK_HAVE_ONEDNN
  r.add("onednn", "oneDNN CPU primitives on the caller's layout", [] { return make_onednn_backend(false); });
  r.add("onednn_blocked", "oneDNN CPU primitives on nC[d][h]w16c blocked data",
        [] { return make_onednn_backend(true); });
#endif
#ifdef NORMCHECK_HAVE_CUDNN
  r.add("cudnn", "cuDNN on an NVIDIA GPU: legacy batch-norm API and graph-API norms",
        [] { return make_cudnn_backend(cudnn_plan::Variant::cudnn); });
  r.add("cudnn_persistent", "cuDNN batch_norm with CUDNN_BATCHNORM_SPATIAL_PERSISTENT",
        [] { return make_cudnn_backend(cudnn_plan::Variant::persistent); });
  r.add("cudnn_graph", "cuDNN batch_norm through the graph API (CUDNN_BATCH_NORM)",
        [] { return make_cudnn_backend(cudnn_plan::Variant::graph); });
#endif
#ifdef NORMCHECK_HAVE_PYTORCH
  r.add("pytorch", "PyTorch's ATen CPU operators, as torch.nn modules and autograd call them",
        [] { return make_pytorch_backend(); });
#endif
}

}  // namespace normcheck
