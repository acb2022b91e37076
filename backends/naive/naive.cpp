#include "naive.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <tuple>
#include <type_traits>
#include <cstring>
#include <vector>

#include "common/running_stats.hpp"
#include "normcheck/lowp.hpp"
#include "normcheck/parallel.hpp"
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

/// v rounded to storage type S (bf16 rounds through float, as every bf16 producer does).
template <class S, class T>
S to_storage(T v) {
  if constexpr (std::is_same_v<S, bf16>)
    return S(static_cast<float>(v));
  else
    return static_cast<S>(v);
}

/// The partition of one geometry (strided: O(1) memory; partition.hpp).
struct Geometry {
  Partition part;
};

/// S: storage type of the data tensors (x, y, dy, dx); ST: storage type of the statistics,
/// gamma/beta and their gradients (the statistics dtype); T: arithmetic type (float for f32, f16
/// and bf16 data: f32 accumulation; double for f64 data or the compute_f64 variant).
template <class S, class ST, class T>
class Kernel {
 public:
  Kernel(const RunArgs& a, const NaiveFlaws& flaws, const NaiveVariant& variant, const Geometry& geo, int threads)
      : a_(a), flaws_(flaws), variant_(variant), part_(geo.part), geo_(geo), gamma_(a.gamma), beta_(a.beta),
        threads_(threads) {
    if (flaws_.gn_affine_per_group && a.op == Op::group_norm) channels_per_group_ = a.dims[1] / a.groups;
  }

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
  View<S> data_view(const TensorArg& t) const {
    View<S> v(t);
    if (flaws_.ignore_strides) v.dense = true;
    return v;
  }
  T gamma(int64_t i) const { return gamma_at(part_.affine_of(i)); }
  /// gamma and beta of an element of set s with affine index j = part_.affine_of(i).
  T gamma_at(int64_t j) const { return a_.gamma.present() ? T(gamma_[j / channels_per_group_]) : T(1); }
  T beta_at(int64_t s, int64_t j) const {
    if (!a_.beta.present()) return T(0);
    return T(beta_[flaws_.beta_by_set ? s % part_.num_affine : j / channels_per_group_]);
  }

  /// Σ term(k) for k in [0, m), in the variant's order. The storage-accumulation flaw rounds a
  /// recursive accumulator to the data dtype after every addition.
  template <class F>
  T reduce(int64_t m, const F& term) const {
    switch (variant_.summation) {
      case Summation::pairwise: return pairwise(0, m, term);
      case Summation::blocked: {  // P recursive partial sums of contiguous blocks, then a tree
        const int64_t p = std::max<int64_t>(1, std::min(variant_.block, m)), len = (m + p - 1) / p;
        std::vector<T> partial(static_cast<size_t>(p), T(0));
        for (int64_t k = 0; k < m; ++k) partial[static_cast<size_t>(k / len)] += term(k);
        return pairwise(0, p, [&](int64_t q) { return partial[static_cast<size_t>(q)]; });
      }
      case Summation::compensated: {  // Neumaier's variant of Kahan summation (Higham 2002 §4.3)
        T sum = 0, c = 0;
        for (int64_t k = 0; k < m; ++k) {
          const T v = term(k), t = sum + v;
          c += std::fabs(sum) >= std::fabs(v) ? (sum - t) + v : (v - t) + sum;
          sum = t;
        }
        return sum + c;
      }
      default: {
        T sum = 0;
        for (int64_t k = 0; k < m; ++k) {
          sum += term(k);
          if (flaws_.storage_accumulation) sum = T(to_storage<S>(sum));
        }
        return sum;
      }
    }
  }
  template <class F>
  T pairwise(int64_t lo, int64_t hi, const F& term) const {
    if (hi - lo == 0) return T(0);
    if (hi - lo == 1) return term(lo);
    const int64_t mid = lo + (hi - lo) / 2;
    return pairwise(lo, mid, term) + pairwise(mid, hi, term);
  }

  T inv_std_of(T var, T eps, int64_t m) const {
    if (flaws_.unbiased_normalization && m > 1) var = var * T(m) / T(m - 1);
    if (flaws_.eps_outside_sqrt) return T(1) / (std::sqrt(var) + eps);
    if (variant_.rsqrt_newton) {  // a 12-bit estimate (relative error 2^-12), then Newton steps
      const T a = var + eps;
      T r = T(static_cast<float>(1 / std::sqrt(static_cast<double>(a))) * (1 + 0x1p-12f));
      for (int step = 0; step < (std::is_same_v<T, double> ? 3 : 1); ++step) r = r * (T(1.5) - T(0.5) * a * r * r);
      return r;
    }
    return T(1) / std::sqrt(var + eps);
  }

  /// Mean and biased variance (rms_norm: 0 and the mean square) of set s.
  template <class Idx>
  std::pair<T, T> moments(const View<S>& x, const Idx& idx, int64_t m) const {
    auto xv = [&](int64_t k) { return T(x[idx(k)]); };
    if (!part_.subtract_mean)
      return {T(0), reduce(m, [&](int64_t k) { return xv(k) * xv(k); }) / T(m)};
    if (flaws_.one_pass_variance) {
      const T mean = reduce(m, xv) / T(m);
      const T ms = reduce(m, [&](int64_t k) { return xv(k) * xv(k); }) / T(m);
      return {mean, std::max(ms - mean * mean, T(0))};
    }
    if (variant_.welford) {  // Welford 1962: mean_k = mean_{k−1} + d/k, M2 += d·(x − mean_k)
      T mean = 0, m2 = 0;
      for (int64_t k = 0; k < m; ++k) {
        const T d = xv(k) - mean;
        mean += d / T(k + 1);
        m2 += d * (xv(k) - mean);
      }
      return {mean, m2 / T(m)};
    }
    const T mean = reduce(m, xv) / T(m);
    const T ss = reduce(m, [&](int64_t k) { const T d = xv(k) - mean; return d * d; });
    return {mean, ss / T(flaws_.variance_m_plus_1 ? m + 1 : m)};
  }

  uint32_t forward(bool inference) {
    View<S> x = data_view(a_.x), y = data_view(a_.y);
    const T eps = static_cast<T>(a_.eps);
    const int64_t m = part_.set_size;
    const bool running = !inference && a_.running_mean.present() && a_.running_var.present();
    uint32_t produced = kOutY;
    if (!inference) {
      if (a_.mean.present() && part_.subtract_mean) produced |= kOutMean;
      if (a_.variance.present()) produced |= kOutVariance;
      if (a_.inv_std.present()) produced |= kOutInvStd;
      if (running) produced |= kOutRunningMean | kOutRunningVar;
    }
    // Sets are independent (each writes its own statistics and elements): one task per set.
    parallel_for(part_.num_sets, threads_, [&](int64_t s) {
      const auto idx = [&](int64_t k) { return part_.member(s, k); };
      T mean = 0, r = 0;
      if (inference) {
        mean = T(View<ST>(a_.running_mean)[s]);
        r = T(1) / std::sqrt(T(View<ST>(a_.running_var)[s]) + eps);
      } else {
        T var;
        std::tie(mean, var) = moments(x, idx, m);
        r = inv_std_of(var, eps, m);
        if (produced & kOutMean) View<ST>(a_.mean)[s] = ST(mean);
        if (produced & kOutVariance) View<ST>(a_.variance)[s] = ST(var);
        if (produced & kOutInvStd) View<ST>(a_.inv_std)[s] = ST(r);
        if (running) {
          ST f = static_cast<ST>(a_.batch_weight);
          if (flaws_.swapped_momentum) f = ST(1) - f;
          const bool unbiased = a_.running_var_unbiased != 0 && !flaws_.biased_running_var;
          update_running_stats(View<ST>(a_.running_mean)[s], View<ST>(a_.running_var)[s], ST(mean), ST(var), f,
                               m, unbiased);
        }
      }
      const T shift_mean = flaws_.mean_subtracted_twice ? 2 * mean : mean;
      for_each_in_set(part_, s, [&](int64_t i, int64_t j) {  // j = affine_of(i), tracked
        const T g = gamma_at(j), b = beta_at(s, j);
        const T xhat = (T(x[i]) - shift_mean) * r;
        T v = g * xhat + b;
        if (variant_.folded_affine) {
          const T scale = g * r;
          v = T(x[i]) * scale + (b - mean * scale);
        }
        if (flaws_.gamma_after_beta) v = g * (xhat + b);
        y[i] = to_storage<S>(v);
      });
    });
    return produced;
  }

  /// The recursive dgamma/dbeta sums of gamma entries whose members are single elements
  /// (LayerNorm/RMSNorm columns: member(j, k) = j·base_stride + k·run_stride): the same additions
  /// in the same order per entry as reduce(), walked k-major over blocks of entries so that
  /// each step reads contiguous elements instead of one per cache line.
  template <class Term>
  void column_sums(const View<S>& dy, const Term& dgamma_term) const {
    const StridedSets& affine = part_.affine;
    const int64_t count = affine.size(), block = 256;
    parallel_for((part_.num_affine + block - 1) / block, threads_, [&](int64_t b) {
      const int64_t j0 = b * block, j1 = std::min(part_.num_affine, j0 + block);
      std::vector<T> sg(static_cast<size_t>(j1 - j0), T(0)), sb(sg.size(), T(0));
      for (int64_t k = 0; k < count; ++k)
        for (int64_t j = j0; j < j1; ++j) {
          const int64_t i = affine.member(j, k);
          T& g = sg[static_cast<size_t>(j - j0)];
          T& d = sb[static_cast<size_t>(j - j0)];
          g += dgamma_term(i);
          d += T(dy[i]);
          if (flaws_.storage_accumulation) g = T(to_storage<S>(g)), d = T(to_storage<S>(d));
        }
      for (int64_t j = j0; j < j1; ++j) {
        if (a_.dgamma.present()) View<ST>(a_.dgamma)[j] = ST(sg[static_cast<size_t>(j - j0)]);
        if (a_.dbeta.present()) View<ST>(a_.dbeta)[j] = ST(sb[static_cast<size_t>(j - j0)]);
      }
    });
  }

  uint32_t backward() {
    View<S> x = data_view(a_.x), dy = data_view(a_.dy), dx = data_view(a_.dx);
    const T eps = static_cast<T>(a_.eps);
    const bool global = a_.pass == Pass::backward_inference;
    const int64_t m = part_.set_size;
    std::vector<T> mean_s(part_.num_sets), r_s(part_.num_sets);
    for (int64_t s = 0; s < part_.num_sets; ++s) {
      if (global) {
        mean_s[s] = T(View<ST>(a_.running_mean)[s]);
        r_s[s] = T(1) / std::sqrt(T(View<ST>(a_.running_var)[s]) + eps);
      } else {
        mean_s[s] = part_.subtract_mean ? T(View<ST>(a_.mean)[s]) : T(0);
        r_s[s] = T(View<ST>(a_.inv_std)[s]);
      }
    }
    // dgamma[j] = Σ dy·x̂ and dbeta[j] = Σ dy over the elements of affine index j, first: in place,
    // dx is written over dy.
    uint32_t produced = kOutDx;
    auto set = [&](int64_t i) { return part_.set_of(i); };
    if (a_.dgamma.present() || a_.dbeta.present()) {
      const StridedSets& affine = part_.affine;
      const int64_t count = affine.size();
      auto dgamma_term = [&](int64_t i) {
        const int64_t q = set(i);
        return flaws_.dgamma_missing_mean ? T(dy[i]) * T(x[i]) * r_s[q] : T(dy[i]) * ((T(x[i]) - mean_s[q]) * r_s[q]);
      };
      if (affine.run_len == 1 && variant_.summation == Summation::recursive) {
        column_sums(dy, dgamma_term);
      } else {
        parallel_for(part_.num_affine, threads_, [&](int64_t j) {  // entries are independent
          auto members = [&](int64_t k) { return affine.member(j, k); };
          if (a_.dgamma.present())
            View<ST>(a_.dgamma)[j] = ST(reduce(count, [&](int64_t k) { return dgamma_term(members(k)); }));
          if (a_.dbeta.present())
            View<ST>(a_.dbeta)[j] = ST(reduce(count, [&](int64_t k) { return T(dy[members(k)]); }));
        });
      }
      if (a_.dgamma.present()) produced |= kOutDgamma;
      if (a_.dbeta.present()) produced |= kOutDbeta;
    }
    parallel_for(part_.num_sets, threads_, [&](int64_t s) {  // sets are independent
      thread_local std::vector<T> out;
      out.resize(static_cast<size_t>(m));
      const auto idx = [&](int64_t k) { return part_.member(s, k); };
      const T r = flaws_.dx_r_squared ? r_s[s] * r_s[s] : r_s[s];
      auto g = [&](int64_t i) { return T(dy[i]) * gamma(i); };
      auto xh_s = [&](int64_t i) { return (T(x[i]) - mean_s[s]) * r_s[s]; };  // xh(i) for i in set s
      const T a = part_.subtract_mean ? reduce(m, [&](int64_t k) { return g(idx(k)); }) / T(m) : T(0);
      const T b = reduce(m, [&](int64_t k) { return g(idx(k)) * xh_s(idx(k)); }) / T(m);
      // The whole set is read before any of its dx is written (dx may be dy).
      for (int64_t k = 0; k < m; ++k) {
        const int64_t i = idx(k);
        out[static_cast<size_t>(k)] = global ? r * g(i) : r * (g(i) - a - xh_s(i) * b);
      }
      for (int64_t k = 0; k < m; ++k) dx[idx(k)] = to_storage<S>(out[static_cast<size_t>(k)]);
    });
    return produced;
  }


  const RunArgs& a_;
  NaiveFlaws flaws_;
  NaiveVariant variant_;
  const Partition& part_;
  const Geometry& geo_;
  int64_t channels_per_group_ = 1;
  View<ST> gamma_, beta_;  ///< views of gamma and beta (empty when absent), built once
  int threads_;  ///< threads over reduction sets and gamma entries (NaiveBackend::threads)
};

class NaiveBackend final : public Backend {
 public:
  NaiveBackend(NaiveFlaws flaws, std::string name, NaiveVariant variant)
      : flaws_(flaws), variant_(variant), name_(std::move(name)) {}
  std::string name() const override { return name_; }
  std::string version() const override { return std::string("normcheck ") + kVersion; }
  std::string description() const override {
    std::string d = variant_.welford ? "Welford (one-pass updating) normalization" : "textbook two-pass normalization";
    d += fmt::format(", {} sums", to_string(variant_.summation));
    d += variant_.compute_f64 ? " in f64 for every dtype" : " in f32 (f32, f16, bf16 data) or f64";
    return d;
  }
  Capabilities capabilities() const override {
    Capabilities c{{std::begin(kAllOps), std::end(kAllOps)},
                   {std::begin(kAllPasses), std::end(kAllPasses)},
                   {DType::f32, DType::f64, DType::f16, DType::bf16},
                   {Layout::nchw, Layout::nhwc},
                   {variant_.compute_f64 ? "arithmetic in f64, statistics stored in the statistics dtype"
                                         : "f32 and f64: everything in the data dtype, including the running statistics",
                    "f16 and bf16: stored in 16 bits, computed and accumulated in f32, statistics in f32"},
                   "",
                   {}};
    c.precision.summation = variant_.summation;
    c.precision.block = variant_.block;
    if (variant_.rsqrt_newton) c.precision.rsqrt_error = 6;
    return c;
  }
  /// Threads over reduction sets (and gamma entries): every core unless set_threads says
  /// otherwise, as the libraries it stands in for. Each set's arithmetic is sequential, so the
  /// outputs do not depend on the count.
  int threads() const override { return threads_; }
  int set_threads(int n) override { return threads_ = std::max(n, 1); }
  RunResult run(const RunArgs& a) override {
    RunResult r;
    try {
      const Geometry& geo = geometry_of(a);
      const bool f64 = variant_.compute_f64;
      switch (a.x.dtype) {
        case DType::f64: r.produced = Kernel<double, double, double>(a, flaws_, variant_, geo, threads_).run(); break;
        case DType::f32:
          r.produced = f64 ? Kernel<float, float, double>(a, flaws_, variant_, geo, threads_).run()
                           : Kernel<float, float, float>(a, flaws_, variant_, geo, threads_).run();
          break;
        case DType::f16:
          r.produced = f64 ? Kernel<f16, float, double>(a, flaws_, variant_, geo, threads_).run()
                           : Kernel<f16, float, float>(a, flaws_, variant_, geo, threads_).run();
          break;
        case DType::bf16:
          r.produced = f64 ? Kernel<bf16, float, double>(a, flaws_, variant_, geo, threads_).run()
                           : Kernel<bf16, float, float>(a, flaws_, variant_, geo, threads_).run();
          break;
      }
    } catch (const std::exception& e) {
      r.ok = false;
      r.message = e.what();
    }
    return r;
  }

 private:
  /// The geometry of the last call, kept for the next call (a benchmark repeats one geometry;
  /// building the partition is O(numel) work the kernel proper does not need).
  const Geometry& geometry_of(const RunArgs& a) {
    Problem p;
    p.op = a.op;
    p.dims.assign(a.dims, a.dims + a.rank);
    p.norm_dims = a.norm_dims;
    p.groups = a.groups;
    if (!(cached_op_ == p.op && cached_dims_ == p.dims && cached_norm_dims_ == p.norm_dims &&
          cached_groups_ == p.groups)) {
      geo_.part = make_partition(p);
      cached_op_ = p.op;
      cached_dims_ = p.dims;
      cached_norm_dims_ = p.norm_dims;
      cached_groups_ = p.groups;
    }
    return geo_;
  }

  int threads_ = resolve_threads(0);
  NaiveFlaws flaws_;
  NaiveVariant variant_;
  std::string name_;
  Geometry geo_;
  Op cached_op_ = Op::batch_norm;
  std::vector<int64_t> cached_dims_;
  int cached_norm_dims_ = 0;
  int64_t cached_groups_ = -1;
};

}  // namespace

std::unique_ptr<Backend> make_naive_backend(NaiveFlaws flaws, std::string name, NaiveVariant variant) {
  return std::make_unique<NaiveBackend>(flaws, std::move(name), variant);
}

}  // namespace normcheck
