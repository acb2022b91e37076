// Compiled with -ffp-contract=off (CMakeLists.txt): no a·b + c is fused, so the generated
// doubles are the same on every platform (generate.hpp).
#include "normcheck/generate.hpp"

#include <algorithm>
#include <cmath>
#include <limits>

#include "normcheck/parallel.hpp"
#include "normcheck/portable_math.hpp"

namespace normcheck {
namespace draws {

namespace {
[[gnu::always_inline]] inline uint64_t mix(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}
[[gnu::always_inline]] inline uint64_t draw(uint64_t key, uint64_t n) { return mix(key + (n + 1) * 0x9e3779b97f4a7c15ULL); }
}  // namespace

uint64_t mix64(uint64_t z) { return mix(z); }

uint64_t role_key(uint64_t seed, uint64_t role) { return mix64(mix64(seed) ^ (role * 0xd1b54a32d192ed03ULL)); }

uint64_t bits(uint64_t key, uint64_t n) { return draw(key, n); }

double uniform(uint64_t key, uint64_t n) { return static_cast<double>(bits(key, n) >> 11) * 0x1p-53; }

namespace {

/// x as a double for an integer 0 ≤ x ≤ 2^53, exactly (the value static_cast<double> gives): its
/// two parts below and above bit 52 through small_uint_to_double, so that the loop below
/// vectorizes.
[[gnu::always_inline]] inline double u53_to_double(uint64_t x) {
  return small_uint_to_double(x & 0x000fffffffffffffULL) + small_uint_to_double(x >> 52) * 0x1p52;  // exact: x ≤ 2^53
}

/// The Box–Muller arguments of pairs k0 … k0 + np − 1: u1 = (B_2k/2^11 + 1)·2^-53 and
/// θ/2π = U_2k+1 (normal_pair's, the same bits).
[[gnu::always_inline]] inline void pair_arguments(uint64_t key, uint64_t k0, int64_t np, double* u1, double* turns) {
  for (int64_t j = 0; j < np; ++j) {
    const uint64_t k = k0 + static_cast<uint64_t>(j);
    u1[j] = u53_to_double((draw(key, 2 * k) >> 11) + 1) * 0x1p-53;
    turns[j] = u53_to_double(draw(key, 2 * k + 1) >> 11) * 0x1p-53;
  }
}

#if defined(__x86_64__) && defined(__GNUC__)
[[gnu::target("avx2")]] void pair_arguments_avx2(uint64_t key, uint64_t k0, int64_t np, double* u1, double* turns) {
  pair_arguments(key, k0, np, u1, turns);
}
#endif
void pair_arguments_any(uint64_t key, uint64_t k0, int64_t np, double* u1, double* turns) {
#if defined(__x86_64__) && defined(__GNUC__)
  if (portable_math_avx2()) return pair_arguments_avx2(key, k0, np, u1, turns);
#endif
  pair_arguments(key, k0, np, u1, turns);
}

struct Pair {
  double cos, sin;
};

/// Box–Muller pair k: R·(cos θ, sin θ), R = sqrt(−2 log u1), u1 in [2^-53, 1], θ = 2π·U_{2k+1}.
Pair normal_pair(uint64_t key, uint64_t k) {
  const double u1 = static_cast<double>((bits(key, 2 * k) >> 11) + 1) * 0x1p-53;
  const double r = std::sqrt(-2.0 * portable_log(u1));
  const SinCos sc = portable_sincos_turns(uniform(key, 2 * k + 1));
  return {r * sc.cos, r * sc.sin};
}

}  // namespace

void fill_normal(uint64_t key, int64_t first, int64_t count, double* out) {
  const int64_t end = first + count;
  int64_t i = first;
  if (i < end && i % 2 == 1) {  // a range starting at the odd half of a pair
    *out++ = normal_pair(key, static_cast<uint64_t>(i / 2)).sin;
    ++i;
  }
  constexpr int64_t kPairs = 256;  // whole pairs a block at a time: the same values as normal_pair
  double u1[kPairs], theta[kPairs], s[kPairs], c[kPairs];
  while (i + 1 < end) {
    const int64_t np = std::min(kPairs, (end - i) / 2);
    pair_arguments_any(key, static_cast<uint64_t>(i / 2), np, u1, theta);
    portable_log(u1, u1, np);
    portable_sincos_turns(theta, s, c, np);
    for (int64_t j = 0; j < np; ++j) {
      const double r = std::sqrt(-2.0 * u1[j]);
      *out++ = r * c[j];
      *out++ = r * s[j];
    }
    i += 2 * np;
  }
  if (i < end) *out = normal_pair(key, static_cast<uint64_t>(i / 2)).cos;
}

void fill(const Distribution& d, uint64_t key, int64_t first, int64_t count, double* out) {
  switch (d.kind) {
    case Distribution::Kind::normal:
      fill_normal(key, first, count, out);
      for (int64_t j = 0; j < count; ++j) out[j] = d.a + d.b * out[j];
      return;
    case Distribution::Kind::uniform:
      for (int64_t j = 0; j < count; ++j) out[j] = d.a + (d.b - d.a) * uniform(key, static_cast<uint64_t>(first + j));
      return;
    case Distribution::Kind::constant: std::fill(out, out + count, d.a); return;
  }
}

}  // namespace draws

namespace {

constexpr int64_t kRange = int64_t{1} << 16;  ///< elements per task
constexpr int64_t kBlock = 1024;              ///< elements per stack buffer within a task

/// Fills t from values(first, count, out) (doubles of logical elements [first, first + count)),
/// in ranges of kRange elements on `threads` threads.
template <class F>
void generate_tensor(Tensor& t, int threads, const F& values) {
  const int64_t n = t.numel();
  parallel_for((n + kRange - 1) / kRange, threads, [&](int64_t r) {
    double buf[kBlock];
    const int64_t end = std::min(n, (r + 1) * kRange);
    for (int64_t b = r * kRange; b < end; b += kBlock) {
      const int64_t len = std::min(kBlock, end - b);
      values(b, len, buf);
      t.write(b, b + len, buf);
    }
  });
}

void plant_special(const Problem& p, const Partition& part, Tensor& x) {
  switch (p.special) {
    case Special::none: return;
    case Special::nan: x.set(0, std::numeric_limits<double>::quiet_NaN()); return;
    case Special::inf: x.set(0, std::numeric_limits<double>::infinity()); return;
    case Special::spikes: {
      const double big = p.dtype == DType::f16 ? 0x1p14 : 0x1p20;
      for (int64_t i = 0; i < x.numel(); i += 97) x.set(i, (i / 97) % 2 ? -big : big);
      return;
    }
    case Special::cancel: {
      const double big = p.dtype == DType::f16 ? 0x1p14 : 0x1p24;
      if (part.set_size >= 2)
        for (int64_t q = 0; q < part.num_sets; ++q) {
          x.set(part.member(q, 0), big);
          x.set(part.member(q, part.set_size - 1), -big);
        }
      return;
    }
    case Special::const_set: {
      const double v = x.get(part.member(0, 0));
      for (int64_t j = 0; j < part.set_size; ++j) x.set(part.member(0, j), v);
      return;
    }
  }
}

/// G6: dy = a + b·x̂ + 1e-3·N_i, x̂ from each set's mean and inv_std (two-pass, in double).
void common_mode_dy(const Problem& p, const Partition& part, const Tensor& x, Tensor& dy, int threads) {
  std::vector<double> mean, var;
  set_moments(part, [&](int64_t i) { return x.get(i); }, mean, var);
  std::vector<double> r(var.size());
  for (size_t q = 0; q < var.size(); ++q) r[q] = 1 / std::sqrt(var[q] + p.eps);
  const uint64_t key = draws::role_key(p.seed, draws::dy);
  generate_tensor(dy, threads, [&](int64_t first, int64_t count, double* out) {
    draws::fill_normal(key, first, count, out);
    for (int64_t j = 0; j < count; ++j) {
      const int64_t i = first + j;
      const auto q = static_cast<size_t>(part.set_of(i));
      out[j] = p.dy.a + p.dy.b * (x.get(i) - mean[q]) * r[q] + 1e-3 * out[j];
    }
  });
}

double dist_mean(const Distribution& d) {
  return d.kind == Distribution::Kind::uniform ? 0.5 * (d.a + d.b) : d.a;
}
double dist_std(const Distribution& d) {
  switch (d.kind) {
    case Distribution::Kind::normal: return d.b;
    case Distribution::Kind::uniform: return (d.b - d.a) / std::sqrt(12.0);
    case Distribution::Kind::constant: return 0;
  }
  return 0;
}

/// gamma_j = ±(0.5 + 1.5·U_j), negative when the lowest bit of the draw is 1 (U_j uses the top
/// 53 bits); beta_j = −1 + 2·U_j.
void affine_params(const Problem& p, const Partition& part, GeneratedInputs& g) {
  const DType sdt = stats_dtype(p.dtype);
  const auto ashape = affine_shape(p);
  g.gamma = Tensor(sdt, ashape);
  const uint64_t kg = draws::role_key(p.seed, draws::gamma);
  generate_tensor(g.gamma, 1, [&](int64_t first, int64_t count, double* out) {
    for (int64_t j = 0; j < count; ++j) {
      const uint64_t b = draws::bits(kg, static_cast<uint64_t>(first + j));
      out[j] = (b & 1 ? -1.0 : 1.0) * (0.5 + 1.5 * (static_cast<double>(b >> 11) * 0x1p-53));
    }
  });
  if (!part.has_beta) return;
  g.beta = Tensor(sdt, ashape);
  const uint64_t kb = draws::role_key(p.seed, draws::beta);
  generate_tensor(g.beta, 1, [&](int64_t first, int64_t count, double* out) {
    for (int64_t j = 0; j < count; ++j) out[j] = -1.0 + 2.0 * draws::uniform(kb, static_cast<uint64_t>(first + j));
  });
}

/// Framework defaults (0, 1) once batch_norm has trained; otherwise drawn near the data's own
/// statistics: mean + std·N_c and std²·(0.5 + 1.5·U_c) (std 1 for constant data).
void running_stats(const Problem& p, GeneratedInputs& g) {
  const DType sdt = stats_dtype(p.dtype);
  g.running_mean = Tensor(sdt, {p.channels()});
  g.running_var = Tensor(sdt, {p.channels()});
  const bool trained = p.pass == Pass::forward_training || p.steps > 0;
  const double mu = dist_mean(p.data), sd = dist_std(p.data);
  const double scale = sd > 0 ? sd : 1.0, var_scale = sd > 0 ? sd * sd : 1.0;
  const uint64_t km = draws::role_key(p.seed, draws::running_mean), kv = draws::role_key(p.seed, draws::running_var);
  generate_tensor(g.running_mean, 1, [&](int64_t first, int64_t count, double* out) {
    draws::fill_normal(km, first, count, out);
    for (int64_t j = 0; j < count; ++j) out[j] = trained ? 0.0 : mu + scale * out[j];
  });
  generate_tensor(g.running_var, 1, [&](int64_t first, int64_t count, double* out) {
    for (int64_t j = 0; j < count; ++j)
      out[j] = trained ? 1.0 : var_scale * (0.5 + 1.5 * draws::uniform(kv, static_cast<uint64_t>(first + j)));
  });
}

}  // namespace

int num_calls(const Problem& p) {
  switch (p.pass) {
    case Pass::forward_training: return p.op == Op::batch_norm ? p.steps : 1;
    case Pass::forward_inference: return p.steps + 1;
    default: return 1;
  }
}

GeneratedInputs generate_inputs(const Problem& p, const Partition& part, int threads) {
  threads = resolve_threads(threads);
  GeneratedInputs g;
  const int calls = num_calls(p);
  for (int k = 0; k < calls; ++k) {
    Tensor x(p.dtype, p.dims, p.layout);
    const uint64_t key = draws::role_key(p.seed, draws::batch0 + static_cast<uint64_t>(k));
    generate_tensor(x, threads, [&](int64_t first, int64_t count, double* out) { draws::fill(p.data, key, first, count, out); });
    if (k == calls - 1) plant_special(p, part, x);
    g.batches.push_back(std::move(x));
  }
  if (is_backward(p.pass)) {
    g.dy = Tensor(p.dtype, p.dims, p.layout);
    if (p.dy.kind == GradientSpec::Kind::normal) {
      const uint64_t key = draws::role_key(p.seed, draws::dy);
      generate_tensor(g.dy, threads, [&](int64_t first, int64_t count, double* out) { draws::fill_normal(key, first, count, out); });
    } else {
      common_mode_dy(p, part, g.batches.back(), g.dy, threads);
    }
  }
  if (p.affine) affine_params(p, part, g);
  if (p.op == Op::batch_norm) running_stats(p, g);
  return g;
}

}  // namespace normcheck
