#include "cudnn_plan.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <vector>

namespace normcheck::cudnn_plan {

std::string_view to_string(BnMode m) {
  switch (m) {
    case BnMode::per_activation: return "CUDNN_BATCHNORM_PER_ACTIVATION";
    case BnMode::spatial: return "CUDNN_BATCHNORM_SPATIAL";
    case BnMode::spatial_persistent: return "CUDNN_BATCHNORM_SPATIAL_PERSISTENT";
  }
  return "?";
}

std::string_view to_string(NormMode m) {
  switch (m) {
    case NormMode::layer_norm: return "CUDNN_LAYER_NORM";
    case NormMode::instance_norm: return "CUDNN_INSTANCE_NORM";
    case NormMode::batch_norm: return "CUDNN_BATCH_NORM";
    case NormMode::group_norm: return "CUDNN_GROUP_NORM";
    case NormMode::rms_norm: return "CUDNN_RMS_NORM";
  }
  return "?";
}

std::string_view backend_name(Variant v) {
  switch (v) {
    case Variant::cudnn: return "cudnn";
    case Variant::persistent: return "cudnn_persistent";
    case Variant::graph: return "cudnn_graph";
  }
  return "?";
}

int64_t Desc::numel() const {
  int64_t n = 1;
  for (int d = 0; d < rank; ++d) n *= dims[d];
  return n;
}

namespace {

/// Pads dims/strides of rank r to rank ≥ 4 with size-1 dims carrying the last real dim's stride.
Desc pad(int r, const int64_t* dims, const int64_t* strides) {
  Desc d;
  d.rank = std::max(r, 4);
  for (int i = 0; i < d.rank; ++i) {
    d.dims[i] = i < r ? dims[i] : 1;
    d.strides[i] = i < r ? strides[i] : strides[r - 1];
  }
  return d;
}

}  // namespace

Desc desc_of(const TensorArg& t) { return pad(t.rank, t.dims, t.strides); }

Desc channels_last(int64_t n, int64_t c) {
  Desc d = packed({n, c});
  d.strides[2] = d.strides[3] = c;  // (n, c, 1, 1) with strides (c, 1, c, c)
  return d;
}

Desc packed(std::initializer_list<int64_t> dims) {
  int64_t d[kMaxRank] = {}, s[kMaxRank] = {};
  const int r = static_cast<int>(dims.size());
  std::copy(dims.begin(), dims.end(), d);
  int64_t stride = 1;
  for (int i = r - 1; i >= 0; --i) {
    s[i] = stride;
    stride *= d[i];
  }
  return pad(r, d, s);
}

bool mergeable(const TensorArg& t, int first, int last) {
  int inner = -1;  // the next non-size-1 dim inward
  for (int d = last - 1; d >= first; --d) {
    if (t.dims[d] == 1) continue;
    if (inner >= 0 && t.strides[d] != t.strides[inner] * t.dims[inner]) return false;
    inner = d;
  }
  return true;
}

BnPlan plan_batch_norm(const RunArgs& a, Variant v) {
  BnPlan p;
  p.mode = v == Variant::persistent ? BnMode::spatial_persistent : a.rank == 2 ? BnMode::per_activation : BnMode::spatial;
  p.x = desc_of(a.x);
  const int64_t c = a.dims[1];
  p.param = packed({1, c});
  p.exponential_average_factor = a.batch_weight;
  return p;
}

GraphPlan plan_graph(const RunArgs& a) {
  GraphPlan g;
  if (a.op == Op::batch_norm) {
    g.mode = NormMode::batch_norm;
    g.x = desc_of(a.x);
    g.scale = g.stats = channels_last(1, a.dims[1]);
    g.running = a.pass == Pass::forward_training && a.running_mean.present() && a.running_var.present();
    return g;
  }
  if (a.op == Op::instance_norm) {
    g.mode = NormMode::instance_norm;
    g.x = desc_of(a.x);
    g.scale = channels_last(1, a.dims[1]);
    g.stats = channels_last(a.dims[0], a.dims[1]);
    return g;
  }
  g.mode = a.op == Op::rms_norm ? NormMode::rms_norm : NormMode::layer_norm;
  g.bias = g.mean = a.op == Op::layer_norm;
  const int lead = a.rank - a.norm_dims;
  int64_t rows = 1, inner = 1;
  for (int d = 0; d < lead; ++d) rows *= a.dims[d];
  for (int d = lead; d < a.rank; ++d) inner *= a.dims[d];
  // The merged strides: the innermost dim of each group (size-1 dims carry no stride information).
  auto group_stride = [&](int first, int last, int64_t fallback) {
    for (int d = last - 1; d >= first; --d)
      if (a.x.dims[d] != 1) return a.x.strides[d];
    return fallback;
  };
  const int64_t s_inner = group_stride(lead, a.rank, 1);
  const int64_t s_rows = group_stride(0, lead, inner * s_inner);
  const int64_t dims[2] = {rows, inner}, strides[2] = {s_rows, s_inner};
  g.x = pad(2, dims, strides);
  g.x.strides[2] = g.x.strides[3] = inner * s_inner;  // the size-1 dims as in cudnn-frontend's samples
  g.scale = channels_last(1, inner);
  g.stats = channels_last(rows, 1);
  return g;
}

namespace {

/// The refusals that depend on the backend variant.
std::optional<std::string> variant_reason(const RunArgs& a, Variant v) {
  if (v == Variant::persistent && a.op != Op::batch_norm)
    return "cudnn_persistent is CUDNN_BATCHNORM_SPATIAL_PERSISTENT, a batch_norm mode; other ops run on `cudnn`";
  if (v == Variant::graph && a.op != Op::batch_norm)
    return "cudnn_graph runs batch_norm through the graph API; layer_norm, rms_norm and instance_norm take the "
           "graph API on `cudnn`";
  if (v == Variant::graph && a.pass == Pass::forward_inference)
    return "forward_inference: cuDNN's graph batch-norm inference is a pointwise graph (cudnn-frontend's "
           "batchnorm_inference), not a NORM_FORWARD operation; it runs on `cudnn` (legacy API)";
  return std::nullopt;
}

}  // namespace

std::optional<std::string> unsupported_reason(const RunArgs& a, Layout layout, Variant v) {
  if (a.op == Op::group_norm)
    return "group_norm: cuDNN 9's graph NORM_FORWARD has a CUDNN_GROUP_NORM mode but no attribute for the "
           "group count (cudnn_graph.h), so normcheck does not map it";
  if (a.op == Op::batch_norm && a.pass == Pass::backward_inference)
    return "backward_inference: cuDNN's batch-norm backward (legacy and graph) always differentiates through the "
           "batch statistics (no global-statistics backward)";
  if (auto why = variant_reason(a, v)) return why;
  if (a.op == Op::batch_norm && a.pass == Pass::forward_training && !a.running_var_unbiased)
    return "cuDNN updates running_var with the unbiased batch variance only (convention cudnn); a biased "
           "update (this case's convention) cannot be asked for";
  if (a.op == Op::instance_norm && a.rank < 3) return "instance_norm needs a spatial dim";
  if (a.op == Op::layer_norm || a.op == Op::rms_norm) {
    const int lead = a.rank - a.norm_dims;
    if (!mergeable(a.x, 0, lead) || !mergeable(a.x, lead, a.rank))
      return fmt::format("{}: the graph norm normalizes all dims after the first, so the leading dims and "
                         "normalized_shape must each merge into one stride; they do not in {}",
                         to_string(a.op), to_string(layout));
  }
  const Capabilities c = capabilities(v);
  if (std::find(c.dtypes.begin(), c.dtypes.end(), a.x.dtype) == c.dtypes.end())
    return fmt::format("dtype {} not offered by cuDNN's normalization", to_string(a.x.dtype));
  if (std::find(c.layouts.begin(), c.layouts.end(), layout) == c.layouts.end())
    return fmt::format("layout {} not supported", to_string(layout));
  return std::nullopt;
}

namespace {

std::vector<std::string> variant_notes(Variant v) {
  switch (v) {
    case Variant::cudnn:
      return {"batch_norm: legacy cudnnBatchNormalization* API, CUDNN_BATCHNORM_PER_ACTIVATION for BN1d (N, C), "
              "CUDNN_BATCHNORM_SPATIAL otherwise",
              "layer_norm, rms_norm, instance_norm: graph API NORM_FORWARD/NORM_BACKWARD (CUDNN_LAYER_NORM, "
              "CUDNN_RMS_NORM, CUDNN_INSTANCE_NORM)"};
    case Variant::persistent:
      return {"batch_norm: legacy cudnnBatchNormalization* with CUDNN_BATCHNORM_SPATIAL_PERSISTENT (BN1d too)"};
    case Variant::graph:
      return {"batch_norm: graph API NORM_FORWARD (phase TRAINING, running statistics in and out) and "
              "NORM_BACKWARD with CUDNN_BATCH_NORM"};
  }
  return {};
}

}  // namespace

Capabilities capabilities(Variant v) {
  Capabilities c;
  c.ops = {Op::batch_norm};
  if (v == Variant::cudnn) c.ops.insert(c.ops.end(), {Op::layer_norm, Op::instance_norm, Op::rms_norm});
  c.passes = {Pass::forward_training, Pass::forward_inference, Pass::backward_training};
  if (v == Variant::graph) c.passes = {Pass::forward_training, Pass::backward_training};
  // f64: the legacy batch-norm API takes double data with double parameters (cudnn_ops.h); for the
  // graph norms the device says whether an engine exists (UNSUPPORTED with cuDNN's status if not).
  c.dtypes = {DType::f32, DType::f16, DType::bf16, DType::f64};
  c.layouts = {Layout::nchw, Layout::nhwc};
  c.convention = "cudnn";
  c.notes = variant_notes(v);
  c.notes.insert(c.notes.end(), {
      "exponentialAverageFactor = batch_weight (new-weight momentum); running_var updated with the unbiased "
      "variance by cuDNN itself; resultSaveInvVariance = 1/sqrt(var + eps), reported as inv_std",
      "saves mean and inv_std (not the variance); backward reads mean and inv_std",
      "data staged host → device → host by the backend (cudaMalloc/cudaMemcpy, default stream)",
      "precision profile: cuDNN documents no summation order or rsqrt accuracy; normcheck's default declared",
  });
  if (v != Variant::persistent)
    c.notes.push_back("graph API: the first engine config of CUDNN_HEUR_MODE_A (then FALLBACK) whose execution plan "
                      "finalizes; the engine chosen is printed on stderr once per plan");
  c.notes.push_back("not yet run on a GPU: unverified (docs/backends/cudnn.md)");
  return c;
}

std::string no_device_reason(const std::string& why) { return "no CUDA device: " + why; }

}  // namespace normcheck::cudnn_plan
