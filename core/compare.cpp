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
int64_t ordered_bits(DType t, double v) {
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

double ulp_distance(DType t, double a, double b) {
  if (std::isnan(a) || std::isnan(b) || std::isinf(a) || std::isinf(b))
    return (a == b || (std::isnan(a) && std::isnan(b))) ? 0 : kInf;
  return std::fabs(static_cast<double>(ordered_bits(t, a) - ordered_bits(t, b)));
}

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
/// element (the first with the largest ratio).
TensorComparison compare_range(const TensorComparison& shape, const std::vector<double>& ref,
                               const std::vector<double>& got, const TensorBudget& budget, bool undefined_all,
                               int64_t lo, int64_t hi) {
  TensorComparison c;
  c.dtype = shape.dtype;
  const DType dtype = shape.dtype;
  const std::vector<double>& tol = *budget.worst_case;
  auto term_of = [&](int64_t i) { return budget.terms ? (*budget.terms)[i] : budget.term; };
  for (int64_t i = lo; i < hi; ++i) {
    if ((i & 0xfffff) == 0) poll_interrupt();  // Ctrl-C honoured within ~1e6 elements
    const double r = ref[i], g = got[i];
    if (undefined_all || (budget.nonfinite_reference_undefined && !std::isfinite(r))) {
      ++c.undefined;
      continue;
    }
    double ratio;
    double err = std::fabs(g - r);
    if (!std::isfinite(r) || !std::isfinite(g)) {
      const bool same = (std::isnan(r) && std::isnan(g)) || (std::isinf(r) && (r == g || std::isnan(g)));
      if (!same) ++c.nonfinite_mismatch;
      ratio = same ? 0 : kInf;
      err = same ? 0 : kInf;
      if (!same) c.worst_ratio_prob = c.worst_ratio_acc = kInf;
    } else {
      ratio = tol[i] > 0 ? err / tol[i] : (err > 0 ? kInf : 0);
      if (err > tol[i]) ++c.over_tolerance;
      c.max_abs_err = max_of(c.max_abs_err, err);
      if (r != 0) c.max_rel_err = max_of(c.max_rel_err, err / std::fabs(r));
      if (budget.probabilistic) {
        const double tp = (*budget.probabilistic)[i];
        const double rp = tp > 0 ? err / tp : (err > 0 ? kInf : 0);
        c.worst_ratio_prob = max_of(c.worst_ratio_prob, rp);
        if (rp > kProbabilisticFailFactor && err <= tol[i]) ++c.over_probabilistic;
      }
      const double hull = half_ulp(dtype, r), rest = tol[i] - hull;
      const double acc = max_of(0.0, err - hull);
      c.worst_ratio_acc = max_of(c.worst_ratio_acc, rest > 0 ? acc / rest : (acc > 0 ? kInf : 0));
    }
    c.max_ulp = max_of(c.max_ulp, ulp_distance(dtype, r, g));
    if (c.worst.index < 0 || ratio > c.worst_ratio) {
      c.worst_ratio = ratio;
      c.worst = {i, coords_of(i, shape.dims), g, r, err, tol[i]};
      // The output rounding dominates where it is at least half of the tolerance.
      c.dominant = std::isfinite(r) && 2 * half_ulp(dtype, r) >= tol[i] ? BudgetTerm::output_rounding : term_of(i);
    }
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

}  // namespace

TensorComparison compare_tensor(std::string name, DType dtype, std::vector<int64_t> dims,
                                const std::vector<double>& ref, const std::vector<double>& got,
                                const TensorBudget& budget, bool undefined_all, int threads) {
  TensorComparison c;
  c.name = std::move(name);
  c.dtype = dtype;
  c.dims = std::move(dims);
  c.numel = static_cast<int64_t>(ref.size());
  // Ranges of 2^16 elements, merged in order: identical for every thread count.
  constexpr int64_t kRange = int64_t{1} << 16;
  const int64_t ranges = (c.numel + kRange - 1) / kRange;
  std::vector<TensorComparison> part(static_cast<size_t>(ranges));
  parallel_for(ranges, threads, [&](int64_t k) {
    part[static_cast<size_t>(k)] =
        compare_range(c, ref, got, budget, undefined_all, k * kRange, std::min(c.numel, (k + 1) * kRange));
  });
  for (const auto& r : part) merge_range(c, r);
  c.pass = c.over_tolerance == 0 && c.nonfinite_mismatch == 0 && c.over_probabilistic == 0;
  c.warn = c.pass && c.worst_ratio_prob > 1;
  return c;
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

/// Forward budgets of a backend keeping gamma, beta and the saved statistics in the 16-bit data
/// dtype dt (PrecisionProfile::params_in_data_dtype). It rounds γ and β to dt on the way in, and
/// mean, variance and 1/σ on the way out, each by at most hu(v) = max(u_dt·|v|, half_ulp(dt, v)).
/// y is budgeted for kernels that normalise with the rounded statistics as well as for those
/// that keep f32 ones: to first order, y = γ̃·(x − μ̃)·r̃ + β̃ moves by at most
///   |x̂|·hu(γ) + hu(β) + |γ|·r·hu(μ) + |γ·x̂|·hu(r)/r,
/// and each saved statistic by hu(value). Both are added, times the safety factor s.
void add_data_dtype_params(Tolerances& t, const Problem& p, const Partition& part, const ReferenceInputs& in,
                           const ReferenceResult& ref, double s) {
  const DType dt = p.dtype;
  const double ud = unit_roundoff(dt);
  auto hu = [&](double v) { return std::max(ud * std::fabs(v), half_ulp(dt, v)); };
  const bool running = p.pass == Pass::forward_inference;
  const SetStats& st = ref.batch_stats.back();
  const std::vector<double>& x = in.batches.back();
  for (int64_t i = 0; i < part.numel; ++i) {
    const int64_t k = part.set_of(i);
    const double mu = running ? ref.used_running_mean[k] : st.mean[k];
    const double r = running ? 1 / std::sqrt(ref.used_running_var[k] + in.eps) : st.inv_std[k];
    const double g = in.gamma.empty() ? 1.0 : in.gamma[part.affine_of(i)];
    const double b = in.beta.empty() || !part.has_beta ? 0.0 : in.beta[part.affine_of(i)];
    const double xhat = (x[i] - mu) * r;
    const double gamma_term = in.gamma.empty() ? 0.0 : std::fabs(xhat) * hu(g);
    t.y[i] += s * (gamma_term + (b != 0 ? hu(b) : 0.0) + std::fabs(g) * r * (part.subtract_mean ? hu(mu) : 0.0) +
                   std::fabs(g * xhat) * hu(r) / r);
  }
  for (size_t k = 0; k < t.mean.size(); ++k) t.mean[k] += s * hu(st.mean[k]);
  for (size_t k = 0; k < t.variance.size(); ++k) t.variance[k] += s * hu(st.variance[k]);
  for (size_t k = 0; k < t.inv_std.size(); ++k) t.inv_std[k] += s * hu(st.inv_std[k]);
}

}  // namespace

namespace {

/// The model of one make_tolerances call: roundoff, depth, safety factor, λ (tolerance-model.md §1).
Model budget_model(const BudgetModel& model, DType sdt) {
  Model md;
  md.profile = model.profile;
  md.u = model.profile.unit_roundoff(sdt);
  md.rho = model.profile.rsqrt_error;
  md.eta = 0.5 * (sdt == DType::f64 ? std::numeric_limits<double>::denorm_min()
                                    : static_cast<double>(std::numeric_limits<float>::denorm_min()));
  return md;
}

/// Certifiability (§1): the longest reduction of the case under the declared order; sets
/// t.certifiable / not_certifiable_reason. Returns the depth h_max.
double check_certifiable(const Problem& p, const Model& md, const BudgetModel& model, DType sdt, double m,
                         double n_aff, Tolerances& t) {
  const double u = md.u;
  const double h_max = std::max(md.depth(m), is_backward(p.pass) ? md.depth(n_aff) : 0.0);
  if ((h_max + 4) * u > 0.05) {
    t.certifiable = false;
    t.not_certifiable_reason = fmt::format(
        "{} sums of {} terms in {} have depth h = {:.0f}: (h + 4)·u = {:.3g} > 0.05, so no first-order error "
        "bound holds at this size (tolerance-model.md §1)",
        to_string(md.profile.summation), static_cast<int64_t>(std::max(m, is_backward(p.pass) ? n_aff : 0.0)),
        model.profile.accumulation ? to_string(*model.profile.accumulation) : to_string(sdt), h_max, (h_max + 4) * u);
  }
  return h_max;
}

/// Bounds on the running statistics after the training steps (§2.7): e_k = (1−f)·e_{k−1} + A_k,
/// per channel in *e_rm, *e_rv; and their tolerances when the case outputs them.
void running_stat_tolerances(const Problem& p, const Partition& part, const ReferenceInputs& in,
                             const ReferenceResult& ref, const Model& md, DType sdt, double m, double safety,
                             std::vector<double>& e_rm, std::vector<double>& e_rv, Tolerances& t) {
  if (p.op != Op::batch_norm || in.running_mean.empty()) return;
  const double u = md.u;
  const size_t n_train = p.pass == Pass::forward_training ? in.batches.size()
                         : p.pass == Pass::forward_inference ? in.batches.size() - 1 : 0;
  const double bessel = in.running_var_unbiased && m > 1 ? m / (m - 1) : 1;
  e_rm.assign(part.num_sets, 0.0);
  e_rv.assign(part.num_sets, 0.0);
  for (int64_t c = 0; c < part.num_sets; ++c) {
    double rm_mag = std::fabs(in.running_mean[c]), rv_mag = std::fabs(in.running_var[c]);
    for (size_t k = 0; k < n_train; ++k) {
      const double f = in.weight_of_step(k);
      const SetStats& sk = ref.batch_stats[k];
      const SetBounds bk = set_bounds(md, true, m, sk.mean[c], sk.variance[c], sk.inv_std[c], sk.mean_abs[c],
                                      sk.max_abs[c]);
      rm_mag = std::fmax(rm_mag, std::fabs(sk.mean[c]));
      rv_mag = std::fmax(rv_mag, sk.variance[c] * bessel);
      e_rm[c] = (1 - f) * e_rm[c] + f * bk.e_mean + 3 * u * rm_mag;
      e_rv[c] = (1 - f) * e_rv[c] + f * bessel * bk.d_var + 3 * u * rv_mag;
    }
  }
  if (ref.running_mean.empty()) return;
  t.running_mean.resize(part.num_sets);
  t.running_var.resize(part.num_sets);
  for (int64_t c = 0; c < part.num_sets; ++c) {
    t.running_mean[c] = safety * e_rm[c] + half_ulp(sdt, ref.running_mean[c]);
    t.running_var[c] = safety * e_rv[c] + half_ulp(sdt, ref.running_var[c]);
  }
}

/// Forward budgets (§2.4): y per element, term by term (the largest reported as the dominant
/// one), and the saved statistics per set.
void forward_tolerances(const Problem& p, const Partition& part, const ReferenceInputs& in,
                        const ReferenceResult& ref, const Model& md, const std::vector<SetBounds>& bounds,
                        const std::vector<double>& e_rm, const std::vector<double>& e_rv, double safety, int threads,
                        Tolerances& t) {
  const double u = md.u;
  const DType dt = p.dtype, sdt = stats_dtype(p.dtype);
  const bool running = p.pass == Pass::forward_inference;
  const std::vector<double>& x = in.batches.back();
  const SetStats& st = ref.batch_stats.back();
  t.y.resize(part.numel);
  t.y_terms.resize(part.numel);
  parallel_for(part.num_sets, threads, [&](int64_t s) {  // each set writes its own elements
    poll_interrupt();
    double mu, r, e_mu, delta_r;
    if (running) {
      mu = ref.used_running_mean[s];
      const double v = ref.used_running_var[s];
      r = 1 / std::sqrt(v + in.eps);
      e_mu = e_rm[s] + u * std::fabs(mu);
      delta_r = 0.5 * (e_rv[s] + u * v) * r * r + (md.rho + 1.5) * u;
    } else {
      mu = st.mean[s];
      r = st.inv_std[s];
      e_mu = bounds[s].e_mean;
      delta_r = bounds[s].delta_r;
    }
    for_each_in_set(part, s, [&](int64_t i, int64_t j) {
      if ((i & 0xFFFFF) == 0) poll_interrupt();  // a set of 10^8 elements still stops within ~1 s
      const double g = in.gamma.empty() ? 1.0 : std::fabs(in.gamma[j]);
      const double beta = in.beta.empty() || !part.has_beta ? 0.0 : in.beta[j];
      const double xhat = (x[i] - mu) * r;
      const double terms[] = {g * r * e_mu, g * std::fabs(xhat) * delta_r,
                              g * r * (2 * u * (std::fabs(x[i]) + std::fabs(mu)) + 2 * md.eta),
                              g * std::fabs(xhat) * 3 * u + u * std::fabs(beta)};
      const double a = terms[0] + terms[1] + terms[2] + terms[3];
      t.y[i] = safety * a + half_ulp(dt, ref.y[i]);
      t.y_terms[i] = static_cast<BudgetTerm>(std::max_element(std::begin(terms), std::end(terms)) - std::begin(terms));
    });
  });
  if (p.pass != Pass::forward_training) return;
  t.mean.resize(part.num_sets);
  t.variance.resize(part.num_sets);
  t.inv_std.resize(part.num_sets);
  for (int64_t s = 0; s < part.num_sets; ++s) {
    t.mean[s] = safety * bounds[s].e_mean + half_ulp(sdt, st.mean[s]);
    t.variance[s] = safety * bounds[s].d_var + half_ulp(sdt, st.variance[s]);
    t.inv_std[s] = safety * bounds[s].delta_r * st.inv_std[s] + half_ulp(sdt, st.inv_std[s]);
  }
}

/// The statistics the backward's backend receives (exact ones rounded to the stats dtype).
struct BackwardStats {
  std::vector<double> mu, r;     ///< per set
  std::vector<double> xhat, g;   ///< per element: (x − μ)·r and dy·γ
};

BackwardStats backward_stats(const Problem& p, const Partition& part, const ReferenceInputs& in,
                             const ReferenceResult& ref, int threads) {
  const bool global = p.pass == Pass::backward_inference;
  const SetStats& st = ref.batch_stats.back();
  const std::vector<double>& x = in.batches.back();
  BackwardStats b;
  b.mu.resize(part.num_sets);
  b.r.resize(part.num_sets);
  for (int64_t s = 0; s < part.num_sets; ++s) {
    b.mu[s] = global ? ref.used_running_mean[s] : st.mean[s];
    b.r[s] = global ? 1 / std::sqrt(ref.used_running_var[s] + in.eps) : st.inv_std[s];
  }
  b.xhat.resize(part.numel);
  b.g.resize(part.numel);
  parallel_for(part.num_sets, threads, [&](int64_t s) {
    poll_interrupt();
    for_each_in_set(part, s, [&](int64_t i, int64_t j) {
      if ((i & 0xFFFFF) == 0) poll_interrupt();
      b.xhat[i] = (x[i] - b.mu[s]) * b.r[s];
      b.g[i] = in.dy[i] * (in.gamma.empty() ? 1.0 : in.gamma[j]);
    });
  });
  return b;
}

/// dx budgets (§2.6).
void dx_tolerances(const Problem& p, const Partition& part, const ReferenceInputs& in, const ReferenceResult& ref,
                   const Model& md, const BackwardStats& bs, double m, double safety, int threads, Tolerances& t) {
  const double u = md.u;
  const DType dt = p.dtype;
  const double delta_r = (md.rho + 2.5) * u;
  const std::vector<double>& x = in.batches.back();
  const std::vector<double>&xhat = bs.xhat, &g = bs.g;
  t.dx.resize(part.numel);
  if (p.pass == Pass::backward_inference) {
    for (int64_t i = 0; i < part.numel; ++i)
      t.dx[i] = safety * std::fabs(ref.dx[i]) * (delta_r + 3 * u) + half_ulp(dt, ref.dx[i]);
    return;
  }
  const double h = md.depth(m);
  parallel_for(part.num_sets, threads, [&](int64_t s) {  // each set writes its own elements
    poll_interrupt();
    double a = 0, b = 0, g1 = 0, gx = 0, gxabs = 0;
    for_each_in_set(part, s, [&](int64_t i, int64_t) {
      a += g[i];
      b += g[i] * xhat[i];
      g1 += std::fabs(g[i]);
      gx += std::fabs(g[i] * xhat[i]);
      gxabs += std::fabs(g[i]) * std::fabs(x[i]);
    });
    if (!part.subtract_mean) a = 0;
    a /= m, b /= m, g1 /= m, gx /= m, gxabs /= m;
    const double r = bs.r[s], mu = bs.mu[s];
    const double e_mu = u * std::fabs(mu);
    const double da = md.gam(h + 2) * g1;
    // x̂-form and x-form (dx = A·g + B·x + C) kernels alike: the latter adds γ_{h+3}·r(GX + |μ|G1).
    const double db = md.gam(h + 3) * gx + r * e_mu * std::fabs(a) + delta_r * std::fabs(b) +
                      md.gam(h + 3) * r * (gxabs + std::fabs(mu) * g1);
    for_each_in_set(part, s, [&](int64_t i, int64_t) {
      if ((i & 0xFFFFF) == 0) poll_interrupt();
      const double xi = r * e_mu + std::fabs(xhat[i]) * (delta_r + 2 * u);
      const double A = r * (da + std::fabs(xhat[i]) * db + std::fabs(b) * xi +
                            2 * u * (std::fabs(g[i]) + std::fabs(a) + std::fabs(xhat[i] * b)) +
                            2 * u * r * std::fabs(b) * (std::fabs(x[i]) + std::fabs(mu))) +
                       (delta_r + 2 * u) * std::fabs(ref.dx[i]);
      t.dx[i] = safety * A + half_ulp(dt, ref.dx[i]);
    });
  });
}

/// dgamma and dbeta budgets: sums over the n_aff elements sharing one affine index. Every
/// entry's terms are added in increasing element order (sets in order, each set's elements in
/// order: for every op the elements of one gamma entry then come in increasing index).
void affine_grad_tolerances(const Partition& part, const ReferenceInputs& in, const ReferenceResult& ref,
                            const Model& md, const BackwardStats& bs, DType sdt, double n_aff, double safety,
                            Tolerances& t) {
  const double u = md.u;
  const double delta_r = (md.rho + 2.5) * u;
  const std::vector<double>& x = in.batches.back();
  const std::vector<double>& dy = in.dy;
  std::vector<double> s_dyx(part.num_affine, 0), s_dy(part.num_affine, 0), s_xform(part.num_affine, 0),
      s_abs_dy(part.num_affine, 0);
  for (int64_t s = 0; s < part.num_sets; ++s) {
    poll_interrupt();
    const double r = bs.r[s], amu = std::fabs(bs.mu[s]);
    for_each_in_set(part, s, [&](int64_t i, int64_t j) {
      s_dyx[j] += std::fabs(dy[i] * bs.xhat[i]);
      s_dy[j] += std::fabs(dy[i]) * r * u * amu;  // mean-rounding term r·E_μ'·|dy|
      s_xform[j] += r * std::fabs(dy[i]) * (std::fabs(x[i]) + amu);
      s_abs_dy[j] += std::fabs(dy[i]);
    });
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
  Model md = budget_model(model, sdt);
  const double m = static_cast<double>(part.set_size);
  // Elements per gamma entry: the length of the dgamma/dbeta sums.
  const double n_aff = static_cast<double>(part.numel) / static_cast<double>(std::max<int64_t>(part.num_affine, 1));
  const double h_max = check_certifiable(p, md, model, sdt, m, n_aff, t);
  if (model.probabilistic) {
    md.s = 1;
    const double checked = static_cast<double>(part.numel);
    md.lambda = std::sqrt(2 * std::log(2 * std::max(h_max, 1.0) * checked / model.p_fail));
    t.lambda = md.lambda;
  }
  const double safety = md.s;
  const SetStats& st = ref.batch_stats.back();
  std::vector<SetBounds> bounds(part.num_sets);
  for (int64_t s = 0; s < part.num_sets; ++s)
    bounds[s] = set_bounds(md, part.subtract_mean, m, st.mean[s], st.variance[s], st.inv_std[s], st.mean_abs[s],
                           st.max_abs[s]);
  std::vector<double> e_rm, e_rv;
  running_stat_tolerances(p, part, in, ref, md, sdt, m, safety, e_rm, e_rv, t);
  if (!is_backward(p.pass)) {
    forward_tolerances(p, part, in, ref, md, bounds, e_rm, e_rv, safety, model.threads, t);
    if (model.profile.params_in_data_dtype && dt != sdt) add_data_dtype_params(t, p, part, in, ref, safety);
    return t;
  }
  // Backward (§2.6). The backend receives the exact statistics rounded to the stats dtype, so the
  // statistic errors it sees are one rounding: E_μ' = u|μ|, δ_r' = (ρ + 1.5)·u + u (r rounded or
  // recomputed from the rounded variance).
  const BackwardStats bs = backward_stats(p, part, in, ref, model.threads);
  dx_tolerances(p, part, in, ref, md, bs, m, safety, model.threads, t);
  affine_grad_tolerances(part, in, ref, md, bs, sdt, n_aff, safety, t);
  return t;
}

std::optional<TensorComparison> compare_with_saved_statistics(const Problem& p, const Partition& part,
                                                              const ReferenceInputs& in, const std::vector<double>& y,
                                                              const SavedStatistics& saved,
                                                              const PrecisionProfile& profile) {
  const bool have_r = !saved.inv_std.empty() || !saved.variance.empty();
  if (p.pass != Pass::forward_training || y.empty() || !have_r || (part.subtract_mean && saved.mean.empty()))
    return std::nullopt;
  const DType sdt = stats_dtype(p.dtype);
  const double u = profile.unit_roundoff(sdt), rho = profile.rsqrt_error, s_safety = 2;
  const std::vector<double>& x = in.batches.back();
  std::vector<long double> mu(static_cast<size_t>(part.num_sets), 0), r(mu.size());
  for (int64_t s = 0; s < part.num_sets; ++s) {
    if (part.subtract_mean) mu[s] = saved.mean[s];
    r[s] = !saved.inv_std.empty() ? static_cast<long double>(saved.inv_std[s])
                                  : 1 / std::sqrt(static_cast<long double>(saved.variance[s]) + in.eps);
  }
  std::vector<double> pred(y.size()), tol(y.size());
  for (int64_t i = 0; i < part.numel; ++i) {
    const int64_t s = part.set_of(i), j = part.affine_of(i);
    const long double g = in.gamma.empty() ? 1 : in.gamma[j];
    const long double b = in.beta.empty() || !part.has_beta ? 0 : in.beta[j];
    const long double xhat = (x[i] - mu[s]) * r[s];
    pred[i] = static_cast<double>(g * xhat + b);
    const double a = static_cast<double>(2 * u * std::fabs(g) * r[s] * (std::fabs(x[i]) + std::fabs(mu[s])) +
                                         (rho + 4) * u * std::fabs(g * xhat) + 2 * u * std::fabs(b));
    tol[i] = std::isfinite(a) ? s_safety * a + half_ulp(p.dtype, pred[i]) : kInf;
  }
  TensorBudget budget{&tol, nullptr, nullptr, BudgetTerm::element_rounding};
  budget.nonfinite_reference_undefined = true;  // non-finite saved statistics are judged as themselves
  return compare_tensor("y_vs_saved_stats", p.dtype, p.dims, pred, y, budget);
}

}  // namespace normcheck
