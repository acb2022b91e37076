// The error-free transformations and double-word operations of include/normcheck/eft.hpp against
// MPFR: exactness of two_sum, fast_two_sum and two_prod, and each double-word operation's relative
// error within its published bound (computed in MPFR from the exact result).
#include "normcheck/eft.hpp"

#include <gtest/gtest.h>
#include <mpfr.h>

#include <bit>
#include <cmath>
#include <cstdint>
#include <functional>
#include <random>

namespace {

using normcheck::DoubleWord;

struct Mp {
  mpfr_t x;
  explicit Mp(mpfr_prec_t prec = 4000) {
    mpfr_init2(x, prec);
    mpfr_set_zero(x, 1);
  }
  ~Mp() { mpfr_clear(x); }
  Mp(const Mp&) = delete;
  Mp& operator=(const Mp&) = delete;
};

/// x.hi + x.lo, exactly (4000 bits hold any two doubles' sum).
void set_dw(mpfr_t out, DoubleWord x) {
  mpfr_set_d(out, x.hi, MPFR_RNDN);
  ASSERT_EQ(mpfr_add_d(out, out, x.lo, MPFR_RNDN), 0);
}

/// A double with a random significand and sign and exponent in [e_lo, e_hi].
double random_double(std::mt19937_64& rng, int e_lo, int e_hi) {
  std::uniform_int_distribution<int> e(e_lo, e_hi);
  const std::uint64_t u = (rng() & 0x800FFFFFFFFFFFFFull) | (static_cast<std::uint64_t>(e(rng) + 1023) << 52);
  return std::bit_cast<double>(u);
}

/// A normalized double word: hi with exponent in [−200, 200], lo a random fraction of ulp(hi)/2.
DoubleWord random_dw(std::mt19937_64& rng) {
  const double hi = random_double(rng, -200, 200);
  const double ulp = std::nextafter(std::abs(hi), INFINITY) - std::abs(hi);
  std::uniform_real_distribution<double> f(-0.5, 0.5);
  return normcheck::fast_two_sum(hi, f(rng) * ulp);
}

/// |got − exact| ≤ bound·|exact|, bound = c2·u² + c3·u³, all in MPFR (exact).
void expect_within(DoubleWord got, const mpfr_t exact, double c2, double c3) {
  Mp g, err, lim, t;
  set_dw(g.x, got);
  EXPECT_EQ(got.hi, got.hi + got.lo) << "result not normalized";
  mpfr_sub(err.x, g.x, exact, MPFR_RNDN);
  mpfr_abs(err.x, err.x, MPFR_RNDN);
  mpfr_set_d(lim.x, c2, MPFR_RNDN);
  mpfr_mul_2si(lim.x, lim.x, -106, MPFR_RNDN);
  mpfr_set_d(t.x, c3, MPFR_RNDN);
  mpfr_mul_2si(t.x, t.x, -159, MPFR_RNDN);
  mpfr_add(lim.x, lim.x, t.x, MPFR_RNDN);
  mpfr_mul(lim.x, lim.x, exact, MPFR_RNDN);
  mpfr_abs(lim.x, lim.x, MPFR_RNDN);
  EXPECT_LE(mpfr_cmp(err.x, lim.x), 0) << "relative error above " << c2 << "u² + " << c3 << "u³";
}

TEST(Eft, TwoSumAndFastTwoSumAreExact) {
  std::mt19937_64 rng(1);
  for (int i = 0; i < 100000; ++i) {
    const double a = random_double(rng, -1000, 1000), b = random_double(rng, -1000, 1000);
    const DoubleWord s = normcheck::two_sum(a, b);
    EXPECT_EQ(s.hi, a + b);
    Mp want, got;
    mpfr_set_d(want.x, a, MPFR_RNDN);
    ASSERT_EQ(mpfr_add_d(want.x, want.x, b, MPFR_RNDN), 0);
    set_dw(got.x, s);
    EXPECT_EQ(mpfr_cmp(got.x, want.x), 0);
    const DoubleWord f = std::abs(a) >= std::abs(b) ? normcheck::fast_two_sum(a, b) : normcheck::fast_two_sum(b, a);
    set_dw(got.x, f);
    EXPECT_EQ(mpfr_cmp(got.x, want.x), 0);
  }
}

TEST(Eft, TwoProdIsExactAboveTheUnderflowLimit) {
  std::mt19937_64 rng(2);
  for (int i = 0; i < 100000; ++i) {
    const double a = random_double(rng, -480, 500), b = random_double(rng, -480, 500);  // e_a + e_b ≥ −960
    const DoubleWord p = normcheck::two_prod(a, b);
    EXPECT_EQ(p.hi, a * b);
    Mp want(106), got;
    mpfr_set_d(want.x, a, MPFR_RNDN);
    ASSERT_EQ(mpfr_mul_d(want.x, want.x, b, MPFR_RNDN), 0);
    set_dw(got.x, p);
    EXPECT_EQ(mpfr_cmp(got.x, want.x), 0);
  }
}

/// Runs op on random double words (and, for additions, on nearly cancelling pairs) and checks the
/// bound against the exact result that `exact` sets.
void check_binary(const std::function<DoubleWord(DoubleWord, DoubleWord)>& op,
                  const std::function<void(mpfr_t, const mpfr_t, const mpfr_t)>& exact, double c2, double c3,
                  bool cancel) {
  std::mt19937_64 rng(3);
  for (int i = 0; i < 50000; ++i) {
    const DoubleWord x = random_dw(rng);
    DoubleWord y = random_dw(rng);
    if (cancel && i % 2 == 0) {  // y ≈ −x: the hard case for additions
      std::uniform_real_distribution<double> f(-1.0, 1.0);
      y = normcheck::fast_two_sum(-x.hi, -x.lo + f(rng) * std::ldexp(std::abs(x.hi), -60));
    }
    Mp mx, my, want;
    set_dw(mx.x, x);
    set_dw(my.x, y);
    exact(want.x, mx.x, my.x);
    if (mpfr_zero_p(want.x)) continue;
    expect_within(op(x, y), want.x, c2, c3);
  }
}

TEST(Eft, DoubleWordAdditionWithinItsBound) {
  check_binary([](DoubleWord x, DoubleWord y) { return normcheck::dw_add(x, y); },
               [](mpfr_t r, const mpfr_t a, const mpfr_t b) { mpfr_add(r, a, b, MPFR_RNDN); }, 3, 13, true);
  check_binary([](DoubleWord x, DoubleWord y) { return normcheck::dw_add(x, y.hi); },
               [](mpfr_t r, const mpfr_t a, const mpfr_t b) {
                 Mp h(53);
                 mpfr_set(h.x, b, MPFR_RNDN);  // b rounded to 53 bits is y.hi
                 mpfr_add(r, a, h.x, MPFR_RNDN);
               },
               2, 0, true);
}

TEST(Eft, DoubleWordMultiplicationWithinItsBound) {
  check_binary([](DoubleWord x, DoubleWord y) { return normcheck::dw_mul(x, y); },
               [](mpfr_t r, const mpfr_t a, const mpfr_t b) { mpfr_mul(r, a, b, MPFR_RNDN); }, 5, 0, false);
  auto fp = [](mpfr_t r, const mpfr_t a, const mpfr_t b) {
    Mp h(53);
    mpfr_set(h.x, b, MPFR_RNDN);
    mpfr_mul(r, a, h.x, MPFR_RNDN);
  };
  check_binary([](DoubleWord x, DoubleWord y) { return normcheck::dw_mul(x, y.hi); }, fp, 2, 0, false);
  check_binary([](DoubleWord x, DoubleWord y) { return normcheck::dw_mul_fp1(x, y.hi); }, fp, 1.5, 4, false);
}

TEST(Eft, DoubleWordDivisionWithinItsBound) {
  check_binary([](DoubleWord x, DoubleWord y) { return normcheck::dw_div(x, y); },
               [](mpfr_t r, const mpfr_t a, const mpfr_t b) { mpfr_div(r, a, b, MPFR_RNDN); }, 15, 56, false);
  check_binary([](DoubleWord x, DoubleWord y) { return normcheck::dw_div(x, y.hi); },
               [](mpfr_t r, const mpfr_t a, const mpfr_t b) {
                 Mp h(53);
                 mpfr_set(h.x, b, MPFR_RNDN);
                 mpfr_div(r, a, h.x, MPFR_RNDN);
               },
               3, 0, false);
}

TEST(Eft, DoubleWordSquareRootWithinItsBound) {
  check_binary([](DoubleWord x, DoubleWord) { return normcheck::dw_sqrt(x.hi < 0 ? normcheck::dw_neg(x) : x); },
               [](mpfr_t r, const mpfr_t a, const mpfr_t) {
                 Mp t;
                 mpfr_abs(t.x, a, MPFR_RNDN);
                 mpfr_sqrt(r, t.x, MPFR_RNDN);
               },
               3.125, 0, false);
  const DoubleWord zero = normcheck::dw_sqrt({0.0, 0.0});
  EXPECT_EQ(zero.hi, 0.0);
  EXPECT_EQ(zero.lo, 0.0);
}

}  // namespace
