// Exact scalars and correctly rounded evaluation; see exact_scalars.hpp and docs/reference.md.
#include "exact_scalars.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>

#include "normcheck/error.hpp"

namespace normcheck::exact {

mpq_class to_rational(const ExactSum& s) {
  const BigBinary b = s.to_big_binary();
  mpq_class q;
  if (b.sign == 0) return q;
  mpz_class z;
  mpz_import(z.get_mpz_t(), b.limbs.size(), -1, sizeof(std::uint32_t), 0, 0, b.limbs.data());
  if (b.sign < 0) z = -z;
  q = z;
  if (b.exponent > 0) mpq_mul_2exp(q.get_mpq_t(), q.get_mpq_t(), static_cast<mp_bitcnt_t>(b.exponent));
  if (b.exponent < 0) mpq_div_2exp(q.get_mpq_t(), q.get_mpq_t(), static_cast<mp_bitcnt_t>(-b.exponent));
  return q;
}

bool rational_sqrt(const mpq_class& q, mpq_class* root) {
  if (sgn(q) < 0) return false;
  const mpz_class& num = q.get_num();
  const mpz_class& den = q.get_den();  // canonical: gcd 1, so q is a square iff both are
  if (!mpz_perfect_square_p(num.get_mpz_t()) || !mpz_perfect_square_p(den.get_mpz_t())) return false;
  mpz_class rn, rd;
  mpz_sqrt(rn.get_mpz_t(), num.get_mpz_t());
  mpz_sqrt(rd.get_mpz_t(), den.get_mpz_t());
  *root = mpq_class(rn, rd);
  root->canonicalize();
  return true;
}

Interval::Interval(mpfr_prec_t prec) {
  mpfr_init2(lo, prec);
  mpfr_init2(hi, prec);
}
Interval::~Interval() {
  mpfr_clear(lo);
  mpfr_clear(hi);
}

void Interval::set(double v) {
  mpfr_set_d(lo, v, MPFR_RNDD);
  mpfr_set_d(hi, v, MPFR_RNDU);
}
void Interval::set(const mpq_class& q) {
  mpfr_set_q(lo, q.get_mpq_t(), MPFR_RNDD);
  mpfr_set_q(hi, q.get_mpq_t(), MPFR_RNDU);
}
void Interval::set(const Interval& o) {
  mpfr_set(lo, o.lo, MPFR_RNDD);
  mpfr_set(hi, o.hi, MPFR_RNDU);
}
bool Interval::is_nan() const { return mpfr_nan_p(lo) || mpfr_nan_p(hi); }

void Interval::add(const Interval& b) {
  mpfr_add(lo, lo, b.lo, MPFR_RNDD);
  mpfr_add(hi, hi, b.hi, MPFR_RNDU);
}

void Interval::sub(const Interval& b) {
  // [a.lo − b.hi, a.hi − b.lo]; b may alias *this only as a whole, which gives [lo−hi, hi−lo].
  mpfr_t t;
  mpfr_init2(t, mpfr_get_prec(lo));
  mpfr_sub(t, lo, b.hi, MPFR_RNDD);
  mpfr_sub(hi, hi, b.lo, MPFR_RNDU);
  mpfr_swap(lo, t);
  mpfr_clear(t);
}

namespace {
/// The outward-rounded hull of the four endpoint combinations of op.
template <class Op>
void hull4(Interval& r, const Interval& a, const Interval& b, Op op) {
  const mpfr_prec_t p = mpfr_get_prec(r.lo);
  mpfr_t c, lo, hi;
  mpfr_inits2(p, c, lo, hi, static_cast<mpfr_ptr>(nullptr));
  bool first = true;
  for (mpfr_srcptr x : {a.lo, a.hi})
    for (mpfr_srcptr y : {b.lo, b.hi}) {
      op(c, x, y, MPFR_RNDD);
      if (first || mpfr_less_p(c, lo)) mpfr_set(lo, c, MPFR_RNDD);
      op(c, x, y, MPFR_RNDU);
      if (first || mpfr_greater_p(c, hi)) mpfr_set(hi, c, MPFR_RNDU);
      first = false;
    }
  mpfr_swap(r.lo, lo);
  mpfr_swap(r.hi, hi);
  mpfr_clears(c, lo, hi, static_cast<mpfr_ptr>(nullptr));
}
}  // namespace

void Interval::mul(const Interval& b) { hull4(*this, *this, b, mpfr_mul); }

bool Interval::div(const Interval& b) {
  if (mpfr_sgn(b.lo) <= 0 && mpfr_sgn(b.hi) >= 0) return false;
  hull4(*this, *this, b, mpfr_div);
  return true;
}

void Interval::sqrt() {
  if (mpfr_sgn(lo) < 0) mpfr_set_zero(lo, 1);
  mpfr_sqrt(lo, lo, MPFR_RNDD);
  mpfr_sqrt(hi, hi, MPFR_RNDU);
}

std::optional<double> Interval::decided() const {
  const double a = mpfr_get_d(lo, MPFR_RNDN), b = mpfr_get_d(hi, MPFR_RNDN);
  if (std::isnan(a) || std::isnan(b) || a != b) return std::nullopt;
  if (a == 0) return mpfr_sgn(hi) < 0 ? -0.0 : 0.0;
  return a;
}

double round_rational(const mpq_class& q) {
  // mpfr_set_q is exact once the precision holds the dyadic q; a non-dyadic q is never a
  // midpoint or a double, so its enclosure eventually separates from every boundary.
  for (mpfr_prec_t prec = 128;; prec *= 2) {
    Interval v(prec);
    v.set(q);
    if (auto d = v.decided()) return *d;
    if (prec > (mpfr_prec_t{1} << 24)) throw Error("reference: cannot round a rational (internal error)");
  }
}

double round_inv_sqrt(const mpq_class& q) {
  auto eval = [&](Interval& v, mpfr_prec_t prec) {
    Interval one(prec);
    one.set(1.0);
    v.set(q);
    v.sqrt();
    one.div(v);
    v.set(one);
  };
  if (auto d = ziv_round(eval)) return *d;
  mpq_class root;
  if (rational_sqrt(q, &root)) return round_rational(mpq_class(1) / root);
  throw Error("reference: the rounding of 1/sqrt(v + eps) could not be decided at 8192 bits");
}

namespace {
constexpr double kMinDD = 0x1p-960, kMaxDD = 0x1p990;
/// hi = RN(v), lo = RN(v − hi), err ≥ |v − hi − lo| + |v − exact| where v is an MPFR value at
/// precision p whose own error is at most v_err_ulps ulps of p bits.
DDValue dd_of_mpfr(mpfr_t v, int v_err_ulps) {
  DDValue r;
  r.hi = mpfr_get_d(v, MPFR_RNDN);
  const double mag = std::fabs(r.hi);
  if (r.hi != 0 && (mag < kMinDD || mag > kMaxDD || !std::isfinite(r.hi))) {
    r.ok = false;
    return r;
  }
  const mpfr_prec_t p = mpfr_get_prec(v);
  mpfr_t t;
  mpfr_init2(t, p);
  mpfr_sub_d(t, v, r.hi, MPFR_RNDN);  // exact: hi is v's leading bits (p ≥ 106)
  r.lo = mpfr_get_d(t, MPFR_RNDN);
  mpfr_sub_d(t, t, r.lo, MPFR_RNDN);  // exact likewise
  const double rest = std::fabs(mpfr_get_d(t, MPFR_RNDU));
  mpfr_clear(t);
  // ulp of a p-bit number ≤ |v|·2^(1−p).
  const double v_err = v_err_ulps == 0 ? 0.0 : mag * std::ldexp(2.0 * v_err_ulps, -static_cast<int>(p));
  r.err = (rest + v_err) * (1 + 0x1p-50);
  return r;
}
}  // namespace

DDValue to_dd(const mpq_class& q) {
  mpfr_t v;
  mpfr_init2(v, 256);
  const int inexact = mpfr_set_q(v, q.get_mpq_t(), MPFR_RNDN);
  DDValue r = dd_of_mpfr(v, inexact != 0 ? 1 : 0);
  mpfr_clear(v);
  return r;
}

DDValue inv_sqrt_dd(const mpq_class& q) {
  mpfr_t v;
  mpfr_init2(v, 256);
  int inexact = mpfr_set_q(v, q.get_mpq_t(), MPFR_RNDN) != 0;
  inexact |= mpfr_rec_sqrt(v, v, MPFR_RNDN) != 0;
  // Relative error ≤ 2^-256 (set_q) propagated through x^(−1/2) (halved) plus ≤ 2^-256 for
  // rec_sqrt's correct rounding: ≤ 2 ulps of 256 bits.
  DDValue r = dd_of_mpfr(v, inexact ? 2 : 0);
  mpfr_clear(v);
  return r;
}

}  // namespace normcheck::exact
