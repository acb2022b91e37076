// normcheck — error-free transformations of doubles, and double-word ("double-double") arithmetic
// with proven relative error bounds.
//
// Notation: RN = IEEE 754 binary64 round to nearest, ties to even; u = 2^-53 (unit roundoff);
// a double word is a pair (hi, lo) with hi = RN(hi + lo), value hi + lo.
//
// Sources:
//   [Dek71] T. J. Dekker, "A floating-point technique for extending the available precision",
//           Numer. Math. 18 (1971) 224–242 (Fast2Sum).
//   [Knu69] D. E. Knuth, The Art of Computer Programming vol. 2 (1969), §4.2.2 Theorem B (2Sum;
//           also O. Møller, BIT 5 (1965)).
//   [ORO05] T. Ogita, S. M. Rump, S. Oishi, "Accurate sum and dot product", SIAM J. Sci. Comput.
//           26(6) (2005) 1955–1988 (TwoSum, TwoProduct; TwoProduct by FMA in §3).
//   [JMP17] M. Joldes, J.-M. Muller, V. Popescu, "Tight and rigorous error bounds for basic
//           building blocks of double-word arithmetic", ACM TOMS 44(2) (2017) (algorithm and theorem
//           numbers below are theirs).
//   [MR22]  J.-M. Muller, L. Rideau, "Formalization of double-word arithmetic, and comments on
//           'Tight and rigorous error bounds …'", ACM TOMS 48(1) (2022) (Coq proofs of
//           the [JMP17] bounds, some tightened).
//   [LLMPR23] V. Lefèvre, N. Louvet, J.-M. Muller, J. Picot, L. Rideau, "Accurate calculation of
//           Euclidean norms using double-word arithmetic", ACM TOMS 49(1) (2023) (SQRTDWtoDW).
// The bounds hold when no operation underflows or overflows (all intermediate results, in
// absolute value, in [2^-1022, 2^1024) or exactly 0), which the caller must ensure, e.g. by
// scaling by powers of two (exact). They are proved for binary64 with RN; they are void under
// -ffast-math (checked below) and under FMA contraction of a product into a later sum, which the
// code prevents with rounded() (GCC contracts by default, -ffp-contract=fast, whenever the target
// has FMA instructions, e.g. with -march=native).
#pragma once

#include <cmath>

#if defined(__FAST_MATH__)
#error "normcheck/eft.hpp needs IEEE 754 semantics: do not compile with -ffast-math"
#endif

namespace normcheck {

/// x as the rounded double it already is: an optimization barrier that stops the compiler from
/// fusing the product that produced x into a later addition (FMA contraction).
inline double rounded(double x) noexcept {
#if defined(__x86_64__) || defined(__i386__)
  asm("" : "+x"(x));
#elif defined(__aarch64__)
  asm("" : "+w"(x));
#else
  volatile double v = x;
  x = v;
#endif
  return x;
}

/// A pair (hi, lo): an error-free transformation's result, or a double word (hi = RN(hi + lo)).
struct DoubleWord {
  double hi = 0.0;
  double lo = 0.0;
  double value() const noexcept { return hi + lo; }  ///< RN(hi + lo) = hi for a double word
};

/// 2Sum [Knu69][ORO05 Alg. 3.1]: s = RN(a + b) and e with s + e = a + b exactly, for any finite
/// a, b with a + b not overflowing (6 operations, no branch, no ordering precondition).
inline DoubleWord two_sum(double a, double b) noexcept {
  const double s = a + b;
  const double bb = s - a;
  const double e = (a - (s - bb)) + (b - bb);
  return {s, e};
}

/// Fast2Sum [Dek71][JMP17 Alg. 1]: s = RN(a + b) and e with s + e = a + b exactly. Precondition:
/// a = 0, or b = 0, or exponent(a) ≥ exponent(b) (implied by |a| ≥ |b|); a + b not overflowing.
inline DoubleWord fast_two_sum(double a, double b) noexcept {
  const double s = a + b;
  const double z = s - a;
  return {s, b - z};
}

/// TwoProduct by FMA [ORO05 Alg. 3.5 with FMA][JMP17 Alg. 3, Fast2Mult]: p = RN(a·b) and
/// e = RN(a·b − p) with p + e = a·b exactly, provided a·b does not overflow and e does not
/// underflow: exponent(a) + exponent(b) ≥ −1022 + 52 (or a·b = 0). std::fma is the correctly
/// rounded fused multiply-add (C++ <cmath>, IEEE 754 fusedMultiplyAdd); without hardware FMA
/// (no -mfma) it is a library call.
inline DoubleWord two_prod(double a, double b) noexcept {
  const double p = rounded(a * b);
  return {p, std::fma(a, b, -p)};
}

/// DWPlusFP [JMP17 Alg. 4]: (x + y)(1 + ε), |ε| ≤ 2u² [JMP17 Thm. 2.2].
inline DoubleWord dw_add(DoubleWord x, double y) noexcept {
  const DoubleWord s = two_sum(x.hi, y);
  return fast_two_sum(s.hi, x.lo + s.lo);
}

/// AccurateDWPlusDW [JMP17 Alg. 6]: (x + y)(1 + ε), |ε| ≤ 3u² + 13u³ [JMP17 Thm. 3.1; formally
/// proved in MR22] — relative to the exact sum, also under cancellation.
inline DoubleWord dw_add(DoubleWord x, DoubleWord y) noexcept {
  const DoubleWord s = two_sum(x.hi, y.hi);
  const DoubleWord t = two_sum(x.lo, y.lo);
  const DoubleWord v = fast_two_sum(s.hi, s.lo + t.hi);
  return fast_two_sum(v.hi, t.lo + v.lo);
}

inline DoubleWord dw_neg(DoubleWord x) noexcept { return {-x.hi, -x.lo}; }
/// x − y as dw_add(x, −y): the same bound, 3u² + 13u³.
inline DoubleWord dw_sub(DoubleWord x, DoubleWord y) noexcept { return dw_add(x, dw_neg(y)); }

/// DWTimesFP3 [JMP17 Alg. 9, with FMA]: x·y·(1 + ε), |ε| ≤ 2u² [JMP17 Thm. 4.3].
inline DoubleWord dw_mul(DoubleWord x, double y) noexcept {
  const DoubleWord c = two_prod(x.hi, y);
  return fast_two_sum(c.hi, std::fma(x.lo, y, c.lo));
}

/// DWTimesDW3 [JMP17 Alg. 12, with FMA]: x·y·(1 + ε), |ε| ≤ 5u² [JMP17 Thm. 5.4]; MR22 (Thm. 2.8)
/// tightens this to (4u² + u³/2)/(1 + u)² < 4u². Budgets should use 5u².
inline DoubleWord dw_mul(DoubleWord x, DoubleWord y) noexcept {
  const DoubleWord c = two_prod(x.hi, y.hi);
  const double tl0 = rounded(x.lo * y.lo);
  const double tl1 = std::fma(x.hi, y.lo, tl0);
  const double cl2 = std::fma(x.lo, y.hi, tl1);
  return fast_two_sum(c.hi, c.lo + cl2);
}

/// DWTimesFP1 [JMP17 Alg. 7, no FMA in the cross term]: x·y·(1 + ε), |ε| ≤ 1.5u² + 4u³ [JMP17].
/// The multiplication DWDivDW2's bound is proved with.
inline DoubleWord dw_mul_fp1(DoubleWord x, double y) noexcept {
  const DoubleWord c = two_prod(x.hi, y);
  const double cl2 = rounded(x.lo * y);
  const DoubleWord t = fast_two_sum(c.hi, cl2);
  return fast_two_sum(t.hi, t.lo + c.lo);
}

/// DWDivFP3 [JMP17 Alg. 15]: (x / y)(1 + ε), |ε| ≤ 3u² [JMP17 Thm. 6.2]. y ≠ 0.
inline DoubleWord dw_div(DoubleWord x, double y) noexcept {
  const double th = x.hi / y;
  const DoubleWord pi = two_prod(th, y);
  const double dh = x.hi - pi.hi;
  const double dt = dh - pi.lo;
  const double d = dt + x.lo;
  return fast_two_sum(th, d / y);
}

/// DWDivDW2 [JMP17 Alg. 17, with DWTimesFP1 at its line 2]: (x / y)(1 + ε),
/// |ε| ≤ 15u² + 56u³ [JMP17 Thm. 7.1]. y.hi ≠ 0.
inline DoubleWord dw_div(DoubleWord x, DoubleWord y) noexcept {
  const double th = x.hi / y.hi;
  const DoubleWord r = dw_mul_fp1(y, th);
  const double pih = x.hi - r.hi;
  const double dl = x.lo - r.lo;
  const double d = pih + dl;
  return fast_two_sum(th, d / y.hi);
}

/// SQRTDWtoDW [LLMPR23 Alg. 8]: √x·(1 + ε), |ε| ≤ (25/8)u² [LLMPR23]. x.hi ≥ 0 (x.hi = 0 gives 0).
inline DoubleWord dw_sqrt(DoubleWord x) noexcept {
  if (x.hi == 0.0) return {0.0, 0.0};
  const double sh = std::sqrt(x.hi);
  const double r1 = std::fma(-sh, sh, x.hi);
  const double r2 = x.lo + r1;
  return fast_two_sum(sh, r2 / (2.0 * sh));
}

}  // namespace normcheck
