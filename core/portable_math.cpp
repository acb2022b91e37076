// Compiled with -ffp-contract=off (CMakeLists.txt): every operation below is one IEEE rounding.
#include "normcheck/portable_math.hpp"

#include <atomic>
#include <bit>
#include <cfloat>
#include <cmath>
#include <cstddef>
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
[[gnu::always_inline]] inline double atanh_tail(double z) {
  const double z2 = z * z, z4 = z2 * z2, z8 = z4 * z4;
  const double p01 = 1.0 / 3 + z * (1.0 / 5), p23 = 1.0 / 7 + z * (1.0 / 9), p45 = 1.0 / 11 + z * (1.0 / 13);
  const double p67 = 1.0 / 15 + z * (1.0 / 17), p89 = 1.0 / 19 + z * (1.0 / 21);
  const double p0_3 = p01 + z2 * p23, p4_7 = p45 + z2 * p67;
  return z * ((p0_3 + z4 * p4_7) + z8 * p89);
}

/// c[0]·z^(N−1) + … + c[N−1] by Horner's scheme, the loop unrolled completely (#pragma GCC unroll)
/// before vectorization, so that a loop over elements around it still vectorizes.
template <std::size_t N>
[[gnu::always_inline]] inline double horner(double z, const double (&c)[N]) {
  double p = c[0];
#pragma GCC unroll 32
  for (std::size_t k = 1; k < N; ++k) p = c[k] + z * p;
  return p;
}

// 1/n! with n! exact in double up to 18! (< 2^53), so each coefficient is one rounding.
constexpr double kSinCoefficients[] = {1.0 / 355687428096000.0, -1.0 / 1307674368000.0, 1.0 / 6227020800.0,
                                       -1.0 / 39916800.0, 1.0 / 362880.0, -1.0 / 5040.0, 1.0 / 120.0, -1.0 / 6.0};
constexpr double kCosCoefficients[] = {-1.0 / 6402373705728000.0, 1.0 / 20922789888000.0, -1.0 / 87178291200.0,
                                       1.0 / 479001600.0, -1.0 / 3628800.0, 1.0 / 40320.0, -1.0 / 720.0, 1.0 / 24.0};

/// sin x for |x| ≤ π/4: x − x³/3! + … + x¹⁷/17!, as x + x·z·P(z), z = x².
[[gnu::always_inline]] inline double sin_kernel(double x, double z) { return x + x * (z * horner(z, kSinCoefficients)); }

/// cos x for |x| ≤ π/4: 1 − x²/2 + x⁴/4! − … − x¹⁸/18!, as (1 − z/2) + z²·P(z), z = x².
[[gnu::always_inline]] inline double cos_kernel(double z) { return (1.0 - 0.5 * z) + (z * z) * horner(z, kCosCoefficients); }

/// log(m·2^e) for m in (√2/2, √2], e given as a double (exact: |e| ≤ 1100).
[[gnu::always_inline]] inline double log_of_split(double m, double de) {
  const double s = (m - 1.0) / (m + 1.0);  // m − 1 exact (Sterbenz: m in [1/2, 2])
  const double s2 = s + s;
  const double log_m = s2 + s2 * atanh_tail(s * s);
  return de * kLn2Hi + (log_m + de * kLn2Lo);
}

/// sin and cos of 2π·t from t4 = 4t, its nearest integer q and q mod 4: x = (t4 − q)·π/2
/// (t4 − q exact: |d| ≤ 1/2, Sterbenz where q ≠ 0; |x| ≤ π/4), the polynomials, then the
/// quadrant's swap and sign changes as selects (a negation is a sign-bit flip, as unary minus
/// is), so that a loop over elements vectorizes.
[[gnu::always_inline]] inline void sincos_of_quarter(double t4, double q, uint64_t quadrant, double& s_out,
                                                     double& c_out) {
  const double x = (t4 - q) * kPiOver2;
  const double z = x * x;
  const double s = sin_kernel(x, z), c = cos_kernel(z);
  const bool swap = (quadrant & 1) != 0;  // quadrants 1 and 3: (c, −s) and (−c, s)
  const double s1 = swap ? c : s, c1 = swap ? s : c;
  const uint64_t neg_s = (quadrant >> 1) << 63, neg_c = ((quadrant ^ (quadrant >> 1)) & 1) << 63;
  s_out = std::bit_cast<double>(std::bit_cast<uint64_t>(s1) ^ neg_s);
  c_out = std::bit_cast<double>(std::bit_cast<uint64_t>(c1) ^ neg_c);
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
  return log_of_split(m, static_cast<double>(e));
}

namespace {

// Branch-free block forms (the same operations as the scalar functions above, in the same order,
// with selects instead of branches), so that the compiler vectorizes them; each lane's result is
// the scalar function's bits: IEEE operations are the same in a vector lane, and -ffp-contract=off
// fuses nothing. Lanes outside the branch-free domain are recomputed by the scalar function.

/// portable_log for a normal positive finite x: split_exponent without the subnormal branch and
/// with m > √2 as a select, then log_of_split.
[[gnu::always_inline]] inline double log_normal(double x) {
  const auto b = std::bit_cast<uint64_t>(x);
  const uint64_t mb = (b & 0x000fffffffffffffULL) | 0x3ff0000000000000ULL;  // m in [1, 2)
  // m > √2: m·0.5 (exact, one less in the exponent field) and e + 1, as masks, not branches.
  const uint64_t big = uint64_t{0} - static_cast<uint64_t>(std::bit_cast<double>(mb) > kSqrt2);
  const double m = std::bit_cast<double>(mb - (big & (uint64_t{1} << 52)));
  const double de = (small_uint_to_double(b >> 52) - 1023.0) + std::bit_cast<double>(big & 0x3ff0000000000000ULL);
  return log_of_split(m, de);
}

[[gnu::always_inline]] inline void log_block(const double* x, double* y, int64_t n) {
  for (int64_t j = 0; j < n; ++j) y[j] = log_normal(x[j]);
}

/// portable_sincos_turns for |t| < 2^49 (so |4t| < 2^51): q from the rounding of 4t + 1.5·2^52,
/// whose two lowest significand bits are q mod 4 (2^51 + q in two's complement mod 4).
[[gnu::always_inline]] inline void sincos_small(double t, double& s_out, double& c_out) {
  const double t4 = 4.0 * t;
  const double shifted = t4 + 0x1.8p52;
  sincos_of_quarter(t4, shifted - 0x1.8p52, std::bit_cast<uint64_t>(shifted) & 3, s_out, c_out);
}

[[gnu::always_inline]] inline void sincos_block(const double* t, double* s, double* c, int64_t n) {
  for (int64_t j = 0; j < n; ++j) sincos_small(t[j], s[j], c[j]);
}

#if defined(__x86_64__) && defined(__GNUC__)
// The same loops for AVX2 (4 lanes instead of SSE2's 2; no FMA enabled, none could be used);
// chosen at run time where the CPU has it.
[[gnu::target("avx2")]] void log_block_avx2(const double* x, double* y, int64_t n) { log_block(x, y, n); }
[[gnu::target("avx2")]] void sincos_block_avx2(const double* t, double* s, double* c, int64_t n) {
  sincos_block(t, s, c, n);
}
#endif

std::atomic<bool> g_allow_avx2{true};

}  // namespace

bool portable_math_avx2() {
#if defined(__x86_64__) && defined(__GNUC__)
  static const bool has = __builtin_cpu_supports("avx2");
  return has && g_allow_avx2.load(std::memory_order_relaxed);
#else
  return false;
#endif
}

void set_portable_math_avx2(bool allow) { g_allow_avx2.store(allow, std::memory_order_relaxed); }

namespace {

void log_block_any(const double* x, double* y, int64_t n) {
#if defined(__x86_64__) && defined(__GNUC__)
  if (portable_math_avx2()) return log_block_avx2(x, y, n);
#endif
  log_block(x, y, n);
}

void sincos_block_any(const double* t, double* s, double* c, int64_t n) {
#if defined(__x86_64__) && defined(__GNUC__)
  if (portable_math_avx2()) return sincos_block_avx2(t, s, c, n);
#endif
  sincos_block(t, s, c, n);
}

/// Calls block(b, len) on blocks [b, b + len) of up to kSpecialBlock elements, after noting the
/// elements of x outside the branch-free domain (rare), and then sets those through
/// scalar(x_j, j): the original x_j is kept, so the outputs may overwrite x.
constexpr int64_t kSpecialBlock = 256;
template <class InDomain, class Block, class Scalar>
void blocks_with_fixups(const double* x, int64_t n, const InDomain& in_domain, const Block& block,
                        const Scalar& scalar) {
  int64_t idx[kSpecialBlock];
  double val[kSpecialBlock];
  for (int64_t b = 0; b < n; b += kSpecialBlock) {
    const int64_t len = n - b < kSpecialBlock ? n - b : kSpecialBlock;
    int64_t k = 0;
    for (int64_t j = b; j < b + len; ++j)
      if (!in_domain(x[j])) idx[k] = j, val[k++] = x[j];
    block(b, len);
    for (int64_t q = 0; q < k; ++q) scalar(val[q], idx[q]);
  }
}

}  // namespace

void portable_log(const double* x, double* y, int64_t n) {
  blocks_with_fixups(
      x, n, [](double v) { return v >= DBL_MIN && v <= DBL_MAX; },  // not zero, subnormal, negative, inf, NaN
      [&](int64_t b, int64_t len) { log_block_any(x + b, y + b, len); },
      [&](double v, int64_t j) { y[j] = portable_log(v); });
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
  SinCos r;  // q mod 4 in {0, 1, 2, 3} (|q| ≤ 2^54, two's complement)
  sincos_of_quarter(t4, q, static_cast<uint64_t>(static_cast<int64_t>(q)) & 3, r.sin, r.cos);
  return r;
}

void portable_sincos_turns(const double* t, double* s, double* c, int64_t n) {
  blocks_with_fixups(
      t, n, [](double v) { return std::fabs(v) < 0x1p49; },  // not large, infinite or NaN
      [&](int64_t b, int64_t len) { sincos_block_any(t + b, s + b, c + b, len); },
      [&](double v, int64_t j) {
        const SinCos sc = portable_sincos_turns(v);
        s[j] = sc.sin;
        c[j] = sc.cos;
      });
}

}  // namespace normcheck
