// normcheck — exact summation of doubles and of exact products of doubles.
//
// A small superaccumulator in the manner of R. M. Neal, "Fast exact summation using small and
// large superaccumulators", arXiv:1505.05571 (2015), §3: a fixed-point number with one signed
// 64-bit chunk per 32 bits of binary place value, so an add is a few integer adds with no carry,
// and carries are propagated only every 2^30 adds. The code is our own; the layout differs from
// Neal's (3 chunk writes per double instead of 2, so carries are needed 2^20 times less often, and
// a range wide enough for products of three doubles scaled by 2^±3000). docs/exact-sum.md has the
// algorithm, the invariant and the proofs of exactness and of correct rounding.
//
// Representation. Place value of chunk i: 2^(kMinExp + 32·i), i = 0 … kChunks−1. Value of the
// finite part: Σ_i chunk[i]·2^(kMinExp + 32·i), an exact integer combination (chunks are signed,
// may overlap and need not be reduced). Terms write only chunks 0 … kTermChunks−1; the last chunk
// (kTermChunks) only receives carries.
//
// Carry invariant. Every add writes each chunk at most once, a value of magnitude ≤ 2^32 − 1.
// After a carry propagation (normalize) chunks 0 … kTermChunks−1 lie in [0, 2^32) and count_ = 0,
// so with count_ adds (or merged accumulators, each counted as one add) since then:
//     |chunk[i]| ≤ (count_ + 1)·(2^32 − 1),   i < kTermChunks.
// count_ never exceeds kCarryLimit + 1 = 2^30 + 1 (add propagates first when count_ reaches 2^30;
// a merge propagates when the sum would pass it), so |chunk[i]| < 2^62.01 < 2^63: no add, merge or
// propagation can overflow an int64. The top chunk holds ⌊value / 2^(kMinExp + 32·kTermChunks)⌋
// after a propagation, which is at most the number of terms ever added in magnitude: the
// accumulator is exact for fewer than 2^62 terms in total.
//
// Specials follow IEEE 754 addition: a NaN term, or +inf and −inf both added, make the sum NaN;
// otherwise an infinite term makes it ±inf. The finite terms are still summed exactly beside them
// (sign(), is_zero(), the exports describe the finite part only). A product of finite doubles is
// never infinite here: it is added exactly, however large or small.
//
// Thread safety: one accumulator per thread; merge with add(const ExactSum&). The const methods
// do not modify the object.
#pragma once

#include <mpfr.h>

#include <array>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

namespace normcheck {

/// Unsigned 128-bit integer (GCC/Clang extension): the exact 53×53-bit significand products.
__extension__ typedef unsigned __int128 u128;

/// The exact finite value as a big binary number:
///     value = sign · Σ_i limbs[i] · 2^(32·i + exponent),
/// limbs least significant first, with no zero limb at either end. Zero: sign 0, limbs empty,
/// exponent 0. Feed it to GMP with mpz_import(z, limbs.size(), -1, 4, 0, 0, limbs.data()) and to
/// MPFR with mpfr_set_z_2exp(x, z, exponent, MPFR_RNDN) (exact at precision ≥ bit_length()).
struct BigBinary {
  int sign = 0;                       ///< −1, 0 or +1
  std::vector<std::uint32_t> limbs;   ///< magnitude, 32 bits a limb, least significant first
  std::int64_t exponent = 0;          ///< binary exponent of the lowest limb's bit 0
  /// Bits from the highest set bit to the lowest set bit, inclusive (0 for zero).
  std::int64_t bit_length() const noexcept;
};

/// The exact finite value as a non-overlapping expansion scaled by a common power of two:
///     value = 2^scale · (Σ_i terms[i] + δ),   |δ| ≤ remainder_bound,   δ = 0 iff remainder_bound = 0.
/// terms are most significant first, all of the value's sign, each a 53-bit-or-shorter window of the
/// exact binary value, so |terms[i+1]| < ulp(terms[i]) (truncation, not rounding: terms[0] is the
/// value truncated toward zero, not round()). scale = 0 when the leading bit has weight in
/// [2^-1022, 2^1023]; otherwise scale = the exponent of the leading bit (terms[0] ∈ [1, 2)).
/// Bits of weight below 2^(scale − 1074) cannot be terms and are covered by remainder_bound.
struct Expansion {
  std::vector<double> terms;
  double remainder_bound = 0.0;
  int scale = 0;
};

/// Exact sum of doubles and of exact products of doubles (a small superaccumulator, see the file
/// comment). About 3.3 KB; no heap allocation except in the exports that return vectors.
class ExactSum {
 public:
  static constexpr int kChunkBits = 32;
  static constexpr int kMinExp = -6656;           ///< place value of chunk 0's bit 0 is 2^kMinExp
  static constexpr int kTermChunks = 416;         ///< chunks that terms write: weights [2^-6656, 2^6656)
  static constexpr int kChunks = kTermChunks + 1; ///< plus one chunk that only receives carries
  static constexpr std::int64_t kCarryLimit = std::int64_t{1} << 30;
  /// add_scaled accepts v·2^e when its lowest significand bit (v's ulp times 2^e) has weight
  /// 2^q with kMinScaledUlp ≤ q < kMaxScaledUlp; this holds for every nonzero |v·2^e| in
  /// [2^-6604, 2^6591).
  static constexpr int kMinScaledUlp = kMinExp;
  static constexpr int kMaxScaledUlp = kMinExp + kChunkBits * (kTermChunks - 2);

  /// Adds v exactly. ±inf and NaN set the special flags.
  void add(double v) noexcept {
    const std::uint64_t u = std::bit_cast<std::uint64_t>(v);
    const auto ef = static_cast<int>((u >> 52) & 0x7FF);
    if (ef == 0x7FF) [[unlikely]] {
      add_special(v);
      return;
    }
    if (count_ >= kCarryLimit) [[unlikely]] normalize();
    ++count_;
    put_double(u, ef, 0);
  }

  /// Adds every element of v exactly; the same value as add(v[i]) for each i, faster. Spans of
  /// kLargeSpan elements or more go through a large superaccumulator first (Neal 2015, §4: one
  /// 64-bit bucket per sign and exponent, flushed here after 4095 adds to a bucket), held in a
  /// per-thread scratch of about 80 KB, so the per-element work is one bucket add and a count.
  void add(std::span<const double> v) noexcept;
  static constexpr std::size_t kLargeSpan = 8192;

  /// Adds v·2^e exactly. Throws std::out_of_range when v is finite and nonzero and its lowest
  /// significand bit times 2^e lies outside [2^kMinScaledUlp, 2^kMaxScaledUlp) (see there).
  void add_scaled(double v, int e);

  /// Adds a·b exactly: the 106-bit integer product of the significands (one 64×64→128-bit
  /// multiply) placed at the sum of the exponents, so no overflow or underflow can lose bits. This
  /// is the integer counterpart of TwoProduct (eft.hpp two_prod), which needs scaling to be exact.
  /// Specials: NaN if a or b is NaN or if inf meets 0, else ±inf if a or b is infinite.
  void add_product(double a, double b) noexcept {
    const std::uint64_t ua = std::bit_cast<std::uint64_t>(a), ub = std::bit_cast<std::uint64_t>(b);
    const auto ea = static_cast<int>((ua >> 52) & 0x7FF), eb = static_cast<int>((ub >> 52) & 0x7FF);
    if ((ea == 0x7FF) | (eb == 0x7FF)) [[unlikely]] {
      add_special_product(a, b, 1.0);
      return;
    }
    if (count_ >= kCarryLimit) [[unlikely]] normalize();
    ++count_;
    const u128 p = static_cast<u128>(significand(ua, ea)) * significand(ub, eb);
    const int k = ulp_exponent(ea) + ulp_exponent(eb) - kMinExp;
    put_wide<5>(static_cast<std::uint64_t>(p), static_cast<std::uint64_t>(p >> 64), 0, k,
                sign_mask(ua ^ ub));
  }

  /// Adds a·b·c exactly (159-bit integer product of the three significands). Specials as for
  /// add_product(a, b), over the three factors.
  void add_product(double a, double b, double c) noexcept {
    const std::uint64_t ua = std::bit_cast<std::uint64_t>(a), ub = std::bit_cast<std::uint64_t>(b),
                        uc = std::bit_cast<std::uint64_t>(c);
    const auto ea = static_cast<int>((ua >> 52) & 0x7FF), eb = static_cast<int>((ub >> 52) & 0x7FF),
               ec = static_cast<int>((uc >> 52) & 0x7FF);
    if ((ea == 0x7FF) | (eb == 0x7FF) | (ec == 0x7FF)) [[unlikely]] {
      add_special_product(a, b, c);
      return;
    }
    if (count_ >= kCarryLimit) [[unlikely]] normalize();
    ++count_;
    const u128 ab = static_cast<u128>(significand(ua, ea)) * significand(ub, eb);
    const std::uint64_t mc = significand(uc, ec);
    const u128 lo = static_cast<u128>(static_cast<std::uint64_t>(ab)) * mc;
    const u128 hi = static_cast<u128>(static_cast<std::uint64_t>(ab >> 64)) * mc;
    const u128 mid = (lo >> 64) + static_cast<std::uint64_t>(hi);
    const std::uint64_t w2 = static_cast<std::uint64_t>(hi >> 64) + static_cast<std::uint64_t>(mid >> 64);
    const int k = ulp_exponent(ea) + ulp_exponent(eb) + ulp_exponent(ec) - kMinExp;
    put_wide(static_cast<std::uint64_t>(lo), static_cast<std::uint64_t>(mid), w2, k,
             sign_mask(ua ^ ub ^ uc));
  }

  /// Adds the exact value of another accumulator (and its special flags). Self-merge is allowed.
  void add(const ExactSum& other) noexcept;

  /// Back to the empty sum (+0, no specials).
  void clear() noexcept;

  /// Replaces the sum by its negation (+inf and −inf flags swapped). O(kChunks).
  void negate() noexcept;

  /// True when the exact finite sum is 0. O(kChunks).
  bool is_zero() const noexcept { return sign() == 0; }
  /// −1, 0 or +1: the sign of the exact finite sum. O(kChunks).
  int sign() const noexcept;

  bool has_nan() const noexcept { return nan_; }
  bool has_pos_inf() const noexcept { return pos_inf_; }
  bool has_neg_inf() const noexcept { return neg_inf_; }

  /// The sum correctly rounded to the nearest double, ties to even (IEEE 754 roundTiesToEven):
  /// NaN if has_nan() or both infinities were added; ±inf if one was; else the exact finite sum
  /// rounded, ±inf when it rounds beyond DBL_MAX (|sum| ≥ 2^1024 − 2^970), +0.0 when it is exactly
  /// 0 (also for a sum of −0.0 terms), gradual underflow to subnormals (a nonzero sum that rounds
  /// to zero keeps its sign: −0.0 for a negative one). O(kChunks).
  double round() const noexcept;

  /// The exact finite value as up to n non-overlapping doubles (see Expansion). O(n·kChunks).
  Expansion expansion(std::size_t n) const;

  /// The exact finite value as a big binary number (see BigBinary). O(kChunks).
  BigBinary to_big_binary() const;

  /// Sets out (precision changed to the bits needed, at least MPFR_PREC_MIN) to the exact sum:
  /// NaN / ±inf for the specials as round() does, else the exact finite value (+0 for zero).
  /// Requires MPFR's exponent range to hold the value (the default range does).
  /// Inline, so only code that calls it links libmpfr and libgmp.
  void to_mpfr(mpfr_t out) const;

 private:
  static std::uint64_t significand(std::uint64_t u, int ef) noexcept {
    // The implicit bit is set for ef ∈ [1, 2046]: (ef + 2047) >> 11 is then 1, and 0 for ef = 0.
    return (u & ((std::uint64_t{1} << 52) - 1)) | ((static_cast<std::uint64_t>(ef) + 2047) >> 11 << 52);
  }
  /// Exponent of the significand's bit 0: a finite double is significand·2^ulp_exponent.
  static int ulp_exponent(int ef) noexcept { return ef + (ef == 0) - 1075; }
  /// −1 (all ones) when the sign bit of u is set, else 0: x ↦ (x ^ m) − m negates when m = −1.
  static std::int64_t sign_mask(std::uint64_t u) noexcept {
    return -static_cast<std::int64_t>(u >> 63);
  }
  void add_limb(int i, std::uint64_t limb, std::int64_t sm) noexcept {
    chunk_[static_cast<std::size_t>(i)] += (static_cast<std::int64_t>(limb) ^ sm) - sm;
  }
  /// Adds the double with bits u (exponent field ef < 0x7FF) times 2^e, e such that the chunks
  /// exist: 3 chunk writes of magnitude < 2^32. With X = ±m·2^s (signed, |X| < 2^85) written in
  /// two's complement as X = hi·2^64 + mid·2^32 + lo, lo and mid ∈ [0, 2^32) are bits 0–63 of X
  /// and hi = ⌊X / 2^64⌋ ∈ [−2^21, 2^21] (an arithmetic shift), so the value is exact.
  void put_double(std::uint64_t u, int ef, int e) noexcept {
    const std::int64_t sm = sign_mask(u);
    const std::int64_t x = (static_cast<std::int64_t>(significand(u, ef)) ^ sm) - sm;  // ±m, |m| < 2^53
    const auto k = static_cast<unsigned>(ulp_exponent(ef) + e - kMinExp);  // index of the significand's bit 0
    const unsigned i = k >> 5, s = k & 31;
    const std::uint64_t low = static_cast<std::uint64_t>(x) << s;  // X mod 2^64
    const std::int64_t hi = (x >> 1) >> (63 - s);                   // ⌊X / 2^64⌋, also for s = 0
    chunk_[i] += static_cast<std::int64_t>(low & 0xFFFFFFFFu);
    chunk_[i + 1] += static_cast<std::int64_t>(low >> 32);
    chunk_[i + 2] += hi;
  }
  /// Adds (−1 if sm else +1)·W·2^(kMinExp + k), W = w2·2^128 + w1·2^64 + w0: Limbs chunk writes of
  /// < 2^32 each, so W·2^s (s < 32) must be below 2^(32·Limbs): W < 2^160 for 6, W < 2^128 for 5.
  template <int Limbs = 6>
  void put_wide(std::uint64_t w0, std::uint64_t w1, std::uint64_t w2, int k, std::int64_t sm) noexcept {
    static_assert(Limbs == 5 || Limbs == 6);
    const int i = k >> 5, s = k & 31;
    const std::uint64_t t0 = w0 << s;
    const std::uint64_t t1 = (w1 << s) | ((w0 >> 1) >> (63 - s));
    const std::uint64_t t2 = (w2 << s) | ((w1 >> 1) >> (63 - s));
    add_limb(i, t0 & 0xFFFFFFFFu, sm);
    add_limb(i + 1, t0 >> 32, sm);
    add_limb(i + 2, t1 & 0xFFFFFFFFu, sm);
    add_limb(i + 3, t1 >> 32, sm);
    add_limb(i + 4, t2 & 0xFFFFFFFFu, sm);
    if constexpr (Limbs == 6) add_limb(i + 5, t2 >> 32, sm);
  }
  /// Adds n terms of sign and exponent field idx (bits 63–52) whose significands (implicit bits
  /// included) sum to w, as the large superaccumulators' buckets hold them: ±w·2^q, q the ulp
  /// exponent of field idx & 0x7FF. For field 0x7FF (inf/NaN), NaN when w ≠ n·2^52 (a nonzero
  /// fraction), else the infinity.
  void add_bucket(unsigned idx, u128 w, std::uint32_t n) noexcept;
  friend class ExactSumBuffer;
  void add_small(std::span<const double> v) noexcept;
  void add_special(double v) noexcept;
  void add_special_product(double a, double b, double c) noexcept;
  /// Carry propagation: chunks 0 … kTermChunks−1 into [0, 2^32), count_ = 0; value unchanged.
  void normalize() noexcept;

  alignas(64) std::array<std::int64_t, kChunks> chunk_{};
  std::int64_t count_ = 0;  ///< adds since the last normalize (see the carry invariant)
  bool nan_ = false, pos_inf_ = false, neg_inf_ = false;
};

/// A large superaccumulator (Neal 2015, §4) in front of ExactSum, for hot loops: add(double) is one
/// bucket add and a count (about the cost of a plain sum), against three chunk adds and a carry
/// check for ExactSum::add. About 48 KB, so keep one per thread and per concurrent sum, not one per
/// reduction set: accumulate a set, then flush_into() that set's ExactSum, which leaves the buffer
/// empty. The buffer holds, exactly, the sum of what was added since the last flush.
///
/// Buckets: one per sign and exponent field (bits 63–52 of the double). Each holds the sum of the
/// 52-bit fraction fields added to it and the adds left before it must be spilled (4095, so the
/// sum stays below 2^64); a spilled bucket is ±(fraction sum + n·2^52)·2^q, added exactly (the
/// implicit bits counted; none for subnormals). Exponent field 0x7FF: NaN if its fraction sum is
/// nonzero, else ±inf. flush_into() costs O(buckets touched since the last flush).
class ExactSumBuffer {
 public:
  ExactSumBuffer() noexcept;

  /// Adds v exactly (NaN and ±inf as ExactSum::add does).
  void add(double v) noexcept {
    const std::uint64_t u = std::bit_cast<std::uint64_t>(v);
    add_fields(static_cast<unsigned>(u >> 52), u & kFraction);
  }
  /// Adds every element of v exactly.
  void add(std::span<const double> v) noexcept {
    for (double x : v) add(x);
  }
  /// Adds a·b exactly, through ExactSum::add_product (the 106-bit integer product). Splitting the
  /// product into two bucket adds was measured no faster. f32/f16/bf16 products are doubles
  /// already: add(double(x)·y) takes the bucket path.
  void add_product(double a, double b) noexcept {
    spilled_.add_product(a, b);
    dirty_ = products_ = true;
  }
  /// Adds a·b·c exactly: ExactSum::add_product (159-bit integer product).
  void add_product(double a, double b, double c) noexcept {
    spilled_.add_product(a, b, c);
    dirty_ = products_ = true;
  }
  /// Adds the buffered sum to out (exactly, specials included) and empties the buffer.
  void flush_into(ExactSum& out) noexcept;
  /// The same, and adds the sum of the absolute values of the terms added by add(double) to
  /// abs_out, from the same buckets (they are per sign, so Σ|v| costs no extra add per term):
  /// −inf counts as +inf, NaN as NaN. Precondition: no add_product since the last flush (its
  /// terms' signs are not kept); returns false, with abs_out unchanged, when it was violated.
  bool flush_into(ExactSum& out, ExactSum& abs_out) noexcept;

 private:
  static constexpr int kBuckets = 4096;
  /// Adds per bucket between spills: each adds a fraction field < 2^52, so the sum stays < 2^64.
  static constexpr std::int16_t kCapacity = 4095;
  static constexpr std::int16_t kUntouched = 4096;  ///< left_ of a bucket not in touched_
  static constexpr std::uint64_t kFraction = (std::uint64_t{1} << 52) - 1;
  /// Adds the double with sign and exponent field b (bits 63–52) and fraction field f.
  void add_fields(unsigned b, std::uint64_t f) noexcept {
    if (left_[b] == kUntouched) [[unlikely]] touch(b);
    frac_[b] += f;
    if (--left_[b] == 0) [[unlikely]] spill(b);
  }
  void touch(unsigned b) noexcept {
    touched_[ntouched_++] = static_cast<std::uint16_t>(b);
    left_[b] = kCapacity;
  }
  void spill(unsigned b) noexcept;

  std::array<std::uint64_t, kBuckets> frac_;
  std::array<std::int16_t, kBuckets> left_;
  std::array<std::uint16_t, kBuckets> touched_;  ///< each bucket at most once
  int ntouched_ = 0;
  bool dirty_ = false;      ///< spilled_ holds something
  bool dirty_neg_ = false;  ///< spilled_neg_ holds something
  bool products_ = false;   ///< add_product was called since the last flush
  ExactSum spilled_;        ///< full buckets of positive terms and products, until the next flush
  ExactSum spilled_neg_;    ///< full buckets of negative terms (sign bit set), until the next flush
};

inline void ExactSum::to_mpfr(mpfr_t out) const {
  if (nan_ || (pos_inf_ && neg_inf_)) {
    mpfr_set_prec(out, MPFR_PREC_MIN);
    mpfr_set_nan(out);
    return;
  }
  if (pos_inf_ || neg_inf_) {
    mpfr_set_prec(out, MPFR_PREC_MIN);
    mpfr_set_inf(out, pos_inf_ ? 1 : -1);
    return;
  }
  const BigBinary b = to_big_binary();
  const std::int64_t bits = b.bit_length();
  mpfr_set_prec(out, bits < MPFR_PREC_MIN ? MPFR_PREC_MIN : static_cast<mpfr_prec_t>(bits));
  if (b.sign == 0) {
    mpfr_set_zero(out, 1);
    return;
  }
  mpz_t z;
  mpz_init(z);
  mpz_import(z, b.limbs.size(), -1, sizeof(std::uint32_t), 0, 0, b.limbs.data());
  if (b.sign < 0) mpz_neg(z, z);
  mpfr_set_z_2exp(out, z, static_cast<mpfr_exp_t>(b.exponent), MPFR_RNDN);  // exact: prec ≥ bits
  mpz_clear(z);
}

}  // namespace normcheck
