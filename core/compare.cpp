// The comparison rule. Derivation: docs/comparison.md, after shared/research/tolerance-model.md §2
// (first-order error bounds; Higham 2002 §3.1 and §4.2 for γ_k and summation depth).
#include "normcheck/compare.hpp"
#include "normcheck/parallel.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>

#include "normcheck/interrupt.hpp"
#include "normcheck/partition.hpp"
#include "normcheck/lowp.hpp"
#include "normcheck/tensor.hpp"

namespace normcheck {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

/// γ_k = k·u/(1 − k·u) (Higham 2002, Lemma 3.1); ∞ when k·u ≥ 1.
double gamma_k(double k, double u) { return k * u < 1 ? k * u / (1 - k * u) : kInf; }

/// The arithmetic of one budget: unit roundoff u, safety factor s, the ρ of the inverse sqrt,
/// the summation depth of the declared profile, and γ (worst case) or γ̃ (probabilistic).
struct Model {
  double u = 0;
  double s = 2;      ///< tolerance-model.md §0: 2 for the verdict, 1 for the WARN tier
  double rho = 2;    ///< §1: 2 for a correctly rounded sqrt then divide
  double lambda = 0; ///< > 0: probabilistic, γ̃_k = exp(λ√k·u + k·u²/(1−u)) − 1 (Higham & Mary 2019)
  /// η: the absolute error of one rounding in the subnormal range, half the smallest subnormal
  /// of the arithmetic (§1). Sums of subnormals are exact; divisions and squares are not.
  double eta = 0;
  PrecisionProfile profile;
  double depth(double k) const { return profile.depth(k, u); }
  double gam(double k) const {
    if (lambda <= 0) return gamma_k(k, u);
    return std::expm1(lambda * std::sqrt(std::max(k, 0.0)) * u + k * u * u / (1 - u));
  }
};

/// The bits of v rounded to t, as a signed integer that orders like the values do
/// (sign-magnitude folded onto two's complement), so that a difference counts ULPs of t.
inline int64_t ordered_bits(DType t, double v) {
  switch (t) {
    case DType::f16:
    case DType::bf16: {
      uint16_t b;
      if (t == DType::f16) {
        const f16 h = static_cast<f16>(v);
        std::memcpy(&b, &h, 2);
      } else {
        b = bf16(static_cast<float>(v)).bits;
      }
      const int64_t mag = b & 0x7fff;
      return (b & 0x8000) ? -mag : mag;
    }
    case DType::f32: {
      const float f = static_cast<float>(v);
      int32_t i;
      std::memcpy(&i, &f, 4);
      return i < 0 ? static_cast<int64_t>(INT32_MIN) - i : i;
    }
    case DType::f64: break;
  }
  int64_t i;
  std::memcpy(&i, &v, 8);
  return i < 0 ? INT64_MIN - i : i;
}

/// ulp_distance (compare.hpp), inlined into the comparison loop.
[[gnu::always_inline]] inline double ulp_gap(DType t, double a, double b) {
  if (!std::isfinite(a) || !std::isfinite(b)) [[unlikely]]
    return (a == b || (std::isnan(a) && std::isnan(b))) ? 0 : kInf;
  return std::fabs(static_cast<double>(ordered_bits(t, a) - ordered_bits(t, b)));
}

/// max(a, b) for an accumulator a that is never NaN: a NaN b is ignored, as std::fmax does,
/// without its library call.
inline double max_of(double a, double b) { return b > a ? b : a; }

}  // namespace

// Half the spacing of dtype t at |v| (the gap to the next value away from zero; subnormal
// spacing near zero). 0 for non-finite v.
double half_ulp(DType t, double v) {
  v = std::fabs(v);
  if (!std::isfinite(v)) return 0;
  switch (t) {
    case DType::f16: return 0.5 * std::ldexp(1.0, std::max(std::ilogb(std::fmax(v, 0x1p-14)), -14) - 10);
    case DType::bf16: return 0.5 * std::ldexp(1.0, std::max(std::ilogb(std::fmax(v, 0x1p-126)), -126) - 7);
    case DType::f32: {
      const float f = static_cast<float>(v);
      // A normal f below the top binade: the gap above it is 2^(e − 150), e its exponent field.
      const auto e = std::bit_cast<std::uint32_t>(f) >> 23;
      if (e >= 1 && e <= 253) return 0.5 * std::bit_cast<double>(static_cast<std::uint64_t>(e - 150 + 1023) << 52);
      return 0.5 * (static_cast<double>(std::nextafter(f, std::numeric_limits<float>::infinity())) - f);
    }
    case DType::f64: break;
  }
  // The gap above v is 2^(E − 1075), E its exponent field: a normal double for E ∈ [53, 2045].
  const auto e = std::bit_cast<std::uint64_t>(v) >> 52;
  if (e >= 53 && e <= 2045) return 0.5 * std::bit_cast<double>((e - 1075 + 1023) << 52);
  return 0.5 * (std::nextafter(v, kInf) - v);
}

namespace {

std::vector<int64_t> coords_of(int64_t i, const std::vector<int64_t>& dims) {
  std::vector<int64_t> c(dims.size());
  for (int d = static_cast<int>(dims.size()) - 1; d >= 0; --d) {
    c[d] = i % dims[d];
    i /= dims[d];
  }
  return c;
}

/// Bounds on the computed statistics of one reduction set (tolerance-model.md §2.1–2.3, §2.5).
struct SetBounds {
  double e_mean = 0;   ///< E_μ: error of the mean
  double d_var = 0;    ///< D_v: error of the variance (rms_norm: of the mean square)
  double delta_r = 0;  ///< δ_r: relative error of r = 1/sqrt(v + eps)
};

SetBounds set_bounds(const Model& md, bool subtract_mean, double m, double mean, double var, double r,
                     double m1, double minf) {
  SetBounds b;
  const double h = md.depth(m), u = md.u;
  // Underflow: one η per division on the mean's path ((h + 4)·η covers Welford's m divisions),
  // one per rounded square in the variance.
  if (subtract_mean) {
    b.e_mean = md.gam(h + 4) * m1 + 4 * u * minf + u * std::fabs(mean) + (h + 4) * md.eta;
    b.d_var = md.gam(h + 4) * var + 3 * md.gam(h + 4) * minf * std::sqrt(var) + 1.01 * b.e_mean * b.e_mean + u * var +
              (m + 2) * md.eta;
  } else {
    b.d_var = md.gam(h + 2) * var + u * var + (m + 2) * md.eta;
  }
  const double rel = std::min(b.d_var * r * r, 0.99);
  b.delta_r = (std::isfinite(rel) ? 1 / std::sqrt(1 - rel) - 1 : kInf) + (md.rho + 1.5) * u;
  return b;
}

}  // namespace

double ulp_distance(DType t, double a, double b) { return ulp_gap(t, a, b); }

double condition_number(const ReferenceResult& ref) {
  if (ref.batch_stats.empty()) return 0;
  const SetStats& s = ref.batch_stats.back();
  double k = 0;
  for (size_t i = 0; i < s.inv_std.size(); ++i) {
    const double ki = s.inv_std[i] * s.mean_abs[i];
    if (std::isfinite(ki)) k = std::fmax(k, ki);  // r = 1/0 (eps = 0, v = 0): undefined, skipped
  }
  return k;
}

std::string_view to_string(BudgetTerm t) {
  switch (t) {
    case BudgetTerm::mean_shift: return "mean shift";
    case BudgetTerm::inv_std: return "inv_std";
    case BudgetTerm::fold_cancellation: return "fold/cancellation";
    case BudgetTerm::element_rounding: return "element rounding";
    case BudgetTerm::output_rounding: return "output rounding";
    case BudgetTerm::reduction: return "reduction";
    case BudgetTerm::running_update: return "running update";
  }
  return "?";
}

namespace {

/// compare_tensor over elements [lo, hi): the counts and maxima of that range, and its worst
/// element (the first with the largest ratio). at(i) gives element i's reference, result and
/// budgets.
template <class At>
TensorComparison compare_range(const TensorComparison& shape, bool has_prob, bool undefined_all,
                               bool nonfinite_reference_undefined, int64_t lo, int64_t hi, const At& at) {
  TensorComparison c;
  c.dtype = shape.dtype;
  const DType dtype = shape.dtype;
  // The counts and maxima in locals (registers), not in c's fields, which the compiler keeps in
  // memory: one load-max-store chain per field and element otherwise.
  int64_t over_tolerance = 0, nonfinite_mismatch = 0, undefined = 0, over_probabilistic = 0;
  double max_abs_err = 0, max_rel_err = 0, max_ulp = 0, worst_prob = 0, worst_acc = 0, worst_ratio = 0;
  int64_t worst_index = -1;
  ElementBudget worst_budget{};
  double worst_r = 0, worst_g = 0, worst_err = 0;
  for (int64_t i = lo; i < hi; ++i) {
    if ((i & 0xfffff) == 0) poll_interrupt();  // Ctrl-C honoured within ~1e6 elements
    double r, g;
    ElementBudget eb;
    at(i, r, g, eb);
    const double tol = eb.tol;
    if (undefined_all || (nonfinite_reference_undefined && !std::isfinite(r))) {
      ++undefined;
      continue;
    }
    double ratio;
    double err = std::fabs(g - r);
    if (!std::isfinite(r) || !std::isfinite(g)) {
      const bool same = (std::isnan(r) && std::isnan(g)) || (std::isinf(r) && (r == g || std::isnan(g)));
      if (!same) ++nonfinite_mismatch;
      ratio = same ? 0 : kInf;
      err = same ? 0 : kInf;
      if (!same) worst_prob = worst_acc = kInf;
    } else {
      ratio = tol > 0 ? err / tol : (err > 0 ? kInf : 0);
      if (err > tol) ++over_tolerance;
      max_abs_err = max_of(max_abs_err, err);
      if (r != 0) max_rel_err = max_of(max_rel_err, err / std::fabs(r));
      if (has_prob) {
        const double tp = eb.tol_prob;
        const double rp = tp > 0 ? err / tp : (err > 0 ? kInf : 0);
        worst_prob = max_of(worst_prob, rp);
        if (rp > kProbabilisticFailFactor && err <= tol) ++over_probabilistic;
      }
      const double hull = eb.hull, rest = tol - hull;
      const double acc = max_of(0.0, err - hull);
      worst_acc = max_of(worst_acc, rest > 0 ? acc / rest : (acc > 0 ? kInf : 0));
    }
    max_ulp = max_of(max_ulp, ulp_gap(dtype, r, g));
    if (worst_index < 0 || ratio > worst_ratio) {
      worst_ratio = ratio;
      worst_index = i;
      worst_budget = eb;
      worst_r = r, worst_g = g, worst_err = err;
    }
  }
  c.over_tolerance = over_tolerance;
  c.nonfinite_mismatch = nonfinite_mismatch;
  c.undefined = undefined;
  c.over_probabilistic = over_probabilistic;
  c.max_abs_err = max_abs_err;
  c.max_rel_err = max_rel_err;
  c.max_ulp = max_ulp;
  c.worst_ratio_prob = worst_prob;
  c.worst_ratio_acc = worst_acc;
  if (worst_index >= 0) {
    c.worst_ratio = worst_ratio;
    c.worst = {worst_index, coords_of(worst_index, shape.dims), worst_g, worst_r, worst_err, worst_budget.tol};
    // The output rounding dominates where it is at least half of the tolerance.
    c.dominant = std::isfinite(worst_r) && 2 * worst_budget.hull >= worst_budget.tol ? BudgetTerm::output_rounding
                                                                                       : worst_budget.term;
  }
  return c;
}

/// Adds range b (which follows a's elements) into a: the same result as one pass over both.
void merge_range(TensorComparison& a, const TensorComparison& b) {
  a.over_tolerance += b.over_tolerance;
  a.nonfinite_mismatch += b.nonfinite_mismatch;
  a.undefined += b.undefined;
  a.over_probabilistic += b.over_probabilistic;
  a.max_abs_err = std::fmax(a.max_abs_err, b.max_abs_err);
  a.max_rel_err = std::fmax(a.max_rel_err, b.max_rel_err);
  a.max_ulp = std::fmax(a.max_ulp, b.max_ulp);
  a.worst_ratio_prob = std::fmax(a.worst_ratio_prob, b.worst_ratio_prob);
  a.worst_ratio_acc = std::fmax(a.worst_ratio_acc, b.worst_ratio_acc);
  if (b.worst.index >= 0 && (a.worst.index < 0 || b.worst_ratio > a.worst_ratio)) {
    a.worst_ratio = b.worst_ratio;
    a.worst = b.worst;
    a.dominant = b.dominant;
  }
}

/// Elements per comparison range: ranges are merged in order, so the result is the same for
/// every thread count.
constexpr int64_t kRange = int64_t{1} << 16;

/// The comparison of n elements in ranges of kRange on `threads` threads: range(c, lo, hi) gives
/// one range's partial result; c carries name, dtype and dims.
template <class Range>
TensorComparison compare_in_ranges(std::string name, DType dtype, std::vector<int64_t> dims, int64_t n, int threads,
                                   const Range& range) {
  TensorComparison c;
  c.name = std::move(name);
  c.dtype = dtype;
  c.dims = std::move(dims);
  c.numel = n;
  const int64_t ranges = (n + kRange - 1) / kRange;
  std::vector<TensorComparison> part(static_cast<size_t>(ranges));
  parallel_for(ranges, threads, [&](int64_t k) {
    part[static_cast<size_t>(k)] = range(c, k * kRange, std::min(n, (k + 1) * kRange));
  });
  for (const auto& r : part) merge_range(c, r);
  c.pass = c.over_tolerance == 0 && c.nonfinite_mismatch == 0 && c.over_probabilistic == 0;
  c.warn = c.pass && c.worst_ratio_prob > 1;
  return c;
}

}  // namespace

TensorComparison compare_tensor(std::string name, DType dtype, std::vector<int64_t> dims,
                                const std::vector<double>& ref, const std::vector<double>& got,
                                const TensorBudget& budget, bool undefined_all, int threads) {
  const std::vector<double>& tol = *budget.worst_case;
  const std::vector<double>* prob = budget.probabilistic;
  auto at = [&](int64_t i, double& r, double& g, ElementBudget& eb) {
    r = ref[i];
    g = got[i];
    eb.tol = tol[i];
    eb.tol_prob = prob ? (*prob)[i] : 0;
    eb.term = budget.terms ? (*budget.terms)[i] : budget.term;
    eb.hull = half_ulp(dtype, r);
  };
  return compare_in_ranges(std::move(name), dtype, std::move(dims), static_cast<int64_t>(ref.size()), threads,
                           [&](const TensorComparison& c, int64_t lo, int64_t hi) {
                             return compare_range(c, prob != nullptr, undefined_all,
                                                  budget.nonfinite_reference_undefined, lo, hi, at);
                           });
}

TensorComparison compare_tensor(std::string name, const Tensor& got, const std::vector<double>& ref,
                                const ElementBudgets& budgets, bool nonfinite_reference_undefined, int threads) {
  return compare_in_ranges(
      std::move(name), got.dtype(), got.dims(), static_cast<int64_t>(ref.size()), threads,
      [&](const TensorComparison& c, int64_t lo, int64_t hi) {
        // Per thread, one range's values and budgets (kept between ranges: no allocation per range).
        thread_local std::vector<double> got_buf;
        thread_local std::vector<ElementBudget> budget_buf;
        got_buf.resize(static_cast<size_t>(kRange));
        budget_buf.resize(static_cast<size_t>(kRange));
        got.read(lo, hi, got_buf.data());
        budgets.fill(lo, hi, budget_buf.data());
        const double* gb = got_buf.data();
        const ElementBudget* bb = budget_buf.data();
        return compare_range(c, budgets.has_probabilistic(), false, nonfinite_reference_undefined, lo, hi,
                             [&](int64_t i, double& r, double& g, ElementBudget& eb) {
                               r = ref[i];
                               g = gb[i - lo];
                               eb = bb[i - lo];
                             });
      });
}

const std::vector<double>* Tolerances::of(std::string_view name) const {
  if (name == "y") return &y;
  if (name == "mean") return &mean;
  if (name == "variance" || name == "mean_square") return &variance;
  if (name == "inv_std" || name == "inv_rms") return &inv_std;
  if (name == "running_mean") return &running_mean;
  if (name == "running_var") return &running_var;
  if (name == "dx") return &dx;
  if (name == "dgamma") return &dgamma;
  if (name == "dbeta") return &dbeta;
  return nullptr;
}

namespace {

/// The model of one make_tolerances call: roundoff, depth, safety factor, λ (tolerance-model.md §1).
/// Worst case: s = 2, γ_k. Probabilistic: s = 1, γ̃_k with λ = sqrt(2·ln(2·h_max·N/p_fail)).
Model budget_model(const BudgetModel& model, DType sdt, double h_max, double checked) {
  Model md;
  md.profile = model.profile;
  md.u = model.profile.unit_roundoff(sdt);
  md.rho = model.profile.rsqrt_error;
  md.eta = 0.5 * (sdt == DType::f64 ? std::numeric_limits<double>::denorm_min()
                                    : static_cast<double>(std::numeric_limits<float>::denorm_min()));
  if (model.probabilistic) {
    md.s = 1;
    md.lambda = std::sqrt(2 * std::log(2 * std::max(h_max, 1.0) * checked / model.p_fail));
  }
  return md;
}

/// The case's sizes: m elements per reduction set, n_aff per gamma entry (the dgamma/dbeta sums).
struct Sizes {
  double m, n_aff;
};
Sizes sizes_of(const Partition& part) {
  return {static_cast<double>(part.set_size),
          static_cast<double>(part.numel) / static_cast<double>(std::max<int64_t>(part.num_affine, 1))};
}

/// The longest reduction's depth under the declared order (§1).
double max_depth(const Problem& p, const BudgetModel& model, DType sdt, Sizes z) {
  const double u = model.profile.unit_roundoff(sdt);
  return std::max(model.profile.depth(z.m, u), is_backward(p.pass) ? model.profile.depth(z.n_aff, u) : 0.0);
}

/// The budget model of a case: budget_model at the case's h_max and element count.
Model case_model(const Problem& p, const Partition& part, const BudgetModel& model) {
  const DType sdt = stats_dtype(p.dtype);
  return budget_model(model, sdt, max_depth(p, model, sdt, sizes_of(part)), static_cast<double>(part.numel));
}

/// Certifiability (§1): false, with the reason, when (h_max + 4)·u > 0.05.
void check_certifiable(const Problem& p, const Model& md, const BudgetModel& model, DType sdt, Sizes z,
                       Tolerances& t) {
  const double u = md.u, h_max = max_depth(p, model, sdt, z);
  if ((h_max + 4) * u > 0.05) {
    t.certifiable = false;
    t.not_certifiable_reason = fmt::format(
        "{} sums of {} terms in {} have depth h = {:.0f}: (h + 4)·u = {:.3g} > 0.05, so no first-order error "
        "bound holds at this size (tolerance-model.md §1)",
        to_string(md.profile.summation), static_cast<int64_t>(std::max(z.m, is_backward(p.pass) ? z.n_aff : 0.0)),
        model.profile.accumulation ? to_string(*model.profile.accumulation) : to_string(sdt), h_max, (h_max + 4) * u);
  }
}

/// The bounds of every set's computed statistics in the compared batch (§2.1–2.3).
std::vector<SetBounds> all_set_bounds(const Partition& part, const ReferenceResult& ref, const Model& md) {
  const SetStats& st = ref.batch_stats.back();
  const double m = static_cast<double>(part.set_size);
  std::vector<SetBounds> bounds(part.num_sets);
  for (int64_t s = 0; s < part.num_sets; ++s)
    bounds[s] = set_bounds(md, part.subtract_mean, m, st.mean[s], st.variance[s], st.inv_std[s], st.mean_abs[s],
                           st.max_abs[s]);
  return bounds;
}

/// Bounds on the running statistics after the training steps (§2.7), per channel:
/// e_k = (1−f)·e_{k−1} + A_k. Empty unless the case is batch_norm with running statistics.
struct RunningErrors {
  std::vector<double> e_rm, e_rv;
};
RunningErrors running_errors(const Problem& p, const Partition& part, const ReferenceInputs& in,
                             const ReferenceResult& ref, const Model& md) {
  RunningErrors e;
  if (p.op != Op::batch_norm || in.running_mean.empty()) return e;
  const double u = md.u, m = static_cast<double>(part.set_size);
  const size_t n_train = p.pass == Pass::forward_training ? in.batches.size()
                         : p.pass == Pass::forward_inference ? in.batches.size() - 1 : 0;
  const double bessel = in.running_var_unbiased && m > 1 ? m / (m - 1) : 1;
  e.e_rm.assign(part.num_sets, 0.0);
  e.e_rv.assign(part.num_sets, 0.0);
  for (int64_t c = 0; c < part.num_sets; ++c) {
    double rm_mag = std::fabs(in.running_mean[c]), rv_mag = std::fabs(in.running_var[c]);
    for (size_t k = 0; k < n_train; ++k) {
      const double f = in.weight_of_step(k);
      const SetStats& sk = ref.batch_stats[k];
      const SetBounds bk = set_bounds(md, true, m, sk.mean[c], sk.variance[c], sk.inv_std[c], sk.mean_abs[c],
                                      sk.max_abs[c]);
      rm_mag = std::fmax(rm_mag, std::fabs(sk.mean[c]));
      rv_mag = std::fmax(rv_mag, sk.variance[c] * bessel);
      e.e_rm[c] = (1 - f) * e.e_rm[c] + f * bk.e_mean + 3 * u * rm_mag;
      e.e_rv[c] = (1 - f) * e.e_rv[c] + f * bessel * bk.d_var + 3 * u * rv_mag;
    }
  }
  return e;
}

/// The running statistics' tolerances, when the case outputs them.
void running_stat_tolerances(const Partition& part, const ReferenceResult& ref, const RunningErrors& e, DType sdt,
                             double safety, Tolerances& t) {
  if (ref.running_mean.empty() || e.e_rm.empty()) return;
  t.running_mean.resize(part.num_sets);
  t.running_var.resize(part.num_sets);
  for (int64_t c = 0; c < part.num_sets; ++c) {
    t.running_mean[c] = safety * e.e_rm[c] + half_ulp(sdt, ref.running_mean[c]);
    t.running_var[c] = safety * e.e_rv[c] + half_ulp(sdt, ref.running_var[c]);
  }
}

/// The saved statistics' tolerances (forward_training), per set.
void stat_tolerances(const Partition& part, const ReferenceResult& ref, const std::vector<SetBounds>& bounds,
                     DType sdt, double safety, Tolerances& t) {
  const SetStats& st = ref.batch_stats.back();
  t.mean.resize(part.num_sets);
  t.variance.resize(part.num_sets);
  t.inv_std.resize(part.num_sets);
  for (int64_t s = 0; s < part.num_sets; ++s) {
    t.mean[s] = safety * bounds[s].e_mean + half_ulp(sdt, st.mean[s]);
    t.variance[s] = safety * bounds[s].d_var + half_ulp(sdt, st.variance[s]);
    t.inv_std[s] = safety * bounds[s].delta_r * st.inv_std[s] + half_ulp(sdt, st.inv_std[s]);
  }
}

/// A backend keeping gamma, beta and the saved statistics in the 16-bit data dtype dt
/// (PrecisionProfile::params_in_data_dtype) rounds γ and β to dt on the way in, and mean,
/// variance and 1/σ on the way out, each by at most hu(v) = max(u_dt·|v|, half_ulp(dt, v)).
/// Each saved statistic moves by hu(value), added times the safety factor s. (y's share:
/// data_dtype_y_term.)
double hu_data(DType dt, double v) { return std::max(unit_roundoff(dt) * std::fabs(v), half_ulp(dt, v)); }

void add_data_dtype_stats(Tolerances& t, DType dt, const ReferenceResult& ref, double s) {
  const SetStats& st = ref.batch_stats.back();
  for (size_t k = 0; k < t.mean.size(); ++k) t.mean[k] += s * hu_data(dt, st.mean[k]);
  for (size_t k = 0; k < t.variance.size(); ++k) t.variance[k] += s * hu_data(dt, st.variance[k]);
  for (size_t k = 0; k < t.inv_std.size(); ++k) t.inv_std[k] += s * hu_data(dt, st.inv_std[k]);
}

/// y's share of the data-dtype parameters (see hu_data): y is budgeted for kernels that
/// normalise with the rounded statistics as well as for those that keep f32 ones: to first order,
/// y = γ̃·(x − μ̃)·r̃ + β̃ moves by at most |x̂|·hu(γ) + hu(β) + |γ|·r·hu(μ) + |γ·x̂|·hu(r)/r.
double data_dtype_y_term(DType dt, bool has_gamma, bool subtract_mean, double x, double mu, double r, double g,
                         double b) {
  const double xhat = (x - mu) * r;
  const double gamma_term = has_gamma ? std::fabs(xhat) * hu_data(dt, g) : 0.0;
  return gamma_term + (b != 0 ? hu_data(dt, b) : 0.0) + std::fabs(g) * r * (subtract_mean ? hu_data(dt, mu) : 0.0) +
         std::fabs(g * xhat) * hu_data(dt, r) / r;
}

/// The per-set constants of the y budget under one model (§2.4): the statistics the element
/// terms use, and their error bounds.
struct YSet {
  double mu, r, e_mu, delta_r;
};

std::vector<YSet> y_sets(const Problem& p, const Partition& part, const ReferenceInputs& in,
                         const ReferenceResult& ref, const Model& md) {
  const double u = md.u;
  const bool running = p.pass == Pass::forward_inference;
  const std::vector<SetBounds> bounds = all_set_bounds(part, ref, md);
  const RunningErrors e = running ? running_errors(p, part, in, ref, md) : RunningErrors{};
  const SetStats& st = ref.batch_stats.back();
  std::vector<YSet> out(part.num_sets);
  for (int64_t s = 0; s < part.num_sets; ++s) {
    if (running) {
      const double mu = ref.used_running_mean[s], v = ref.used_running_var[s];
      const double r = 1 / std::sqrt(v + in.eps);
      out[s] = {mu, r, e.e_rm[s] + u * std::fabs(mu), 0.5 * (e.e_rv[s] + u * v) * r * r + (md.rho + 1.5) * u};
    } else {
      out[s] = {st.mean[s], st.inv_std[s], bounds[s].e_mean, bounds[s].delta_r};
    }
  }
  return out;
}

/// The parts of one element's y budget that do not depend on the model's tier (§2.4):
/// |γ|·r, |γ|·|x̂| and the two element-wise terms. g_abs = |γ| (1 without affine), beta = β (0
/// without); mu and r are the same in both tiers.
struct YShared {
  double gr, gx, t2, t3;
};
inline YShared y_shared(const Model& md, const YSet& q, double x, double g_abs, double beta) {
  const double u = md.u, mu = q.mu, r = q.r;
  const double xhat = (x - mu) * r;
  const double gr = g_abs * r, gx = g_abs * std::fabs(xhat);
  return {gr, gx, gr * (2 * u * (std::fabs(x) + std::fabs(mu)) + 2 * md.eta), gx * 3 * u + u * std::fabs(beta)};
}

/// The y budget of one element under one tier: safety·(sum of the four terms) + ½ulp(y) (hull);
/// the largest term in *term when term is not null.
inline double y_budget(const Model& md, const YSet& q, const YShared& e, double hull, BudgetTerm* term) {
  const double t0 = e.gr * q.e_mu, t1 = e.gx * q.delta_r;
  if (term) {
    const double terms[] = {t0, t1, e.t2, e.t3};
    *term = static_cast<BudgetTerm>(std::max_element(std::begin(terms), std::end(terms)) - std::begin(terms));
  }
  return md.s * (t0 + t1 + e.t2 + e.t3) + hull;
}

/// The backward's per-set sums the dx budget needs (§2.6), divided by m: Σg, Σg·x̂, Σ|g|, Σ|g·x̂|,
/// Σ|g|·|x|, with g = dy·γ and x̂ = (x − μ)·r from the statistics the backend receives. Model-free.
struct DxSums {
  double mu, r, a, b, g1, gx, gxabs;
};

std::vector<DxSums> dx_sums(const Problem& p, const Partition& part, const ReferenceInputs& in,
                            const ReferenceResult& ref, int threads) {
  const bool global = p.pass == Pass::backward_inference;
  const SetStats& st = ref.batch_stats.back();
  const std::vector<double>& x = in.batches.back();
  const double m = static_cast<double>(part.set_size);
  std::vector<DxSums> out(part.num_sets);
  parallel_for(part.num_sets, threads, [&](int64_t s) {
    poll_interrupt();
    const double mu = global ? ref.used_running_mean[s] : st.mean[s];
    const double r = global ? 1 / std::sqrt(ref.used_running_var[s] + in.eps) : st.inv_std[s];
    double a = 0, b = 0, g1 = 0, gx = 0, gxabs = 0;
    if (!global)
      for_each_in_set(part, s, [&](int64_t i, int64_t j) {
        if ((i & 0xFFFFF) == 0) poll_interrupt();
        const double xhat = (x[i] - mu) * r, g = in.dy[i] * (in.gamma.empty() ? 1.0 : in.gamma[j]);
        a += g;
        b += g * xhat;
        g1 += std::fabs(g);
        gx += std::fabs(g * xhat);
        gxabs += std::fabs(g) * std::fabs(x[i]);
      });
    if (!part.subtract_mean) a = 0;
    out[s] = {mu, r, a / m, b / m, g1 / m, gx / m, gxabs / m};
  });
  return out;
}

/// The per-set constants of the dx budget under one model (§2.6).
struct DxSet {
  double mu, r, a, b, e_mu, da, db;
};

std::vector<DxSet> dx_sets(const Partition& part, const std::vector<DxSums>& sums, const Model& md) {
  const double u = md.u, delta_r = (md.rho + 2.5) * u, h = md.depth(static_cast<double>(part.set_size));
  std::vector<DxSet> out(sums.size());
  for (size_t s = 0; s < sums.size(); ++s) {
    const DxSums& q = sums[s];
    const double r = q.r, mu = q.mu, a = q.a, b = q.b;
    const double e_mu = u * std::fabs(mu);
    const double da = md.gam(h + 2) * q.g1;
    // x̂-form and x-form (dx = A·g + B·x + C) kernels alike: the latter adds γ_{h+3}·r(GX + |μ|G1).
    const double db = md.gam(h + 3) * q.gx + r * e_mu * std::fabs(a) + delta_r * std::fabs(b) +
                      md.gam(h + 3) * r * (q.gxabs + std::fabs(mu) * q.g1);
    out[s] = {mu, r, a, b, e_mu, da, db};
  }
  return out;
}

/// The parts of one element's dx budget (backward_training, §2.6) that do not depend on the tier:
/// |x̂| and the three element-wise terms of A after the set's D_a and D_b, and the output term.
struct DxShared {
  double r, axhat, p1, p2, p3, p4;
};
inline DxShared dx_shared(const Model& md, const DxSet& q, double x, double g, double ref_dx) {
  const double u = md.u, delta_r = (md.rho + 2.5) * u;
  const double r = q.r, mu = q.mu, b = q.b;
  const double xhat = (x - mu) * r;
  const double xi = r * q.e_mu + std::fabs(xhat) * (delta_r + 2 * u);
  return {r,
          std::fabs(xhat),
          std::fabs(b) * xi,
          2 * u * (std::fabs(g) + std::fabs(q.a) + std::fabs(xhat * b)),
          2 * u * r * std::fabs(b) * (std::fabs(x) + std::fabs(mu)),
          (delta_r + 2 * u) * std::fabs(ref_dx)};
}

/// The dx budget of one element of backward_training under one tier: safety·A + ½ulp(dx) (hull),
/// A = r·(D_a + |x̂|·D_b + |b|·ξ + 2u·(|g| + |a| + |x̂·b|) + 2u·r·|b|·(|x| + |μ|)) + (δ_r + 2u)·|dx|.
inline double dx_budget(const Model& md, const DxSet& q, const DxShared& e, double hull) {
  const double A = e.r * (q.da + e.axhat * q.db + e.p1 + e.p2 + e.p3) + e.p4;
  return md.s * A + hull;
}

/// The dx budget of one element of backward_inference (dx = γ·r·dy: element-wise).
double dx_inference_budget(const Model& md, double ref_dx, double hull) {
  const double u = md.u, delta_r = (md.rho + 2.5) * u;
  return md.s * std::fabs(ref_dx) * (delta_r + 3 * u) + hull;
}

}  // namespace

/// One model's per-set constants (y or dx) and the model itself.
struct ElementBudgets::Tier {
  Model md;
  std::vector<YSet> y;
  std::vector<DxSet> dx;
};

struct ElementBudgets::Impl {
  const Problem& p;
  const Partition& part;
  const ReferenceInputs& in;
  const ReferenceResult& ref;
  bool forward = true, data_dtype_params = false;
  std::vector<Tier> tiers;  ///< [0] worst case, [1] probabilistic (if asked for)

  void fill(int64_t lo, int64_t hi, ElementBudget* out) const;
};

ElementBudgets::ElementBudgets(const Problem& p, const Partition& part, const ReferenceInputs& in,
                               const ReferenceResult& ref, const BudgetModel& worst,
                               const BudgetModel* probabilistic)
    : impl_(std::make_unique<Impl>(Impl{p, part, in, ref, true, false, {}})) {
  Impl& im = *impl_;
  im.forward = !is_backward(p.pass);
  im.data_dtype_params = im.forward && worst.profile.params_in_data_dtype && p.dtype != stats_dtype(p.dtype);
  const std::vector<DxSums> sums = im.forward ? std::vector<DxSums>{} : dx_sums(p, part, in, ref, worst.threads);
  for (const BudgetModel* m : {&worst, probabilistic}) {
    if (!m) continue;
    Tier t{case_model(p, part, *m), {}, {}};
    if (im.forward) t.y = y_sets(p, part, in, ref, t.md);
    else t.dx = dx_sets(part, sums, t.md);
    im.tiers.push_back(std::move(t));
  }
}

ElementBudgets::~ElementBudgets() = default;

bool ElementBudgets::has_probabilistic() const { return impl_->tiers.size() > 1; }

void ElementBudgets::fill(int64_t lo, int64_t hi, ElementBudget* out) const { impl_->fill(lo, hi, out); }

void ElementBudgets::Impl::fill(int64_t lo, int64_t hi, ElementBudget* out) const {
  const std::vector<double>& x = in.batches.back();
  const DType dt = p.dtype;
  const bool has_gamma = !in.gamma.empty(), has_beta = !in.beta.empty() && part.has_beta;
  const Tier& w = tiers[0];
  const Tier* pr = tiers.size() > 1 ? &tiers[1] : nullptr;
  if (forward) {
    for_each_in_range(part, lo, hi, [&](int64_t i, int64_t s, int64_t j) {
      const double hull = half_ulp(dt, ref.y[i]);
      const double g = has_gamma ? in.gamma[j] : 1.0, beta = has_beta ? in.beta[j] : 0.0;
      ElementBudget& e = out[i - lo];
      const YShared sh = y_shared(w.md, w.y[s], x[i], std::fabs(g), beta);
      e.hull = hull;
      e.tol = y_budget(w.md, w.y[s], sh, hull, &e.term);
      e.tol_prob = pr ? y_budget(pr->md, pr->y[s], sh, hull, nullptr) : 0;
      if (data_dtype_params) {
        const YSet& q = w.y[s];
        const double extra = data_dtype_y_term(dt, has_gamma, part.subtract_mean, x[i], q.mu, q.r, g, beta);
        e.tol += w.md.s * extra;
        if (pr) e.tol_prob += pr->md.s * extra;
      }
    });
    return;
  }
  const bool inference = p.pass == Pass::backward_inference;
  for_each_in_range(part, lo, hi, [&](int64_t i, int64_t s, int64_t j) {
    const double hull = half_ulp(dt, ref.dx[i]);
    ElementBudget& e = out[i - lo];
    e.hull = hull;
    e.term = BudgetTerm::reduction;
    if (inference) {
      e.tol = dx_inference_budget(w.md, ref.dx[i], hull);
      e.tol_prob = pr ? dx_inference_budget(pr->md, ref.dx[i], hull) : 0;
      return;
    }
    const DxShared sh = dx_shared(w.md, w.dx[s], x[i], in.dy[i] * (has_gamma ? in.gamma[j] : 1.0), ref.dx[i]);
    e.tol = dx_budget(w.md, w.dx[s], sh, hull);
    e.tol_prob = pr ? dx_budget(pr->md, pr->dx[s], sh, hull) : 0;
  });
}

namespace {

/// Tolerances::y and y_terms (forward) or ::dx (backward) from ElementBudgets, range by range.
void materialize_element_tolerances(const Problem& p, const Partition& part, const ReferenceInputs& in,
                                    const ReferenceResult& ref, const BudgetModel& model, Tolerances& t) {
  const ElementBudgets eb(p, part, in, ref, model);
  const bool fwd = !is_backward(p.pass);
  std::vector<double>& tol = fwd ? t.y : t.dx;
  tol.resize(part.numel);
  if (fwd) t.y_terms.resize(part.numel);
  parallel_for((part.numel + kRange - 1) / kRange, model.threads, [&](int64_t k) {
    poll_interrupt();
    const int64_t lo = k * kRange, hi = std::min(part.numel, lo + kRange);
    std::vector<ElementBudget> buf(static_cast<size_t>(hi - lo));
    eb.fill(lo, hi, buf.data());
    for (int64_t i = lo; i < hi; ++i) {
      tol[i] = buf[i - lo].tol;
      if (fwd) t.y_terms[i] = buf[i - lo].term;
    }
  });
}

/// dgamma and dbeta budgets: sums over the n_aff elements sharing one affine index. The sets are
/// cut into at most kSetGroups groups of consecutive sets (a number that does not depend on the
/// thread count); each group's sums are taken on one thread, in increasing element order, and the
/// groups' sums are then added in group order, so the budgets are the same for every thread count.
constexpr int64_t kSetGroups = 32;

void affine_grad_tolerances(const Problem& p, const Partition& part, const ReferenceInputs& in,
                            const ReferenceResult& ref, const Model& md, DType sdt, double n_aff, int threads,
                            Tolerances& t) {
  const double u = md.u, safety = md.s;
  const double delta_r = (md.rho + 2.5) * u;
  const std::vector<double>& x = in.batches.back();
  const std::vector<double>& dy = in.dy;
  const bool global = p.pass == Pass::backward_inference;
  const SetStats& st = ref.batch_stats.back();
  const int64_t groups = std::min(part.num_sets, kSetGroups);
  const int64_t per_group = groups > 0 ? (part.num_sets + groups - 1) / groups : 0;
  const auto na = static_cast<size_t>(part.num_affine);
  // Per group: |dy·x̂|, the mean-rounding term r·E_μ'·|dy|, r·|dy|·(|x| + |μ|) and |dy|, by entry.
  std::vector<double> partial(static_cast<size_t>(groups) * 4 * na, 0.0);
  parallel_for(groups, threads, [&](int64_t g) {
    double* s_dyx = partial.data() + static_cast<size_t>(g) * 4 * na;
    double *s_dy = s_dyx + na, *s_xform = s_dy + na, *s_abs_dy = s_xform + na;
    for (int64_t s = g * per_group; s < std::min(part.num_sets, (g + 1) * per_group); ++s) {
      poll_interrupt();
      const double mu = global ? ref.used_running_mean[s] : st.mean[s];
      const double r = global ? 1 / std::sqrt(ref.used_running_var[s] + in.eps) : st.inv_std[s];
      const double amu = std::fabs(mu);
      for_each_in_set(part, s, [&](int64_t i, int64_t j) {
        const double xhat = (x[i] - mu) * r;
        s_dyx[j] += std::fabs(dy[i] * xhat);
        s_dy[j] += std::fabs(dy[i]) * r * u * amu;
        s_xform[j] += r * std::fabs(dy[i]) * (std::fabs(x[i]) + amu);
        s_abs_dy[j] += std::fabs(dy[i]);
      });
    }
  });
  std::vector<double> s_dyx(na, 0), s_dy(na, 0), s_xform(na, 0), s_abs_dy(na, 0);
  for (int64_t g = 0; g < groups; ++g) {
    const double* q = partial.data() + static_cast<size_t>(g) * 4 * na;
    for (size_t j = 0; j < na; ++j) {
      s_dyx[j] += q[j];
      s_dy[j] += q[na + j];
      s_xform[j] += q[2 * na + j];
      s_abs_dy[j] += q[3 * na + j];
    }
  }
  if (!ref.dgamma.empty()) {
    t.dgamma.resize(part.num_affine);
    for (int64_t j = 0; j < part.num_affine; ++j) {
      const double A = md.gam(md.depth(n_aff) + 2) * (s_dyx[j] + s_xform[j]) + s_dy[j] + (delta_r + 2 * u) * s_dyx[j];
      t.dgamma[j] = safety * A + half_ulp(sdt, ref.dgamma[j]);
    }
  }
  if (!ref.dbeta.empty()) {
    t.dbeta.resize(part.num_affine);
    for (int64_t j = 0; j < part.num_affine; ++j)
      t.dbeta[j] = safety * md.gam(md.depth(n_aff)) * s_abs_dy[j] + half_ulp(sdt, ref.dbeta[j]);
  }
}

}  // namespace

Tolerances make_tolerances(const Problem& p, const Partition& part, const ReferenceInputs& in,
                           const ReferenceResult& ref, const BudgetModel& model) {
  Tolerances t;
  // u is the roundoff of the arithmetic, not of the storage: f16/bf16 data are computed with f32
  // accumulation (tolerance-model.md §3.3), and their output rounding is the half-ulp term. A
  // profile that declares a 16-bit accumulator is budgeted with that accumulator's u.
  const DType dt = p.dtype, sdt = stats_dtype(p.dtype);
  const Model md = case_model(p, part, model);
  const Sizes z = sizes_of(part);
  check_certifiable(p, md, model, sdt, z, t);
  t.lambda = md.lambda;
  running_stat_tolerances(part, ref, running_errors(p, part, in, ref, md), sdt, md.s, t);
  if (model.per_element) materialize_element_tolerances(p, part, in, ref, model, t);
  if (!is_backward(p.pass)) {
    if (p.pass == Pass::forward_training) stat_tolerances(part, ref, all_set_bounds(part, ref, md), sdt, md.s, t);
    if (model.profile.params_in_data_dtype && dt != sdt) add_data_dtype_stats(t, dt, ref, md.s);
    return t;
  }
  // Backward (§2.6). The backend receives the exact statistics rounded to the stats dtype, so the
  // statistic errors it sees are one rounding: E_μ' = u|μ|, δ_r' = (ρ + 1.5)·u + u (r rounded or
  // recomputed from the rounded variance).
  affine_grad_tolerances(p, part, in, ref, md, sdt, z.n_aff, model.threads, t);
  return t;
}

namespace {

/// y against the prediction from the backend's saved statistics, range by range: read(lo, hi, out)
/// gives y's values of [lo, hi). The prediction and its budget are computed per range, in long
/// double, and never stored whole.
template <class ReadGot>
std::optional<TensorComparison> saved_statistics_comparison(const Problem& p, const Partition& part,
                                                            const ReferenceInputs& in, const SavedStatistics& saved,
                                                            const PrecisionProfile& profile, int threads,
                                                            const ReadGot& read) {
  const bool have_r = !saved.inv_std.empty() || !saved.variance.empty();
  if (p.pass != Pass::forward_training || !have_r || (part.subtract_mean && saved.mean.empty())) return std::nullopt;
  const DType sdt = stats_dtype(p.dtype);
  const double u = profile.unit_roundoff(sdt), rho = profile.rsqrt_error, s_safety = 2;
  const std::vector<double>& x = in.batches.back();
  std::vector<long double> mu(static_cast<size_t>(part.num_sets), 0), r(mu.size());
  for (int64_t s = 0; s < part.num_sets; ++s) {
    if (part.subtract_mean) mu[s] = saved.mean[s];
    r[s] = !saved.inv_std.empty() ? static_cast<long double>(saved.inv_std[s])
                                  : 1 / std::sqrt(static_cast<long double>(saved.variance[s]) + in.eps);
  }
  struct Element {
    double pred, tol, hull;
  };
  return compare_in_ranges(
      "y_vs_saved_stats", p.dtype, p.dims, part.numel, threads, [&](const TensorComparison& c, int64_t lo, int64_t hi) {
        thread_local std::vector<double> got;
        thread_local std::vector<Element> el;
        got.resize(static_cast<size_t>(kRange));
        el.resize(static_cast<size_t>(kRange));
        read(lo, hi, got.data());
        for_each_in_range(part, lo, hi, [&](int64_t i, int64_t s, int64_t j) {
          const long double g = in.gamma.empty() ? 1 : in.gamma[j];
          const long double b = in.beta.empty() || !part.has_beta ? 0 : in.beta[j];
          const long double xhat = (x[i] - mu[s]) * r[s];
          const double pred = static_cast<double>(g * xhat + b), hull = half_ulp(p.dtype, pred);
          const double a = static_cast<double>(2 * u * std::fabs(g) * r[s] * (std::fabs(x[i]) + std::fabs(mu[s])) +
                                               (rho + 4) * u * std::fabs(g * xhat) + 2 * u * std::fabs(b));
          el[i - lo] = {pred, std::isfinite(a) ? s_safety * a + hull : kInf, hull};
        });
        // Non-finite saved statistics are judged as themselves (non-finite predictions undefined).
        return compare_range(c, false, false, true, lo, hi, [&](int64_t i, double& ref, double& g, ElementBudget& eb) {
          const Element& e = el[i - lo];
          ref = e.pred;
          g = got[i - lo];
          eb = {e.tol, 0, BudgetTerm::element_rounding, e.hull};
        });
      });
}

}  // namespace

std::optional<TensorComparison> compare_with_saved_statistics(const Problem& p, const Partition& part,
                                                              const ReferenceInputs& in, const std::vector<double>& y,
                                                              const SavedStatistics& saved,
                                                              const PrecisionProfile& profile) {
  if (y.empty()) return std::nullopt;
  return saved_statistics_comparison(p, part, in, saved, profile, 1, [&](int64_t lo, int64_t hi, double* out) {
    std::copy(y.begin() + lo, y.begin() + hi, out);
  });
}

std::optional<TensorComparison> compare_with_saved_statistics(const Problem& p, const Partition& part,
                                                              const ReferenceInputs& in, const Tensor& y,
                                                              const SavedStatistics& saved,
                                                              const PrecisionProfile& profile, int threads) {
  if (y.empty()) return std::nullopt;
  return saved_statistics_comparison(p, part, in, saved, profile, threads,
                                     [&](int64_t lo, int64_t hi, double* out) { y.read(lo, hi, out); });
}

}  // namespace normcheck
