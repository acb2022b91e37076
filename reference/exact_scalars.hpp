// normcheck — exact scalars and correctly rounded evaluation for the fast reference.
//
// Three layers, all internal to reference/ (docs/reference.md has the derivations):
//   - Rational: GMP's mpq_class, exact; the per-set mean, variance, v + eps and the backward's
//     set coefficients are exact rationals of the exact sums (ExactSum → to_rational).
//   - Interval: a closed interval [lo, hi] of MPFR numbers at precision p, every operation
//     rounded outward (lo toward −∞, hi toward +∞), so the exact value of an expression over
//     exact inputs always lies inside it.
//   - ziv_round: evaluates an interval expression at p = 128, 256, … bits until both ends round
//     to the same double (Ziv 1991, "Fast evaluation of elementary mathematical functions with
//     correctly rounded last bit", ACM TOMS 17(3)); then that double is the correctly rounded
//     value, since rounding to nearest is monotone.
#pragma once

#include <gmpxx.h>
#include <mpfr.h>

#include <optional>

#include "normcheck/exact_sum.hpp"

namespace normcheck::exact {

/// The exact finite value of s as a rational (specials are the caller's business).
mpq_class to_rational(const ExactSum& s);

/// True when q is the square of a rational; then *root is its non-negative square root.
bool rational_sqrt(const mpq_class& q, mpq_class* root);

/// [lo, hi] at a fixed precision, rounded outward. Not copyable (MPFR handles).
class Interval {
 public:
  explicit Interval(mpfr_prec_t prec);
  ~Interval();
  Interval(const Interval&) = delete;
  Interval& operator=(const Interval&) = delete;

  void set(double v);               ///< exact (prec ≥ 53)
  void set(const mpq_class& q);     ///< the tightest enclosure at this precision
  void set(const Interval& other);

  void add(const Interval& b);      ///< *this += b
  void sub(const Interval& b);      ///< *this -= b
  void mul(const Interval& b);      ///< *this *= b
  /// *this /= b; false (and *this unchanged) when b contains 0.
  bool div(const Interval& b);
  void sqrt();                      ///< of max(lo, 0) … hi
  bool is_nan() const;

  /// The double both ends round to (nearest, ties to even), when they agree. A value whose
  /// enclosure lies within (−2^-1075, 2^-1075) rounds to +0 (or −0 when entirely negative).
  std::optional<double> decided() const;

  mpfr_t lo, hi;
};

/// Evaluates `eval(Interval& out, mpfr_prec_t prec)` at growing precision (128 … max_prec bits)
/// until its enclosure decides the rounding. Returns nullopt when max_prec did not suffice (the
/// caller then decides exactly or throws).
template <class Eval>
std::optional<double> ziv_round(const Eval& eval, mpfr_prec_t max_prec = 8192) {
  for (mpfr_prec_t prec = 128; prec <= max_prec; prec *= 2) {
    Interval v(prec);
    eval(v, prec);
    if (v.is_nan()) return std::nullopt;
    if (auto d = v.decided()) return d;
  }
  return std::nullopt;
}

/// The rational q correctly rounded to double (nearest, ties to even; subnormals and overflow
/// to ±inf as IEEE 754). Always terminates: a dyadic q is exact at enough precision, a
/// non-dyadic q is never a rounding boundary.
double round_rational(const mpq_class& q);

/// 1/sqrt(q) correctly rounded (q > 0), with the exact path when q is a rational square.
double round_inv_sqrt(const mpq_class& q);

/// A rational as an unevaluated double-double hi + lo with |q − (hi + lo)| ≤ err (err = 0 when
/// exact). hi = RN(q). Requires |q| within [2^-960, 2^990] or q = 0 for the bound to hold
/// (ok = false otherwise).
struct DDValue {
  double hi = 0, lo = 0, err = 0;
  bool ok = true;
};
DDValue to_dd(const mpq_class& q);
/// 1/sqrt(q) (q > 0) as a double-double with its error bound.
DDValue inv_sqrt_dd(const mpq_class& q);

}  // namespace normcheck::exact
