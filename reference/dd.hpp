// normcheck — the double-double kernels of the fast reference, with their error bounds.
//
// The error-free transformations and the double-word additions are eft.hpp's (TwoSum, Fast2Sum,
// JMP17 Alg. 4 dd + double ≤ 2u², Alg. 6 dd + dd ≤ 3u² + 13u³; Joldes, Muller & Popescu 2017,
// "Tight and rigorous error bounds for basic building blocks of double-word arithmetic", ACM TOMS
// 44(2)). What this file adds is the multiplications for the hot loop without a library FMA call
// (the default x86-64 target has no FMA instruction, and eft.hpp's two_prod is std::fma):
//   two_prod      Dekker 1971 with Veltkamp's splitting (exact for |a|, |b| < 2^996), or one FMA
//                 where the target has it (__FMA__)
//   dd × double   JMP17 Alg. 9 (≤ 2u²) with its one FMA replaced by a product and a sum: one more
//                 rounding of a term of size ≤ u·|x·y|, so ≤ 2u² + u² = 3u²
//   dd × dd       JMP17 Alg. 10 (≤ 7u²) likewise without FMA: ≤ 7u² + u² = 8u²
// (u = 2^-53). The fast reference uses 2u² and 7u² for them and doubles every element's total
// bound (docs/reference.md §3), which covers 3u² and 8u² with room for the second-order terms.
// The bounds hold when no underflow or overflow occurs; the fast reference checks that every
// value it forms lies in [2^-960, 2^990] in magnitude or is 0, and otherwise takes the slow
// path. This file must be compiled without contraction of a·b + c into an FMA (the build sets
// -ffp-contract=off for reference/).
#pragma once

#include <bit>
#include <cmath>
#include <cstdint>

#include "normcheck/eft.hpp"

namespace normcheck::dd {

using DD = DoubleWord;
using normcheck::fast_two_sum;
using normcheck::two_sum;

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

/// JMP17 Alg. 4 (DWPlusFP): relative error ≤ 2u² (eft.hpp dw_add).
inline DD add(DD x, double y) { return dw_add(x, y); }
/// JMP17 Alg. 6 (AccurateDWPlusDW): relative error ≤ 3u² + 13u³ (eft.hpp dw_add).
inline DD add(DD x, DD y) { return dw_add(x, y); }
inline DD neg(DD x) { return dw_neg(x); }
/// JMP17 Alg. 9 without FMA: relative error ≤ 3u² (see the file comment).
inline DD mul(DD x, double y) {
  const DD c = two_prod(x.hi, y);
  return fast_two_sum(c.hi, x.lo * y + c.lo);
}
/// JMP17 Alg. 10 without FMA: relative error ≤ 8u² (see the file comment).
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
