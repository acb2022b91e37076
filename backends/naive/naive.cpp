#include "naive.hpp"

#include <cmath>
#include <cstring>
#include <vector>

#include "common/running_stats.hpp"
#include "normcheck/lowp.hpp"
#include "normcheck/partition.hpp"
#include "normcheck/version.hpp"

namespace normcheck {
namespace {

/// Typed strided access by logical index.
template <class T>
struct View {
  T* data = nullptr;
  int rank = 0;
  const int64_t* dims = nullptr;
  const int64_t* strides = nullptr;
  bool dense = true;  ///< row-major contiguous: the logical index is the offset
  explicit View(const TensorArg& a)
      : data(static_cast<T*>(a.data)), rank(a.rank), dims(a.dims), strides(a.strides) {
    int64_t expect = 1;
    for (int d = rank - 1; d >= 0; --d) {
      if (dims[d] != 1 && strides[d] != expect) dense = false;
      expect *= dims[d];
    }
  }
  T& operator[](int64_t i) const {
    if (dense) return data[i];
    int64_t off = 0;
    for (int d = rank - 1; d >= 0; --d) {
      off += (i % dims[d]) * strides[d];
      i /= dims[d];
    }
    return data[off];
  }
};

/// S: storage type of the data tensors (x, y, dy, dx); T: arithmetic and statistics type
/// (float for f16/bf16 data: f32 accumulation).
template <class S, class T>
class Kernel {
 public:
  Kernel(const RunArgs& a, const NaiveFlaws& flaws, const Partition& part) : a_(a), flaws_(flaws), part_(part) {}

  uint32_t run() {
    switch (a_.pass) {
      case Pass::forward_training: return forward(false);
      case Pass::forward_inference: return forward(true);
      case Pass::backward_training:
      case Pass::backward_inference: return backward();
    }
    return 0;
  }

 private:
  T gamma(int64_t i) const {
    return a_.gamma.present() ? View<T>(a_.gamma)[part_.affine_of[i]] : T(1);
  }
  T beta(int64_t i) const {
    return a_.beta.present() ? View<T>(a_.beta)[part_.affine_of[i]] : T(0);
  }
  /// sum += v, in T, or rounded to the storage type when the flaw says so.
  void accumulate(T& sum, T v) const {
    sum += v;
    if (flaws_.storage_accumulation) sum = T(S(sum));
  }
  T inv_std_of(T var, T eps, int64_t m) const {
    if (flaws_.unbiased_normalization && m > 1) var = var * T(m) / T(m - 1);
    if (flaws_.eps_outside_sqrt) return T(1) / (std::sqrt(var) + eps);
    return T(1) / std::sqrt(var + eps);
  }

  uint32_t forward(bool inference) {
    View<S> x(a_.x), y(a_.y);
    const T eps = static_cast<T>(a_.eps);
    const int64_t m = part_.set_size;
    uint32_t produced = kOutY;
    for (int64_t s = 0; s < part_.num_sets; ++s) {
      const int64_t* idx = part_.set_begin(s);
      T mean = 0, var = 0, r = 0;
      if (inference) {
        mean = View<T>(a_.running_mean)[s];
        r = T(1) / std::sqrt(View<T>(a_.running_var)[s] + eps);
      } else {
        if (part_.subtract_mean) {
          T sum = 0;
          for (int64_t k = 0; k < m; ++k) accumulate(sum, T(x[idx[k]]));
          mean = sum / T(m);
        }
        T ss = 0;
        for (int64_t k = 0; k < m; ++k) {
          const T d = T(x[idx[k]]) - mean;
          accumulate(ss, d * d);
        }
        var = ss / T(m);
        r = inv_std_of(var, eps, m);
        if (a_.mean.present() && part_.subtract_mean) {
          View<T>(a_.mean)[s] = mean;
          produced |= kOutMean;
        }
        if (a_.variance.present()) {
          View<T>(a_.variance)[s] = var;
          produced |= kOutVariance;
        }
        if (a_.inv_std.present()) {
          View<T>(a_.inv_std)[s] = r;
          produced |= kOutInvStd;
        }
        if (a_.running_mean.present() && a_.running_var.present()) {
          T f = static_cast<T>(a_.batch_weight);
          if (flaws_.swapped_momentum) f = T(1) - f;
          update_running_stats(View<T>(a_.running_mean)[s], View<T>(a_.running_var)[s], mean, var, f, m,
                               a_.running_var_unbiased != 0);
          produced |= kOutRunningMean | kOutRunningVar;
        }
      }
      for (int64_t k = 0; k < m; ++k) {
        const int64_t i = idx[k];
        y[i] = S(gamma(i) * ((T(x[i]) - mean) * r) + beta(i));
      }
    }
    return produced;
  }

  uint32_t backward() {
    View<S> x(a_.x), dy(a_.dy), dx(a_.dx);
    const T eps = static_cast<T>(a_.eps);
    const bool global = a_.pass == Pass::backward_inference;
    const int64_t m = part_.set_size;
    std::vector<T> dgamma(part_.num_affine, T(0)), dbeta(part_.num_affine, T(0));
    for (int64_t s = 0; s < part_.num_sets; ++s) {
      const int64_t* idx = part_.set_begin(s);
      T mean, r;
      if (global) {
        mean = View<T>(a_.running_mean)[s];
        r = T(1) / std::sqrt(View<T>(a_.running_var)[s] + eps);
      } else {
        mean = part_.subtract_mean ? View<T>(a_.mean)[s] : T(0);
        r = View<T>(a_.inv_std)[s];
      }
      T sum_g = 0, sum_gx = 0;
      for (int64_t k = 0; k < m; ++k) {
        const int64_t i = idx[k];
        const T xh = (T(x[i]) - mean) * r;
        const T g = T(dy[i]) * gamma(i);
        sum_g += g;
        sum_gx += g * xh;
        dgamma[part_.affine_of[i]] += T(dy[i]) * xh;
        dbeta[part_.affine_of[i]] += T(dy[i]);
      }
      const T a = part_.subtract_mean ? sum_g / T(m) : T(0);
      const T b = sum_gx / T(m);
      for (int64_t k = 0; k < m; ++k) {
        const int64_t i = idx[k];
        const T g = T(dy[i]) * gamma(i);
        if (global) {
          dx[i] = S(r * g);
        } else {
          const T xh = (T(x[i]) - mean) * r;
          dx[i] = S(r * (g - a - xh * b));
        }
      }
    }
    uint32_t produced = kOutDx;
    if (a_.dgamma.present()) {
      View<T> dg(a_.dgamma);
      for (int64_t j = 0; j < part_.num_affine; ++j) dg[j] = dgamma[j];
      produced |= kOutDgamma;
    }
    if (a_.dbeta.present()) {
      View<T> db(a_.dbeta);
      for (int64_t j = 0; j < part_.num_affine; ++j) db[j] = dbeta[j];
      produced |= kOutDbeta;
    }
    return produced;
  }

  const RunArgs& a_;
  NaiveFlaws flaws_;
  const Partition& part_;
};

class NaiveBackend final : public Backend {
 public:
  NaiveBackend(NaiveFlaws flaws, std::string name) : flaws_(flaws), name_(std::move(name)) {}
  std::string name() const override { return name_; }
  std::string version() const override { return std::string("normcheck ") + kVersion; }
  std::string description() const override {
    return "textbook two-pass normalization, recursive sums in f32 (f32, f16, bf16 data) or f64";
  }
  Capabilities capabilities() const override {
    return {{std::begin(kAllOps), std::end(kAllOps)},
            {std::begin(kAllPasses), std::end(kAllPasses)},
            {DType::f32, DType::f64, DType::f16, DType::bf16},
            {Layout::nchw, Layout::nhwc},
            {"f32 and f64: everything in the data dtype, including the running statistics",
             "f16 and bf16: stored in 16 bits, computed and accumulated in f32, statistics in f32"}};
  }
  RunResult run(const RunArgs& a) override {
    RunResult r;
    try {
      const Partition& part = partition_of(a);
      switch (a.x.dtype) {
        case DType::f64: r.produced = Kernel<double, double>(a, flaws_, part).run(); break;
        case DType::f32: r.produced = Kernel<float, float>(a, flaws_, part).run(); break;
        case DType::f16: r.produced = Kernel<f16, float>(a, flaws_, part).run(); break;
        case DType::bf16: r.produced = Kernel<bf16, float>(a, flaws_, part).run(); break;
      }
    } catch (const std::exception& e) {
      r.ok = false;
      r.message = e.what();
    }
    return r;
  }

 private:
  /// The partition of the last call's geometry, kept for the next call (a benchmark repeats one
  /// geometry; building the partition is O(numel) work the kernel proper does not need).
  const Partition& partition_of(const RunArgs& a) {
    Problem p;
    p.op = a.op;
    p.dims.assign(a.dims, a.dims + a.rank);
    p.norm_dims = a.norm_dims;
    p.groups = a.groups;
    if (!(cached_op_ == p.op && cached_dims_ == p.dims && cached_norm_dims_ == p.norm_dims &&
          cached_groups_ == p.groups)) {
      part_ = make_partition(p);
      cached_op_ = p.op;
      cached_dims_ = p.dims;
      cached_norm_dims_ = p.norm_dims;
      cached_groups_ = p.groups;
    }
    return part_;
  }

  NaiveFlaws flaws_;
  std::string name_;
  Partition part_;
  Op cached_op_ = Op::batch_norm;
  std::vector<int64_t> cached_dims_;
  int cached_norm_dims_ = 0;
  int64_t cached_groups_ = -1;
};

}  // namespace

std::unique_ptr<Backend> make_naive_backend(NaiveFlaws flaws, std::string name) {
  return std::make_unique<NaiveBackend>(flaws, std::move(name));
}

}  // namespace normcheck
