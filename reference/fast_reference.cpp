// The fast exact reference. Formulas: include/normcheck/reference.hpp; design, error bounds and
// proofs: docs/reference.md.
//
// Per reduction set s of m elements, with exact sums S1 = Σx, S2 = Σx² (rms_norm: μ = 0):
//   μ = S1/m,  v = S2/m − μ²  (biased),  B = v + eps,  r = 1/√B            (exact rationals but r)
// and per element, with g = dy·γ:
//   y  = β + γ·(x − μ)·r
//   dx = (g − a − (x − μ)·c)·r,  a = Σg/m (0 for rms_norm),  c = (Σg·x − μ·Σg)/(m·B)
//        (backward_inference: μ, B from the running statistics and a = c = 0)
//   dgamma[j] = Σ_cells (Σdy·x − μ·Σdy)·r over the cells (set s ∩ entry j),  dbeta[j] = Σdy
// Each is correctly rounded: double-double with an error bound first (dd.hpp), then MPFR
// intervals at growing precision (exact_scalars.hpp), then exact rational arithmetic where the
// value is rational (B a rational square).
#include <algorithm>
#include <atomic>
#include <bit>
#include <cstdint>
#include <cmath>
#include <exception>
#include <limits>
#include <mutex>
#include <thread>

#include "dd.hpp"
#include "exact_scalars.hpp"
#include "fast_kernels.hpp"
#include "normcheck/error.hpp"
#include "normcheck/exact_sum.hpp"
#include "normcheck/interrupt.hpp"
#include "normcheck/memory.hpp"
#include "normcheck/parallel.hpp"
#include "normcheck/reference.hpp"

namespace normcheck {
namespace {

using dd::DD;
using exact::DDValue;
using exact::Interval;
constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

// ---------------------------------------------------------------------------------------------
// Per-set normalization scalars: μ and B = v + eps exact, r = 1/√B as a double-double.

struct Norm {
  bool special = false;     ///< non-finite data, B = 0, or a NaN running statistic: IEEE double path
  double mean_d = 0, r_d = 0;  ///< the special path's μ and r (IEEE arithmetic, as the slow reference)
  mpq_class mu, B;
  DDValue mu_dd, r_dd;
  bool fast = true;  ///< the double-double scalars are within range
};

Norm make_norm(const mpq_class& mu, const mpq_class& B) {
  Norm n;
  n.mu = mu;
  n.B = B;
  if (sgn(B) == 0) {  // eps = 0 on a zero-variance set: r = +inf, x̂ = 0·inf = NaN
    n.special = true;
    n.mean_d = exact::round_rational(mu);
    n.r_d = INFINITY;
    return n;
  }
  n.mu_dd = exact::to_dd(mu);
  n.r_dd = exact::inv_sqrt_dd(B);
  n.fast = n.mu_dd.ok && n.r_dd.ok;
  return n;
}

Norm special_norm(double mean, double r) {
  Norm n;
  n.special = true;
  n.mean_d = mean;
  n.r_d = r;
  return n;
}

// ---------------------------------------------------------------------------------------------
// Batch statistics: exact S1, S2, Σ|x| per set.

struct SetExact {
  bool finite = true;
  mpq_class mu, var;  ///< exact mean (0 for rms_norm) and biased variance (rms_norm: mean square)
};

struct BatchExact {
  std::vector<SetExact> sets;
};

/// Empties a per-thread buffer that an interrupted set (poll_interrupt) may have left holding terms.
void discard(ExactSumBuffer& b) {
  ExactSum sink;
  b.flush_into(sink);
}

/// True when v is 0 or has at most 26 significant bits and |v| ∈ [2^-500, 2^500]: then the
/// product of two such values is exact in double (f32, f16 and bf16 data).
inline bool short_significand(double v) {
  const auto bits = std::bit_cast<std::uint64_t>(v);
  const auto e = static_cast<int>((bits >> 52) & 0x7FF);
  return (bits & ((std::uint64_t{1} << 27) - 1)) == 0 && ((e >= 523 && e <= 1523) || v == 0);
}

/// True when v is 0 or |v| ∈ [2^-300, 2^300]: a product of three such values neither overflows
/// nor underflows, so TwoProduct of two of them by the third is exact.
inline bool moderate(double v) {
  const double a = std::fabs(v);
  return a == 0 || (a >= 0x1p-300 && a <= 0x1p300);
}

/// Accumulates the exact sums of set s of x and fills its row of `out`.
SetExact set_statistics(const Partition& part, const std::vector<double>& x, int64_t s, double eps,
                        SetStats& out) {
  ExactSum s1, s2, sabs;
  // Neal's large accumulators in front (one bucket add per term), one set per thread at a time.
  thread_local ExactSumBuffer b1, b2;
  discard(b1), discard(b2);  // left over by an interrupted set, if any
  double max_abs = 0;
  bool nan = false;
  // Σx² as Σ fl(x·x) while every x has at most 26 significant bits and |x| ∈ [2^-500, 2^500]
  // (then x·x is exact in double: f32, f16 and bf16 data); otherwise again as exact products.
  bool squares_exact = true;
  part.sets.for_each_run(s, [&](int64_t first, int64_t len) {
    const double* p = x.data() + first;
    for (int64_t k = 0; k < len; ++k) {
      if ((k & 0xFFFFF) == 0xFFFFF) poll_interrupt();
      const double v = p[k], a = std::fabs(v);
      b1.add(v);  // Σ|x| comes from the same (per-sign) buckets at the flush
      b2.add(v * v);
      squares_exact &= short_significand(v);
      nan |= v != v;
      max_abs = a > max_abs ? a : max_abs;
    }
  });
  b1.flush_into(s1, sabs);  // true: b1 holds no products
  b2.flush_into(s2);
  if (!squares_exact) {
    s2.clear();
    part.sets.for_each_run(s, [&](int64_t first, int64_t len) {
      for (int64_t k = first; k < first + len; ++k) s2.add_product(x[k], x[k]);
    });
  }
  const auto m = static_cast<double>(part.set_size);
  const auto si = static_cast<size_t>(s);
  SetExact e;
  out.max_abs[si] = nan ? kNaN : max_abs;
  if (s1.has_nan() || s1.has_pos_inf() || s1.has_neg_inf()) {
    // As the slow reference: μ = Σx/m (±inf or NaN), then (x − μ)² makes the variance NaN;
    // rms_norm: the mean square is Σx²/m (+inf or NaN).
    e.finite = false;
    out.mean[si] = part.subtract_mean ? s1.round() / m : 0.0;
    out.variance[si] = part.subtract_mean ? kNaN : s2.round() / m;
    out.inv_std[si] = 1 / std::sqrt(out.variance[si] + eps);
    out.mean_abs[si] = sabs.round() / m;
    return e;
  }
  const mpq_class mq(static_cast<unsigned long>(part.set_size));
  const mpq_class q1 = exact::to_rational(s1), q2 = exact::to_rational(s2);
  if (part.subtract_mean) e.mu = q1 / mq;
  e.var = q2 / mq - e.mu * e.mu;
  out.mean[si] = exact::round_rational(e.mu);
  out.variance[si] = exact::round_rational(e.var);
  const mpq_class B = e.var + mpq_class(eps);
  out.inv_std[si] = sgn(B) == 0 ? INFINITY : exact::round_inv_sqrt(B);
  out.mean_abs[si] = exact::round_rational(exact::to_rational(sabs) / mq);
  return e;
}

BatchExact batch_statistics(const Partition& part, const std::vector<double>& x, double eps, int threads,
                            SetStats& out) {
  const auto n = static_cast<size_t>(part.num_sets);
  for (auto* v : {&out.mean, &out.variance, &out.inv_std, &out.mean_abs, &out.max_abs}) v->assign(n, 0.0);
  BatchExact b;
  b.sets.resize(n);
  parallel_for(part.num_sets, threads, [&](int64_t s) {
    poll_interrupt();
    b.sets[static_cast<size_t>(s)] = set_statistics(part, x, s, eps, out);
  });
  return b;
}

// ---------------------------------------------------------------------------------------------
// Running statistics (batch_norm training steps), exact rationals; a NaN or inf makes a channel
// follow IEEE double arithmetic from then on, as the slow reference does.

struct Running {
  std::vector<mpq_class> value;
  std::vector<double> ieee;   ///< the IEEE value of a channel that turned non-finite
  std::vector<char> is_exact;
  void init(const std::vector<double>& v) {
    value.assign(v.size(), mpq_class(0));
    ieee = v;
    is_exact.assign(v.size(), 0);
    for (size_t c = 0; c < v.size(); ++c)
      if (std::isfinite(v[c])) value[c] = mpq_class(v[c]), is_exact[c] = 1;
  }
  double rounded(size_t c) const { return is_exact[c] ? exact::round_rational(value[c]) : ieee[c]; }
  /// value ← (1 − f)·value + f·batch: exact when both are (batch non-null), else in IEEE
  /// arithmetic on non-finite values, where double and the slow reference's arithmetic agree.
  void update(size_t c, double f, const mpq_class* batch, double batch_d) {
    if (is_exact[c] && batch) {
      const mpq_class fq(f);
      value[c] = (1 - fq) * value[c] + fq * *batch;
      return;
    }
    const double next = (1 - f) * rounded(c) + f * batch_d;
    if (std::isfinite(next)) throw Error("reference: a non-finite running statistic became finite (internal error)");
    is_exact[c] = 0;
    ieee[c] = next;
  }
};

// ---------------------------------------------------------------------------------------------
// Per-element outputs.

/// d = x − μ as a double-double, with |d − exact| ≤ *err. False when out of the bounds' range.
bool centered(double x, const DDValue& mu, DD* d, double* err) {
  const DD s = dd::two_sum(x, -mu.hi);
  const double t = s.lo - mu.lo;
  *d = dd::two_sum(s.hi, t);
  *err = mu.err + 0x1p-53 * std::fabs(t);
  return dd::in_range(d->hi) && dd::in_range(d->lo);
}

/// y = β + γ·(x − μ)·r by the bound of docs/reference.md §3.1; NaN when undecided.
double y_fast(double x, double g, double b, const Norm& n) {
  DD d;
  double ed;
  if (!centered(x, n.mu_dd, &d, &ed)) return kNaN;
  const DD r{n.r_dd.hi, n.r_dd.lo};
  const DD xh = dd::mul(d, r);
  const double axh = std::fabs(xh.hi);
  const double ex = 7 * dd::kU2 * axh + ed * (std::fabs(r.hi) + n.r_dd.err) + std::fabs(d.hi) * 1.0000001 * n.r_dd.err;
  const DD w = dd::mul(xh, g);
  const DD y = dd::add(w, b);
  if (!dd::in_range(xh.hi) || !dd::in_range(w.hi) || !dd::in_range(y.hi) || !dd::in_range(y.lo)) return kNaN;
  const double err = 2 * (std::fabs(g) * ex + 2 * dd::kU2 * std::fabs(w.hi) + 2 * dd::kU2 * std::fabs(y.hi));
  return dd::decide(y, err);
}

double y_slow(double x, double g, double b, const Norm& n) {
  auto eval = [&](Interval& v, mpfr_prec_t prec) {
    Interval t(prec);
    v.set(x);
    t.set(n.mu);
    v.sub(t);
    t.set(n.B);
    t.sqrt();
    if (!v.div(t)) mpfr_set_nan(v.lo);
    t.set(g);
    v.mul(t);
    t.set(b);
    v.add(t);
  };
  if (auto d = exact::ziv_round(eval)) return *d;
  mpq_class root;
  if (exact::rational_sqrt(n.B, &root))
    return exact::round_rational(mpq_class(b) + mpq_class(g) * (mpq_class(x) - n.mu) / root);
  throw Error("reference: the rounding of y could not be decided at 8192 bits");
}

double y_special(double x, double g, double b, const Norm& n) { return g * ((x - n.mean_d) * n.r_d) + b; }

double y_element(double x, double g, double b, const Norm& n) {
  if (n.special) return y_special(x, g, b, n);
  if (n.fast) {
    const double v = y_fast(x, g, b, n);
    if (!std::isnan(v)) return v;
  }
  return y_slow(x, g, b, n);
}

/// Backward coefficients of one set: a = Σg/m, c = (Σg·x − μ·Σg)/(m·B), exact and as dd.
struct BackCoef {
  mpq_class a, c;
  DDValue a_dd, c_dd;
  bool fast = true;
};

/// dx = (g − a − (x − μ)·c)·r, docs/reference.md §3.2; NaN when undecided.
double dx_fast(double x, double dy, double gm, const Norm& n, const BackCoef& k) {
  DD d;
  double ed;
  if (!centered(x, n.mu_dd, &d, &ed)) return kNaN;
  const DD g = dd::two_prod(dy, gm);  // exact
  if (!dd::in_range(g.hi) || !dd::in_range(g.lo)) return kNaN;
  const DD c{k.c_dd.hi, k.c_dd.lo};
  const DD dc = dd::mul(d, c);
  const double edc = 7 * dd::kU2 * std::fabs(dc.hi) + ed * (std::fabs(c.hi) + k.c_dd.err) +
                     std::fabs(d.hi) * 1.0000001 * k.c_dd.err;
  const DD ga = dd::add(g, DD{-k.a_dd.hi, -k.a_dd.lo});
  const DD num = dd::add(ga, dd::neg(dc));
  const double en = k.a_dd.err + edc + 3.01 * dd::kU2 * (std::fabs(ga.hi) + std::fabs(num.hi));
  const DD r{n.r_dd.hi, n.r_dd.lo};
  const DD out = dd::mul(num, r);
  if (!dd::in_range(dc.hi) || !dd::in_range(ga.hi) || !dd::in_range(num.hi) || !dd::in_range(out.hi) ||
      !dd::in_range(out.lo))
    return kNaN;
  const double err =
      2 * (7 * dd::kU2 * std::fabs(out.hi) + en * (std::fabs(r.hi) + n.r_dd.err) + std::fabs(num.hi) * 1.0000001 * n.r_dd.err);
  return dd::decide(out, err);
}

double dx_slow(double x, double dy, double gm, const Norm& n, const BackCoef& k) {
  auto eval = [&](Interval& v, mpfr_prec_t prec) {
    Interval t(prec);
    v.set(x);  // (x − μ)·c
    t.set(n.mu);
    v.sub(t);
    t.set(k.c);
    v.mul(t);
    Interval g(prec);  // g − a − (x − μ)·c
    g.set(dy);
    t.set(gm);
    g.mul(t);
    t.set(k.a);
    g.sub(t);
    g.sub(v);
    t.set(n.B);
    t.sqrt();
    if (!g.div(t)) mpfr_set_nan(g.lo);
    v.set(g);
  };
  if (auto d = exact::ziv_round(eval)) return *d;
  mpq_class root;
  if (exact::rational_sqrt(n.B, &root)) {
    const mpq_class num = mpq_class(dy) * mpq_class(gm) - k.a - (mpq_class(x) - n.mu) * k.c;
    return exact::round_rational(num / root);
  }
  throw Error("reference: the rounding of dx could not be decided at 8192 bits");
}

// ---------------------------------------------------------------------------------------------

// ---------------------------------------------------------------------------------------------
// Vectorized element-wise passes (fast_kernels.hpp): a run of elements at a time, NaN where a
// kernel does not decide, then those elements through y_element / dx_element above.

using kernels::Approx;
constexpr Approx kUnavailable{kNaN, kNaN, kNaN};  ///< makes every kernel answer NaN (undecided)

Approx approx(const DDValue& v) { return {v.hi, v.lo, v.err}; }

/// Per-set scalars for the kernels; kUnavailable where a set takes the element-wise path
/// (non-finite data, out-of-range scalars).
struct SetScalars {
  std::vector<Approx> mu, r, a, c;
};

template <bool kFma, bool kSetStep, bool kAffStep>
[[gnu::always_inline]] inline void y_run(const double* x, const double* g, const double* b, const Approx* mu,
                                         const Approx* r, int64_t n, double* y) {
  for (int64_t k = 0; k < n; ++k) {
    const int64_t s = kSetStep ? k : 0, j = kAffStep ? k : 0;
    y[k] = kernels::y_element<kFma>(x[k], g[j], b[j], mu[s], r[s]);
  }
}

template <bool kFma, bool kSetStep, bool kAffStep>
[[gnu::always_inline]] inline void dx_run(const double* x, const double* dy, const double* g, const Approx* mu,
                                          const Approx* r, const Approx* a, const Approx* c, int64_t n, double* dx) {
  for (int64_t k = 0; k < n; ++k) {
    const int64_t s = kSetStep ? k : 0, j = kAffStep ? k : 0;
    dx[k] = kernels::dx_element<kFma>(x[k], dy[k], g[j], mu[s], r[s], a[s], c[s]);
  }
}

/// Per-column running sums of LayerNorm / RMSNorm dgamma (g*) and dbeta (b*): high part, low
/// part, error bound (column_row).
struct ColumnSums {
  double* gh;
  double* gl;
  double* ge;
  double* bh;
  double* bl;
  double* be;
};

/// One row of LayerNorm / RMSNorm dgamma and dbeta terms over columns [0, n): cascaded sums
/// (TwoSum of the high parts, the low parts summed) with their error bounds, docs/reference.md §3.4.
template <bool kFma>
[[gnu::always_inline]] inline void column_row(const double* __restrict x, const double* __restrict dy, const Approx& mu,
                                              const Approx& r, int64_t n, double* __restrict gh, double* __restrict gl,
                                              double* __restrict ge, double* __restrict bh, double* __restrict bl,
                                              double* __restrict be) {
  const Approx m = mu, q = r;
  for (int64_t k = 0; k < n; ++k) {
    double th, tl, te, e, e2;
    kernels::dgamma_term<kFma>(x[k], dy[k], m, q, th, tl, te);
    kernels::two_sum(gh[k], th, gh[k], e);
    const double v = e + tl, l = gl[k] + v;
    gl[k] = l;
    ge[k] += te + kernels::kU * (std::fabs(v) + std::fabs(l));
    kernels::two_sum(bh[k], dy[k], bh[k], e2);
    const double lb = bl[k] + e2;
    bl[k] = lb;
    be[k] += kernels::kU * std::fabs(lb);
  }
}

using YRun = void (*)(const double*, const double*, const double*, const Approx*, const Approx*, int64_t, double*);
using DxRun = void (*)(const double*, const double*, const double*, const Approx*, const Approx*, const Approx*,
                       const Approx*, int64_t, double*);
using ColumnRow = void (*)(const double*, const double*, const Approx&, const Approx&, int64_t, double*, double*, double*,
                           double*, double*, double*);

template <bool kSetStep, bool kAffStep>
void y_run_portable(const double* x, const double* g, const double* b, const Approx* mu, const Approx* r, int64_t n,
                    double* y) {
  y_run<false, kSetStep, kAffStep>(x, g, b, mu, r, n, y);
}
template <bool kSetStep, bool kAffStep>
void dx_run_portable(const double* x, const double* dy, const double* g, const Approx* mu, const Approx* r,
                     const Approx* a, const Approx* c, int64_t n, double* dx) {
  dx_run<false, kSetStep, kAffStep>(x, dy, g, mu, r, a, c, n, dx);
}
void column_row_portable(const double* x, const double* dy, const Approx& mu, const Approx& r, int64_t n, double* gh,
                         double* gl, double* ge, double* bh, double* bl, double* be) {
  column_row<false>(x, dy, mu, r, n, gh, gl, ge, bh, bl, be);
}

#if defined(__x86_64__) && defined(__GNUC__)
#define NORMCHECK_HAVE_FMA_KERNELS 1
// The same loops compiled for AVX2 + FMA (the kernels' always_inline bodies take the caller's
// target); chosen at run time only where the CPU has both.
template <bool kSetStep, bool kAffStep>
[[gnu::target("avx2,fma")]] void y_run_fma(const double* x, const double* g, const double* b, const Approx* mu,
                                           const Approx* r, int64_t n, double* y) {
  y_run<true, kSetStep, kAffStep>(x, g, b, mu, r, n, y);
}
template <bool kSetStep, bool kAffStep>
[[gnu::target("avx2,fma")]] void dx_run_fma(const double* x, const double* dy, const double* g, const Approx* mu,
                                            const Approx* r, const Approx* a, const Approx* c, int64_t n, double* dx) {
  dx_run<true, kSetStep, kAffStep>(x, dy, g, mu, r, a, c, n, dx);
}
[[gnu::target("avx2,fma")]] void column_row_fma(const double* x, const double* dy, const Approx& mu, const Approx& r,
                                                int64_t n, double* gh, double* gl, double* ge, double* bh, double* bl,
                                                double* be) {
  column_row<true>(x, dy, mu, r, n, gh, gl, ge, bh, bl, be);
}
#endif

/// The kernels in use, indexed [set_step][affine_step].
struct KernelTable {
  YRun y[2][2];
  DxRun dx[2][2];
  ColumnRow column;
  bool fma;
};

constexpr KernelTable kPortable{{{y_run_portable<false, false>, y_run_portable<false, true>},
                                 {y_run_portable<true, false>, y_run_portable<true, true>}},
                                {{dx_run_portable<false, false>, dx_run_portable<false, true>},
                                 {dx_run_portable<true, false>, dx_run_portable<true, true>}},
                                column_row_portable,
                                false};
#ifdef NORMCHECK_HAVE_FMA_KERNELS
constexpr KernelTable kFmaKernels{{{y_run_fma<false, false>, y_run_fma<false, true>},
                                   {y_run_fma<true, false>, y_run_fma<true, true>}},
                                  {{dx_run_fma<false, false>, dx_run_fma<false, true>},
                                   {dx_run_fma<true, false>, dx_run_fma<true, true>}},
                                  column_row_fma,
                                  true};
#endif

std::atomic<KernelIsa> g_isa{KernelIsa::automatic};

const KernelTable& kernel_table() {
#ifdef NORMCHECK_HAVE_FMA_KERNELS
  static const bool cpu_has_fma = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  if (cpu_has_fma && g_isa.load(std::memory_order_relaxed) == KernelIsa::automatic) return kFmaKernels;
#endif
  return kPortable;
}

// ---------------------------------------------------------------------------------------------

struct Inputs {
  const Problem& p;
  const Partition& part;
  const ReferenceInputs& in;
  int threads;
  bool affine() const { return !in.gamma.empty(); }
  /// Batch/instance/group norm: gamma is constant on runs of spatial elements, so dgamma is a
  /// sum over (set, channel) cells; layer_norm / rms_norm: over the rows, per element.
  bool by_cells() const { return p.op != Op::layer_norm && p.op != Op::rms_norm; }
  /// gamma / beta of entry j (1 and 0 without affine; beta 0 for rms_norm).
  double gamma_at(int64_t j) const { return affine() ? in.gamma[static_cast<size_t>(j)] : 1.0; }
  double beta_at(int64_t j) const { return affine() && part.has_beta ? in.beta[static_cast<size_t>(j)] : 0.0; }
};

/// gamma and beta as the kernels read them: entry j of the arrays (beta all 0 for rms_norm), or
/// the constants 1 and 0 without affine (then every segment reads them with affine_step false).
struct AffineRows {
  explicit AffineRows(const Inputs& a) : affine_(a.affine()) {
    if (affine_ && !a.part.has_beta) zeros_.assign(a.in.gamma.size(), 0.0);
    g_ = affine_ ? a.in.gamma.data() : &one_;
    b_ = !affine_ ? &zero_ : a.part.has_beta ? a.in.beta.data() : zeros_.data();
  }
  const double* gamma(int64_t j) const { return affine_ ? g_ + j : g_; }
  const double* beta(int64_t j) const { return affine_ ? b_ + j : b_; }

 private:
  bool affine_;
  double one_ = 1.0, zero_ = 0.0;
  std::vector<double> zeros_;
  const double* g_;
  const double* b_;
};

/// The kernels' per-set scalars from the exact ones (coef: the backward's a, c, or null).
SetScalars set_scalars(const std::vector<Norm>& norm, const std::vector<const BackCoef*>* coef) {
  SetScalars sc;
  const size_t n = norm.size();
  sc.mu.assign(n, kUnavailable);
  sc.r.assign(n, kUnavailable);
  if (coef) sc.a.assign(n, kUnavailable), sc.c.assign(n, kUnavailable);
  for (size_t s = 0; s < n; ++s) {
    const Norm& k = norm[s];
    if (k.special || !k.fast) continue;
    if (coef && !(*coef)[s]->fast) continue;
    sc.mu[s] = approx(k.mu_dd);
    sc.r[s] = approx(k.r_dd);
    if (coef) sc.a[s] = approx((*coef)[s]->a_dd), sc.c[s] = approx((*coef)[s]->c_dd);
  }
  return sc;
}

/// Calls f(i, n, s, set_step, j, affine_step) for consecutive segments [i, i + n) of [lo, hi)
/// (logical order) on which the reduction set is s + k·set_step and the gamma/beta entry
/// j + k·affine_step for k < n: every op's partition has one of these forms (partition.hpp).
template <class F>
void for_each_segment(const Partition& part, int64_t lo, int64_t hi, const F& f) {
  const StridedSets &S = part.sets, &A = part.affine;
  for (int64_t i = lo; i < hi;) {
    const int64_t s = S.of(i), j = A.of(i);
    int64_t n = hi - i;
    n = std::min(n, S.div == 1 ? S.count - s : S.div - i % S.div);
    n = std::min(n, A.div == 1 ? A.count - j : A.div - i % A.div);
    f(i, n, s, S.div == 1, j, A.div == 1);
    i += n;
  }
}

/// Elements per task of the element-wise passes (and per interrupt poll).
constexpr int64_t kChunk = int64_t{1} << 15;

std::vector<double> forward_y(const Inputs& a, const std::vector<double>& x, const std::vector<Norm>& norm) {
  const SetScalars sc = set_scalars(norm, nullptr);
  const AffineRows ar(a);
  const KernelTable& kt = kernel_table();
  std::vector<double> y;
  assign_large(y, x.size());
  const auto numel = static_cast<int64_t>(x.size());
  parallel_for((numel + kChunk - 1) / kChunk, a.threads, [&](int64_t c) {
    poll_interrupt();
    const int64_t lo = c * kChunk, hi = std::min(numel, lo + kChunk);
    for_each_segment(a.part, lo, hi, [&](int64_t i, int64_t n, int64_t s, bool ss, int64_t j, bool as) {
      const bool step = as && a.affine();
      kt.y[ss][step](x.data() + i, ar.gamma(j), ar.beta(j), &sc.mu[static_cast<size_t>(s)],
                     &sc.r[static_cast<size_t>(s)], n, y.data() + i);
    });
    for (int64_t i = lo; i < hi; ++i)  // undecided: the element-wise path
      if (std::isnan(y[static_cast<size_t>(i)])) {
        const int64_t j = a.part.affine_of(i);
        y[static_cast<size_t>(i)] = y_element(x[i], a.gamma_at(j), a.beta_at(j), norm[static_cast<size_t>(a.part.set_of(i))]);
      }
  });
  return y;
}

Norm batch_norm_scalars(const SetExact& e, const SetStats& st, size_t s, double eps) {
  if (!e.finite) return special_norm(st.mean[s], st.inv_std[s]);
  return make_norm(e.mu, e.var + mpq_class(eps));
}

// ---------------------------------------------------------------------------------------------
// Backward.

/// One cell: the elements of set s that share gamma entry j (batch/instance/group norm), with
/// the exact Σdy·x and Σdy over it.
struct Cell {
  int64_t set = 0, entry = 0;
  mpq_class sum_dy_x, sum_dy;
};

struct SetBackward {
  BackCoef coef;
  std::vector<Cell> cells;  ///< empty for layer_norm / rms_norm (entries vary per element)
};

/// The exact sums of set s the backward needs, and its coefficients a, c.
SetBackward set_backward(const Inputs& a, const std::vector<double>& x, int64_t s, const Norm& n, bool global) {
  const Partition& part = a.part;
  const std::vector<double>& dy = a.in.dy;
  SetBackward out;
  mpq_class sg, sgx;  // Σg, Σg·x with g = dy·γ
  const int64_t seg = part.affine.run_len;
  if (a.by_cells()) {  // batch/instance/group norm: gamma is constant on runs of `seg` elements
    ExactSum sdx, sd;
    thread_local ExactSumBuffer bdx, bd;
    discard(bdx), discard(bd);
    int64_t cur = -1;
    auto flush = [&] {
      if (cur < 0) return;
      bdx.flush_into(sdx);
      bd.flush_into(sd);
      Cell c{s, cur, exact::to_rational(sdx), exact::to_rational(sd)};
      const mpq_class gq(a.affine() ? a.in.gamma[static_cast<size_t>(cur)] : 1.0);
      sg += gq * c.sum_dy;
      sgx += gq * c.sum_dy_x;
      out.cells.push_back(std::move(c));
      sdx.clear();
      sd.clear();
    };
    part.sets.for_each_run(s, [&](int64_t first, int64_t len) {
      for (int64_t b = first; b < first + len; b += seg) {
        const int64_t j = part.affine_of(b);
        if (j != cur) flush(), cur = j;
        for (int64_t i = b; i < b + seg; ++i) {
          if (short_significand(dy[i]) && short_significand(x[i])) bdx.add(dy[i] * x[i]);  // exact
          else sdx.add_product(dy[i], x[i]);
          bd.add(dy[i]);
        }
      }
    });
    flush();
  } else {
    ExactSum s1, s2;
    thread_local ExactSumBuffer b1, b2;
    discard(b1), discard(b2);
    for_each_in_set(part, s, [&](int64_t i, int64_t j) {
      const double g = a.gamma_at(j);
      if (short_significand(dy[i]) && short_significand(g) && moderate(dy[i]) && moderate(g) && moderate(x[i])) {
        const double p = dy[i] * g;             // exact: two significands of ≤ 26 bits
        const DD px = dd::two_prod(p, x[i]);    // exact: no overflow or underflow in range
        b1.add(p);
        b2.add(px.hi);
        b2.add(px.lo);
      } else {
        s1.add_product(dy[i], g);
        s2.add_product(dy[i], g, x[i]);
      }
    });
    b1.flush_into(s1);
    b2.flush_into(s2);
    if (!s1.has_nan() && !s1.has_pos_inf() && !s1.has_neg_inf()) sg = exact::to_rational(s1);
    if (!s2.has_nan() && !s2.has_pos_inf() && !s2.has_neg_inf()) sgx = exact::to_rational(s2);
  }
  if (global || n.special) return out;  // a = c = 0 (inference); special sets take the IEEE path
  const mpq_class m(static_cast<unsigned long>(part.set_size));
  if (part.subtract_mean) out.coef.a = sg / m;
  out.coef.c = (sgx - n.mu * sg) / (m * n.B);
  out.coef.a_dd = exact::to_dd(out.coef.a);
  out.coef.c_dd = exact::to_dd(out.coef.c);
  out.coef.fast = out.coef.a_dd.ok && out.coef.c_dd.ok;
  return out;
}

double dx_element(double x, double dy, double gm, const Norm& n, const BackCoef& k, bool global) {
  if (n.special) return global ? gm * n.r_d * dy : kNaN;
  if (n.fast && k.fast) {
    const double v = dx_fast(x, dy, gm, n, k);
    if (!std::isnan(v)) return v;
  }
  return dx_slow(x, dy, gm, n, k);
}

/// dgamma[j] = Σ over the cells of entry j of (Σdy·x − μ·Σdy)/√B, correctly rounded.
double dgamma_of_cells(const std::vector<const Cell*>& cells, const std::vector<Norm>& norm) {
  double ieee = 0;  // contributions of special sets: 0 or NaN (IEEE, as the slow reference)
  bool any_exact = false, all_zero = true;
  std::vector<mpq_class> num(cells.size());
  for (size_t k = 0; k < cells.size(); ++k) {
    const Norm& n = norm[static_cast<size_t>(cells[k]->set)];
    if (n.special) {
      ieee += n.r_d * (mpq_class(cells[k]->sum_dy_x - n.mean_d * cells[k]->sum_dy)).get_d();
      continue;
    }
    num[k] = cells[k]->sum_dy_x - n.mu * cells[k]->sum_dy;
    any_exact = true;
    all_zero &= sgn(num[k]) == 0;
  }
  if (!any_exact || all_zero || std::isnan(ieee)) return ieee + 0.0;
  auto eval = [&](Interval& v, mpfr_prec_t prec) {
    Interval t(prec), b(prec);
    v.set(ieee);
    for (size_t k = 0; k < cells.size(); ++k) {
      const Norm& n = norm[static_cast<size_t>(cells[k]->set)];
      if (n.special) continue;
      t.set(num[k]);
      b.set(n.B);
      b.sqrt();
      if (!t.div(b)) mpfr_set_nan(t.lo);
      v.add(t);
    }
  };
  if (auto d = exact::ziv_round(eval)) return *d;
  mpq_class root;
  if (cells.size() == 1 && exact::rational_sqrt(norm[static_cast<size_t>(cells[0]->set)].B, &root))
    return exact::round_rational(num[0] / root);
  throw Error("reference: the rounding of dgamma could not be decided at 8192 bits");
}

/// dgamma and dbeta of batch/instance/group norm from the cells.
void affine_grads_from_cells(const Inputs& a, const std::vector<SetBackward>& sb, const std::vector<Norm>& norm,
                             ReferenceResult& res) {
  std::vector<std::vector<const Cell*>> of(static_cast<size_t>(a.part.num_affine));
  for (const auto& s : sb)
    for (const auto& c : s.cells) of[static_cast<size_t>(c.entry)].push_back(&c);
  res.dgamma.assign(of.size(), 0.0);
  if (a.part.has_beta) res.dbeta.assign(of.size(), 0.0);
  parallel_for(static_cast<int64_t>(of.size()), a.threads, [&](int64_t j) {
    poll_interrupt();
    const auto& cells = of[static_cast<size_t>(j)];
    res.dgamma[static_cast<size_t>(j)] = dgamma_of_cells(cells, norm);
    if (a.part.has_beta) {
      mpq_class sum;
      for (const Cell* c : cells) sum += c->sum_dy;
      res.dbeta[static_cast<size_t>(j)] = exact::round_rational(sum);
    }
  });
}

/// One column of layer_norm / rms_norm dgamma: Σ_rows dy·(x − μ_row)·r_row, docs/reference.md §3.3.
struct Column {
  ExactSum sum, dbeta;
  double err = 0;
  bool slow = false;
};

void column_term(Column& col, double x, double dy, const Norm& n) {
  col.dbeta.add(dy);
  if (n.special) {
    col.sum.add(dy * ((x - n.mean_d) * n.r_d));
    return;
  }
  DD d;
  double ed;
  if (!n.fast || !centered(x, n.mu_dd, &d, &ed)) {
    col.slow = true;
    return;
  }
  const DD r{n.r_dd.hi, n.r_dd.lo};
  const DD xh = dd::mul(d, r);
  const double ex = 7 * dd::kU2 * std::fabs(xh.hi) + ed * (std::fabs(r.hi) + n.r_dd.err) +
                    std::fabs(d.hi) * 1.0000001 * n.r_dd.err;
  const DD t = dd::mul(xh, dy);
  if (!dd::in_range(xh.hi) || !dd::in_range(t.hi) || !dd::in_range(t.lo)) {
    col.slow = true;
    return;
  }
  col.sum.add(t.hi);
  col.sum.add(t.lo);
  col.err += 2 * (std::fabs(dy) * ex + 2 * dd::kU2 * std::fabs(t.hi));
}

double column_slow(const Inputs& a, const std::vector<double>& x, int64_t j, const std::vector<Norm>& norm) {
  const StridedSets& aff = a.part.affine;
  const std::vector<double>& dy = a.in.dy;
  double ieee = 0;
  bool all_zero = true;
  for (int64_t k = 0; k < aff.size(); ++k) {
    const int64_t i = aff.member(j, k);
    const Norm& n = norm[static_cast<size_t>(a.part.set_of(i))];
    if (n.special) ieee += dy[i] * ((x[i] - n.mean_d) * n.r_d);
    else all_zero &= dy[i] == 0 || sgn(mpq_class(x[i]) - n.mu) == 0;
  }
  if (all_zero || std::isnan(ieee)) return ieee + 0.0;
  auto eval = [&](Interval& v, mpfr_prec_t prec) {
    Interval t(prec), b(prec);
    v.set(ieee);
    for (int64_t k = 0; k < aff.size(); ++k) {
      const int64_t i = aff.member(j, k);
      const Norm& n = norm[static_cast<size_t>(a.part.set_of(i))];
      if (n.special) continue;
      t.set(x[i]);
      b.set(n.mu);
      t.sub(b);
      b.set(dy[i]);
      t.mul(b);
      b.set(n.B);
      b.sqrt();
      if (!t.div(b)) mpfr_set_nan(t.lo);
      v.add(t);
    }
  };
  if (auto d = exact::ziv_round(eval)) return *d;
  throw Error("reference: the rounding of dgamma could not be decided at 8192 bits");
}

double decide_column(const Inputs& a, const std::vector<double>& x, int64_t j, const Column& col,
                     const std::vector<Norm>& norm) {
  if (col.sum.has_nan() || (col.sum.has_pos_inf() && col.sum.has_neg_inf())) return kNaN;
  if (col.sum.has_pos_inf() || col.sum.has_neg_inf()) return col.sum.round();
  if (!col.slow) {
    const Expansion e = col.sum.expansion(2);
    if (e.scale == 0) {
      const double t0 = e.terms.empty() ? 0.0 : e.terms[0], t1 = e.terms.size() > 1 ? e.terms[1] : 0.0;
      const DD v = dd::two_sum(t0, t1);
      const double d = dd::decide(v, (col.err + e.remainder_bound) * (1 + 0x1p-50));
      if (!std::isnan(d)) return d;
    }
  }
  return column_slow(a, x, j, norm);
}

/// The exact dbeta of column j (Σ over the rows of dy), correctly rounded.
double column_dbeta_exact(const Inputs& a, int64_t j) {
  const StridedSets& aff = a.part.affine;
  ExactSum sum;
  for (int64_t k = 0; k < aff.size(); ++k) sum.add(a.in.dy[static_cast<size_t>(aff.member(j, k))]);
  return sum.round();
}

/// Columns [j0, j1) of layer_norm / rms_norm dgamma and dbeta by the old per-column exact sums
/// (ExactSum): the path for a batch with a non-finite or out-of-range set.
void column_block_exact(const Inputs& a, const std::vector<double>& x, const std::vector<Norm>& norm, int64_t j0,
                        int64_t j1, ReferenceResult& res) {
  const StridedSets& aff = a.part.affine;
  std::vector<Column> cols(static_cast<size_t>(j1 - j0));
  for (int64_t r = 0; r < aff.runs; ++r) {
    if ((r & 1023) == 0) poll_interrupt();
    const Norm& n = norm[static_cast<size_t>(a.part.set_of(r * aff.run_stride))];
    for (int64_t j = j0; j < j1; ++j) {
      const int64_t i = j + r * aff.run_stride;
      column_term(cols[static_cast<size_t>(j - j0)], x[i], a.in.dy[i], n);
    }
  }
  for (int64_t j = j0; j < j1; ++j) {
    const Column& c = cols[static_cast<size_t>(j - j0)];
    res.dgamma[static_cast<size_t>(j)] = decide_column(a, x, j, c, norm);
    if (a.part.has_beta) res.dbeta[static_cast<size_t>(j)] = c.dbeta.round();
  }
}

/// Columns [j0, j1) by the kernels: per column a cascaded double-double sum of the rows' terms
/// with its bound (fast_kernels.hpp dgamma_term, §3.4), decided; undecided columns exactly.
void column_block_fast(const Inputs& a, const std::vector<double>& x, const SetScalars& sc, const std::vector<Norm>& norm,
                       int64_t j0, int64_t j1, ReferenceResult& res) {
  const StridedSets& aff = a.part.affine;
  const auto n = static_cast<size_t>(j1 - j0);
  std::vector<double> buf(6 * n, 0.0);
  const ColumnSums cs{buf.data(), buf.data() + n, buf.data() + 2 * n, buf.data() + 3 * n, buf.data() + 4 * n,
                      buf.data() + 5 * n};
  const ColumnRow row = kernel_table().column;
  for (int64_t r = 0; r < aff.runs; ++r) {
    if ((r & 1023) == 0) poll_interrupt();
    const auto s = static_cast<size_t>(a.part.set_of(r * aff.run_stride));
    const int64_t i = j0 + r * aff.run_stride;
    row(x.data() + i, a.in.dy.data() + i, sc.mu[s], sc.r[s], j1 - j0, cs.gh, cs.gl, cs.ge, cs.bh, cs.bl, cs.be);
  }
  for (size_t k = 0; k < n; ++k) {
    const int64_t j = j0 + static_cast<int64_t>(k);
    const double g = kernels::decide(cs.gh[k], cs.gl[k], cs.ge[k]);
    res.dgamma[static_cast<size_t>(j)] = std::isnan(g) ? column_slow(a, x, j, norm) : g;
    if (!a.part.has_beta) continue;
    const double b = kernels::decide(cs.bh[k], cs.bl[k], cs.be[k]);
    res.dbeta[static_cast<size_t>(j)] = std::isnan(b) ? column_dbeta_exact(a, j) : b;
  }
}

/// dgamma and dbeta of layer_norm / rms_norm: columns in blocks, every row of a block at once.
void affine_grads_by_columns(const Inputs& a, const std::vector<double>& x, const std::vector<Norm>& norm,
                             ReferenceResult& res) {
  const int64_t entries = a.part.affine.count;
  constexpr int64_t kBlock = 256;
  const int64_t blocks = (entries + kBlock - 1) / kBlock;
  res.dgamma.assign(static_cast<size_t>(entries), 0.0);
  if (a.part.has_beta) res.dbeta.assign(static_cast<size_t>(entries), 0.0);
  const SetScalars sc = set_scalars(norm, nullptr);
  const bool fast = std::all_of(sc.mu.begin(), sc.mu.end(), [](const Approx& v) { return !std::isnan(v.hi); });
  parallel_for(blocks, a.threads, [&](int64_t b) {
    const int64_t j0 = b * kBlock, j1 = std::min(entries, j0 + kBlock);
    if (fast) column_block_fast(a, x, sc, norm, j0, j1, res);
    else column_block_exact(a, x, norm, j0, j1, res);
  });
}

void backward(const Inputs& a, const std::vector<double>& x, const std::vector<Norm>& norm, bool global,
              ReferenceResult& res) {
  const Partition& part = a.part;
  std::vector<SetBackward> sb(static_cast<size_t>(part.num_sets));
  parallel_for(part.num_sets, a.threads, [&](int64_t s) {
    poll_interrupt();
    sb[static_cast<size_t>(s)] = set_backward(a, x, s, norm[static_cast<size_t>(s)], global);
  });
  assign_large(res.dx, x.size());
  std::vector<const BackCoef*> coef(sb.size());
  for (size_t s = 0; s < sb.size(); ++s) coef[s] = &sb[s].coef;
  const SetScalars sc = set_scalars(norm, &coef);
  const AffineRows ar(a);
  const KernelTable& kt = kernel_table();
  const auto numel = static_cast<int64_t>(x.size());
  const double* dy = a.in.dy.data();
  parallel_for((numel + kChunk - 1) / kChunk, a.threads, [&](int64_t c) {
    poll_interrupt();
    const int64_t lo = c * kChunk, hi = std::min(numel, lo + kChunk);
    for_each_segment(part, lo, hi, [&](int64_t i, int64_t n, int64_t s, bool ss, int64_t j, bool as) {
      const auto si = static_cast<size_t>(s);
      kt.dx[ss][as && a.affine()](x.data() + i, dy + i, ar.gamma(j), &sc.mu[si], &sc.r[si], &sc.a[si], &sc.c[si], n,
                                  res.dx.data() + i);
    });
    for (int64_t i = lo; i < hi; ++i)  // undecided: the element-wise path
      if (std::isnan(res.dx[static_cast<size_t>(i)])) {
        const auto s = static_cast<size_t>(part.set_of(i));
        res.dx[static_cast<size_t>(i)] =
            dx_element(x[i], dy[i], a.gamma_at(part.affine_of(i)), norm[s], sb[s].coef, global);
      }
  });
  if (!a.affine()) return;
  if (a.by_cells()) affine_grads_from_cells(a, sb, norm, res);
  else affine_grads_by_columns(a, x, norm, res);
  if (!part.has_beta) res.dbeta.clear();
}

// ---------------------------------------------------------------------------------------------
// Driver.

/// Running mean and variance after the n_train training steps (batch_norm; PyTorch
/// batch_norm_cpu_update_stats_template in new-weight form, reference.hpp).
std::pair<Running, Running> running_statistics(const Partition& part, const ReferenceInputs& in,
                                               const std::vector<BatchExact>& bex, const std::vector<SetStats>& st,
                                               size_t n_train, ReferenceResult& res) {
  Running rm, rv;
  const auto sets = static_cast<size_t>(part.num_sets);
  if (n_train > 0 && (in.running_mean.size() != sets || in.running_var.size() != sets))
    throw Error("reference: training steps need running_mean and running_var of one value per channel");
  rm.init(in.running_mean);
  rv.init(in.running_var);
  const int64_t m = part.set_size;
  for (size_t k = 0; k < n_train; ++k) {
    const double f = in.weight_of_step(k);
    for (int64_t c = 0; c < part.num_sets; ++c) {
      const auto ci = static_cast<size_t>(c);
      const SetExact& e = bex[k].sets[ci];
      mpq_class vb = e.var;
      bool vb_exact = e.finite;
      double vb_d = st[k].variance[ci];
      if (in.running_var_unbiased) {
        if (m > 1) {
          vb *= mpq_class(m, m - 1);
          vb_d = vb_d * static_cast<double>(m) / static_cast<double>(m - 1);
        } else {
          vb_exact = false;
          vb_d = kNaN;
          res.running_var_undefined = true;
        }
      }
      rm.update(ci, f, e.finite ? &e.mu : nullptr, st[k].mean[ci]);
      rv.update(ci, f, vb_exact ? &vb : nullptr, vb_d);
    }
  }
  return {std::move(rm), std::move(rv)};
}

/// The statistics that normalize the compared call: the running ones (inference passes) or the
/// last batch's.
std::vector<Norm> normalization(const Problem& p, const Partition& part, const ReferenceInputs& in,
                                const BatchExact& last, const SetStats& st, const Running& rm, const Running& rv,
                                int threads, ReferenceResult& res) {
  std::vector<Norm> norm(static_cast<size_t>(part.num_sets));
  const bool running = uses_running_stats(p.pass);
  if (running) {
    res.used_running_mean.resize(norm.size());
    res.used_running_var.resize(norm.size());
    for (size_t c = 0; c < norm.size(); ++c) {
      res.used_running_mean[c] = rm.rounded(c);
      res.used_running_var[c] = rv.rounded(c);
    }
  }
  parallel_for(part.num_sets, threads, [&](int64_t s) {
    const auto c = static_cast<size_t>(s);
    if (!running) norm[c] = batch_norm_scalars(last.sets[c], st, c, in.eps);
    else if (rm.is_exact[c] && rv.is_exact[c]) norm[c] = make_norm(rm.value[c], rv.value[c] + mpq_class(in.eps));
    else norm[c] = special_norm(rm.rounded(c), 1 / std::sqrt(rv.rounded(c) + in.eps));
  });
  return norm;
}

}  // namespace

void set_fast_reference_kernels(KernelIsa isa) { g_isa.store(isa, std::memory_order_relaxed); }
bool fast_reference_uses_fma() { return kernel_table().fma; }

ReferenceResult fast_reference_run(const Problem& p, const Partition& part, const ReferenceInputs& in, int threads) {
  threads = resolve_threads(threads);
  const Inputs a{p, part, in, threads};
  ReferenceResult res;
  const size_t calls = in.batches.size();
  const size_t n_train = p.pass == Pass::forward_training ? calls
                         : p.pass == Pass::forward_inference ? calls - 1 : 0;
  res.batch_stats.resize(calls);
  std::vector<BatchExact> bex(calls);
  for (size_t k = 0; k < calls; ++k)
    bex[k] = batch_statistics(part, in.batches[k], in.eps, threads, res.batch_stats[k]);

  const bool training_steps = p.op == Op::batch_norm &&
                              (p.pass == Pass::forward_training || p.pass == Pass::forward_inference);
  auto [rm, rv] = running_statistics(part, in, bex, res.batch_stats, training_steps ? n_train : 0, res);
  if (training_steps) {
    res.running_mean.resize(static_cast<size_t>(part.num_sets));
    res.running_var.resize(static_cast<size_t>(part.num_sets));
    for (size_t c = 0; c < res.running_mean.size(); ++c) {
      res.running_mean[c] = rm.rounded(c);
      res.running_var[c] = rv.rounded(c);
    }
  }
  const SetStats& st = res.batch_stats.back();
  const std::vector<Norm> norm = normalization(p, part, in, bex.back(), st, rm, rv, threads, res);
  const std::vector<double>& x = in.batches.back();
  if (!is_backward(p.pass)) {
    res.y = forward_y(a, x, norm);
    if (p.pass == Pass::forward_training) {
      if (part.subtract_mean) res.mean = st.mean;
      res.variance = st.variance;
      res.inv_std = st.inv_std;
    }
    return res;
  }
  backward(a, x, norm, p.pass == Pass::backward_inference, res);
  return res;
}

}  // namespace normcheck
