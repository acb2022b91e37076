// normcheck — the O(kChunks) parts of ExactSum: carry propagation, merge, sign, rounding, exports.
// The representation, the invariant and the proofs are in include/normcheck/exact_sum.hpp and
// docs/exact-sum.md.
#include "normcheck/exact_sum.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <string>
#include <utility>

namespace normcheck {
namespace {

constexpr int kTerm = ExactSum::kTermChunks;
/// Magnitude limbs: the kTermChunks reduced chunks and the top chunk (< 2^62) as two limbs.
constexpr int kLimbs = kTerm + 2;
using Chunks = std::array<std::int64_t, ExactSum::kChunks>;
using Limbs = std::array<std::uint32_t, kLimbs>;

/// Carry propagation on a copy: chunks 0 … kTerm−1 into [0, 2^32), the rest carried up.
/// x + carry cannot overflow: |x| < 2^62.01 by the invariant and |carry| < 2^31.
void propagate(Chunks& c) noexcept {
  std::int64_t carry = 0;
  for (int i = 0; i < kTerm; ++i) {
    const std::int64_t x = c[static_cast<std::size_t>(i)] + carry;
    carry = x >> 32;  // arithmetic shift: floor division by 2^32
    c[static_cast<std::size_t>(i)] = x & 0xFFFFFFFF;
  }
  c[kTerm] += carry;
}

/// Carry propagation over chunks lo … top−1 only, the carry added to chunk top (which keeps its
/// sign and is not reduced).
void propagate_range(Chunks& c, int lo, int top) noexcept {
  std::int64_t carry = 0;
  for (int i = lo; i < top; ++i) {
    const std::int64_t x = c[static_cast<std::size_t>(i)] + carry;
    carry = x >> 32;
    c[static_cast<std::size_t>(i)] = x & 0xFFFFFFFF;
  }
  c[static_cast<std::size_t>(top)] += carry;
}

int magnitude_full(Chunks c, Limbs& out) noexcept;

/// The sign and the magnitude of the exact value held in c (any chunks within the invariant), in
/// O(nonzero range) when the chunks in use end below the top two: with lo … hi the nonzero chunks,
/// propagating over lo … hi leaves the value as Σ_{lo ≤ i ≤ hi} r_i·2^(32i) + t·2^(32(hi+1)),
/// r_i ∈ [0, 2^32), |t| < 2^31 in chunk hi + 1 (zero before): its sign is t's, or + if t = 0 and
/// some r_i ≠ 0. A negative value is negated over lo … hi + 1 and propagated again, leaving
/// chunk hi + 1 = −t + (0 or −1) ∈ [0, 2^31]. Otherwise (the top chunks in use) the full method.
int magnitude(const Chunks& in, Limbs& out) noexcept {
  int lo = 0;
  while (lo < ExactSum::kChunks && in[static_cast<std::size_t>(lo)] == 0) ++lo;
  if (lo == ExactSum::kChunks) {
    out.fill(0);
    return 0;
  }
  int hi = ExactSum::kChunks - 1;
  while (in[static_cast<std::size_t>(hi)] == 0) --hi;
  if (hi >= kTerm - 1) return magnitude_full(in, out);
  Chunks c;
  const int top = hi + 1;
  for (int i = lo; i <= top; ++i) c[static_cast<std::size_t>(i)] = in[static_cast<std::size_t>(i)];
  propagate_range(c, lo, top);
  const std::int64_t t = c[static_cast<std::size_t>(top)];
  int sign = t > 0 ? 1 : t < 0 ? -1 : 0;
  for (int i = lo; sign == 0 && i < top; ++i) sign = c[static_cast<std::size_t>(i)] != 0 ? 1 : 0;
  if (sign < 0) {
    for (int i = lo; i <= top; ++i) c[static_cast<std::size_t>(i)] = -c[static_cast<std::size_t>(i)];
    propagate_range(c, lo, top);
  }
  out.fill(0);
  for (int i = lo; i <= top; ++i) out[static_cast<std::size_t>(i)] = static_cast<std::uint32_t>(c[static_cast<std::size_t>(i)]);
  return sign;
}

/// The sign and magnitude by propagation over all chunks (needed when the top chunks are in use).
int magnitude_full(Chunks c, Limbs& out) noexcept {
  propagate(c);
  int sign = c[kTerm] > 0 ? 1 : c[kTerm] < 0 ? -1 : 0;
  if (sign == 0 && std::any_of(c.begin(), c.end(), [](std::int64_t x) { return x != 0; })) sign = 1;
  if (sign < 0) {
    for (auto& x : c) x = -x;  // each |x| < 2^63: no overflow
    propagate(c);              // now value > 0, so the top chunk is ≥ 0
  }
  for (int i = 0; i < kTerm; ++i) out[static_cast<std::size_t>(i)] = static_cast<std::uint32_t>(c[static_cast<std::size_t>(i)]);
  const auto top = static_cast<std::uint64_t>(c[kTerm]);
  out[kTerm] = static_cast<std::uint32_t>(top);
  out[kTerm + 1] = static_cast<std::uint32_t>(top >> 32);
  return sign;
}

/// Index of the highest set bit of the limb array, −1 when all are zero.
int highest_bit(const Limbs& l) noexcept {
  for (int i = kLimbs - 1; i >= 0; --i)
    if (const std::uint32_t w = l[static_cast<std::size_t>(i)]; w != 0) return 32 * i + 31 - std::countl_zero(w);
  return -1;
}

/// Index of the lowest set bit, −1 when all are zero.
int lowest_bit(const Limbs& l) noexcept {
  for (int i = 0; i < kLimbs; ++i)
    if (const std::uint32_t w = l[static_cast<std::size_t>(i)]; w != 0) return 32 * i + std::countr_zero(w);
  return -1;
}

/// Bits lo … lo+63 of the limb array as an integer (bits beyond the array read as 0), lo ≥ 0.
std::uint64_t bits_at(const Limbs& l, int lo) noexcept {
  const int w = lo >> 5, s = lo & 31;
  auto limb = [&](int i) -> std::uint64_t { return i < kLimbs ? l[static_cast<std::size_t>(i)] : 0u; };
  const u128 x = static_cast<u128>(limb(w)) |
                              (static_cast<u128>(limb(w + 1)) << 32) |
                              (static_cast<u128>(limb(w + 2)) << 64);
  return static_cast<std::uint64_t>(x >> s);
}

/// True when some bit with index < pos is set (pos ≥ 0).
bool any_below(const Limbs& l, int pos) noexcept {
  const int w = pos >> 5, s = pos & 31;
  for (int i = 0; i < w && i < kLimbs; ++i)
    if (l[static_cast<std::size_t>(i)] != 0) return true;
  return w < kLimbs && s != 0 && (l[static_cast<std::size_t>(w)] & ((std::uint32_t{1} << s) - 1)) != 0;
}

/// Clears bits lo … hi (inclusive).
void clear_bits(Limbs& l, int lo, int hi) noexcept {
  for (int b = lo; b <= hi;) {
    const int w = b >> 5, s = b & 31, n = std::min(32 - s, hi - b + 1);
    const std::uint32_t mask = n == 32 ? 0xFFFFFFFFu : ((std::uint32_t{1} << n) - 1) << s;
    l[static_cast<std::size_t>(w)] &= ~mask;
    b += n;
  }
}

/// The at most 53 bits from the highest set bit t down to max(t − 52, floor_bit), as an integer q
/// with its bit-0 index; the caller rounds or truncates. q = 0 when t < floor_bit (all bits below).
struct Window {
  std::uint64_t q;
  int lo;
};
Window window(const Limbs& l, int t, int floor_bit) noexcept {
  const int lo = std::max(t - 52, floor_bit);
  if (t < lo) return {0, lo};
  const int n = t - lo + 1;  // 1 … 53
  return {bits_at(l, lo) & ((std::uint64_t{1} << n) - 1), lo};
}

}  // namespace

std::int64_t BigBinary::bit_length() const noexcept {
  if (limbs.empty()) return 0;
  const auto top = static_cast<std::int64_t>(32 * (limbs.size() - 1) + 32 - std::countl_zero(limbs.back()));
  return top - std::countr_zero(limbs.front());
}

void ExactSum::normalize() noexcept {
  propagate(chunk_);
  count_ = 0;
}

namespace {

/// Neal's large superaccumulator (arXiv:1505.05571 §4), two-way interleaved so that runs of equal
/// exponents do not serialize on one bucket: for each table and each bucket b = bits 63–52 of a
/// double (sign and exponent field), the sum of the fraction fields added (each < 2^52, so 4095 of
/// them sum to < 2^64) and the adds left before it must be flushed. Between calls every bucket is
/// clean (fraction 0, kCapacity left).
struct LargeAccumulator {
  static constexpr int kBuckets = 4096;
  static constexpr std::int16_t kCapacity = 4095;
  std::uint64_t frac[2][kBuckets];
  std::int16_t left[2][kBuckets];
  LargeAccumulator() noexcept {
    std::memset(frac, 0, sizeof frac);
    for (auto& t : left) std::fill(std::begin(t), std::end(t), kCapacity);
  }
};

thread_local LargeAccumulator t_large;

}  // namespace

void ExactSum::add_bucket(unsigned idx, u128 w, std::uint32_t n) noexcept {
  if (n == 0) return;
  const auto ef = static_cast<int>(idx & 0x7FF);
  const bool neg = (idx >> 11) != 0;
  if (ef == 0x7FF) {  // a NaN has a nonzero fraction; infinities have none
    add_special(w != u128{n} << 52 ? std::numeric_limits<double>::quiet_NaN()
                                   : (neg ? -1.0 : 1.0) * std::numeric_limits<double>::infinity());
    return;
  }
  if (count_ >= kCarryLimit) normalize();
  ++count_;
  put_wide<5>(static_cast<std::uint64_t>(w), static_cast<std::uint64_t>(w >> 64), 0, ulp_exponent(ef) - kMinExp,
              neg ? -1 : 0);  // w < 2^65
}

/// Σ significands of a bucket: its fraction sum plus n implicit bits (none for field 0).
static u128 bucket_significands(unsigned idx, u128 frac_sum, std::uint32_t n) noexcept {
  return frac_sum + ((idx & 0x7FF) != 0 ? u128{n} << 52 : 0);
}

void ExactSum::add(std::span<const double> v) noexcept {
  if (v.size() < kLargeSpan) {
    add_small(v);
    return;
  }
  LargeAccumulator& L = t_large;
  constexpr std::uint64_t kFrac = (std::uint64_t{1} << 52) - 1;
  const std::size_t n = v.size();
  auto flush = [&](int t, unsigned b) {
    const auto used = static_cast<std::uint32_t>(LargeAccumulator::kCapacity - L.left[t][b]);
    add_bucket(b, bucket_significands(b, L.frac[t][b], used), used);
    L.frac[t][b] = 0;
    L.left[t][b] = LargeAccumulator::kCapacity;
  };
  for (std::size_t i = 0; i + 1 < n; i += 2) {
    std::uint64_t u[2];
    std::memcpy(u, &v[i], sizeof u);
    for (int t = 0; t < 2; ++t) {
      const auto b = static_cast<unsigned>(u[t] >> 52);
      L.frac[t][b] += u[t] & kFrac;
      if (--L.left[t][b] == 0) [[unlikely]] flush(t, b);
    }
  }
  if (n % 2 != 0) add(v[n - 1]);
  for (int t = 0; t < 2; ++t)
    for (unsigned b = 0; b < LargeAccumulator::kBuckets; ++b)
      if (L.left[t][b] != LargeAccumulator::kCapacity) flush(t, b);
}

void ExactSum::add_small(std::span<const double> v) noexcept {
  std::size_t i = 0;
  while (i < v.size()) {
    if (count_ >= kCarryLimit) normalize();
    const std::size_t block = std::min(v.size() - i, static_cast<std::size_t>(kCarryLimit - count_));
    for (const std::size_t end = i + block; i < end; ++i) {
      std::uint64_t u;
      std::memcpy(&u, &v[i], sizeof u);  // an integer load, not via an xmm register
      const auto ef = static_cast<int>((u >> 52) & 0x7FF);
      if (ef == 0x7FF) [[unlikely]] {
        add_special(v[i]);
        continue;
      }
      put_double(u, ef, 0);
    }
    count_ += static_cast<std::int64_t>(block);  // specials counted too: harmless, the bound only loosens
  }
}

void ExactSum::add_scaled(double v, int e) {
  const std::uint64_t u = std::bit_cast<std::uint64_t>(v);
  const auto ef = static_cast<int>((u >> 52) & 0x7FF);
  if (ef == 0x7FF) {
    add_special(v);
    return;
  }
  if (significand(u, ef) == 0) return;
  const std::int64_t q = std::int64_t{ulp_exponent(ef)} + e;
  if (q < kMinScaledUlp || q >= kMaxScaledUlp)
    throw std::out_of_range("ExactSum::add_scaled: v·2^e has its lowest significand bit at 2^" + std::to_string(q) +
                            ", outside the accumulator's [2^" + std::to_string(kMinScaledUlp) + ", 2^" +
                            std::to_string(kMaxScaledUlp) + ")");
  if (count_ >= kCarryLimit) normalize();
  ++count_;
  put_double(u, ef, e);
}

void ExactSum::add(const ExactSum& other) noexcept {
  // With both counts ≤ kCarryLimit, after the first propagation count_ + other.count_ + 1 ≤
  // kCarryLimit + 1, so |chunk| ≤ (kCarryLimit + 2)·(2^32 − 1) < 2^63 (see the invariant).
  const std::int64_t other_count = other.count_;  // read before a self-merge changes it
  if (count_ + other_count + 1 > kCarryLimit) normalize();
  for (int i = 0; i < kChunks; ++i) chunk_[static_cast<std::size_t>(i)] += other.chunk_[static_cast<std::size_t>(i)];
  count_ += other_count + 1;
  if (count_ > kCarryLimit) normalize();
  nan_ = nan_ || other.nan_;
  pos_inf_ = pos_inf_ || other.pos_inf_;
  neg_inf_ = neg_inf_ || other.neg_inf_;
}

void ExactSum::clear() noexcept { *this = ExactSum{}; }

void ExactSum::negate() noexcept {
  // −chunk keeps |chunk[i]| ≤ (count_ + 1)·(2^32 − 1); counting the negation as one add keeps
  // the invariant's "count_ = 0 means chunks in [0, 2^32)" for the next propagation.
  if (count_ >= kCarryLimit) normalize();
  for (auto& c : chunk_) c = -c;
  ++count_;
  std::swap(pos_inf_, neg_inf_);
}

void ExactSum::add_special(double v) noexcept {
  if (std::isnan(v))
    nan_ = true;
  else if (v > 0)
    pos_inf_ = true;
  else if (v < 0)
    neg_inf_ = true;
}

void ExactSum::add_special_product(double a, double b, double c) noexcept {
  // The exact-real rules (IEEE 754 multiplication without intermediate overflow): NaN if a factor
  // is NaN or an infinity meets a zero; otherwise ±inf with the product of the signs.
  const double f[3] = {a, b, c};
  bool any_inf = false, any_zero = false, neg = false;
  for (double x : f) {
    if (std::isnan(x)) {
      nan_ = true;
      return;
    }
    any_inf = any_inf || std::isinf(x);
    any_zero = any_zero || x == 0.0;
    neg = neg != std::signbit(x);
  }
  if (any_zero)
    nan_ = true;  // any_inf holds: only called with a non-finite factor
  else if (neg)
    neg_inf_ = true;
  else
    pos_inf_ = true;
}

int ExactSum::sign() const noexcept {
  Limbs l;
  return magnitude(chunk_, l);
}

double ExactSum::round() const noexcept {
  constexpr double kInf = std::numeric_limits<double>::infinity();
  if (nan_ || (pos_inf_ && neg_inf_)) return std::numeric_limits<double>::quiet_NaN();
  if (pos_inf_) return kInf;
  if (neg_inf_) return -kInf;
  Limbs l;
  const int sign = magnitude(chunk_, l);
  if (sign == 0) return 0.0;
  const int t = highest_bit(l);
  const int e_top = kMinExp + t;  // the exact |sum| ∈ [2^e_top, 2^(e_top+1))
  if (e_top > 1023) return sign * kInf;
  // Keep 53 bits, or down to the subnormal ulp 2^-1074; round to nearest, ties to even.
  const Window w = window(l, t, -1074 - kMinExp);  // w.lo ≥ 1: the round bit exists
  const bool round_bit = ((bits_at(l, w.lo - 1)) & 1u) != 0;
  const bool sticky = any_below(l, w.lo - 1);
  const std::uint64_t q = w.q + (round_bit && (sticky || (w.q & 1u)) ? 1u : 0u);  // ≤ 2^53
  // q·2^(w.lo + kMinExp) is a double or ≥ 2^1024 (ldexp gives inf): exact, no second rounding.
  return sign * std::ldexp(static_cast<double>(q), w.lo + kMinExp);
}

BigBinary ExactSum::to_big_binary() const {
  Limbs l;
  BigBinary b;
  b.sign = magnitude(chunk_, l);
  if (b.sign == 0) return b;
  const int lo = lowest_bit(l) >> 5, hi = highest_bit(l) >> 5;
  b.limbs.assign(l.begin() + lo, l.begin() + hi + 1);
  b.exponent = std::int64_t{kMinExp} + 32 * lo;
  return b;
}

Expansion ExactSum::expansion(std::size_t n) const {
  Limbs l;
  Expansion x;
  const int sign = magnitude(chunk_, l);
  int t = highest_bit(l);
  if (t < 0) return x;
  const int e_top = kMinExp + t;
  x.scale = (e_top >= -1022 && e_top <= 1023) ? 0 : e_top;
  const int floor_bit = x.scale - 1074 - kMinExp;  // index of weight 2^(scale-1074)
  while (t >= 0 && x.terms.size() < n && t >= floor_bit) {
    const Window w = window(l, t, floor_bit);
    x.terms.push_back(sign * std::ldexp(static_cast<double>(w.q), w.lo + kMinExp - x.scale));
    clear_bits(l, w.lo, t);
    t = highest_bit(l);
  }
  if (t < 0) return x;
  if (t < floor_bit) {
    x.remainder_bound = std::numeric_limits<double>::denorm_min();  // remainder < 2^(t+1) ≤ that
    return x;
  }
  // The rest is below ulp(last term) ≤ 2^1023·2^-52, so (q + 1)·2^lo is representable.
  const Window w = window(l, t, floor_bit);
  const std::uint64_t q = w.q + (any_below(l, w.lo) ? 1u : 0u);
  x.remainder_bound = std::ldexp(static_cast<double>(q), w.lo + kMinExp - x.scale);
  return x;
}

ExactSumBuffer::ExactSumBuffer() noexcept {
  frac_.fill(0);
  left_.fill(kUntouched);
}

void ExactSumBuffer::spill(unsigned b) noexcept {
  const bool neg = (b & 0x800u) != 0;
  (neg ? spilled_neg_ : spilled_).add_bucket(b, bucket_significands(b, frac_[b], kCapacity), kCapacity);
  (neg ? dirty_neg_ : dirty_) = true;
  frac_[b] = 0;
  left_[b] = kCapacity;  // still in touched_
}

void ExactSumBuffer::flush_into(ExactSum& out) noexcept {
  for (int i = 0; i < ntouched_; ++i) {
    const unsigned b = touched_[static_cast<std::size_t>(i)];
    const auto used = static_cast<std::uint32_t>(kCapacity - left_[b]);
    out.add_bucket(b, bucket_significands(b, frac_[b], used), used);
    frac_[b] = 0;
    left_[b] = kUntouched;
  }
  ntouched_ = 0;
  if (dirty_) out.add(spilled_), spilled_.clear();
  if (dirty_neg_) out.add(spilled_neg_), spilled_neg_.clear();
  dirty_ = dirty_neg_ = products_ = false;
}

bool ExactSumBuffer::flush_into(ExactSum& out, ExactSum& abs_out) noexcept {
  if (products_) {
    flush_into(out);
    return false;
  }
  for (int i = 0; i < ntouched_; ++i) {
    const unsigned b = touched_[static_cast<std::size_t>(i)];
    const auto used = static_cast<std::uint32_t>(kCapacity - left_[b]);
    const u128 w = bucket_significands(b, frac_[b], used);
    out.add_bucket(b, w, used);
    abs_out.add_bucket(b & 0x7FFu, w, used);  // the same terms with the sign bit cleared
    frac_[b] = 0;
    left_[b] = kUntouched;
  }
  ntouched_ = 0;
  if (dirty_) out.add(spilled_), abs_out.add(spilled_), spilled_.clear();
  if (dirty_neg_) {
    out.add(spilled_neg_);
    spilled_neg_.negate();
    abs_out.add(spilled_neg_);
    spilled_neg_.clear();
  }
  dirty_ = dirty_neg_ = false;
  return true;
}

}  // namespace normcheck
