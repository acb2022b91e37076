// normcheck — the fast reference's per-element kernels: straight-line double-double evaluation of
// y and dx with a running error bound, and a branch-free correct-rounding test, written so that
// the compiler vectorizes a run of elements (docs/reference.md §3.4).
//
// Each kernel returns the correctly rounded double of the exact value, or NaN when it cannot
// decide (the value may lie near a rounding boundary, an intermediate left the range where the
// bounds hold, or an input or scalar is NaN); the caller then takes the element-wise path of
// fast_reference.cpp (dd.hpp kernels, then MPFR, then rationals). A decided result is the same
// double whichever path computed it, so the FMA and the portable instantiations (kFma) agree bit
// for bit; only how often they decide may differ.
//
// Error model (u = 2^-53, round to nearest): every rounded operation ∘ satisfies
// |fl(a ∘ b) − a ∘ b| ≤ u·|a ∘ b| + 2^-1075 (the second term covers gradual underflow), so an
// operation written RN(a·b + c) — one rounding with FMA, two without — errs by at most
// u·(|a·b| + |result|) + 2^-1074. TwoSum is exact barring overflow [Knuth, TAOCP 2 §4.2.2];
// TwoProduct (FMA, or Dekker with Veltkamp's splitting) is exact barring overflow and underflow
// [Dekker 1971; ORO05 Alg. 3.5]; under underflow its error is a few 2^-1075. The bound `err` of
// each kernel sums these terms to first order; it is doubled and 2^-1060 is added, which covers
// the second-order terms, the rounding of the bound's own evaluation, and up to 2^14 underflow
// terms. Overflow anywhere yields ±inf or NaN, which propagates to the result or the bound and
// makes the test fail.
//
// Correct-rounding test: with (h, l) = TwoSum of the result's two parts, h = RN(h + l) and the
// exact value lies in [h + l − err, h + l + err]. For a normal h with 2^e ≤ |h| < 2^(e+1) the
// doubles next to h are 2^(e−52) away (2^(e−53) toward zero when |h| = 2^e), and every real
// closer to h than half that distance rounds to h: |l| + err < half_gap(h) proves it. Left
// undecided: exact zeros, subnormal results, ties, and values within err of a midpoint.
#pragma once

#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>

#include "normcheck/eft.hpp"

namespace normcheck::kernels {

constexpr double kU = 0x1p-53;
constexpr double kUnderflowSlack = 0x1p-1060;
constexpr double kLargest = 0x1p1000;  ///< results at or above this are left to the slow path

/// A value v ≈ hi + lo with |v − hi − lo| ≤ err (absolute). NaN in hi marks "not available".
struct Approx {
  double hi, lo, err;
};

/// TwoSum as out-parameters: eft.hpp's (Knuth), the one copy of it in the project.
[[gnu::always_inline]] inline void two_sum(double a, double b, double& s, double& e) {
  const DoubleWord r = normcheck::two_sum(a, b);
  s = r.hi;
  e = r.lo;
}

template <bool kFma>
[[gnu::always_inline]] inline void two_prod(double a, double b, double& p, double& e) {
  p = a * b;
  if constexpr (kFma) {
    e = std::fma(a, b, -p);
  } else {  // Dekker with Veltkamp's splitting, C = 2^27 + 1; overflow makes NaN
    constexpr double kSplit = 134217729.0;
    const double ta = kSplit * a, ah = ta - (ta - a), al = a - ah;
    const double tb = kSplit * b, bh = tb - (tb - b), bl = b - bh;
    e = ((ah * bh - p) + ah * bl + al * bh) + al * bl;
  }
}

/// RN(a·b + c) with FMA, RN(RN(a·b) + c) without: error ≤ u·(|a·b| + |result|) + 2^-1074.
template <bool kFma>
[[gnu::always_inline]] inline double mul_add(double a, double b, double c) {
  if constexpr (kFma) return std::fma(a, b, c);
  else return a * b + c;
}

/// Half the distance from h to its nearest neighbour (conservative): for a normal h with
/// 2^e ≤ |h| < 2^(e+1), 2^(e−53) (half an ulp), or 2^(e−54) when |h| = 2^e (the gap toward zero is
/// half as wide). 0 for 0 and subnormals (nothing is decided there), inf or NaN for non-finite h.
[[gnu::always_inline]] inline double half_gap(double h) {
  const auto bits = std::bit_cast<std::uint64_t>(h);
  const double p2 = std::bit_cast<double>(bits & 0x7FF0000000000000ULL);  // 2^e (0 if subnormal)
  const bool power_of_two = (bits & 0x000FFFFFFFFFFFFFULL) == 0;
  return p2 * (power_of_two ? 0x1p-54 : 0x1p-53);
}

/// The correctly rounded double of a value within err of hi + lo, or NaN (undecided).
[[gnu::always_inline]] inline double decide(double hi, double lo, double err) {
  double h, l;
  two_sum(hi, lo, h, l);  // h = RN(hi + lo): the candidate
  const double bound = 2 * err + kUnderflowSlack;
  const bool ok = std::fabs(l) + bound < half_gap(h) && std::fabs(h) < kLargest;
  return ok ? h : std::numeric_limits<double>::quiet_NaN();
}

/// d = x − μ as s + dl, with |x − μ − s − dl| ≤ *ed.
[[gnu::always_inline]] inline void centered(double x, const Approx& mu, double& s, double& dl, double& ed) {
  double e1;
  two_sum(x, -mu.hi, s, e1);  // exact
  dl = e1 - mu.lo;
  ed = mu.err + kU * std::fabs(dl);
}

/// (ah + al)·(s + dl) as ph + pl, with the error of the computed form against the exact product
/// of the two computed operands in *e (al·dl is dropped and counted).
template <bool kFma>
[[gnu::always_inline]] inline void product(double ah, double al, double s, double dl, double& ph, double& pl, double& e) {
  double pe;
  two_prod<kFma>(ah, s, ph, pe);  // exact
  const double t = mul_add<kFma>(al, s, pe);
  pl = mul_add<kFma>(ah, dl, t);
  e = kU * (std::fabs(al * s) + std::fabs(t) + std::fabs(ah * dl) + std::fabs(pl)) + std::fabs(al * dl);
}

/// y = β + γ·r·(x − μ): γ·r = ah + al (TwoProduct of γ and r.hi, then γ·r.lo), times x − μ,
/// plus β by TwoSum. Returns RN(y) or NaN (undecided).
template <bool kFma>
[[gnu::always_inline]] inline double y_element(double x, double gamma, double beta, const Approx& mu, const Approx& r) {
  double s, dl, ed;
  centered(x, mu, s, dl, ed);
  double ah, ae;
  two_prod<kFma>(gamma, r.hi, ah, ae);  // exact
  const double al = mul_add<kFma>(gamma, r.lo, ae);
  const double ea = kU * (std::fabs(gamma * r.lo) + std::fabs(al)) + std::fabs(gamma) * r.err;
  double ph, pl, ep;
  product<kFma>(ah, al, s, dl, ph, pl, ep);
  // |A·d − Â·d̂| ≤ |A|·|d − d̂| + |d̂|·|A − Â|, |A| ≤ |ah| + |al| + ea, |d̂| ≤ |s| + |dl|
  ep += (std::fabs(ah) + std::fabs(al) + ea) * ed + (std::fabs(s) + std::fabs(dl)) * ea;
  double yh, ye;
  two_sum(beta, ph, yh, ye);  // exact
  const double yl = ye + pl;
  return decide(yh, yl, ep + kU * std::fabs(yl));
}

/// dx = (g − a − (x − μ)·c)·r with g = dy·γ (TwoProduct: exact). Returns RN(dx) or NaN.
template <bool kFma>
[[gnu::always_inline]] inline double dx_element(double x, double dy, double gamma, const Approx& mu, const Approx& r, const Approx& a,
                         const Approx& c) {
  double s, dl, ed;
  centered(x, mu, s, dl, ed);
  double gh, ge;
  two_prod<kFma>(dy, gamma, gh, ge);  // exact
  double qh, ql, eq;  // D = c·d
  product<kFma>(c.hi, c.lo, s, dl, qh, ql, eq);
  eq += (std::fabs(c.hi) + std::fabs(c.lo) + c.err) * ed + (std::fabs(s) + std::fabs(dl)) * c.err;
  double n1h, n1e, n2h, n2e;  // N = g − a − D = n2h + nl
  two_sum(gh, -a.hi, n1h, n1e);  // exact
  two_sum(n1h, -qh, n2h, n2e);   // exact
  const double u1 = ge - a.lo, u2 = u1 + n1e, u3 = n2e - ql, nl = u2 + u3;
  const double en = eq + a.err + kU * (std::fabs(u1) + std::fabs(u2) + std::fabs(u3) + std::fabs(nl));
  double oh, ol, eo;  // N·r
  product<kFma>(r.hi, r.lo, n2h, nl, oh, ol, eo);
  eo += (std::fabs(r.hi) + std::fabs(r.lo) + r.err) * en + (std::fabs(n2h) + std::fabs(nl)) * r.err;
  return decide(oh, ol, eo);
}

/// dy·x̂ with x̂ = (x − μ)·r, as a double-double th + tl with error ≤ *e (LayerNorm / RMSNorm
/// dgamma terms). NaN in th when an input is NaN or a value overflows.
template <bool kFma>
[[gnu::always_inline]] inline void dgamma_term(double x, double dy, const Approx& mu, const Approx& r, double& th, double& tl, double& e) {
  double s, dl, ed;
  centered(x, mu, s, dl, ed);
  double xh, xl, ex;
  product<kFma>(r.hi, r.lo, s, dl, xh, xl, ex);
  ex += (std::fabs(r.hi) + std::fabs(r.lo) + r.err) * ed + (std::fabs(s) + std::fabs(dl)) * r.err;
  double ph, pe;
  two_prod<kFma>(xh, dy, ph, pe);  // exact
  tl = mul_add<kFma>(xl, dy, pe);
  th = ph;
  e = std::fabs(dy) * ex + kU * (std::fabs(xl * dy) + std::fabs(tl));
}

}  // namespace normcheck::kernels
