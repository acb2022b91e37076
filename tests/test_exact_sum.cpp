// ExactSum (include/normcheck/exact_sum.hpp) against independent arithmetic: MPFR sums whose every
// step is checked to be exact (ternary value 0), __int128 integer sums, and hand derivations.
#include "normcheck/exact_sum.hpp"

#include <gtest/gtest.h>
#include <mpfr.h>

#include <algorithm>
#include <bit>
#include <cfloat>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <stdexcept>
#include <thread>
#include <vector>

namespace {

using normcheck::ExactSum;
__extension__ typedef __int128 i128;

/// An MPFR number that frees itself.
struct Mp {
  mpfr_t x;
  explicit Mp(mpfr_prec_t prec = 2) {
    mpfr_init2(x, prec);
    mpfr_set_zero(x, 1);
  }
  ~Mp() { mpfr_clear(x); }
  Mp(const Mp&) = delete;
  Mp& operator=(const Mp&) = delete;
};

/// Independent exact sum: a 16000-bit MPFR accumulator (every term of these tests has its bits
/// within [2^-6700, 2^6700), so the sum is exact) whose every operation must report exactness.
class Reference {
 public:
  void add(double v) { EXPECT_EQ(mpfr_add_d(acc_.x, acc_.x, v, MPFR_RNDN), 0); }
  void add_product(double a, double b) {
    Mp p(106);  // 53 + 53 bits: exact
    mpfr_set_d(p.x, a, MPFR_RNDN);
    EXPECT_EQ(mpfr_mul_d(p.x, p.x, b, MPFR_RNDN), 0);
    EXPECT_EQ(mpfr_add(acc_.x, acc_.x, p.x, MPFR_RNDN), 0);
  }
  void add_product(double a, double b, double c) {
    Mp p(159);
    mpfr_set_d(p.x, a, MPFR_RNDN);
    EXPECT_EQ(mpfr_mul_d(p.x, p.x, b, MPFR_RNDN), 0);
    EXPECT_EQ(mpfr_mul_d(p.x, p.x, c, MPFR_RNDN), 0);
    EXPECT_EQ(mpfr_add(acc_.x, acc_.x, p.x, MPFR_RNDN), 0);
  }
  void add_scaled(double v, int e) {
    Mp p(53);
    mpfr_set_d(p.x, v, MPFR_RNDN);
    mpfr_mul_2si(p.x, p.x, e, MPFR_RNDN);
    EXPECT_EQ(mpfr_add(acc_.x, acc_.x, p.x, MPFR_RNDN), 0);
  }
  const mpfr_t& value() const { return acc_.x; }

 private:
  Mp acc_{16000};
};

/// x rounded to the nearest double, ties to even, with gradual underflow and overflow to ±inf,
/// derived from MPFR primitives: below 2^-1022 the result is the integer nearest x·2^1074 (mpfr_rint
/// in MPFR_RNDN rounds ties to even) times 2^-1074; above, x rounded to 53 bits, ±inf if ≥ 2^1024.
double expected_double(const mpfr_t x) {
  if (mpfr_zero_p(x)) return 0.0;
  Mp y(20000), min_normal(2);
  mpfr_set_ui_2exp(min_normal.x, 1, -1022, MPFR_RNDN);
  if (mpfr_cmpabs(x, min_normal.x) < 0) {
    mpfr_mul_2si(y.x, x, 1074, MPFR_RNDN);  // exact
    mpfr_rint(y.x, y.x, MPFR_RNDN);
    return std::ldexp(mpfr_get_d(y.x, MPFR_RNDN), -1074);  // an integer ≤ 2^52: exact
  }
  Mp r(53);
  mpfr_set(r.x, x, MPFR_RNDN);
  Mp overflow(2);
  mpfr_set_ui_2exp(overflow.x, 1, 1024, MPFR_RNDN);
  if (mpfr_cmpabs(r.x, overflow.x) >= 0) return mpfr_sgn(r.x) * std::numeric_limits<double>::infinity();
  return mpfr_get_d(r.x, MPFR_RNDN);  // representable: exact
}

/// ExactSum's exact value (through to_mpfr) equals the reference, and round() is its correctly
/// rounded double, bit for bit; sign() and is_zero() agree with MPFR.
void expect_matches(const ExactSum& s, const Reference& ref) {
  Mp got;
  s.to_mpfr(got.x);
  EXPECT_EQ(mpfr_cmp(got.x, ref.value()), 0) << "exact value differs";
  EXPECT_EQ(std::bit_cast<std::uint64_t>(s.round()), std::bit_cast<std::uint64_t>(expected_double(ref.value())))
      << s.round() << " vs " << expected_double(ref.value());
  EXPECT_EQ(s.sign(), mpfr_sgn(ref.value()));
  EXPECT_EQ(s.is_zero(), mpfr_zero_p(ref.value()) != 0);
}

std::uint64_t bits(double d) { return std::bit_cast<std::uint64_t>(d); }

/// A double with a uniformly random sign, significand and exponent field in [ef_lo, ef_hi]
/// (0 gives the subnormals and zero; 2046 the largest binade).
double random_double(std::mt19937_64& rng, int ef_lo = 0, int ef_hi = 2046) {
  std::uniform_int_distribution<int> ef(ef_lo, ef_hi);
  const std::uint64_t u = (rng() & 0x800FFFFFFFFFFFFFull) | (static_cast<std::uint64_t>(ef(rng)) << 52);
  return std::bit_cast<double>(u);
}

TEST(ExactSum, EmptyIsPositiveZero) {
  const ExactSum s;
  EXPECT_TRUE(s.is_zero());
  EXPECT_EQ(s.sign(), 0);
  EXPECT_EQ(bits(s.round()), bits(0.0));
  EXPECT_FALSE(s.has_nan() || s.has_pos_inf() || s.has_neg_inf());
  EXPECT_EQ(s.to_big_binary().sign, 0);
  EXPECT_TRUE(s.to_big_binary().limbs.empty());
}

TEST(ExactSum, RandomDoublesOfEveryMagnitude) {
  std::mt19937_64 rng(1);
  for (int trial = 0; trial < 20; ++trial) {
    ExactSum s;
    Reference ref;
    for (int i = 0; i < 2000; ++i) {
      const double v = random_double(rng);
      s.add(v);
      ref.add(v);
    }
    expect_matches(s, ref);
  }
}

TEST(ExactSum, RandomDoublesInOneWindowWithHeavyCancellation) {
  // Values in [2^-40, 2^40) and, for most of them, a nearby negative partner, so the sum is far
  // below the terms and its rounding depends on low bits.
  std::mt19937_64 rng(2);
  for (int trial = 0; trial < 20; ++trial) {
    ExactSum s;
    Reference ref;
    std::vector<double> v;
    for (int i = 0; i < 1000; ++i) {
      const double x = random_double(rng, 1023 - 40, 1023 + 40);
      v.push_back(x);
      if (i % 7 != 0) v.push_back(-std::nextafter(x, 0.0) * (i % 3 == 0 ? 1.0 : 0.5));
    }
    for (double x : v) {
      s.add(x);
      ref.add(x);
    }
    expect_matches(s, ref);
  }
}

TEST(ExactSum, LongSpansThroughTheLargeAccumulatorAgainstMpfr) {
  // add(span) of ≥ kLargeSpan elements takes the bucket path: every magnitude, subnormals, ±0,
  // odd lengths, and more than 4095 values in one bucket (the flush on a full bucket).
  std::mt19937_64 rng(13);
  for (std::size_t n : {ExactSum::kLargeSpan, ExactSum::kLargeSpan + 1, std::size_t{30001}}) {
    std::vector<double> v(n);
    for (std::size_t i = 0; i < n; ++i) {
      switch (i % 5) {
        case 0: v[i] = random_double(rng); break;
        case 1: v[i] = random_double(rng, 0, 1); break;                 // subnormals, DBL_MIN binade
        case 2: v[i] = std::abs(random_double(rng, 1023, 1023)); break;  // [1, 2): one bucket
        case 3: v[i] = i % 2 ? 0.0 : -0.0; break;
        default: v[i] = -std::abs(random_double(rng, 1023, 1023)); break;
      }
    }
    ExactSum span, each;
    Reference ref;
    span.add(std::span<const double>(v));
    for (double x : v) {
      each.add(x);
      ref.add(x);
    }
    expect_matches(span, ref);
    EXPECT_EQ(span.to_big_binary().limbs, each.to_big_binary().limbs);
    ExactSum twice;  // the per-thread scratch is clean again after a call
    twice.add(std::span<const double>(v));
    twice.add(std::span<const double>(v));
    Mp got, want;
    twice.to_mpfr(got.x);
    mpfr_set_prec(want.x, 16000);
    mpfr_mul_2si(want.x, ref.value(), 1, MPFR_RNDN);
    EXPECT_EQ(mpfr_cmp(got.x, want.x), 0);
  }
  const double inf = std::numeric_limits<double>::infinity();
  std::vector<double> w(ExactSum::kLargeSpan + 3, 1.0);
  w[5] = inf;
  ExactSum a;
  a.add(std::span<const double>(w));
  EXPECT_EQ(a.round(), inf);
  w[7] = -inf;
  ExactSum b;
  b.add(std::span<const double>(w));
  EXPECT_TRUE(b.has_pos_inf() && b.has_neg_inf() && !b.has_nan());
  w[5] = w[7] = 1.0;
  w[9] = -std::numeric_limits<double>::quiet_NaN();
  ExactSum c;
  c.add(std::span<const double>(w));
  EXPECT_TRUE(c.has_nan() && !c.has_pos_inf() && !c.has_neg_inf());
  EXPECT_EQ(c.round() != c.round(), true);
  w[9] = 1.0;
  ExactSum d;  // the scratch holds no stale specials or sums
  d.add(std::span<const double>(w));
  EXPECT_EQ(d.round(), static_cast<double>(w.size()));
  EXPECT_FALSE(d.has_nan() || d.has_pos_inf() || d.has_neg_inf());
}

TEST(ExactSumBuffer, FlushedSumsAgainstMpfr) {
  // One buffer reused for several sets: each flush gives exactly that set's sum, through the
  // spill of full buckets (more than 4095 values of one sign and exponent), subnormals, ±0,
  // products, and into accumulators that already hold something.
  std::mt19937_64 rng(15);
  normcheck::ExactSumBuffer buf;
  for (int set = 0; set < 6; ++set) {
    ExactSum out;
    Reference ref;
    if (set % 2 == 1) {  // the target is not empty
      out.add(1e300);
      ref.add(1e300);
    }
    const int n = set < 3 ? 20000 : 300;
    for (int i = 0; i < n; ++i) {
      double v;
      switch (i % 4) {
        case 0: v = random_double(rng); break;
        case 1: v = random_double(rng, 0, 1); break;
        case 2: v = std::abs(random_double(rng, 1023, 1023)); break;  // one bucket: spills
        default: v = i % 8 == 3 ? -0.0 : 0.0; break;
      }
      buf.add(v);
      ref.add(v);
      if (i % 50 == 0) {
        buf.add_product(v, 3.0, v);
        ref.add_product(v, 3.0, v);
      }
      if (i % 3 == 0) {  // products of every magnitude: the split fast path and the exact fallback
        const double w = random_double(rng, i % 2 ? 700 : 0, i % 2 ? 1300 : 2046);
        buf.add_product(v, w);
        ref.add_product(v, w);
      }
    }
    buf.flush_into(out);
    expect_matches(out, ref);
  }
  ExactSum empty;
  buf.flush_into(empty);  // nothing left behind
  EXPECT_TRUE(empty.is_zero());
  EXPECT_FALSE(empty.has_nan() || empty.has_pos_inf() || empty.has_neg_inf());
  buf.add(1.0);
  buf.add(-std::numeric_limits<double>::infinity());
  ExactSum a;
  buf.flush_into(a);
  EXPECT_EQ(a.round(), -std::numeric_limits<double>::infinity());
  buf.add(std::numeric_limits<double>::quiet_NaN());
  buf.add(2.0);
  ExactSum b;
  buf.flush_into(b);
  EXPECT_TRUE(b.has_nan() && !b.has_neg_inf());
  EXPECT_EQ(b.sign(), 1);
  std::vector<double> v = {1.5, -2.25, 3e-310};
  buf.add(std::span<const double>(v));
  ExactSum c;
  buf.flush_into(c);
  EXPECT_EQ(c.round(), 1.5 - 2.25 + 3e-310);  // hand: −0.75 + 3e-310 rounds to −0.75
  EXPECT_FALSE(c.has_nan());
}

TEST(ExactSumBuffer, FlushWithAbsoluteValuesAgainstMpfr) {
  // Σv and Σ|v| from one buffer: both signs of every exponent, spills of full buckets of each
  // sign (more than 4095 terms of one sign and exponent field), subnormals and ±0; the expected
  // values come from MPFR sums of v and of fabs(v) (independent of the buckets).
  std::mt19937_64 rng(16);
  normcheck::ExactSumBuffer buf;
  for (int set = 0; set < 4; ++set) {
    ExactSum sum, abs_sum;
    Reference ref, ref_abs;
    const int n = set < 2 ? 30000 : 500;
    for (int i = 0; i < n; ++i) {
      double v;
      switch (i % 5) {
        case 0: v = random_double(rng); break;
        case 1: v = random_double(rng, 0, 1); break;
        case 2: v = std::abs(random_double(rng, 1030, 1030)); break;    // one positive bucket: spills
        case 3: v = -std::abs(random_double(rng, 1029, 1029)); break;   // one negative bucket: spills
        default: v = i % 10 == 4 ? -0.0 : 0.0; break;
      }
      buf.add(v);
      ref.add(v);
      ref_abs.add(std::fabs(v));
    }
    ASSERT_TRUE(buf.flush_into(sum, abs_sum));
    expect_matches(sum, ref);
    expect_matches(abs_sum, ref_abs);
  }
  // Specials: −inf counts as +inf in Σ|v|; a product since the last flush makes Σ|v| unknown.
  buf.add(-std::numeric_limits<double>::infinity());
  buf.add(2.0);
  ExactSum s, a;
  ASSERT_TRUE(buf.flush_into(s, a));
  EXPECT_EQ(s.round(), -std::numeric_limits<double>::infinity());
  EXPECT_EQ(a.round(), std::numeric_limits<double>::infinity());
  buf.add(-1.0);
  buf.add_product(3.0, -2.0);
  ExactSum s2, a2;
  EXPECT_FALSE(buf.flush_into(s2, a2));
  EXPECT_EQ(s2.round(), -7.0);  // hand: −1 + 3·(−2)
  EXPECT_TRUE(a2.is_zero());    // untouched
}

TEST(ExactSum, NegateAgainstHandValues) {
  ExactSum s;
  s.add(1e300);
  s.add(-3.0);
  s.add(0x1p-1074);
  s.negate();
  ExactSum t;  // −(1e300 − 3 + 2^-1074) + 1e300 = 3 − 2^-1074, rounds to 3
  t.add(s);
  t.add(1e300);
  EXPECT_EQ(t.round(), 3.0);
  EXPECT_EQ(s.sign(), -1);
  s.add(std::numeric_limits<double>::infinity());
  s.negate();
  EXPECT_TRUE(s.has_neg_inf() && !s.has_pos_inf());
}

TEST(ExactSum, PairsCancelToExactZeroInAnyOrder) {
  std::mt19937_64 rng(3);
  std::vector<double> v;
  for (int i = 0; i < 5000; ++i) {
    const double x = random_double(rng);
    v.push_back(x);
    v.push_back(-x);
  }
  for (int trial = 0; trial < 5; ++trial) {
    std::shuffle(v.begin(), v.end(), rng);
    ExactSum s;
    s.add(std::span<const double>(v));
    EXPECT_TRUE(s.is_zero());
    EXPECT_EQ(s.sign(), 0);
    EXPECT_EQ(bits(s.round()), bits(0.0));  // +0, not -0, and not a tiny residue
    Mp m;
    s.to_mpfr(m.x);
    EXPECT_TRUE(mpfr_zero_p(m.x));
    EXPECT_EQ(s.expansion(4).terms.size(), 0u);
  }
}

TEST(ExactSum, SpansOf1e300) {
  // Hand derivation: 1e300 and −1e300 cancel exactly, leaving the tiny terms.
  ExactSum s;
  Reference ref;
  for (double v : {1e300, 1e-300, -1e300, 3e-310, -1e-300, 1e300, 2.5e-320}) {
    s.add(v);
    ref.add(v);
  }
  expect_matches(s, ref);
  ExactSum t;
  t.add(1e300);
  t.add(1e-300);
  t.add(-1e300);
  EXPECT_EQ(t.round(), 1e-300);
  const normcheck::Expansion x = s.expansion(3);  // 1e300 + 3e-310 + 2.5e-320: three windows
  ASSERT_GE(x.terms.size(), 1u);
  EXPECT_EQ(x.scale, 0);
  EXPECT_EQ(x.terms[0], 1e300);  // 1e300 is a double, and the rest is below its ulp
}

TEST(ExactSum, Subnormals) {
  ExactSum s;
  const double tiny = std::numeric_limits<double>::denorm_min();  // 2^-1074
  for (int i = 0; i < 3; ++i) s.add(tiny);
  EXPECT_EQ(s.round(), 3 * tiny);  // hand: 3·2^-1074 is a subnormal double
  s.add(-DBL_MIN);                 // −2^-1022 + 3·2^-1074, exact subnormal
  EXPECT_EQ(s.round(), -DBL_MIN + 3 * tiny);
  std::mt19937_64 rng(4);
  for (int trial = 0; trial < 10; ++trial) {
    ExactSum r;
    Reference ref;
    for (int i = 0; i < 1000; ++i) {
      const double v = random_double(rng, 0, 2);  // subnormals and the two lowest binades
      r.add(v);
      ref.add(v);
    }
    expect_matches(r, ref);
  }
}

TEST(ExactSum, LargestDoublesOverflowOnlyInDouble) {
  // Hand derivations, DBL_MAX = (2^53 − 1)·2^971, ulp 2^971.
  ExactSum s;
  s.add(DBL_MAX);
  s.add(DBL_MAX);
  EXPECT_EQ(s.round(), std::numeric_limits<double>::infinity());  // 2·DBL_MAX ≥ 2^1024
  s.add(-DBL_MAX);
  EXPECT_EQ(s.round(), DBL_MAX);
  ExactSum tie;  // DBL_MAX + 2^970 is the midpoint to 2^1024; DBL_MAX's significand is odd → inf
  tie.add(DBL_MAX);
  tie.add(std::ldexp(1.0, 970));
  EXPECT_EQ(tie.round(), std::numeric_limits<double>::infinity());
  ExactSum below;  // DBL_MAX + 2^970 − 2^-1074 is below the midpoint → DBL_MAX
  below.add(DBL_MAX);
  below.add(std::ldexp(1.0, 970));
  below.add(-std::numeric_limits<double>::denorm_min());
  EXPECT_EQ(below.round(), DBL_MAX);
  ExactSum neg;
  for (int i = 0; i < 1000; ++i) neg.add(-DBL_MAX);
  EXPECT_EQ(neg.round(), -std::numeric_limits<double>::infinity());
  for (int i = 0; i < 999; ++i) neg.add(DBL_MAX);
  EXPECT_EQ(neg.round(), -DBL_MAX);
  EXPECT_FALSE(neg.has_neg_inf());  // an overflowing exact sum is not an infinite term
}

TEST(ExactSum, TiesRoundToEven) {
  const double h = std::ldexp(1.0, -53);  // half an ulp of 1
  auto sum = [](std::initializer_list<double> v) {
    ExactSum s;
    for (double x : v) s.add(x);
    return s.round();
  };
  // 1 + 2^-53: midpoint of 1 (even) and 1 + 2^-52 (odd) → 1.
  EXPECT_EQ(sum({1.0, h}), 1.0);
  // (1 + 2^-52) + 2^-53: midpoint of 1 + 2^-52 (odd) and 1 + 2^-51 (even) → 1 + 2^-51.
  EXPECT_EQ(sum({1.0 + 2 * h, h}), 1.0 + 4 * h);
  // A sticky bit far below breaks the tie upward, and a negative one downward.
  EXPECT_EQ(sum({1.0, h, std::ldexp(1.0, -1000)}), 1.0 + 2 * h);
  EXPECT_EQ(sum({1.0 + 2 * h, h, -std::ldexp(1.0, -1000)}), 1.0 + 2 * h);
  // Negative mirror images.
  EXPECT_EQ(sum({-1.0, -h}), -1.0);
  EXPECT_EQ(sum({-1.0 - 2 * h, -h}), -1.0 - 4 * h);
  // Subnormal ties through exact products: 2^-1074·0.5 = 2^-1075 is the midpoint of 0 (even) and
  // 2^-1074 (odd) → +0; 3·2^-1075 the midpoint of 2^-1074 (odd) and 2^-1073 (even) → 2^-1073.
  const double tiny = std::numeric_limits<double>::denorm_min();
  ExactSum a;
  a.add_product(tiny, 0.5);
  EXPECT_EQ(bits(a.round()), bits(0.0));
  EXPECT_EQ(a.sign(), 1);
  ExactSum b;
  b.add_product(3 * tiny, 0.5);
  EXPECT_EQ(b.round(), 2 * tiny);
  // Below the smallest subnormal: 2^-1075 + 2^-1200 is above the midpoint → 2^-1074; 2^-1076 and
  // −2^-1076 are below it → ±0.
  ExactSum c;
  c.add_product(tiny, 0.5);
  c.add_product(std::ldexp(1.0, -600), std::ldexp(1.0, -600));
  EXPECT_EQ(c.round(), tiny);
  ExactSum quarter;
  quarter.add_product(tiny, 0.25);
  EXPECT_EQ(bits(quarter.round()), bits(0.0));
  ExactSum e;
  e.add_product(tiny, -0.25);
  EXPECT_EQ(bits(e.round()), bits(-0.0));
  EXPECT_EQ(e.sign(), -1);
  // Random ties: d + ulp(d)/2, with ulp(d)/2 as an exact product; even significands stay, odd go up.
  std::mt19937_64 rng(5);
  for (int i = 0; i < 2000; ++i) {
    const double d = random_double(rng, 1, 2045);
    const double up = std::nextafter(d, std::copysign(INFINITY, d));
    const double half_ulp_factor = (up - d);  // exact: neighbouring doubles
    ExactSum s;
    s.add(d);
    s.add_product(half_ulp_factor, 0.5);
    const bool even = (bits(d) & 1u) == 0;
    EXPECT_EQ(s.round(), even ? d : up) << d;
  }
}

TEST(ExactSum, ProductsOfTwoAgainstMpfr) {
  std::mt19937_64 rng(6);
  for (int trial = 0; trial < 10; ++trial) {
    ExactSum s;
    Reference ref;
    for (int i = 0; i < 1000; ++i) {
      const double a = random_double(rng), b = random_double(rng);
      s.add_product(a, b);
      ref.add_product(a, b);
    }
    expect_matches(s, ref);
  }
}

TEST(ExactSum, ProductsOfThreeAgainstMpfr) {
  std::mt19937_64 rng(7);
  for (int trial = 0; trial < 10; ++trial) {
    ExactSum s;
    Reference ref;
    for (int i = 0; i < 1000; ++i) {
      const double a = random_double(rng), b = random_double(rng), c = random_double(rng);
      s.add_product(a, b, c);
      ref.add_product(a, b, c);
      if (i % 4 == 0) {  // cancel a product exactly, with the factors permuted
        s.add_product(-c, a, b);
        ref.add_product(-c, a, b);
      }
    }
    expect_matches(s, ref);
  }
}

TEST(ExactSum, ProductsThatUnderflowOrOverflowDouble) {
  // Hand derivations.
  ExactSum s;
  s.add_product(std::ldexp(1.0, -600), std::ldexp(1.0, -600));  // 2^-1200: below half of 2^-1074
  EXPECT_EQ(s.sign(), 1);
  EXPECT_EQ(bits(s.round()), bits(0.0));
  Mp m;
  s.to_mpfr(m.x);
  EXPECT_EQ(mpfr_cmp_si_2exp(m.x, 1, -1200), 0);
  for (int i = 0; i < 2; ++i) s.add_product(std::ldexp(1.0, -500), std::ldexp(1.0, -700));  // total 3·2^-1200
  s.to_mpfr(m.x);
  EXPECT_EQ(mpfr_cmp_si_2exp(m.x, 3, -1200), 0);
  ExactSum big;
  big.add_product(DBL_MAX, 2.0);    // 2·DBL_MAX, beyond double
  big.add_product(DBL_MAX, -1.5);   // leaves DBL_MAX/2, exactly a double
  EXPECT_EQ(big.round(), DBL_MAX / 2);
  ExactSum huge;
  huge.add_product(DBL_MAX, DBL_MAX, DBL_MAX);
  EXPECT_EQ(huge.round(), std::numeric_limits<double>::infinity());
  huge.add_product(-DBL_MAX, DBL_MAX, DBL_MAX);
  EXPECT_TRUE(huge.is_zero());
  ExactSum tiny3;  // (2^-1074)^3 = 2^-3222, the smallest product the accumulator must hold
  const double t = std::numeric_limits<double>::denorm_min();
  tiny3.add_product(t, t, t);
  tiny3.to_mpfr(m.x);
  EXPECT_EQ(mpfr_cmp_si_2exp(m.x, 1, -3222), 0);
  tiny3.add_product(-t, t, t);
  EXPECT_TRUE(tiny3.is_zero());
  // Random products whose exact values lie outside double range, summed against MPFR.
  std::mt19937_64 rng(8);
  ExactSum r;
  Reference ref;
  for (int i = 0; i < 2000; ++i) {
    const bool up = i % 2 == 0;
    const double a = random_double(rng, up ? 1800 : 0, up ? 2046 : 300);
    const double b = random_double(rng, up ? 1800 : 0, up ? 2046 : 300);
    r.add_product(a, b);
    ref.add_product(a, b);
    r.add_product(a, b, a);
    ref.add_product(a, b, a);
  }
  expect_matches(r, ref);
}

TEST(ExactSum, ScaledTermsOverTheWholeRange) {
  ExactSum s;
  Reference ref;
  std::mt19937_64 rng(9);
  std::uniform_int_distribution<int> e(-6500, 6500);
  for (int i = 0; i < 2000; ++i) {
    const double v = random_double(rng, 1000, 1046);
    const int k = e(rng) - 23;
    s.add_scaled(v, k);
    ref.add_scaled(v, k);
  }
  expect_matches(s, ref);
  ExactSum t;
  t.add_scaled(1.0, 6500);
  t.add_scaled(1.0, -6500);
  t.add_scaled(-1.0, 6500);
  Mp m;
  t.to_mpfr(m.x);
  EXPECT_EQ(mpfr_cmp_si_2exp(m.x, 1, -6500), 0);  // hand: 2^6500 cancels, 2^-6500 stays
  EXPECT_EQ(bits(t.round()), bits(0.0));
  const normcheck::Expansion x = t.expansion(2);
  ASSERT_EQ(x.terms.size(), 1u);
  EXPECT_EQ(x.scale, -6500);
  EXPECT_EQ(x.terms[0], 1.0);
  EXPECT_EQ(x.remainder_bound, 0.0);
  EXPECT_THROW(t.add_scaled(1.0, 6700), std::out_of_range);  // ulp 2^6648 ≥ 2^6592
  EXPECT_THROW(t.add_scaled(1.0, -6620), std::out_of_range);  // ulp 2^-6672 < 2^-6656
  EXPECT_NO_THROW(t.add_scaled(0.0, 100000));  // zero adds nothing wherever it is
  EXPECT_NO_THROW(t.add_scaled(-1.0, 6591 + 52));  // ulp 2^6591: the highest accepted
  EXPECT_NO_THROW(t.add_scaled(1.0, 6591 + 52));
  t.to_mpfr(m.x);
  EXPECT_EQ(mpfr_cmp_si_2exp(m.x, 1, -6500), 0);  // the rejected terms changed nothing
  // Terms in the highest chunks (the readers' full-propagation path), both signs.
  for (double sgn : {1.0, -1.0}) {
    ExactSum top;
    Reference rtop;
    for (auto [v, ex] : {std::pair{-3.0 * sgn, 6642}, std::pair{1.0, 0}, std::pair{5.0 * sgn, 6600}}) {
      top.add_scaled(v, ex);
      rtop.add_scaled(v, ex);
    }
    expect_matches(top, rtop);
  }
}

TEST(ExactSum, MergeEqualsSequential) {
  std::mt19937_64 rng(10);
  std::vector<double> v(40000);
  for (double& x : v) x = random_double(rng, 900, 1150);
  ExactSum seq, part[4];
  for (std::size_t i = 0; i < v.size(); ++i) {
    seq.add(v[i]);
    part[i % 4].add(v[i]);
    if (i % 3 == 0) {
      seq.add_product(v[i], v[v.size() - 1 - i]);
      part[(i + 1) % 4].add_product(v[i], v[v.size() - 1 - i]);
    }
  }
  ExactSum merged;
  for (const ExactSum& p : part) merged.add(p);
  const normcheck::BigBinary a = seq.to_big_binary(), b = merged.to_big_binary();
  EXPECT_EQ(a.sign, b.sign);
  EXPECT_EQ(a.exponent, b.exponent);
  EXPECT_EQ(a.limbs, b.limbs);
  EXPECT_EQ(bits(seq.round()), bits(merged.round()));
  // Self-merge doubles the value: 2·(sum) against MPFR's exact doubling.
  Mp once, twice;
  seq.to_mpfr(once.x);
  seq.add(seq);
  seq.to_mpfr(twice.x);
  mpfr_mul_2si(once.x, once.x, 1, MPFR_RNDN);
  EXPECT_EQ(mpfr_cmp(once.x, twice.x), 0);
}

TEST(ExactSum, PerThreadAccumulatorsMergeToTheSequentialSum) {
  // Four threads, each with its own ExactSum fed through add(span) (so each uses its own
  // per-thread large-accumulator scratch) and an ExactSumBuffer, merged afterwards.
  std::mt19937_64 rng(16);
  std::vector<double> v(4 * 50000);
  for (double& x : v) x = random_double(rng, 700, 1300);
  ExactSum seq;
  for (double x : v) seq.add(x);
  ExactSum part[4];
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&, t] {
      const std::span<const double> mine(v.data() + 50000 * t, 50000);
      part[t].add(mine.subspan(0, 30000));
      normcheck::ExactSumBuffer buf;
      for (double x : mine.subspan(30000)) buf.add(x);
      buf.flush_into(part[t]);
    });
  for (auto& th : threads) th.join();
  ExactSum merged;
  for (const ExactSum& p : part) merged.add(p);
  EXPECT_EQ(merged.to_big_binary().limbs, seq.to_big_binary().limbs);
  EXPECT_EQ(merged.to_big_binary().exponent, seq.to_big_binary().exponent);
  EXPECT_EQ(bits(merged.round()), bits(seq.round()));
}

TEST(ExactSum, ShuffledInputGivesBitIdenticalResults) {
  std::mt19937_64 rng(11);
  std::vector<double> v(20000);
  for (double& x : v) x = random_double(rng);
  ExactSum first;
  first.add(std::span<const double>(v));
  const normcheck::BigBinary ref = first.to_big_binary();
  for (int trial = 0; trial < 5; ++trial) {
    std::shuffle(v.begin(), v.end(), rng);
    ExactSum s;
    for (double x : v) s.add(x);
    EXPECT_EQ(bits(s.round()), bits(first.round()));
    const normcheck::BigBinary b = s.to_big_binary();
    EXPECT_EQ(b.limbs, ref.limbs);
    EXPECT_EQ(b.exponent, ref.exponent);
    EXPECT_EQ(b.sign, ref.sign);
  }
}

TEST(ExactSum, SixtyFourMillionTermsAgainstAnIntegerSum) {
  // 2^26 terms m·2^e, |m| < 2^53, e ∈ [−20, 10], generated on the fly; the independent exact
  // value is Σ m·2^(e+20) in __int128 (each < 2^83, the sum < 2^109), times 2^-20.
  std::mt19937_64 rng(12);
  double pow2[31];
  for (int e = -20; e <= 10; ++e) pow2[e + 20] = std::ldexp(1.0, e);
  ExactSum s;
  i128 exact = 0;
  for (std::int64_t i = 0; i < (std::int64_t{1} << 26); ++i) {
    const std::uint64_t r = rng();
    const auto m = static_cast<std::int64_t>(r >> 11) - (std::int64_t{1} << 52);  // [−2^52, 2^52)
    const int e = static_cast<int>(r % 31);  // e − 20 ∈ [−20, 10]
    s.add(static_cast<double>(m) * pow2[e]);  // exact: |m| ≤ 2^52, times a power of 2
    exact += static_cast<i128>(m) << e;
  }
  Mp want(200);
  const bool neg = exact < 0;
  const auto mag = static_cast<normcheck::u128>(neg ? -exact : exact);
  mpfr_set_ui_2exp(want.x, static_cast<unsigned long>(mag >> 64), 64, MPFR_RNDN);
  EXPECT_EQ(mpfr_add_ui(want.x, want.x, static_cast<unsigned long>(mag), MPFR_RNDN), 0);
  if (neg) mpfr_neg(want.x, want.x, MPFR_RNDN);
  mpfr_mul_2si(want.x, want.x, -20, MPFR_RNDN);
  Mp got;
  s.to_mpfr(got.x);
  EXPECT_EQ(mpfr_cmp(got.x, want.x), 0);
  EXPECT_EQ(bits(s.round()), bits(expected_double(want.x)));
}

TEST(ExactSum, CarryInvariantHoldsAtTheLimitThroughRepeatedSelfMerges) {
  // Every chunk written with its largest limb (all-ones significands at every shift), then the
  // accumulator merged with itself 40 times: the count passes the carry limit 2^30 several times
  // and the chunks would overflow without propagation. Exact value: 2^40 · (initial sum).
  ExactSum s;
  Reference ref;
  for (int shift = 0; shift < 64; ++shift) {
    const double v = std::ldexp(-(std::ldexp(1.0, 53) - 1), shift - 30);  // −(2^53 − 1)·2^(shift−30)
    s.add(v);
    ref.add(v);
  }
  Mp want;
  mpfr_set_prec(want.x, 16000);
  mpfr_mul_2si(want.x, ref.value(), 40, MPFR_RNDN);
  for (int i = 0; i < 40; ++i) s.add(s);
  Mp got;
  s.to_mpfr(got.x);
  EXPECT_EQ(mpfr_cmp(got.x, want.x), 0);
  EXPECT_EQ(bits(s.round()), bits(expected_double(want.x)));
}

/// Checks x against the exact value: value = 2^scale·(Σ terms + δ) with |δ| ≤ remainder_bound,
/// δ = 0 iff the bound is 0, terms of one sign and non-overlapping (|t[i+1]| < ulp(t[i])).
void expect_expansion(const normcheck::Expansion& x, const mpfr_t exact) {
  Mp sum(16000), rest(16000), bound(64);
  for (std::size_t i = 0; i < x.terms.size(); ++i) {
    EXPECT_EQ(mpfr_add_d(sum.x, sum.x, x.terms[i], MPFR_RNDN), 0);
    EXPECT_NE(x.terms[i], 0.0);
    if (i > 0) {
      EXPECT_EQ(std::signbit(x.terms[i]), std::signbit(x.terms[0]));
      const double a = std::abs(x.terms[i - 1]);
      EXPECT_LT(std::abs(x.terms[i]), std::nextafter(a, INFINITY) - a) << "terms overlap at " << i;
    }
  }
  mpfr_mul_2si(sum.x, sum.x, x.scale, MPFR_RNDN);
  mpfr_sub(rest.x, exact, sum.x, MPFR_RNDN);  // exact at 16000 bits
  mpfr_abs(rest.x, rest.x, MPFR_RNDN);
  mpfr_set_d(bound.x, x.remainder_bound, MPFR_RNDN);
  mpfr_mul_2si(bound.x, bound.x, x.scale, MPFR_RNDN);
  EXPECT_LE(mpfr_cmp(rest.x, bound.x), 0) << "remainder above its bound";
  EXPECT_EQ(mpfr_zero_p(rest.x) != 0, x.remainder_bound == 0.0);
}

TEST(ExactSum, ExpansionExportAgainstMpfr) {
  std::mt19937_64 rng(14);
  for (int trial = 0; trial < 200; ++trial) {
    ExactSum s;
    Reference ref;
    const int lo = static_cast<int>(rng() % 2000), hi = lo + static_cast<int>(rng() % 47);
    for (int i = 0; i < 50; ++i) {
      const double v = random_double(rng, lo, hi);
      s.add(v);
      ref.add(v);
      if (trial % 3 == 0) {
        s.add_product(v, v, 0.75);
        ref.add_product(v, v, 0.75);
      }
    }
    for (std::size_t n : {1, 2, 3, 60}) expect_expansion(s.expansion(n), ref.value());
    // Enough terms for any sum whose bits lie within double range: exact, no remainder.
    if (trial % 3 != 0) {
      EXPECT_EQ(s.expansion(60).remainder_bound, 0.0);
    }
    // The leading term is the value truncated toward zero: within one ulp of round().
    const normcheck::Expansion one = s.expansion(1);
    if (one.scale == 0 && !one.terms.empty()) {
      EXPECT_LE(std::abs(one.terms[0]), std::abs(s.round()));
      EXPECT_GE(std::abs(std::nextafter(one.terms[0], 2 * one.terms[0])), std::abs(s.round()));
    }
  }
  // Beyond double range: scaled, and bits below 2^(scale − 1074) only in the bound.
  ExactSum wide;
  Reference ref;
  for (auto [v, e] : {std::pair{1.0, 5000}, std::pair{-3.0, 3000}, std::pair{-5.0, 3800}, std::pair{1.0, -6000}}) {
    wide.add_scaled(v, e);
    ref.add_scaled(v, e);
  }
  // 2^5000 − 5·2^3800 − 3·2^3000 + 2^-6000 < 2^5000: leading bit 2^4999, then a run of ones down
  // to 2^3803. Terms reach down to 2^(4999 − 1074) = 2^3925; everything below is < 2^3925, i.e.
  // below 2^-1074 once scaled: the bound is the smallest subnormal.
  const normcheck::Expansion x = wide.expansion(100);
  EXPECT_EQ(x.scale, 5000 - 1);
  expect_expansion(x, ref.value());
  EXPECT_EQ(x.remainder_bound, std::numeric_limits<double>::denorm_min());
  EXPECT_LT(x.terms.size(), 100u);
  expect_expansion(wide.expansion(10), ref.value());  // stops inside the run: a larger bound
  EXPECT_GT(wide.expansion(10).remainder_bound, std::ldexp(1.0, -1000));
}

TEST(ExactSum, NanAndInfinityRules) {
  const double inf = std::numeric_limits<double>::infinity(), nan = std::numeric_limits<double>::quiet_NaN();
  ExactSum s;
  s.add(1.0);
  s.add(inf);
  EXPECT_EQ(s.round(), inf);
  EXPECT_TRUE(s.has_pos_inf());
  EXPECT_EQ(s.sign(), 1);  // of the finite part
  s.add(-inf);
  EXPECT_TRUE(std::isnan(s.round()));  // +inf and −inf → NaN
  EXPECT_FALSE(s.has_nan());           // no NaN term, the flags say which
  s.clear();
  EXPECT_FALSE(s.has_pos_inf());
  s.add(nan);
  EXPECT_TRUE(s.has_nan());
  EXPECT_TRUE(std::isnan(s.round()));
  Mp m;
  s.to_mpfr(m.x);
  EXPECT_TRUE(mpfr_nan_p(m.x));
  auto product = [](double a, double b) {
    ExactSum p;
    p.add_product(a, b);
    return p.round();
  };
  EXPECT_TRUE(std::isnan(product(inf, 0.0)));
  EXPECT_TRUE(std::isnan(product(-0.0, inf)));
  EXPECT_EQ(product(inf, -2.0), -inf);
  EXPECT_EQ(product(-inf, -1e-300), inf);
  EXPECT_TRUE(std::isnan(product(nan, 1.0)));
  ExactSum p3;
  p3.add_product(0.0, inf, 5.0);
  EXPECT_TRUE(p3.has_nan());
  ExactSum q3;
  q3.add_product(-inf, -1.0, -1e-300);
  EXPECT_EQ(q3.round(), -inf);
  q3.to_mpfr(m.x);
  EXPECT_TRUE(mpfr_inf_p(m.x) && mpfr_sgn(m.x) < 0);
  ExactSum sc;
  sc.add_scaled(inf, -5000);
  EXPECT_EQ(sc.round(), inf);
  std::vector<double> v = {1.0, -inf, 2.0};
  ExactSum sp;
  sp.add(std::span<const double>(v));
  EXPECT_EQ(sp.round(), -inf);
  ExactSum merged;
  merged.add(sp);
  merged.add(sc);
  EXPECT_TRUE(std::isnan(merged.round()));
}

}  // namespace
