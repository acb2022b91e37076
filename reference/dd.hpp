// normcheck — the double-double kernels of the fast reference, with their error bounds.
//
// Error-free transformations: TwoSum (Knuth 1969, TAOCP vol. 2 §4.2.2), FastTwoSum (Dekker 1971,
// needs |a| ≥ |b| or a = 0), TwoProduct (Dekker 1971 with Veltkamp's splitting, or one FMA;
// Ogita, Rump & Oishi 2005, "Accurate sum and dot product", SIAM J. Sci. Comput. 26(6), §2).
// Double-word operations and their relative error bounds, u = 2^-53 (Joldes, Muller & Popescu
// 2017, "Tight and rigorous error bounds for basic building blocks of double-word arithmetic",
// ACM TOMS 44(2)):
//   dd + double  (their Alg. 4, DWPlusFP)      ≤ 2u²
//   dd + dd      (Alg. 6, AccurateDWPlusDW)    ≤ 3u² + 13u³
//   dd × double  (Alg. 9, DWTimesFP3)          ≤ 2u²
//   dd × dd      (Alg. 10, DWTimesDW1)         ≤ 7u²
// valid when no underflow or overflow occurs; the fast reference checks that every value it
// forms lies in [2^-960, 2^990] in magnitude or is 0, and otherwise takes the slow path.
// The bounds are used with a margin (docs/reference.md §3). This file must be compiled without
// contraction of a·b + c into an FMA (the build sets -ffp-contract=off for reference/).
#pragma once

#include <bit>
#include <cmath>
#include <cstdint>

namespace normcheck::dd {

struct DD {
  double hi = 0, lo = 0;
};

inline DD two_sum(double a, double b) {
  const double s = a + b, bb = s - a;
  return {s, (a - (s - bb)) + (b - bb)};
}
inline DD fast_two_sum(double a, double b) {
  const double s = a + b;
  return {s, b - (s - a)};
}
inline DD two_prod(double a, double b) {
  const double p = a * b;
#ifdef __FMA__
  return {p, std::fma(a, b, -p)};
#else
  // Veltkamp's splitting with C = 2^27 + 1: exact for |a|, |b| < 2^996 (no overflow).
  constexpr double kSplit = 134217729.0;
  const double ta = kSplit * a, ah = ta - (ta - a), al = a - ah;
  const double tb = kSplit * b, bh = tb - (tb - b), bl = b - bh;
  return {p, ((ah * bh - p) + ah * bl + al * bh) + al * bl};
#endif
}

/// Alg. 4 (DWPlusFP): relative error ≤ 2u².
inline DD add(DD x, double y) {
  const DD s = two_sum(x.hi, y);
  return fast_two_sum(s.hi, x.lo + s.lo);
}
/// Alg. 6 (AccurateDWPlusDW): relative error ≤ 3u² + 13u³.
inline DD add(DD x, DD y) {
  const DD s = two_sum(x.hi, y.hi), t = two_sum(x.lo, y.lo);
  const DD v = fast_two_sum(s.hi, s.lo + t.hi);
  return fast_two_sum(v.hi, t.lo + v.lo);
}
inline DD neg(DD x) { return {-x.hi, -x.lo}; }
/// Alg. 9 (DWTimesFP3): relative error ≤ 2u².
inline DD mul(DD x, double y) {
  const DD c = two_prod(x.hi, y);
  return fast_two_sum(c.hi, x.lo * y + c.lo);
}
/// Alg. 10 (DWTimesDW1): relative error ≤ 7u².
inline DD mul(DD x, DD y) {
  const DD c = two_prod(x.hi, y.hi);
  const double tl = x.hi * y.lo, cl2 = x.lo * y.hi + tl;  // -ffp-contract=off keeps two roundings
  return fast_two_sum(c.hi, c.lo + cl2);
}

constexpr double kU2 = 0x1p-106;  ///< u² for binary64
constexpr double kMin = 0x1p-960, kMax = 0x1p990;

/// True when v is 0 or its magnitude lies in [2^-960, 2^990]: the bounds above then hold.
inline bool in_range(double v) {
  const double a = std::fabs(v);
  return a == 0 || (a >= kMin && a <= kMax);
}

/// The double that x.hi + x.lo ± err rounds to (nearest, ties to even) when the whole interval
/// rounds to one double; else NaN (undecided). x must be normalized (x.hi = RN(x.hi + x.lo)).
inline double decide(DD x, double err) {
  if (err == 0 && x.lo == 0) return x.hi + 0.0;  // exact (and −0 → +0 only for an exact 0 sum)
  const double h = x.hi;
  if (h == 0) return std::nan("");
  // Neighbours of h by its bit pattern (h is finite and nonzero): next away from and toward 0.
  const auto bits = std::bit_cast<std::uint64_t>(h);
  const double away = std::bit_cast<double>(bits + 1), toward = std::bit_cast<double>(bits - 1);
  const double up = h > 0 ? away - h : h - toward, down = h > 0 ? h - toward : away - h;
  // (|away − h| may be inf at DBL_MAX: no double above, and the comparison below then holds.)
  // The exact value lies in [h + lo − err, h + lo + err]; it rounds to h when that interval is
  // strictly inside (h − down/2, h + up/2).
  if (x.lo + err < 0.5 * std::fabs(up) && -x.lo + err < 0.5 * std::fabs(down)) return h;
  return std::nan("");
}

}  // namespace normcheck::dd
