// The high-precision reference. Formulas and sources: include/normcheck/reference.hpp.
#include "normcheck/reference.hpp"

#include <boost/multiprecision/cpp_bin_float.hpp>

#include <cmath>
#include <limits>

namespace normcheck {
namespace {

namespace mp = boost::multiprecision;
template <unsigned Bits>
using Float = mp::number<mp::cpp_bin_float<Bits, mp::digit_base_2>, mp::et_off>;

template <class R>
double to_double(const R& v) {
  return v.template convert_to<double>();  // rounds to nearest
}

template <class R>
std::vector<double> to_doubles(const std::vector<R>& v) {
  std::vector<double> out(v.size());
  for (size_t i = 0; i < v.size(); ++i) out[i] = to_double(v[i]);
  return out;
}

/// Exact-as-possible per-set statistics of one batch.
template <class R>
struct BatchStats {
  std::vector<R> mean, var, inv_std;
};

template <class R>
BatchStats<R> batch_statistics(const Partition& part, const std::vector<double>& x, const R& eps,
                               SetStats& out) {
  const int64_t m = part.set_size;
  BatchStats<R> st;
  st.mean.resize(part.num_sets);
  st.var.resize(part.num_sets);
  st.inv_std.resize(part.num_sets);
  out.mean.resize(part.num_sets);
  out.variance.resize(part.num_sets);
  out.inv_std.resize(part.num_sets);
  out.mean_abs.resize(part.num_sets);
  out.max_abs.resize(part.num_sets);
  for (int64_t s = 0; s < part.num_sets; ++s) {
    const auto idx = [&](int64_t k) { return part.member(s, k); };
    R sum = 0, sum_abs = 0;
    double max_abs = 0;
    for (int64_t k = 0; k < m; ++k) {
      const double v = x[idx(k)];
      sum += R(v);
      sum_abs += R(std::fabs(v));
      max_abs = std::isnan(v) || std::isnan(max_abs) ? std::numeric_limits<double>::quiet_NaN()
                                                     : std::fmax(max_abs, std::fabs(v));
    }
    const R mu = part.subtract_mean ? R(sum / m) : R(0);
    R ss = 0;
    for (int64_t k = 0; k < m; ++k) {
      const R d = R(x[idx(k)]) - mu;
      ss += d * d;
    }
    st.mean[s] = mu;
    st.var[s] = ss / m;
    st.inv_std[s] = R(1) / sqrt(st.var[s] + eps);
    out.mean[s] = to_double(mu);
    out.variance[s] = to_double(st.var[s]);
    out.inv_std[s] = to_double(st.inv_std[s]);
    out.mean_abs[s] = to_double(R(sum_abs / m));
    out.max_abs[s] = max_abs;
  }
  return st;
}

template <class R>
std::vector<R> from_doubles(const std::vector<double>& v) {
  return std::vector<R>(v.begin(), v.end());
}

template <class R>
ReferenceResult run_impl(const Problem& p, const Partition& part, const ReferenceInputs& in) {
  ReferenceResult res;
  const R eps(in.eps);
  const int64_t m = part.set_size;
  const bool affine = !in.gamma.empty();
  auto gamma_at = [&](int64_t i) { return affine ? R(in.gamma[part.affine_of(i)]) : R(1); };
  auto beta_at = [&](int64_t i) {
    return affine && part.has_beta ? R(in.beta[part.affine_of(i)]) : R(0);
  };

  // Running statistics, carried at full precision across training steps.
  std::vector<R> rm = from_doubles<R>(in.running_mean), rv = from_doubles<R>(in.running_var);
  const size_t calls = in.batches.size();
  const bool training_steps = p.op == Op::batch_norm &&
                              (p.pass == Pass::forward_training || p.pass == Pass::forward_inference);
  const size_t n_train = p.pass == Pass::forward_training ? calls
                         : p.pass == Pass::forward_inference ? calls - 1 : 0;

  res.batch_stats.resize(calls);
  std::vector<BatchStats<R>> stats(calls);
  for (size_t k = 0; k < calls; ++k)
    stats[k] = batch_statistics<R>(part, in.batches[k], eps, res.batch_stats[k]);

  if (training_steps) {
    for (size_t k = 0; k < n_train; ++k) {
      const R f(in.weight_of_step(k));
      for (int64_t c = 0; c < part.num_sets; ++c) {
        R vb = stats[k].var[c];
        if (in.running_var_unbiased) {
          if (m > 1) {
            vb = vb * m / (m - 1);
          } else {
            vb = R(std::numeric_limits<double>::quiet_NaN());
            res.running_var_undefined = true;
          }
        }
        rm[c] = (R(1) - f) * rm[c] + f * stats[k].mean[c];
        rv[c] = (R(1) - f) * rv[c] + f * vb;
      }
    }
    res.running_mean = to_doubles(rm);
    res.running_var = to_doubles(rv);
  }

  const std::vector<double>& x = in.batches.back();
  const BatchStats<R>& bs = stats.back();
  const int64_t n = part.numel;

  // Statistics used to normalize the compared call: batch or running.
  std::vector<R> use_mean = bs.mean, use_inv_std = bs.inv_std;
  if (uses_running_stats(p.pass)) {
    for (int64_t c = 0; c < part.num_sets; ++c) {
      use_mean[c] = rm[c];
      use_inv_std[c] = R(1) / sqrt(rv[c] + eps);
    }
    res.used_running_mean = to_doubles(rm);
    res.used_running_var = to_doubles(rv);
  }
  std::vector<R> xhat(n);
  for (int64_t i = 0; i < n; ++i) {
    const int64_t s = part.set_of(i);
    xhat[i] = (R(x[i]) - use_mean[s]) * use_inv_std[s];
  }

  if (!is_backward(p.pass)) {
    res.y.resize(n);
    for (int64_t i = 0; i < n; ++i) res.y[i] = to_double(R(gamma_at(i) * xhat[i] + beta_at(i)));
    if (p.pass == Pass::forward_training) {
      if (part.subtract_mean) res.mean = to_doubles(bs.mean);
      res.variance = to_doubles(bs.var);
      res.inv_std = to_doubles(bs.inv_std);
    }
    return res;
  }

  // Backward.
  const std::vector<double>& dy = in.dy;
  std::vector<R> dgamma(part.num_affine, R(0)), dbeta(part.num_affine, R(0));
  for (int64_t i = 0; i < n; ++i) {
    const int64_t a = part.affine_of(i);
    const R t = R(dy[i]) * xhat[i];
    dgamma[a] += t;
    dbeta[a] += R(dy[i]);
  }
  res.dx.resize(n);
  if (p.pass == Pass::backward_inference) {
    for (int64_t i = 0; i < n; ++i)
      res.dx[i] = to_double(R(gamma_at(i) * use_inv_std[part.set_of(i)] * R(dy[i])));
  } else {
    for (int64_t s = 0; s < part.num_sets; ++s) {
      const auto idx = [&](int64_t k) { return part.member(s, k); };
      R sg = 0, sgx = 0;
      for (int64_t k = 0; k < m; ++k) {
        const int64_t i = idx(k);
        const R g = R(dy[i]) * gamma_at(i);
        sg += g;
        sgx += g * xhat[i];
      }
      const R a = part.subtract_mean ? R(sg / m) : R(0);
      const R b = sgx / m;
      for (int64_t k = 0; k < m; ++k) {
        const int64_t i = idx(k);
        const R g = R(dy[i]) * gamma_at(i);
        res.dx[i] = to_double(R(use_inv_std[s] * (g - a - xhat[i] * b)));
      }
    }
  }
  if (affine) {
    res.dgamma = to_doubles(dgamma);
    if (part.has_beta) res.dbeta = to_doubles(dbeta);
  }
  return res;
}

}  // namespace

ReferenceResult reference_run(const Problem& p, const Partition& part, const ReferenceInputs& in,
                              int precision_bits) {
  switch (precision_bits) {
    case 128: return run_impl<Float<128>>(p, part, in);
    case 256: return run_impl<Float<256>>(p, part, in);
    default:
      throw Error("reference precision must be 128 or 256 bits, got " + std::to_string(precision_bits));
  }
}

}  // namespace normcheck
