#include "normcheck/generate.hpp"

#include <cmath>
#include <limits>

namespace normcheck {
namespace {

uint64_t splitmix64(uint64_t& s) {
  uint64_t z = (s += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

/// xoshiro256** (Blackman & Vigna 2018), seeded through splitmix64 as its authors recommend.
class Stream {
 public:
  Stream(uint64_t seed, uint64_t role) {
    uint64_t s = seed ^ (role * 0xd1b54a32d192ed03ULL);
    for (auto& w : state_) w = splitmix64(s);
  }
  uint64_t next() {
    const uint64_t result = rotl(state_[1] * 5, 7) * 9;
    const uint64_t t = state_[1] << 17;
    state_[2] ^= state_[0];
    state_[3] ^= state_[1];
    state_[1] ^= state_[2];
    state_[0] ^= state_[3];
    state_[2] ^= t;
    state_[3] = rotl(state_[3], 45);
    return result;
  }
  /// Uniform on [0, 1) with 53 random bits.
  double uniform() { return static_cast<double>(next() >> 11) * 0x1p-53; }
  /// Standard normal by Box–Muller (one value per pair of uniforms).
  double normal() {
    const double u1 = 1.0 - uniform();  // (0, 1]
    const double u2 = uniform();
    return std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2);
  }
  double draw(const Distribution& d) {
    switch (d.kind) {
      case Distribution::Kind::normal: return d.a + d.b * normal();
      case Distribution::Kind::uniform: return d.a + (d.b - d.a) * uniform();
      case Distribution::Kind::constant: return d.a;
    }
    return 0;
  }

 private:
  static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
  uint64_t state_[4];
};

enum Role : uint64_t { kDy = 1, kGamma = 2, kBeta = 3, kRunningMean = 4, kRunningVar = 5, kBatch0 = 100 };

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

}  // namespace

int num_calls(const Problem& p) {
  switch (p.pass) {
    case Pass::forward_training: return p.op == Op::batch_norm ? p.steps : 1;
    case Pass::forward_inference: return p.steps + 1;
    default: return 1;
  }
}

GeneratedInputs generate_inputs(const Problem& p, const Partition& part) {
  GeneratedInputs g;
  const DType sdt = stats_dtype(p.dtype);
  const int calls = num_calls(p);
  for (int k = 0; k < calls; ++k) {
    Tensor x(p.dtype, p.dims, p.layout);
    Stream s(p.seed, kBatch0 + static_cast<uint64_t>(k));
    for (int64_t i = 0; i < x.numel(); ++i) x.set(i, s.draw(p.data));
    if (k == calls - 1) {
      switch (p.special) {
        case Special::none: break;
        case Special::nan: x.set(0, std::numeric_limits<double>::quiet_NaN()); break;
        case Special::inf: x.set(0, std::numeric_limits<double>::infinity()); break;
        case Special::spikes: {
          const double big = p.dtype == DType::f16 ? 0x1p14 : 0x1p20;
          for (int64_t i = 0; i < x.numel(); i += 97) x.set(i, (i / 97) % 2 ? -big : big);
          break;
        }
        case Special::cancel: {
          const double big = p.dtype == DType::f16 ? 0x1p14 : 0x1p24;
          if (part.set_size >= 2)
            for (int64_t q = 0; q < part.num_sets; ++q) {
              x.set(part.member(q, 0), big);
              x.set(part.member(q, part.set_size - 1), -big);
            }
          break;
        }
        case Special::const_set: {
          const double v = x.get(part.member(0, 0));
          for (int64_t j = 0; j < part.set_size; ++j) x.set(part.member(0, j), v);
          break;
        }
      }
    }
    g.batches.push_back(std::move(x));
  }
  if (is_backward(p.pass)) {
    g.dy = Tensor(p.dtype, p.dims, p.layout);
    Stream s(p.seed, kDy);
    if (p.dy.kind == GradientSpec::Kind::normal) {
      for (int64_t i = 0; i < g.dy.numel(); ++i) g.dy.set(i, s.normal());
    } else {  // G6: dy = a + b·x̂ + 1e-3·N(0, 1), x̂ from each set's mean and inv_std (in double)
      const Tensor& x = g.batches.back();
      std::vector<double> mean, var;
      set_moments(part, [&](int64_t i) { return x.get(i); }, mean, var);
      for (int64_t q = 0; q < part.num_sets; ++q) {
        const auto idx = [&](int64_t k) { return part.member(q, k); };
        const double r = 1 / std::sqrt(var[q] + p.eps);
        for (int64_t k = 0; k < part.set_size; ++k)
          g.dy.set(idx(k), p.dy.a + p.dy.b * (x.get(idx(k)) - mean[q]) * r + 1e-3 * s.normal());
      }
    }
  }
  if (p.affine) {
    const auto ashape = affine_shape(p);
    g.gamma = Tensor(sdt, ashape);
    Stream sg(p.seed, kGamma);
    for (int64_t i = 0; i < g.gamma.numel(); ++i) {
      const double sign = sg.uniform() < 0.5 ? -1.0 : 1.0;
      g.gamma.set(i, sign * (0.5 + 1.5 * sg.uniform()));
    }
    if (part.has_beta) {
      g.beta = Tensor(sdt, ashape);
      Stream sb(p.seed, kBeta);
      for (int64_t i = 0; i < g.beta.numel(); ++i) g.beta.set(i, -1.0 + 2.0 * sb.uniform());
    }
  }
  if (p.op == Op::batch_norm) {
    g.running_mean = Tensor(sdt, {p.channels()});
    g.running_var = Tensor(sdt, {p.channels()});
    const bool trained = p.pass == Pass::forward_training || p.steps > 0;
    Stream sm(p.seed, kRunningMean), sv(p.seed, kRunningVar);
    const double mu = dist_mean(p.data), sd = dist_std(p.data);
    for (int64_t c = 0; c < p.channels(); ++c) {
      if (trained) {  // framework defaults: running_mean = 0, running_var = 1
        g.running_mean.set(c, 0.0);
        g.running_var.set(c, 1.0);
      } else {        // drawn near the data's own statistics
        g.running_mean.set(c, mu + (sd > 0 ? sd : 1.0) * sm.normal());
        g.running_var.set(c, (sd > 0 ? sd * sd : 1.0) * (0.5 + 1.5 * sv.uniform()));
      }
    }
  }
  return g;
}

}  // namespace normcheck
