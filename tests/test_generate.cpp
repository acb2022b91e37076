// Input generation (generate.hpp) and its portable math (portable_math.hpp): the same bits for
// every thread count and layout, ranges that agree with the whole tensor, the documented
// formulas checked against independent computations, the statistics of the draws, and the
// accuracy of the own log and sincos.
#include <gtest/gtest.h>

#include <algorithm>
#include <cfloat>
#include <bit>
#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "normcheck/generate.hpp"
#include "normcheck/memory.hpp"
#include "normcheck/portable_math.hpp"

namespace normcheck {
namespace {

std::vector<const Tensor*> tensors_of(const GeneratedInputs& g) {
  std::vector<const Tensor*> t;
  for (const auto& b : g.batches) t.push_back(&b);
  for (const Tensor* o : {&g.dy, &g.gamma, &g.beta, &g.running_mean, &g.running_var}) t.push_back(o);
  return t;
}

bool same_bytes(const Tensor& a, const Tensor& b) {
  // memcmp of an empty tensor's null data pointer is undefined (UBSan), even for 0 bytes.
  return a.nbytes() == b.nbytes() && a.dtype() == b.dtype() &&
         (a.nbytes() == 0 || std::memcmp(a.data(), b.data(), a.nbytes()) == 0);
}

// Sizes above 2^16 elements (several ranges), odd sizes (a last unpaired normal), every dtype,
// both layouts, the special cases and the G6 gradient.
const char* const kCases[] = {
    "batch_norm,shape=2x8x100x100",
    "batch_norm,pass=forward_training,steps=3,dtype=f16,layout=nhwc,shape=3x5x7x1001",
    "batch_norm,pass=forward_inference,steps=0,data=uniform:-2:3,shape=2x3x11x13",
    "batch_norm,pass=backward_training,dtype=bf16,layout=nhwc,shape=2x64x33x31",
    "layer_norm,pass=backward_training,dtype=f64,shape=257x513",
    "layer_norm,pass=backward_training,shape=129x1031,dy=common:1000:0.5",
    "group_norm,groups=4,pass=backward_training,layout=nhwc,shape=2x8x97x89,dy=common:10:2",
    "instance_norm,special=spikes,shape=3x4x150x151",
    "rms_norm,special=cancel,dtype=f16,shape=300x301",
    "group_norm,groups=2,special=const_set,data=normal:5:0.25,shape=4x6x50x50",
};

TEST(Generate, SameBitsForEveryThreadCount) {
  for (const char* c : kCases) {
    const Problem p = parse_descriptor(c);
    const Partition part = make_partition(p);
    const GeneratedInputs one = generate_inputs(p, part, 1);
    const auto ref = tensors_of(one);
    for (int threads : {2, 3, 7}) {
      const GeneratedInputs g = generate_inputs(p, part, threads);
      const auto got = tensors_of(g);
      ASSERT_EQ(got.size(), ref.size());
      for (size_t k = 0; k < ref.size(); ++k)
        EXPECT_TRUE(same_bytes(*got[k], *ref[k])) << c << " threads=" << threads << " tensor " << k;
    }
  }
}

std::string with_layout(std::string c, const char* layout) {
  const auto at = c.find(",layout=nhwc");
  if (at != std::string::npos) c.erase(at, 12);
  return c + ",layout=" + layout;
}

TEST(Generate, NchwAndNhwcHoldTheSameLogicalValues) {
  for (const char* c : kCases) {
    const Problem a = parse_descriptor(with_layout(c, "nchw")), b = parse_descriptor(with_layout(c, "nhwc"));
    const GeneratedInputs ga = generate_inputs(a, make_partition(a), 2), gb = generate_inputs(b, make_partition(b), 3);
    const auto ta = tensors_of(ga), tb = tensors_of(gb);
    ASSERT_EQ(ta.size(), tb.size());
    for (size_t k = 0; k < ta.size(); ++k) {
      const auto va = ta[k]->to_vector(), vb = tb[k]->to_vector();
      ASSERT_EQ(va.size(), vb.size());
      for (size_t i = 0; i < va.size(); ++i)
        ASSERT_TRUE(va[i] == vb[i] || (std::isnan(va[i]) && std::isnan(vb[i]))) << c << " tensor " << k << " i=" << i;
    }
    if (a.dims.size() >= 3) {
      EXPECT_FALSE(same_bytes(*ta[0], *tb[0])) << c << ": the layouts must differ physically";
    }
  }
}

TEST(Generate, ARangeAloneEqualsTheSameRangeOfTheWhole) {
  const uint64_t key = draws::role_key(7, draws::batch0);
  const int64_t n = 5000;
  for (const Distribution d : {Distribution{Distribution::Kind::normal, 1.5, 2.0},
                               Distribution{Distribution::Kind::uniform, -1.0, 4.0}}) {
    std::vector<double> whole(n);
    draws::fill(d, key, 0, n, whole.data());
    for (const auto& [first, count] : std::vector<std::pair<int64_t, int64_t>>{{0, 1}, {1, 1}, {3, 8}, {4, 7}, {999, 1000}, {4998, 2}}) {
      std::vector<double> part(count);
      draws::fill(d, key, first, count, part.data());
      for (int64_t j = 0; j < count; ++j) ASSERT_EQ(part[j], whole[first + j]) << first << "+" << j;
    }
  }
}

// The tensors are the documented draws rounded once to the dtype, in logical order.
TEST(Generate, TensorsAreTheDocumentedDrawsRoundedToTheDtype) {
  const Problem p = parse_descriptor("batch_norm,pass=backward_training,dtype=f16,layout=nhwc,data=normal:0.5:3,shape=2x3x150x150,seed=42");
  const GeneratedInputs g = generate_inputs(p, make_partition(p), 2);
  const int64_t n = g.batches[0].numel();
  std::vector<double> x(n), dy(n);
  draws::fill(p.data, draws::role_key(42, draws::batch0), 0, n, x.data());
  draws::fill_normal(draws::role_key(42, draws::dy), 0, n, dy.data());
  for (int64_t i = 0; i < n; ++i) {
    ASSERT_EQ(g.batches[0].get(i), round_to(DType::f16, x[i])) << i;
    ASSERT_EQ(g.dy.get(i), round_to(DType::f16, dy[i])) << i;
  }
  for (int64_t c = 0; c < 3; ++c) {
    const uint64_t b = draws::bits(draws::role_key(42, draws::gamma), static_cast<uint64_t>(c));
    const double mag = 0.5 + 1.5 * std::ldexp(static_cast<double>(b >> 11), -53);
    EXPECT_EQ(g.gamma.get(c), round_to(DType::f32, (b & 1) ? -mag : mag));
    EXPECT_EQ(g.beta.get(c), round_to(DType::f32, -1 + 2 * draws::uniform(draws::role_key(42, draws::beta), c)));
  }
}

// splitmix64 (Vigna's reference splitmix64.c) started from state 1234567: its first outputs are
// the published test vector; bits(key, n) is output n + 1 of that generator.
TEST(Generate, BitsAreTheSplitmix64Sequence) {
  const uint64_t expected[] = {6457827717110365317ULL, 3203168211198807973ULL, 9817491932198370423ULL,
                               4593380528125082431ULL, 16408922859458223821ULL};
  for (uint64_t n = 0; n < 5; ++n) EXPECT_EQ(draws::bits(1234567, n), expected[n]) << n;
  EXPECT_NE(draws::role_key(1, draws::dy), draws::role_key(1, draws::gamma));
  EXPECT_NE(draws::role_key(1, draws::dy), draws::role_key(2, draws::dy));
}

// Box–Muller pairing from the formula, with the C library's log and atan2 as the independent
// computation: N_2k² + N_2k+1² = −2·log u1 and atan2(N_2k+1, N_2k) = 2π·U_2k+1 (mod 2π).
TEST(Generate, NormalsAreBoxMullerPairsUsingBothHalves) {
  const uint64_t key = draws::role_key(3, draws::dy);
  std::vector<double> v(2000);
  draws::fill_normal(key, 0, 2000, v.data());
  for (uint64_t k = 0; k < 1000; ++k) {
    const double u1 = std::ldexp(static_cast<double>((draws::bits(key, 2 * k) >> 11) + 1), -53);
    const double r2 = v[2 * k] * v[2 * k] + v[2 * k + 1] * v[2 * k + 1];
    EXPECT_NEAR(r2, -2 * std::log(u1), 1e-13 * (1 + r2)) << k;
    double theta = std::atan2(v[2 * k + 1], v[2 * k]);
    if (theta < 0) theta += 2 * M_PI;
    const double want = 2 * M_PI * draws::uniform(key, 2 * k + 1);
    const double diff = std::fabs(theta - want);
    EXPECT_LT(std::min(diff, 2 * M_PI - diff), 1e-12 * (1 + 1 / std::sqrt(r2))) << k;
  }
}

// ----- statistics (2^20 draws; bounds: 6 standard errors, KS at the 1e-9 level) -----

constexpr int64_t kDraws = int64_t{1} << 20;

double mean_of(const std::vector<double>& v) {
  double s = 0;
  for (double x : v) s += x;
  return s / static_cast<double>(v.size());
}
double var_of(const std::vector<double>& v, double mu) {
  double s = 0;
  for (double x : v) s += (x - mu) * (x - mu);
  return s / static_cast<double>(v.size());
}
/// Kolmogorov–Smirnov distance sup |F_n − F| of the sample v against the CDF cdf.
template <class Cdf>
double ks_distance(std::vector<double> v, const Cdf& cdf) {
  std::sort(v.begin(), v.end());
  const auto n = static_cast<double>(v.size());
  double d = 0;
  for (size_t i = 0; i < v.size(); ++i) {
    const double f = cdf(v[i]);
    d = std::max({d, static_cast<double>(i + 1) / n - f, f - static_cast<double>(i) / n});
  }
  return d;
}
/// P(√n·D_n > λ) ≤ 2·exp(−2λ²) (Dvoretzky–Kiefer–Wolfowitz, Massart 1990): for 1e-9, λ = 3.28.
double ks_bound(size_t n) { return 3.28 / std::sqrt(static_cast<double>(n)); }

double normal_cdf(double x) { return 0.5 * std::erfc(-x / std::sqrt(2.0)); }

std::vector<double> every_other(const std::vector<double>& v, size_t start) {
  std::vector<double> out;
  for (size_t i = start; i < v.size(); i += 2) out.push_back(v[i]);
  return out;
}

TEST(Generate, NormalDrawsHaveTheNormalDistribution) {
  std::vector<double> v(kDraws);
  draws::fill_normal(draws::role_key(11, draws::batch0), 0, kDraws, v.data());
  const double n = static_cast<double>(kDraws), mu = mean_of(v);
  EXPECT_LT(std::fabs(mu), 6 / std::sqrt(n));                      // sd of the mean: 1/√n
  EXPECT_LT(std::fabs(var_of(v, mu) - 1), 6 * std::sqrt(2 / n));   // sd of the variance: √(2/n)
  EXPECT_LT(ks_distance(v, normal_cdf), ks_bound(v.size()));
  for (size_t half : {0, 1}) {  // cos halves and sin halves each N(0, 1)
    const auto h = every_other(v, half);
    EXPECT_LT(ks_distance(h, normal_cdf), ks_bound(h.size())) << "half " << half;
  }
  double c = 0;  // the two halves of a pair are uncorrelated: sd of the sample correlation 1/√(n/2)
  for (int64_t k = 0; k < kDraws / 2; ++k) c += v[2 * k] * v[2 * k + 1];
  EXPECT_LT(std::fabs(c / (n / 2)), 6 / std::sqrt(n / 2));
}

TEST(Generate, UniformDrawsHaveTheUniformDistribution) {
  const uint64_t key = draws::role_key(12, draws::batch0);
  std::vector<double> v(kDraws);
  for (int64_t i = 0; i < kDraws; ++i) v[i] = draws::uniform(key, i);
  const double n = static_cast<double>(kDraws), mu = mean_of(v);
  EXPECT_LT(std::fabs(mu - 0.5), 6 * std::sqrt(1.0 / 12 / n));             // Var U = 1/12
  EXPECT_LT(std::fabs(var_of(v, mu) - 1.0 / 12), 6 * std::sqrt(1.0 / 180 / n));  // Var (U−½)² = 1/80 − 1/144
  EXPECT_LT(ks_distance(v, [](double x) { return x; }), ks_bound(v.size()));
  double c = 0;  // neighbours uncorrelated: Var((U−½)(V−½)) = 1/144
  for (int64_t i = 0; i + 1 < kDraws; ++i) c += (v[i] - 0.5) * (v[i + 1] - 0.5);
  EXPECT_LT(std::fabs(c / n), 6 * std::sqrt(1.0 / 144 / n));
}

// ----- portable_log / portable_sincos_turns against independent computations -----

/// |a − ref| in ulps of the double nearest ref.
double ulps(double a, long double ref) {
  const double r = static_cast<double>(ref);
  const double ulp = r == 0 ? std::numeric_limits<double>::denorm_min()
                            : std::max(std::ldexp(1.0, std::ilogb(r) - 52), std::numeric_limits<double>::denorm_min());
  return static_cast<double>(std::fabs(static_cast<long double>(a) - ref) / ulp);
}

TEST(PortableMath, LogIsWithinTwoUlpOfLongDoubleAndThreeOfStdLog) {
  double worst_l = 0, worst_d = 0;
  const uint64_t key = draws::role_key(99, 1);
  for (uint64_t n = 0; n < 400000; ++n) {
    double x;
    if (n % 2 == 0) {  // the generator's own arguments, (0, 1]
      x = std::ldexp(static_cast<double>((draws::bits(key, n) >> 11) + 1), -53);
    } else {           // any positive finite double, subnormals included
      const uint64_t b = draws::bits(key, n) & 0x7fffffffffffffffULL;
      std::memcpy(&x, &b, 8);
      if (!std::isfinite(x) || x == 0) continue;
    }
    worst_l = std::max(worst_l, ulps(portable_log(x), std::log(static_cast<long double>(x))));
    worst_d = std::max(worst_d, ulps(portable_log(x), std::log(x)));
  }
  EXPECT_LE(worst_l, 2.0);
  EXPECT_LE(worst_d, 3.0);
  RecordProperty("worst_ulp_vs_logl", std::to_string(worst_l));
  std::printf("portable_log: worst %.3f ulp against logl, %.3f against log\n", worst_l, worst_d);
}

TEST(PortableMath, LogOfKnownValues) {
  EXPECT_EQ(portable_log(1.0), 0.0);
  const long double ln2 = 0.693147180559945309417232121458176568L;
  for (int k : {-1074, -1022, -60, -1, 1, 2, 10, 100, 1023})
    EXPECT_LE(ulps(portable_log(std::ldexp(1.0, k)), k * ln2), 1.0) << k;
  // Correctly rounded values from mpmath 1.2.1 at 300 bits (log(mpf(x)), rounded to double).
  const std::pair<double, double> table[] = {
      {0.5, -0.6931471805599453}, {0.1, -2.3025850929940455}, {0.7, -0.35667494393873245},
      {1e-300, -690.7755278982137}, {2.2250738585072014e-308, -708.3964185322641}, {5e-324, -744.4400719213812},
      {0.9999999999999999, -1.1102230246251565e-16}, {3.0, 1.0986122886681098}, {10.0, 2.302585092994046},
      {1e300, 690.7755278982137}};
  for (const auto& [x, want] : table) EXPECT_LE(ulps(portable_log(x), want), 2.0) << x;
  EXPECT_EQ(portable_log(0.0), -std::numeric_limits<double>::infinity());
  EXPECT_TRUE(std::isnan(portable_log(-1.0)));
  EXPECT_TRUE(std::isnan(portable_log(std::numeric_limits<double>::quiet_NaN())));
  EXPECT_EQ(portable_log(std::numeric_limits<double>::infinity()), std::numeric_limits<double>::infinity());
}

TEST(PortableMath, BlockFormsGiveTheSameBitsAsOneValueAtATime) {
  std::vector<double> x = {0.0, -1.0, 5e-324, 1e-310, 0.5, 1.0, 3.0, std::numeric_limits<double>::infinity(),
                           std::numeric_limits<double>::quiet_NaN(), -0.0, 0.75, 1e300};
  for (uint64_t n = 0; n < 2000; ++n) x.push_back(std::ldexp(static_cast<double>((draws::bits(5, n) >> 11) + 1), -53));
  // Wide arguments too: the block forms' branch-free domain ends at DBL_MIN (log) and 2^49 (sin/cos).
  for (uint64_t n = 0; n < 2000; ++n)
    x.push_back(std::ldexp(draws::uniform(6, n) - 0.25, static_cast<int>(draws::bits(7, n) % 2200) - 1100));
  for (double v : {0x1p49, -0x1p49, 0x1p49 - 0.25, 0x1p52, 0x1.8p52, DBL_MIN, DBL_MAX, -DBL_MIN}) x.push_back(v);
  const auto same = [](double a, double b) { return std::memcmp(&a, &b, 8) == 0 || (std::isnan(a) && std::isnan(b)); };
  const auto n = static_cast<int64_t>(x.size());
  for (const bool avx2 : {true, false}) {  // both instantiations (AVX2 only where the CPU has it)
    set_portable_math_avx2(avx2);
    std::vector<double> y(x.size()), s(x.size()), c(x.size());
    portable_log(x.data(), y.data(), n);
    portable_sincos_turns(x.data(), s.data(), c.data(), n);
    std::vector<double> y_in_place = x, s_in_place = x;  // outputs over the arguments
    portable_log(y_in_place.data(), y_in_place.data(), n);
    portable_sincos_turns(s_in_place.data(), s_in_place.data(), c.data(), n);
    for (size_t j = 0; j < x.size(); ++j) {
      EXPECT_TRUE(same(y[j], portable_log(x[j]))) << x[j] << " avx2 " << avx2;
      EXPECT_TRUE(same(y_in_place[j], portable_log(x[j]))) << x[j] << " avx2 " << avx2;
      EXPECT_TRUE(same(s[j], portable_sincos_turns(x[j]).sin)) << x[j] << " avx2 " << avx2;
      EXPECT_TRUE(same(s_in_place[j], portable_sincos_turns(x[j]).sin)) << x[j] << " avx2 " << avx2;
      EXPECT_TRUE(same(c[j], portable_sincos_turns(x[j]).cos)) << x[j] << " avx2 " << avx2;
    }
  }
  set_portable_math_avx2(true);
}

// fill_normal's block path (vectorized draws, log and sin/cos) against normal pairs computed one
// at a time from the documented formula with the scalar functions, in both instantiations.
TEST(Generate, BlockNormalsEqualThePairFormulaOneAtATime) {
  const uint64_t key = draws::role_key(11, draws::dy);
  for (const bool avx2 : {true, false}) {
    set_portable_math_avx2(avx2);
    std::vector<double> v(5001);
    draws::fill_normal(key, 3, 5001, v.data());  // starts at an odd index, ends on a half pair
    for (int64_t i = 3; i < 5004; ++i) {
      const auto k = static_cast<uint64_t>(i / 2);
      const double u1 = static_cast<double>((draws::bits(key, 2 * k) >> 11) + 1) * 0x1p-53;
      const double r = std::sqrt(-2.0 * portable_log(u1));
      const SinCos sc = portable_sincos_turns(draws::uniform(key, 2 * k + 1));
      const double want = i % 2 == 0 ? r * sc.cos : r * sc.sin;
      EXPECT_EQ(std::bit_cast<uint64_t>(v[static_cast<size_t>(i - 3)]), std::bit_cast<uint64_t>(want)) << i << " avx2 " << avx2;
    }
  }
  set_portable_math_avx2(true);
}

/// sin and cos of 2π·t in long double, through the exact reduction t = q/4 + d/4 done here
/// independently (in long double, exact for these t) and long double sinl/cosl of d·π/2.
void reference_sincos(double t, long double& s, long double& c) {
  const long double q = std::nearbyint(4.0L * t), d = 4.0L * t - q;
  const long double x = d * 1.570796326794896619231321691639751442L;
  const long double s0 = std::sin(x), c0 = std::cos(x);
  const long long k = ((static_cast<long long>(q) % 4) + 4) % 4;
  const long double sv[4] = {s0, c0, -s0, -c0}, cv[4] = {c0, -s0, -c0, s0};
  s = sv[k];
  c = cv[k];
}

TEST(PortableMath, SinCosTurnsAreWithinTwoUlp) {
  double worst = 0, worst_abs_std = 0;
  const uint64_t key = draws::role_key(98, 1);
  for (uint64_t n = 0; n < 400000; ++n) {
    const double u = draws::uniform(key, n);
    const double t = n % 4 == 3 ? 2000 * u - 1000 : u;  // mostly the generator's [0, 1)
    const SinCos sc = portable_sincos_turns(t);
    long double s, c;
    reference_sincos(t, s, c);
    worst = std::max({worst, ulps(sc.sin, s), ulps(sc.cos, c)});
    // The C library on the rounded argument fl(fl(2π)·t), t in [0, 1): the argument is off by
    // ≤ 2^-51·t (fl(2π)) + 2^-51 (the product), so sin and cos by ≤ 2^-50, plus ≤ 1 ulp of the
    // library and 2 of ours (≤ 3·2^-53): ≤ 11·2^-53 in all; 12 allowed.
    if (n % 4 != 3)
      worst_abs_std = std::max({worst_abs_std, std::fabs(sc.sin - std::sin(2 * M_PI * t)), std::fabs(sc.cos - std::cos(2 * M_PI * t))});
  }
  EXPECT_LE(worst, 2.0);
  EXPECT_LE(worst_abs_std, 12 * 0x1p-53);
  std::printf("portable_sincos_turns: worst %.3f ulp against sinl/cosl; %.3g absolute against sin/cos\n", worst, worst_abs_std);
}

TEST(PortableMath, SinCosTurnsOfKnownValues) {
  const auto exact = [](double t, double s, double c) {
    const SinCos sc = portable_sincos_turns(t);
    EXPECT_EQ(sc.sin, s) << t;
    EXPECT_EQ(sc.cos, c) << t;
  };
  exact(0, 0, 1);
  exact(0.25, 1, 0);
  exact(0.5, 0, -1);
  exact(0.75, -1, 0);
  exact(-0.25, -1, 0);
  exact(12345.0, 0, 1);
  // mpmath 1.2.1 at 300 bits: sin(2·pi·mpf(t)), cos(2·pi·mpf(t)) rounded to double.
  const double table[][3] = {{0.1, 0.5877852522924731, 0.8090169943749475},
                             {0.3, 0.9510565162951536, -0.30901699437494734},
                             {1 / 3.0, 0.8660254037844387, -0.4999999999999999},
                             {0.123456789, 0.700217342727619, 0.7139297395006543},
                             {0.7, -0.9510565162951535, -0.3090169943749477},
                             {0.95, -0.3090169943749477, 0.9510565162951535},
                             {0x1p-30, 5.8516723170686385e-09, 1.0}};
  for (const auto& r : table) {
    const SinCos sc = portable_sincos_turns(r[0]);
    EXPECT_LE(ulps(sc.sin, r[1]), 2.0) << r[0];
    EXPECT_LE(ulps(sc.cos, r[2]), 2.0) << r[0];
  }
  const long double half_sqrt2 = 0.707106781186547524400844362104849039L;
  EXPECT_LE(ulps(portable_sincos_turns(0.125).sin, half_sqrt2), 1.0);
  EXPECT_LE(ulps(portable_sincos_turns(0.125).cos, half_sqrt2), 1.0);
  EXPECT_LE(ulps(portable_sincos_turns(1 / 12.0).sin, 0.5L), 2.0);
  EXPECT_TRUE(std::isnan(portable_sincos_turns(std::numeric_limits<double>::infinity()).sin));
}


// Tensor::read and ::write over arbitrary ranges of every layout and dtype against element-wise
// addressing computed here from the layout's definition (NHWC: N, spatial..., C physically).
TEST(TensorRanges, ReadAndWriteOfAnyRangeAddressTheLayoutsElements) {
  const std::vector<int64_t> dims = {3, 5, 4, 7};  // N, C, H, W: odd extents, rows of 7
  const int64_t n = 3 * 5 * 4 * 7;
  const auto physical = [&](Layout l, int64_t i) {  // logical index (n, c, h, w) → storage element
    const int64_t w = i % 7, h = (i / 7) % 4, c = (i / 28) % 5, b = i / 140;
    return l == Layout::nchw ? i : ((b * 4 + h) * 7 + w) * 5 + c;
  };
  for (const DType dt : {DType::f32, DType::f64, DType::f16, DType::bf16})
    for (const Layout l : {Layout::nchw, Layout::nhwc}) {
      Tensor t(dt, dims, l);
      std::vector<double> v(static_cast<size_t>(n));
      for (int64_t i = 0; i < n; ++i) v[i] = static_cast<double>(i) - 200;  // exact in every dtype
      for (int64_t lo = 0; lo < n;) {  // written in uneven ranges that start and end mid-row
        const int64_t hi = std::min(n, lo + 1 + (lo * 7919) % 23);
        t.write(lo, hi, v.data() + lo);
        lo = hi;
      }
      const auto* bytes = static_cast<const unsigned char*>(t.arg().data);
      for (int64_t i = 0; i < n; ++i) {
        double stored = 0;
        const int64_t off = physical(l, i);
        switch (dt) {
          case DType::f32: { float f; std::memcpy(&f, bytes + 4 * off, 4); stored = f; break; }
          case DType::f64: std::memcpy(&stored, bytes + 8 * off, 8); break;
          case DType::f16: case DType::bf16: {  // these small integers: the float's top 16 bits (bf16)
            uint16_t h;
            std::memcpy(&h, bytes + 2 * off, 2);
            stored = dt == DType::bf16 ? static_cast<double>(std::bit_cast<float>(static_cast<uint32_t>(h) << 16))
                                       : t.get(i);
            break;
          }
        }
        ASSERT_EQ(stored, v[i]) << to_string(dt) << " layout " << static_cast<int>(l) << " i=" << i;
      }
      for (int64_t lo = 0; lo < n; lo += 13) {
        const int64_t hi = std::min(n, lo + 31);
        std::vector<double> got(static_cast<size_t>(hi - lo));
        t.read(lo, hi, got.data());
        for (int64_t i = lo; i < hi; ++i) ASSERT_EQ(got[i - lo], v[i]) << to_string(dt) << " i=" << i;
      }
    }
}

// assign_large: a fresh buffer of n copies of the value whatever v held before (the huge-page
// advice changes where the memory comes from, never what it holds); the advice itself accepts
// any pointer and size without throwing.
TEST(HugePages, AssignLargeHoldsNCopiesOfTheValue) {
  std::vector<double> v(10, -1.0);
  const size_t n = (kHugePageMinBytes / sizeof(double)) * 3 + 7;  // advised, not a whole page
  assign_large(v, n, 2.5);
  ASSERT_EQ(v.size(), n);
  EXPECT_EQ(std::count(v.begin(), v.end(), 2.5), static_cast<std::ptrdiff_t>(n));
  assign_large(v, 3, 1.0);  // small: not advised, the same contents rule
  EXPECT_EQ(v, (std::vector<double>{1.0, 1.0, 1.0}));
  advise_huge_pages(nullptr, kHugePageMinBytes);
  advise_huge_pages(v.data(), 1);
  std::vector<char> buf(kHugePageMinBytes + 8192, 'a');  // an unaligned start, inside one buffer
  advise_huge_pages(buf.data() + 1, buf.size() - 1);
  EXPECT_EQ(std::count(buf.begin(), buf.end(), 'a'), static_cast<std::ptrdiff_t>(buf.size()));
}

}  // namespace
}  // namespace normcheck
