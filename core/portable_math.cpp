// Compiled with -ffp-contract=off (CMakeLists.txt): every operation below is one IEEE rounding.
#include "normcheck/portable_math.hpp"

#include <bit>
#include <cfloat>
#include <cmath>
#include <cstdint>
#include <initializer_list>
#include <limits>

static_assert(FLT_EVAL_METHOD == 0, "portable_math needs binary64 evaluated in binary64");
static_assert(std::numeric_limits<double>::is_iec559, "portable_math needs IEEE 754 binary64");

namespace normcheck {
namespace {

// ln 2 = kLn2Hi + kLn2Lo: the head is ln 2 truncated to 32 significant bits, so e·kLn2Hi is exact
// for |e| < 2^21; the tail is the rest rounded to double (both computed with mpmath, 300 bits).
constexpr double kLn2Hi = 0x1.62e42fee00000p-1;
constexpr double kLn2Lo = 0x1.a39ef35793c76p-33;
constexpr double kSqrt2 = 0x1.6a09e667f3bcdp+0;  // √2 rounded to nearest
constexpr double kPiOver2 = 0x1.921fb54442d18p+0;  // π/2 rounded to nearest (relative error 3.9e-17)

/// x > 0 finite → (m, e) with x = m·2^e, m in (√2/2, √2], exactly.
void split_exponent(double x, double& m, int& e) {
  int bias = 0;
  if (x < DBL_MIN) {  // subnormal: scale into the normal range (exact)
    x *= 0x1p54;
    bias = -54;
  }
  const auto b = std::bit_cast<uint64_t>(x);
  e = static_cast<int>(b >> 52) - 1023 + bias;
  m = std::bit_cast<double>((b & 0x000fffffffffffffULL) | 0x3ff0000000000000ULL);  // [1, 2)
  if (m > kSqrt2) {
    m *= 0.5;
    ++e;
  }
}

/// atanh(s)/s − 1 = s²/3 + s⁴/5 + … + s²⁰/21, in z = s²: z·Q(z), Q(z) = Σ_{k<10} z^k/(2k + 3) by
/// Estrin's scheme (a shorter dependency chain than Horner's; coefficients rounded at compile time).
double atanh_tail(double z) {
  const double z2 = z * z, z4 = z2 * z2, z8 = z4 * z4;
  const double p01 = 1.0 / 3 + z * (1.0 / 5), p23 = 1.0 / 7 + z * (1.0 / 9), p45 = 1.0 / 11 + z * (1.0 / 13);
  const double p67 = 1.0 / 15 + z * (1.0 / 17), p89 = 1.0 / 19 + z * (1.0 / 21);
  const double p0_3 = p01 + z2 * p23, p4_7 = p45 + z2 * p67;
  return z * ((p0_3 + z4 * p4_7) + z8 * p89);
}

/// sin x for |x| ≤ π/4: x − x³/3! + … + x¹⁷/17!, as x + x·z·P(z), z = x².
double sin_kernel(double x, double z) {
  // 1/n! with n! exact in double up to 18! (< 2^53), so each coefficient is one rounding.
  double p = 1.0 / 355687428096000.0;  // 1/17!
  for (const double c : {-1.0 / 1307674368000.0, 1.0 / 6227020800.0, -1.0 / 39916800.0, 1.0 / 362880.0,
                         -1.0 / 5040.0, 1.0 / 120.0, -1.0 / 6.0})
    p = c + z * p;
  return x + x * (z * p);
}

/// cos x for |x| ≤ π/4: 1 − x²/2 + x⁴/4! − … − x¹⁸/18!, as (1 − z/2) + z²·P(z), z = x².
double cos_kernel(double z) {
  double p = -1.0 / 6402373705728000.0;  // −1/18!
  for (const double c : {1.0 / 20922789888000.0, -1.0 / 87178291200.0, 1.0 / 479001600.0, -1.0 / 3628800.0,
                         1.0 / 40320.0, -1.0 / 720.0, 1.0 / 24.0})
    p = c + z * p;
  return (1.0 - 0.5 * z) + (z * z) * p;
}

/// log(m·2^e) for m in (√2/2, √2].
double log_of_split(double m, int e) {
  const double s = (m - 1.0) / (m + 1.0);  // m − 1 exact (Sterbenz: m in [1/2, 2])
  const double s2 = s + s;
  const double log_m = s2 + s2 * atanh_tail(s * s);
  const double de = static_cast<double>(e);
  return de * kLn2Hi + (log_m + de * kLn2Lo);
}

}  // namespace

// Error of portable_log, u = 2^-53: s = f/(m + 1) carries two roundings (2u); 2s + 2s·(z·Q) one
// more, the series' own rounding being ≤ 1% of the value (u); log_m + e·ln2_lo and the final sum
// one each. |log_m| ≤ |result| (for e = −1, |log_m| ≤ 0.347 ≤ |result|), so the error is
// ≤ 5u·|result| ≤ 5 ulp.
double portable_log(double x) {
  if (std::isnan(x) || x < 0) return std::numeric_limits<double>::quiet_NaN();
  if (x == 0) return -std::numeric_limits<double>::infinity();
  if (std::isinf(x)) return x;
  double m;
  int e;
  split_exponent(x, m, e);
  return log_of_split(m, e);
}

void portable_log(const double* x, double* y, int64_t n) {
  for (int64_t j = 0; j < n; ++j) {
    if (!(x[j] >= DBL_MIN && x[j] <= DBL_MAX)) {  // zero, subnormal, negative, inf, NaN
      y[j] = portable_log(x[j]);
      continue;
    }
    double m;
    int e;
    split_exponent(x[j], m, e);
    y[j] = log_of_split(m, e);
  }
}

// Error of portable_sincos_turns, u = 2^-53: x = fl(d·fl(π/2)) is off by ≤ 1.35u relative, which
// moves sin x by ≤ 1.35u relative (x·cot x ≤ 1) and cos x by ≤ 1.06u (x·tan x ≤ π/4); the
// polynomials add ≤ 1.1u (sin: the final sum) and ≤ 2.9u (cos: z, 1 − z/2 and the final sum,
// relative to cos x ≥ 0.707). So ≤ 4 ulp each.
SinCos portable_sincos_turns(double t) {
  if (!std::isfinite(t)) return {std::numeric_limits<double>::quiet_NaN(), std::numeric_limits<double>::quiet_NaN()};
  if (std::fabs(t) >= 0x1p52) return {0.0, 1.0};  // every such double is a whole number of turns
  const double t4 = 4.0 * t;                // exact
  // q = the nearest quarter turn; below 2^51, by adding and subtracting 1.5·2^52 (each exact
  // but the first's rounding to an integer, ties to even), cheaper than a call to std::round.
  const double q = std::fabs(t4) < 0x1p51 ? (t4 + 0x1.8p52) - 0x1.8p52 : std::round(t4);
  const double d = t4 - q;                  // exact: |d| ≤ 1/2 (Sterbenz where q ≠ 0)
  const double x = d * kPiOver2;            // |x| ≤ π/4
  const double z = x * x;
  const double s = sin_kernel(x, z), c = cos_kernel(z);
  switch (static_cast<int64_t>(q) & 3) {    // q mod 4 in {0, 1, 2, 3} (|q| ≤ 2^54, two's complement)
    case 0: return {s, c};
    case 1: return {c, -s};
    case 2: return {-s, -c};
    default: return {-c, s};
  }
}

void portable_sincos_turns(const double* t, double* s, double* c, int64_t n) {
  for (int64_t j = 0; j < n; ++j) {
    const SinCos sc = portable_sincos_turns(t[j]);
    s[j] = sc.sin;
    c[j] = sc.cos;
  }
}

}  // namespace normcheck
