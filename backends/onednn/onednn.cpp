#include "onednn.hpp"

#include <fmt/format.h>
#include <dlfcn.h>
#include <omp.h>

#include <algorithm>
#include <filesystem>
#include <unordered_map>
#include <cstring>
#include <vector>

#include "common/running_stats.hpp"
#include "onednn_compat.hpp"

namespace normcheck {
namespace {

namespace compat = onednn_compat;
using dnnl::memory;
using dnnl::normalization_flags;
using dnnl::prop_kind;
using dims_t = memory::dims;

constexpr auto f32 = memory::data_type::f32;

memory::data_type data_type_of(DType t) {
  switch (t) {
    case DType::f16: return memory::data_type::f16;
    case DType::bf16: return memory::data_type::bf16;
    default: return memory::data_type::f32;
  }
}

dims_t dims_of(const TensorArg& t) { return dims_t(t.dims, t.dims + t.rank); }
dims_t strides_of(const TensorArg& t) { return dims_t(t.strides, t.strides + t.rank); }

memory::desc dense_1d(memory::dim n) { return memory::desc({n}, f32, memory::format_tag::a); }

/// A blocked format with 16 channels per block for a tensor of rank r (3 to 5).
memory::format_tag blocked_tag(int rank) {
  switch (rank) {
    case 3: return memory::format_tag::nCw16c;
    case 4: return memory::format_tag::nChw16c;
    default: return memory::format_tag::nCdhw16c;
  }
}

/// The view a primitive runs on for the data tensors (x, y, dy, dx): dims and strides in
/// elements. Instance norm and multi-dim layer norm use reshaped views (see notes()).
struct DataView {
  dims_t dims, strides;
  memory::data_type dt = memory::data_type::f32;
  memory::desc md() const { return memory::desc(dims, dt, strides); }
  memory::desc blocked_md() const { return memory::desc(dims, dt, blocked_tag(static_cast<int>(dims.size()))); }
};

/// The file the oneDNN library was loaded from (the executable when linked statically).
std::string library_file() {
  Dl_info info{};
  if (dladdr(reinterpret_cast<void*>(&dnnl_version), &info) == 0 || !info.dli_fname) return "library file unknown";
  std::error_code ec;
  const std::filesystem::path real = std::filesystem::canonical(info.dli_fname, ec);
  return ec ? info.dli_fname : real.string();
}

class OneDnnBackend final : public Backend {
 public:
  explicit OneDnnBackend(bool blocked) : blocked_(blocked), eng_(dnnl::engine::kind::cpu, 0), strm_(eng_) {}

  std::string name() const override { return blocked_ ? "onednn_blocked" : "onednn"; }

  /// "oneDNN 2.6.3 (no git hash in this build, /usr/lib/x86_64-linux-gnu/libdnnl.so.2.6), CPU ISA …".
  /// Builds from a release tarball (Debian's, tools/build-onednn.sh) record the hash "N/A"; the
  /// library file (dladdr of dnnl_version, symlinks resolved) then tells the builds apart.
  std::string version() const override {
    const dnnl_version_t* v = dnnl_version();
    const bool has_hash = v->hash && *v->hash && std::strcmp(v->hash, "N/A") != 0;
    return fmt::format("oneDNN {}.{}.{} ({}, {}), CPU ISA {}", v->major, v->minor, v->patch,
                       has_hash ? fmt::format("git {}", v->hash) : "no git hash in this build", library_file(),
                       compat::effective_isa());
  }

  std::string description() const override {
    return blocked_ ? "oneDNN CPU primitives on nC[d][h]w16c blocked data (reordered in and out)"
                    : "oneDNN CPU primitives on the caller's NCHW/NHWC strides";
  }

  Capabilities capabilities() const override {
    Capabilities c;
    c.ops = {Op::batch_norm, Op::instance_norm};
    if (!blocked_) c.ops.push_back(Op::layer_norm);
#if NORMCHECK_DNNL_HAS_GROUP_NORM
    c.ops.push_back(Op::group_norm);
#endif
#if NORMCHECK_DNNL_HAS_RMS_NORM
    if (!blocked_) c.ops.push_back(Op::rms_norm);
#endif
    c.passes = {std::begin(kAllPasses), std::end(kAllPasses)};
    // f16/bf16 run where this library and CPU implement them; otherwise the case is UNSUPPORTED
    // with oneDNN's own `unimplemented` message.
    c.dtypes = {DType::f32, DType::bf16, DType::f16};
    c.layouts = {Layout::nchw, Layout::nhwc};
    c.notes = {
        "saves mean and biased variance (not inv_std); backward reads mean and variance",
        "running statistics: oneDNN keeps none; normcheck updates them in f32 from oneDNN's mean "
        "and variance under the requested convention, so that part is normcheck's arithmetic",
        "instance_norm: batch_normalization on the (1, N·C, spatial…) view, exact because each "
        "channel of that view is one (n, c) reduction set; gamma/beta repeated per n, dgamma/dbeta "
        "summed over n by normcheck",
#if !NORMCHECK_DNNL_HAS_GROUP_NORM
        "group_norm: unsupported before oneDNN 3.3",
#endif
#if !NORMCHECK_DNNL_HAS_RMS_NORM
        "rms_norm: unsupported before oneDNN 3.9 (the rms_norm flag of layer_normalization)",
#endif
    };
    if (!blocked_)
      c.notes.push_back("layer_norm: oneDNN normalizes the last logical axis; normalized_shape over several "
                        "dims runs on the view that merges them (needs them dense, i.e. NCHW)");
    return c;
  }

  std::optional<std::string> unsupported_reason(const RunArgs& a, Layout layout) const override {
    const std::string lib = fmt::format("oneDNN {}.{}", dnnl_version()->major, dnnl_version()->minor);
    if (a.x.dtype == DType::f64) return "oneDNN has no f64 normalization primitives";
#if !NORMCHECK_DNNL_HAS_GROUP_NORM
    if (a.op == Op::group_norm) return "group_normalization needs oneDNN ≥ 3.3; this is " + lib;
#endif
#if !NORMCHECK_DNNL_HAS_RMS_NORM
    if (a.op == Op::rms_norm) return "rms_norm needs oneDNN ≥ 3.9 (layer_normalization's rms_norm flag); this is " + lib;
#endif
    if (blocked_ && (a.op == Op::layer_norm || a.op == Op::rms_norm))
      return "the blocked variant applies to channel-wise ops (batch, instance, group norm)";
    if (blocked_ && a.rank < 3) return "blocked layouts need a spatial dim (rank ≥ 3)";
    if (a.op == Op::instance_norm && layout == Layout::nhwc)
      return "instance_norm runs as batch_normalization on the (1, N·C, spatial…) view, which "
             "needs N and C to merge into one stride (NCHW)";
    if ((a.op == Op::layer_norm || a.op == Op::rms_norm) && a.norm_dims > 1 && layout == Layout::nhwc)
      return "layer_normalization normalizes the last axis; merging several normalized dims needs "
             "them dense in logical order (NCHW)";
    return Backend::unsupported_reason(a, layout);
  }

  /// oneDNN's CPU runtime here is OpenMP (Debian's and tools/build-onednn.sh's builds alike).
  int threads() const override { return omp_get_max_threads(); }
  int set_threads(int n) override {
    omp_set_num_threads(n);
    return omp_get_max_threads();
  }

  RunResult run(const RunArgs& a) override {
    RunResult r;
    try {
      switch (a.op) {
        case Op::batch_norm:
        case Op::instance_norm: r.produced = run_batch_norm(a); break;
        case Op::layer_norm:
        case Op::rms_norm: r.produced = run_layer_norm(a); break;
        case Op::group_norm: r.produced = run_group_norm(a); break;
      }
    } catch (const dnnl::error& e) {
      r.ok = false;
      r.unsupported = e.status == dnnl_unimplemented;
      r.message = fmt::format("{} (status {})", e.what(), static_cast<int>(e.status));
    } catch (const std::exception& e) {
      r.ok = false;
      r.message = e.what();
    }
    return r;
  }

 private:
  /// A data tensor as the primitive wants it: the caller's buffer, or a blocked copy.
  struct Staged {
    memory user, prim;
  };
  Staged stage(const DataView& v, void* data, bool input) {
    Staged s;
    s.user = memory(v.md(), eng_, data);
    if (!blocked_) {
      s.prim = s.user;
      return s;
    }
    s.prim = memory(v.blocked_md(), eng_);
    if (input) dnnl::reorder(s.user, s.prim).execute(strm_, s.user, s.prim);
    return s;
  }
  void unstage(Staged& s) {
    if (blocked_) dnnl::reorder(s.prim, s.user).execute(strm_, s.prim, s.user);
  }

  static DataView view_of(const TensorArg& t) { return {dims_of(t), strides_of(t), data_type_of(t.dtype)}; }

  /// batch_norm directly; instance_norm as batch_norm on the (1, N·C, spatial…) view.
  uint32_t run_batch_norm(const RunArgs& a) {
    const bool in = a.op == Op::instance_norm;
    const int64_t n = a.dims[0], c = a.dims[1];
    DataView v = view_of(a.x);
    if (in) {
      if (a.x.strides[0] != c * a.x.strides[1])
        throw std::runtime_error("instance_norm view needs stride(N) = C·stride(C)");
      v.dims[0] = 1;
      v.dims[1] = n * c;
      v.strides[0] = n * c * a.x.strides[1];
    }
    const int64_t channels = v.dims[1];
    int64_t m = 1;
    for (size_t d = 0; d < v.dims.size(); ++d)
      if (d != 1) m *= v.dims[d];

    // gamma/beta per view channel (repeated per n for instance_norm).
    std::vector<float> scale(channels, 1.f), shift(channels, 0.f);
    if (a.gamma.present())
      for (int64_t k = 0; k < channels; ++k) scale[k] = static_cast<const float*>(a.gamma.data)[k % c];
    if (a.beta.present())
      for (int64_t k = 0; k < channels; ++k) shift[k] = static_cast<const float*>(a.beta.data)[k % c];
    memory scale_m(dense_1d(channels), eng_, scale.data()), shift_m(dense_1d(channels), eng_, shift.data());

    const bool global = a.pass == Pass::forward_inference || a.pass == Pass::backward_inference;
    normalization_flags flags = normalization_flags::none;
    if (a.affine) flags = flags | normalization_flags::use_scale | normalization_flags::use_shift;
    if (global) flags = flags | normalization_flags::use_global_stats;

    std::vector<float> mean(channels), var(channels);
    memory mean_m(dense_1d(channels), eng_, mean.data()), var_m(dense_1d(channels), eng_, var.data());
    if (global) {
      std::memcpy(mean.data(), a.running_mean.data, channels * sizeof(float));
      std::memcpy(var.data(), a.running_var.data, channels * sizeof(float));
    } else if (is_backward(a.pass)) {
      std::memcpy(mean.data(), a.mean.data, channels * sizeof(float));
      std::memcpy(var.data(), a.variance.data, channels * sizeof(float));
    }
    const memory::desc data_md = blocked_ ? v.blocked_md() : v.md();
    const prop_kind fwd_prop = a.pass == Pass::forward_inference ? prop_kind::forward_inference
                                                                 : prop_kind::forward_training;
    auto fwd_pd = compat::bn_forward(eng_, fwd_prop, data_md, static_cast<float>(a.eps), flags);

    if (!is_backward(a.pass)) {
      Staged x = stage(v, a.x.data, true), y = stage(v, a.y.data, false);
      dnnl::batch_normalization_forward(fwd_pd).execute(
          strm_, {{DNNL_ARG_SRC, x.prim}, {DNNL_ARG_DST, y.prim}, {DNNL_ARG_MEAN, mean_m},
                  {DNNL_ARG_VARIANCE, var_m}, {DNNL_ARG_SCALE, scale_m}, {DNNL_ARG_SHIFT, shift_m}});
      strm_.wait();
      unstage(y);
      uint32_t produced = kOutY;
      if (!global) {
        std::memcpy(a.mean.data, mean.data(), channels * sizeof(float));
        std::memcpy(a.variance.data, var.data(), channels * sizeof(float));
        produced |= kOutMean | kOutVariance;
        if (a.running_mean.present() && a.running_var.present()) {
          auto* rm = static_cast<float*>(a.running_mean.data);
          auto* rv = static_cast<float*>(a.running_var.data);
          for (int64_t k = 0; k < channels; ++k)
            update_running_stats(rm[k], rv[k], mean[k], var[k], static_cast<float>(a.batch_weight), m,
                                 a.running_var_unbiased != 0);
          produced |= kOutRunningMean | kOutRunningVar;
        }
      }
      return produced;
    }

    const prop_kind bwd_prop = a.affine ? prop_kind::backward : prop_kind::backward_data;
    auto bwd_pd = compat::bn_backward(eng_, bwd_prop, data_md, data_md, static_cast<float>(a.eps), flags, fwd_pd);
    std::vector<float> dscale(channels), dshift(channels);
    memory dscale_m(dense_1d(channels), eng_, dscale.data()), dshift_m(dense_1d(channels), eng_, dshift.data());
    Staged x = stage(v, a.x.data, true), dy = stage(v, a.dy.data, true), dx = stage(v, a.dx.data, false);
    std::unordered_map<int, memory> bwd_args = {
        {DNNL_ARG_SRC, x.prim},         {DNNL_ARG_DIFF_DST, dy.prim},     {DNNL_ARG_MEAN, mean_m},
        {DNNL_ARG_VARIANCE, var_m},     {DNNL_ARG_SCALE, scale_m},        {DNNL_ARG_DIFF_SRC, dx.prim},
        {DNNL_ARG_DIFF_SCALE, dscale_m}, {DNNL_ARG_DIFF_SHIFT, dshift_m}};
    compat::add_shift_if_counted(bwd_pd, bwd_args, shift_m);
    dnnl::batch_normalization_backward(bwd_pd).execute(strm_, bwd_args);
    strm_.wait();
    unstage(dx);
    uint32_t produced = kOutDx;
    if (a.affine) {
      // instance_norm: the view's per-(n, c) gradients summed over n (normcheck's arithmetic).
      auto* dg = static_cast<float*>(a.dgamma.data);
      auto* db = static_cast<float*>(a.dbeta.data);
      std::fill(dg, dg + c, 0.f);
      std::fill(db, db + c, 0.f);
      for (int64_t k = 0; k < channels; ++k) {
        dg[k % c] += dscale[k];
        db[k % c] += dshift[k];
      }
      produced |= kOutDgamma | kOutDbeta;
    }
    return produced;
  }

  uint32_t run_layer_norm(const RunArgs& a) {
    // Merge the normalized_shape into the last axis (dense in logical order; checked up front).
    DataView v;
    v.dt = data_type_of(a.x.dtype);
    const int lead = a.rank - a.norm_dims;
    int64_t inner = 1;
    for (int d = lead; d < a.rank; ++d) inner *= a.dims[d];
    for (int d = 0; d < lead; ++d) {
      v.dims.push_back(a.x.dims[d]);
      v.strides.push_back(a.x.strides[d]);
    }
    v.dims.push_back(inner);
    v.strides.push_back(a.x.strides[a.rank - 1]);
    if (a.norm_dims > 1)
      for (int d = lead; d < a.rank - 1; ++d)
        if (a.x.strides[d] != a.x.strides[d + 1] * a.x.dims[d + 1])
          throw std::runtime_error("normalized_shape dims are not dense");
    int64_t rows = 1;
    for (int d = 0; d < lead; ++d) rows *= a.dims[d];
    const dims_t stat_dims(v.dims.begin(), v.dims.end() - 1);
    dims_t stat_strides(stat_dims.size(), 1);
    for (int d = static_cast<int>(stat_dims.size()) - 2; d >= 0; --d) stat_strides[d] = stat_strides[d + 1] * stat_dims[d + 1];
    const memory::desc stat_md(stat_dims, f32, stat_strides);

    normalization_flags flags = normalization_flags::none;
    if (a.affine) flags = flags | normalization_flags::use_scale;
    if (a.affine && a.op == Op::layer_norm) flags = flags | normalization_flags::use_shift;
#if NORMCHECK_DNNL_HAS_RMS_NORM
    if (a.op == Op::rms_norm) flags = flags | normalization_flags::rms_norm;
#endif
    std::vector<float> scale(inner, 1.f), shift(inner, 0.f), mean(rows), var(rows);
    if (a.gamma.present()) std::memcpy(scale.data(), a.gamma.data, inner * sizeof(float));
    if (a.beta.present()) std::memcpy(shift.data(), a.beta.data, inner * sizeof(float));
    memory scale_m(dense_1d(inner), eng_, scale.data()), shift_m(dense_1d(inner), eng_, shift.data());
    memory mean_m(stat_md, eng_, mean.data()), var_m(stat_md, eng_, var.data());
    memory x(v.md(), eng_, a.x.data);
    auto fwd_pd = compat::ln_forward(eng_, prop_kind::forward_training, v.md(), stat_md,
                                     static_cast<float>(a.eps), flags);
    if (!is_backward(a.pass)) {
      memory y(v.md(), eng_, a.y.data);
      dnnl::layer_normalization_forward(fwd_pd).execute(
          strm_, {{DNNL_ARG_SRC, x}, {DNNL_ARG_DST, y}, {DNNL_ARG_MEAN, mean_m}, {DNNL_ARG_VARIANCE, var_m},
                  {DNNL_ARG_SCALE, scale_m}, {DNNL_ARG_SHIFT, shift_m}});
      strm_.wait();
      uint32_t produced = kOutY | kOutVariance;
      std::memcpy(a.variance.data, var.data(), rows * sizeof(float));
      if (a.op == Op::layer_norm) {
        std::memcpy(a.mean.data, mean.data(), rows * sizeof(float));
        produced |= kOutMean;
      }
      return produced;
    }
    if (a.op == Op::layer_norm) std::memcpy(mean.data(), a.mean.data, rows * sizeof(float));
    std::memcpy(var.data(), a.variance.data, rows * sizeof(float));
    const prop_kind bwd_prop = a.affine ? prop_kind::backward : prop_kind::backward_data;
    auto bwd_pd = compat::ln_backward(eng_, bwd_prop, v.md(), v.md(), stat_md, static_cast<float>(a.eps), flags, fwd_pd);
    std::vector<float> dscale(inner), dshift(inner);
    memory dscale_m(dense_1d(inner), eng_, dscale.data()), dshift_m(dense_1d(inner), eng_, dshift.data());
    memory dy(v.md(), eng_, a.dy.data), dx(v.md(), eng_, a.dx.data);
    std::unordered_map<int, memory> bwd_args = {
        {DNNL_ARG_SRC, x},         {DNNL_ARG_DIFF_DST, dy},         {DNNL_ARG_MEAN, mean_m},
        {DNNL_ARG_VARIANCE, var_m}, {DNNL_ARG_SCALE, scale_m},       {DNNL_ARG_DIFF_SRC, dx},
        {DNNL_ARG_DIFF_SCALE, dscale_m}, {DNNL_ARG_DIFF_SHIFT, dshift_m}};
    compat::add_shift_if_counted(bwd_pd, bwd_args, shift_m);
    dnnl::layer_normalization_backward(bwd_pd).execute(strm_, bwd_args);
    strm_.wait();
    uint32_t produced = kOutDx;
    if (a.affine) {
      std::memcpy(a.dgamma.data, dscale.data(), inner * sizeof(float));
      produced |= kOutDgamma;
      if (a.dbeta.present()) {
        std::memcpy(a.dbeta.data, dshift.data(), inner * sizeof(float));
        produced |= kOutDbeta;
      }
    }
    return produced;
  }

  uint32_t run_group_norm([[maybe_unused]] const RunArgs& a) {
#if NORMCHECK_DNNL_HAS_GROUP_NORM
    const DataView v = view_of(a.x);
    const int64_t n = a.dims[0], c = a.dims[1], g = a.groups;
    const memory::desc data_md = blocked_ ? v.blocked_md() : v.md();
    normalization_flags flags = normalization_flags::none;
    if (a.affine) flags = flags | normalization_flags::use_scale | normalization_flags::use_shift;
    std::vector<float> scale(c, 1.f), shift(c, 0.f), mean(n * g), var(n * g);
    if (a.gamma.present()) std::memcpy(scale.data(), a.gamma.data, c * sizeof(float));
    if (a.beta.present()) std::memcpy(shift.data(), a.beta.data, c * sizeof(float));
    memory scale_m(dense_1d(c), eng_, scale.data()), shift_m(dense_1d(c), eng_, shift.data());
    const memory::desc stat_md({n, g}, f32, memory::format_tag::ab);
    memory mean_m(stat_md, eng_, mean.data()), var_m(stat_md, eng_, var.data());
    auto fwd_pd = compat::gn_forward(eng_, prop_kind::forward_training, data_md, g, static_cast<float>(a.eps), flags);
    if (!is_backward(a.pass)) {
      Staged x = stage(v, a.x.data, true), y = stage(v, a.y.data, false);
      dnnl::group_normalization_forward(fwd_pd).execute(
          strm_, {{DNNL_ARG_SRC, x.prim}, {DNNL_ARG_DST, y.prim}, {DNNL_ARG_MEAN, mean_m},
                  {DNNL_ARG_VARIANCE, var_m}, {DNNL_ARG_SCALE, scale_m}, {DNNL_ARG_SHIFT, shift_m}});
      strm_.wait();
      unstage(y);
      std::memcpy(a.mean.data, mean.data(), n * g * sizeof(float));
      std::memcpy(a.variance.data, var.data(), n * g * sizeof(float));
      return kOutY | kOutMean | kOutVariance;
    }
    std::memcpy(mean.data(), a.mean.data, n * g * sizeof(float));
    std::memcpy(var.data(), a.variance.data, n * g * sizeof(float));
    const prop_kind bwd_prop = a.affine ? prop_kind::backward : prop_kind::backward_data;
    auto bwd_pd = compat::gn_backward(eng_, bwd_prop, data_md, data_md, g, static_cast<float>(a.eps), flags, fwd_pd);
    memory dg_m(dense_1d(c), eng_, a.affine ? a.dgamma.data : nullptr);
    memory db_m(dense_1d(c), eng_, a.affine ? a.dbeta.data : nullptr);
    Staged x = stage(v, a.x.data, true), dy = stage(v, a.dy.data, true), dx = stage(v, a.dx.data, false);
    dnnl::group_normalization_backward(bwd_pd).execute(
        strm_, {{DNNL_ARG_SRC, x.prim}, {DNNL_ARG_DIFF_DST, dy.prim}, {DNNL_ARG_MEAN, mean_m},
                {DNNL_ARG_VARIANCE, var_m}, {DNNL_ARG_SCALE, scale_m}, {DNNL_ARG_DIFF_SRC, dx.prim},
                {DNNL_ARG_DIFF_SCALE, dg_m}, {DNNL_ARG_DIFF_SHIFT, db_m}});
    strm_.wait();
    unstage(dx);
    return kOutDx | (a.affine ? kOutDgamma | kOutDbeta : 0u);
#else
    throw std::runtime_error("group_normalization needs oneDNN ≥ 3.3");
#endif
  }

  bool blocked_;
  dnnl::engine eng_;
  dnnl::stream strm_;
};

}  // namespace

std::unique_ptr<Backend> make_onednn_backend(bool blocked) { return std::make_unique<OneDnnBackend>(blocked); }

}  // namespace normcheck
