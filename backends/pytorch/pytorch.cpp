// The PyTorch (ATen) backend: normcheck's buffers as ATen tensors (at::from_blob, no copy, the
// caller's NCHW or channels-last strides), run through the ATen operators torch.nn's modules
// reach and the backward functions autograd's derivatives call (docs/backends/pytorch.md):
//   batch_norm     at::native_batch_norm / at::native_batch_norm_backward
//                  (F.batch_norm → at::batch_norm → at::_batch_norm_impl_index on CPU)
//   layer_norm     at::native_layer_norm / at::native_layer_norm_backward (F.layer_norm)
//   group_norm     at::native_group_norm / at::native_group_norm_backward, input made contiguous
//                  in its suggested memory format as at::group_norm does (F.group_norm)
//   instance_norm  at::instance_norm (F.instance_norm), backward by autograd through it
// Only per-operator ATen headers are included (ATen/ops/*.h), to keep this one TU's compile short.
//
// Built as a separate module (libnormcheck_pytorch.so) that loader.cpp dlopens the first time a
// pytorch backend is created: loading libtorch costs about a second per process, which every
// other normcheck process (and each of the test processes) would otherwise pay. Symbols of
// normcheck's core it uses (Backend's typeinfo, Backend::unsupported_reason, is_backward) come
// from the executable, which exports them (ENABLE_EXPORTS).
#include "pytorch.hpp"

#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/from_blob.h>
#include <ATen/ops/instance_norm.h>
#include <ATen/ops/native_batch_norm.h>
#include <ATen/ops/native_batch_norm_backward.h>
#include <ATen/ops/native_group_norm.h>
#include <ATen/ops/native_group_norm_backward.h>
#include <ATen/ops/native_layer_norm.h>
#include <ATen/ops/native_layer_norm_backward.h>
#include <ATen/ops/zeros.h>
#include <c10/util/Exception.h>
#include <fmt/format.h>

#include <array>
#include <string>
#include <vector>

#ifndef NORMCHECK_TORCH_VERSION
#define NORMCHECK_TORCH_VERSION "unknown"
#endif
#ifndef NORMCHECK_TORCH_PACKAGE
#define NORMCHECK_TORCH_PACKAGE ""
#endif

namespace normcheck {
namespace {

c10::ScalarType scalar_type_of(DType t) {
  switch (t) {
    case DType::f64: return c10::ScalarType::Double;
    case DType::f16: return c10::ScalarType::Half;
    case DType::bf16: return c10::ScalarType::BFloat16;
    default: return c10::ScalarType::Float;
  }
}

/// A normcheck buffer as an ATen tensor: same memory, dims and element strides (no copy).
at::Tensor view(const TensorArg& t) {
  return at::from_blob(t.data, at::IntArrayRef(t.dims, static_cast<size_t>(t.rank)),
                       at::IntArrayRef(t.strides, static_cast<size_t>(t.rank)),
                       at::TensorOptions().dtype(scalar_type_of(t.dtype)));
}
at::Tensor view_or_none(const TensorArg& t) { return t.present() ? view(t) : at::Tensor(); }

/// Writes an ATen result into a normcheck output buffer, converting dtype and layout. The result
/// may have another shape with the same elements in logical row-major order (layer_norm's saved
/// statistics are [lead…, 1, …, 1], normcheck's [lead…]).
bool store(const TensorArg& dst, const at::Tensor& src) {
  if (!dst.present() || !src.defined()) return false;
  at::Tensor d = view(dst);
  d.copy_(src.reshape(d.sizes()));
  return true;
}

/// layer_norm and group_norm in PyTorch 1.13 take gamma, beta (and, backward, the saved mean and
/// rstd) in the data dtype: a bf16 model holds them in bf16 ("expected scalar type BFloat16 but
/// found Float" otherwise). batch_norm and instance_norm accept f32 parameters with bf16 data.
at::Tensor in_dtype(const at::Tensor& t, c10::ScalarType data) {
  return t.defined() && t.scalar_type() != data ? t.to(data) : t;
}

std::vector<int64_t> normalized_shape(const RunArgs& a) {
  return std::vector<int64_t>(a.dims + a.rank - a.norm_dims, a.dims + a.rank);
}

/// ATen's shape of layer_norm's saved statistics: the leading dims, then norm_dims ones.
std::vector<int64_t> layer_norm_stats_shape(const RunArgs& a) {
  std::vector<int64_t> s(a.dims, a.dims + a.rank - a.norm_dims);
  s.resize(static_cast<size_t>(a.rank), 1);
  return s;
}

int64_t spatial_size(const RunArgs& a) {
  int64_t s = 1;
  for (int d = 2; d < a.rank; ++d) s *= a.dims[d];
  return s;
}

uint32_t batch_norm(const RunArgs& a) {
  const at::Tensor x = view(a.x), w = view_or_none(a.gamma), b = view_or_none(a.beta);
  const at::Tensor rm = view_or_none(a.running_mean), rv = view_or_none(a.running_var);
  if (!is_backward(a.pass)) {
    const bool train = a.pass == Pass::forward_training;
    // Training updates running_mean/running_var in place (momentum = batch_weight, unbiased).
    const auto [y, save_mean, save_invstd] = at::native_batch_norm(x, w, b, rm, rv, train, a.batch_weight, a.eps);
    uint32_t produced = store(a.y, y) ? kOutY : 0u;
    if (!train) return produced;
    if (store(a.mean, save_mean)) produced |= kOutMean;
    if (store(a.inv_std, save_invstd)) produced |= kOutInvStd;
    if (rm.defined() && rv.defined()) produced |= kOutRunningMean | kOutRunningVar;
    return produced;
  }
  const bool train = a.pass == Pass::backward_training;
  const at::Tensor save_mean = train ? view(a.mean) : at::Tensor(), save_invstd = train ? view(a.inv_std) : at::Tensor();
  const bool affine = w.defined();
  const auto [dx, dw, db] = at::native_batch_norm_backward(view(a.dy), x, w, rm, rv, save_mean, save_invstd, train,
                                                          a.eps, {true, affine, affine});
  uint32_t produced = store(a.dx, dx) ? kOutDx : 0u;
  if (affine && store(a.dgamma, dw)) produced |= kOutDgamma;
  if (affine && store(a.dbeta, db)) produced |= kOutDbeta;
  return produced;
}

uint32_t layer_norm(const RunArgs& a) {
  const at::Tensor x = view(a.x);
  const c10::ScalarType dt = x.scalar_type();
  const at::Tensor w = in_dtype(view_or_none(a.gamma), dt), b = in_dtype(view_or_none(a.beta), dt);
  const std::vector<int64_t> shape = normalized_shape(a);
  if (!is_backward(a.pass)) {
    const auto [y, mean, rstd] = at::native_layer_norm(x, shape, w, b, a.eps);
    uint32_t produced = store(a.y, y) ? kOutY : 0u;
    if (store(a.mean, mean)) produced |= kOutMean;
    if (store(a.inv_std, rstd)) produced |= kOutInvStd;
    return produced;
  }
  const std::vector<int64_t> ss = layer_norm_stats_shape(a);
  const at::Tensor mean = in_dtype(view(a.mean), dt).reshape(ss), rstd = in_dtype(view(a.inv_std), dt).reshape(ss);
  const bool affine = w.defined();
  const auto [dx, dw, db] =
      at::native_layer_norm_backward(view(a.dy), x, shape, mean, rstd, w, b, {true, affine, affine});
  uint32_t produced = store(a.dx, dx) ? kOutDx : 0u;
  if (affine && store(a.dgamma, dw)) produced |= kOutDgamma;
  if (affine && store(a.dbeta, db)) produced |= kOutDbeta;
  return produced;
}

uint32_t group_norm(const RunArgs& a) {
  // at::group_norm (aten/src/ATen/native/group_norm.cpp): on CPU the input is made contiguous in
  // its suggested memory format (channels-last stays channels-last), gamma/beta contiguous.
  const at::Tensor x0 = view(a.x);
  const at::MemoryFormat memory_format = x0.suggest_memory_format();
  const at::Tensor x = x0.contiguous(memory_format);
  const c10::ScalarType dt = x.scalar_type();
  const at::Tensor w = in_dtype(view_or_none(a.gamma), dt), b = in_dtype(view_or_none(a.beta), dt);
  const int64_t n = a.dims[0], c = a.dims[1], hxw = spatial_size(a);
  if (!is_backward(a.pass)) {
    const auto [y, mean, rstd] = at::native_group_norm(x, w, b, n, c, hxw, a.groups, a.eps);
    uint32_t produced = store(a.y, y) ? kOutY : 0u;
    if (store(a.mean, mean)) produced |= kOutMean;
    if (store(a.inv_std, rstd)) produced |= kOutInvStd;
    return produced;
  }
  const at::Tensor mean = in_dtype(view(a.mean), dt).reshape({n, a.groups});
  const at::Tensor rstd = in_dtype(view(a.inv_std), dt).reshape({n, a.groups});
  const bool affine = w.defined();
  // 1.13's native_group_norm_backward kernel reads dy and x as NCHW-contiguous whatever their
  // strides (GroupNormBackwardKernelImplInternal has no channels-last path), and autograd passes
  // both .contiguous(); called with channels-last tensors it returns wrong dx and dgamma (max
  // difference 4.7 on a 2x4x3x5 case, measured). So dy and x are made contiguous as autograd
  // does; autograd's dx through at::group_norm equals this call bit for bit (docs/backends/pytorch.md).
  const auto [dx, dw, db] = at::native_group_norm_backward(view(a.dy).contiguous(), x.contiguous(), mean, rstd, w,
                                                          n, c, hxw, a.groups, {true, affine, affine});
  uint32_t produced = store(a.dx, dx) ? kOutDx : 0u;
  if (affine && store(a.dgamma, dw)) produced |= kOutDgamma;
  if (affine && store(a.dbeta, db)) produced |= kOutDbeta;
  return produced;
}

/// at::instance_norm composes batch_norm on the (1, N·C, spatial…) view with gamma/beta repeated N
/// times (aten/src/ATen/native/Normalization.cpp instance_norm); it saves no statistics, so the
/// backward runs autograd through the same composition, as loss.backward() would.
uint32_t instance_norm(const RunArgs& a) {
  const bool backward = is_backward(a.pass);
  at::Tensor x = view(a.x), w = view_or_none(a.gamma), b = view_or_none(a.beta);
  if (backward) {
    x.requires_grad_(true);
    if (w.defined()) w.requires_grad_(true);
    if (b.defined()) b.requires_grad_(true);
  }
  const at::Tensor y = at::instance_norm(x, w, b, at::Tensor(), at::Tensor(), /*use_input_stats=*/true,
                                         /*momentum=*/0.1, a.eps, /*cudnn_enabled=*/false);
  if (!backward) return store(a.y, y) ? kOutY : 0u;
  y.backward(view(a.dy));
  uint32_t produced = store(a.dx, x.grad()) ? kOutDx : 0u;
  if (w.defined() && store(a.dgamma, w.grad())) produced |= kOutDgamma;
  if (b.defined() && store(a.dbeta, b.grad())) produced |= kOutDbeta;
  return produced;
}

/// AT_DISPATCH's refusal of a dtype. In 1.13 it throws a plain c10::Error ("\"batch_norm\" not
/// implemented for 'Half'"), not c10::NotImplementedError, so the message is what tells.
bool is_dtype_refusal(const c10::Error& e) {
  return dynamic_cast<const c10::NotImplementedError*>(&e) != nullptr ||
         std::string(e.what_without_backtrace()).find("not implemented for '") != std::string::npos;
}

/// ATen's own refusal of a data dtype for an op ("\"batch_norm\" not implemented for 'Half'"),
/// from one forward call on a 2×2×2 tensor; none when the call runs. Asked before a case so that
/// a dtype ATen lacks costs no reference computation.
std::optional<std::string> aten_refusal(Op op, DType dtype) {
  try {
    const at::Tensor x = at::zeros({2, 2, 2}, at::TensorOptions().dtype(scalar_type_of(dtype)));
    const at::Tensor none;
    switch (op) {
      case Op::batch_norm: at::native_batch_norm(x, none, none, none, none, true, 0.1, 1e-5); break;
      case Op::layer_norm: at::native_layer_norm(x, {2}, none, none, 1e-5); break;
      case Op::group_norm: at::native_group_norm(x, none, none, 2, 2, 2, 1, 1e-5); break;
      case Op::instance_norm: at::instance_norm(x, none, none, none, none, true, 0.1, 1e-5, false); break;
      case Op::rms_norm: break;
    }
  } catch (const c10::Error& e) {
    // Any other refusal shows on the real call, with its own message.
    if (is_dtype_refusal(e)) return e.what_without_backtrace();
  }
  return std::nullopt;
}

class PyTorchBackend final : public Backend {
 public:
  std::string name() const override { return "pytorch"; }

  std::string version() const override {
    std::string v = fmt::format("PyTorch {} (ATen CPU", NORMCHECK_TORCH_VERSION);
    if (std::string(NORMCHECK_TORCH_PACKAGE).size()) v += fmt::format(", Debian libtorch {}", NORMCHECK_TORCH_PACKAGE);
    return v + fmt::format("; {} intra-op threads)", at::get_num_threads());
  }

  std::string description() const override {
    return "PyTorch's ATen CPU operators, called as torch.nn modules and autograd call them";
  }

  Capabilities capabilities() const override {
    Capabilities c;
    c.ops = {Op::batch_norm, Op::layer_norm, Op::group_norm, Op::instance_norm};
    c.passes = {std::begin(kAllPasses), std::end(kAllPasses)};
    // f16: asked of ATen, which answers "not implemented for 'Half'" on CPU in 1.13 (UNSUPPORTED).
    c.dtypes = {DType::f32, DType::f64, DType::bf16, DType::f16};
    c.layouts = {Layout::nchw, Layout::nhwc};
    c.convention = "pytorch";
    c.notes = {
        "running statistics: ATen's own in-place update in native_batch_norm (momentum = new weight, "
        "unbiased running_var; convention pytorch); a biased running_var is UNSUPPORTED",
        "saves mean and inv_std (save_mean, save_invstd; layer/group norm: mean, rstd), not the variance",
        "batch_norm: at::native_batch_norm / native_batch_norm_backward; layer_norm: native_layer_norm / "
        "_backward; group_norm: native_group_norm on input.contiguous(suggest_memory_format()), "
        "native_group_norm_backward on NCHW-contiguous dy and x (as 1.13's autograd passes them)",
        "instance_norm: at::instance_norm (batch_norm on the (1, N·C, spatial…) view), backward by autograd",
        "bf16 layer_norm/group_norm: gamma, beta and the saved statistics in bf16 (1.13 has no mixed "
        "dtype for them); bf16 batch_norm/instance_norm keep them in f32",
        "rms_norm: unsupported (added in PyTorch 2.4, torch.nn.functional.rms_norm)",
    };
    return c;
  }

  /// Every path sums recursively as far as normcheck's profiles can say (Welford for layer and
  /// group norm is covered by `recursive`; batch_norm's f64 accumulators for f32 data are finer
  /// than any declarable profile, so the f32 budget over-covers them). docs/backends/pytorch.md
  /// lists the 1.13 functions this was read from.
  PrecisionProfile precision(Op op, DType dtype, Layout) const override {
    PrecisionProfile p;
    // bf16 layer_norm / group_norm in 1.13 run their kernels with T = BFloat16: gamma, beta, mean
    // and rstd are bf16 tensors (measured: native_layer_norm returns bf16 statistics), declared
    // as params_in_data_dtype. Their moments are also computed in bf16 arithmetic
    // (utils::RowwiseMoments<T>, ATen/native/cpu/moments_utils.h as shipped in libtorch-dev
    // 1.13.1, works in Vectorized<T>). That is deliberately NOT declared as a bf16 accumulator:
    // under one, every such case of the correctness suites is NOT_CERTIFIABLE ((h + 4)·u > 0.05
    // already at 16 terms), so nothing would be verified. Against the f32-accumulation budget the
    // failing cases FAIL with the diagnosis "sums accumulated in 16 bits" — the finding, reported
    // as such in docs/backends/pytorch.md.
    p.params_in_data_dtype = dtype == DType::bf16 && (op == Op::layer_norm || op == Op::group_norm);
    return p;
  }

  std::optional<std::string> unsupported_reason(const RunArgs& a, Layout layout) const override {
    if (a.op == Op::rms_norm)
      return fmt::format("rms_norm: added in PyTorch 2.4 (torch.nn.functional.rms_norm); this is PyTorch {}",
                         NORMCHECK_TORCH_VERSION);
    if (a.op == Op::batch_norm && a.pass == Pass::forward_training && !a.running_var_unbiased)
      return biased_running_var();
    if (auto generic = Backend::unsupported_reason(a, layout)) return generic;
    if (a.x.dtype == DType::f16 || a.x.dtype == DType::bf16) return aten_refusal(a.op, a.x.dtype);
    return std::nullopt;
  }

  int threads() const override { return at::get_num_threads(); }
  int set_threads(int n) override {
    at::set_num_threads(n);
    return at::get_num_threads();
  }

  RunResult run(const RunArgs& a) override {
    RunResult r;
    try {
      if (a.op == Op::batch_norm && a.pass == Pass::forward_training && a.running_mean.present() &&
          !a.running_var_unbiased) {
        r.ok = false;
        r.unsupported = true;
        r.message = biased_running_var();
        return r;
      }
      switch (a.op) {
        case Op::batch_norm: r.produced = batch_norm(a); break;
        case Op::layer_norm: r.produced = layer_norm(a); break;
        case Op::group_norm: r.produced = group_norm(a); break;
        case Op::instance_norm: r.produced = instance_norm(a); break;
        case Op::rms_norm: throw std::runtime_error("rms_norm: added in PyTorch 2.4");
      }
    } catch (const c10::Error& e) {
      r.ok = false;
      r.unsupported = is_dtype_refusal(e);  // AT_DISPATCH: "… not implemented for 'Half'"
      r.message = e.what_without_backtrace();
    } catch (const std::exception& e) {
      r.ok = false;
      r.message = e.what();
    }
    return r;
  }

 private:
  static std::string biased_running_var() {
    return "ATen's native_batch_norm updates running_var with the unbiased variance (convention pytorch); "
           "this case asks for the biased one";
  }
};

}  // namespace

}  // namespace normcheck

/// The module's entry point, looked up by backends/pytorch/loader.cpp. The caller owns the result.
extern "C" __attribute__((visibility("default"))) normcheck::Backend* normcheck_pytorch_backend_create() {
  return new normcheck::PyTorchBackend();
}
