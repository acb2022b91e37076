// normcheck — the natural logarithm and sin/cos of 2π·t, the same double on every platform.
//
// The C library's log and cos differ between libraries, versions and code paths (glibc picks an
// FMA or a non-FMA variant at run time), so input generation (generate.hpp) uses these instead.
// They use only +, −, ×, ÷ (IEEE 754 correctly rounded, compiled with -ffp-contract=off so no
// a·b + c is fused), std::round and exact bit operations on the binary64 encoding; on any
// platform with IEEE 754 binary64 arithmetic evaluated in binary64 (FLT_EVAL_METHOD == 0) they
// return the same bits. They are test data generators, not an oracle: a few ulp of error is
// allowed. The bounds below follow from counting roundings (core/portable_math.cpp);
// tests/test_generate.cpp measures ≤ 2 ulp against long double logl/sinl/cosl on 400 000
// arguments each and asserts that.
#pragma once

#include <bit>
#include <cstdint>

namespace normcheck {

/// Natural logarithm of x. x = 2^e · m with m in [√½, √2] (exact, from the encoding), then
/// log x = e·ln2 + 2·atanh(s), s = (m − 1)/(m + 1), |s| ≤ 0.1716, with the atanh series
/// s + s³/3 + … + s²¹/21 (truncation below 10⁻¹⁸ relative) and ln2 split in a 32-bit head (e·head
/// exact) and a tail. Error ≤ 5 ulp. x = 0: −inf; x < 0 or NaN: NaN;
/// +inf: +inf. Subnormal x is handled (scaled by 2^54 exactly first).
double portable_log(double x);
/// y[j] = portable_log(x[j]) for j < n, bit for bit (y may be x): a branch-free loop that the
/// compiler vectorizes (SSE2, or AVX2 where the CPU has it), the scalar function for the rare
/// arguments outside [DBL_MIN, DBL_MAX].
void portable_log(const double* x, double* y, int64_t n);

/// sin(2π·t) and cos(2π·t), for finite t ("turns": t = 1 is a full circle). The reduction
/// t = q/4 + d/4, q = round(4t), |d| ≤ 1/2, is exact, so there is no error from the argument's
/// size; x = d·π/2 (|x| ≤ π/4, one rounding) then goes through the Taylor polynomials of sin (to
/// x¹⁷/17!) and cos (to x¹⁸/18!), whose truncation is below 10⁻¹⁹, and quadrant q mod 4 rotates
/// the pair. Error ≤ 4 ulp of each result (relative everywhere: the reduction is exact).
/// Non-finite t: both NaN.
struct SinCos {
  double sin, cos;
};
SinCos portable_sincos_turns(double t);
/// s[j], c[j] = portable_sincos_turns(t[j]) for j < n, bit for bit (s or c may be t): vectorized
/// like portable_log's block form, the scalar function for |t| ≥ 2^49 and non-finite t.
void portable_sincos_turns(const double* t, double* s, double* c, int64_t n);

/// x as a double for an integer 0 ≤ x < 2^52, exactly (the value static_cast<double> gives): the
/// encoding of 2^52 + x minus 2^52, both exact. Unlike an int64 → double conversion, which has no
/// vector instruction before AVX-512, it vectorizes (the block forms and generate.cpp use it).
[[gnu::always_inline]] inline double small_uint_to_double(uint64_t x) {
  return std::bit_cast<double>(x | 0x4330000000000000ULL) - 0x1p52;
}

/// Whether the block forms (and generate.cpp's block of draws) run their AVX2 instantiation: the
/// CPU has AVX2 and set_portable_math_avx2(false) was not called. Both instantiations are the
/// same IEEE operations without fused a·b + c, so they give the same bits; the switch exists so
/// that tests can prove it on a machine with AVX2.
bool portable_math_avx2();
void set_portable_math_avx2(bool allow);

}  // namespace normcheck
