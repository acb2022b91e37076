// Bug signatures and error envelopes (diagnosis.hpp). Predictions are computed in long double
// from the exact inputs and the reference's per-set statistics.
#include "normcheck/diagnosis.hpp"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <optional>

#include "normcheck/tensor.hpp"

namespace normcheck {
namespace {

using Real = long double;
/// Predicted outputs by tensor name; a key kExtra + NAME holds per-element allowances the bug
/// adds to that tensor's budget (a larger inv_std amplifies the kernel's own rounding).
using Outputs = std::map<std::string, std::vector<double>>;
constexpr const char* kExtra = "extra allowance:";

/// A bug with an exact signature: a name and the outputs it would produce (only the tensors it
/// changes). std::nullopt when it does not apply to the case.
struct Signature {
  const char* cause;
  std::function<std::optional<Outputs>(const CaseEvidence&)> predict;
};

int64_t channels_per_group(const Problem& p) { return p.op == Op::group_norm ? p.channels() / p.groups : 1; }

/// The reduction set of every element, and the gamma/beta accessors with an index map.
struct Context {
  const CaseEvidence& e;
  explicit Context(const CaseEvidence& ev) : e(ev) {}
  int64_t set(int64_t i) const { return e.part.set_of(i); }
  Real gamma(int64_t j) const { return e.in.gamma.empty() ? 1 : e.in.gamma[j]; }
  Real beta(int64_t j) const { return e.in.beta.empty() || !e.part.has_beta ? 0 : e.in.beta[j]; }
};

/// The error envelopes of §2.1–2.2 for one set: E_μ and δr of a stable algorithm at roundoff u,
/// and the one-pass variance envelope.
struct Envelope {
  double e_mean, d_var, delta_r, one_pass_d_var;
};
/// η is half the smallest subnormal of the accumulator (f32 2^-150, f16 2^-25, bf16 2^-134).
/// probabilistic: γ_(h+4) → λ·sqrt(h + 4)·u with compare.hpp's λ (Higham & Mary 2019), the scale
/// of the factor rule (kProbabilisticFailFactor).
Envelope envelope(const CaseEvidence& e, int64_t s, double u, double eta = 0x1p-150, bool probabilistic = false) {
  const SetStats& st = e.ref.batch_stats.back();
  const double h = e.depth;
  const double lambda = std::sqrt(2 * std::log(2 * std::max(h, 1.0) * static_cast<double>(e.part.numel) / 1e-3));
  const double g = probabilistic ? lambda * std::sqrt(h + 4) * u : (h + 4) * u / std::max(1 - (h + 4) * u, 1e-300);
  const double v = st.variance[s], r = st.inv_std[s], mu = st.mean[s];
  const double m = static_cast<double>(e.part.set_size);
  const double e_mean = g * st.mean_abs[s] + 4 * u * st.max_abs[s] + u * std::fabs(mu) + (h + 4) * eta;
  const double d_v = g * v + 3 * g * st.max_abs[s] * std::sqrt(v) + e_mean * e_mean + u * v + (m + 2) * eta;
  const double one_pass = g * (mu * mu + v) + 2 * std::fabs(mu) * e_mean;  // §2.2 textbook one-pass
  return {e_mean, d_v, 0.5 * d_v * r * r + 3.5 * u, one_pass};
}

/// Forward y over batch x with per-set mean and inv_std, gamma/beta indexed by affine(i).
std::vector<double> forward_y(const Context& c, const std::vector<double>& x, const std::vector<Real>& mean,
                              const std::vector<Real>& r, const std::function<int64_t(int64_t)>& affine) {
  std::vector<double> y(x.size());
  for (size_t i = 0; i < x.size(); ++i) {
    const int64_t s = c.set(i), j = affine(static_cast<int64_t>(i));
    y[i] = static_cast<double>(c.gamma(j) * ((x[i] - mean[s]) * r[s]) + c.beta(j));
  }
  return y;
}

/// dx, dgamma, dbeta from x, dy and the statistics the backend used (tolerance-model.md §2.6).
Outputs backward(const Context& c, const std::vector<double>& x, const std::vector<double>& dy,
                 const std::vector<Real>& mean, const std::vector<Real>& r, bool global,
                 const std::function<int64_t(int64_t)>& gamma_index, bool dgamma_missing_mean) {
  const Partition& part = c.e.part;
  std::vector<double> dx(x.size());
  std::vector<Real> dg(static_cast<size_t>(part.num_affine), 0), db(static_cast<size_t>(part.num_affine), 0);
  for (int64_t s = 0; s < part.num_sets; ++s) {
    const auto idx = [&](int64_t k) { return part.member(s, k); };
    Real a = 0, b = 0;
    for (int64_t k = 0; k < part.set_size; ++k) {
      const int64_t i = idx(k);
      const Real g = dy[i] * c.gamma(gamma_index(i)), xh = (x[i] - mean[s]) * r[s];
      a += g;
      b += g * xh;
      const int64_t j = part.affine_of(i);
      dg[j] += dgamma_missing_mean ? dy[i] * x[i] * r[s] : dy[i] * xh;
      db[j] += dy[i];
    }
    a = part.subtract_mean ? a / part.set_size : 0;
    b /= part.set_size;
    for (int64_t k = 0; k < part.set_size; ++k) {
      const int64_t i = idx(k);
      const Real g = dy[i] * c.gamma(gamma_index(i)), xh = (x[i] - mean[s]) * r[s];
      dx[i] = static_cast<double>(global ? r[s] * g : r[s] * (g - a - xh * b));
    }
  }
  Outputs o{{"dx", dx}};
  if (!c.e.in.gamma.empty()) {
    o["dgamma"].assign(dg.begin(), dg.end());
    if (part.has_beta) o["dbeta"].assign(db.begin(), db.end());
  }
  return o;
}

/// The statistics the backend was given or computed for the compared call.
void used_stats(const CaseEvidence& e, std::vector<Real>& mean, std::vector<Real>& r) {
  const size_t n = static_cast<size_t>(e.part.num_sets);
  mean.assign(n, 0);
  r.assign(n, 0);
  const bool running = uses_running_stats(e.problem.pass);
  const SetStats& st = e.ref.batch_stats.back();
  for (size_t s = 0; s < n; ++s) {
    mean[s] = running ? e.ref.used_running_mean[s] : st.mean[s];
    r[s] = running ? 1 / std::sqrt(static_cast<Real>(e.ref.used_running_var[s]) + e.in.eps) : st.inv_std[s];
  }
}

/// Forward training with inv_std replaced by inv_std_of(v): y and inv_std.
std::optional<Outputs> inv_std_signature(const CaseEvidence& e, const std::function<Real(Real v, Real m)>& inv_std_of) {
  if (e.problem.pass != Pass::forward_training) return std::nullopt;
  Context c(e);
  const SetStats& st = e.ref.batch_stats.back();
  const Real m = static_cast<Real>(e.part.set_size);
  std::vector<Real> mean(st.mean.begin(), st.mean.end()), r(mean.size()), spread(mean.size());
  for (size_t s = 0; s < r.size(); ++s) {
    r[s] = inv_std_of(st.variance[s], m);
    // The kernel's own variance error (within D_v) moves the bug's r by this much.
    const Real dv = 2 * envelope(e, static_cast<int64_t>(s), e.u).d_var;
    if (!std::isfinite(st.variance[s])) continue;  // a NaN/Inf set: compared as non-finite values
    spread[s] = std::max(std::fabs(inv_std_of(st.variance[s] + dv, m) - r[s]),
                         std::fabs(inv_std_of(std::max<Real>(st.variance[s] - dv, 0), m) - r[s]));
    // The spread must be bounded and smaller than the prediction itself: where the kernel's own
    // variance error reaches v (weak or subnormal data) and the form has 1/sqrt(v) or 1/(sqrt(v) + eps)
    // in it, any r would "match".
    if (!std::isfinite(static_cast<double>(spread[s])) || !(spread[s] < std::fabs(r[s]))) return std::nullopt;
  }
  Outputs o{{"y", forward_y(c, e.in.batches.back(), mean, r, [&](int64_t i) { return e.part.affine_of(i); })}};
  const std::string stat = e.problem.op == Op::rms_norm ? "inv_rms" : "inv_std";
  o[stat].assign(r.begin(), r.end());
  o[kExtra + stat].assign(spread.begin(), spread.end());
  // The kernel's own mean error (within E_μ) reaches y multiplied by its r, not the exact one,
  // and its r error by |gamma·(x − μ)|.
  auto& extra = o[kExtra + std::string("y")];
  extra.resize(static_cast<size_t>(e.part.numel));
  for (size_t i = 0; i < extra.size(); ++i) {
    const int64_t s = c.set(i);
    const Real ratio = std::max<Real>(1, r[s] / st.inv_std[s]);
    extra[i] = static_cast<double>((ratio - 1) * e.tol.y[i] +
                                   std::fabs(c.gamma(e.part.affine_of(i)) * (e.in.batches.back()[i] - mean[s])) * spread[s]);
  }
  return o;
}

/// Running statistics after the training steps with a changed update; forward_inference also
/// predicts y from them.
std::optional<Outputs> running_signature(const CaseEvidence& e, bool swap_momentum, bool flip_bessel) {
  const Problem& p = e.problem;
  const bool trained = p.pass == Pass::forward_training || (p.pass == Pass::forward_inference && p.steps > 0);
  if (p.op != Op::batch_norm || e.in.running_mean.empty() || !trained) return std::nullopt;
  const size_t steps = p.pass == Pass::forward_training ? e.in.batches.size() : e.in.batches.size() - 1;
  const Real m = static_cast<Real>(e.part.set_size);
  const bool unbiased = flip_bessel ? !e.in.running_var_unbiased : e.in.running_var_unbiased;
  std::vector<Real> rm(e.in.running_mean.begin(), e.in.running_mean.end()),
      rv(e.in.running_var.begin(), e.in.running_var.end());
  for (size_t k = 0; k < steps; ++k) {
    const Real f = swap_momentum ? 1 - e.in.weight_of_step(k) : e.in.weight_of_step(k);
    const SetStats& st = e.ref.batch_stats[k];
    for (size_t c = 0; c < rm.size(); ++c) {
      rm[c] = (1 - f) * rm[c] + f * st.mean[c];
      rv[c] = (1 - f) * rv[c] + f * st.variance[c] * (unbiased ? m / (m - 1) : 1);
    }
  }
  Outputs o;
  o["running_mean"].assign(rm.begin(), rm.end());
  o["running_var"].assign(rv.begin(), rv.end());
  if (p.pass == Pass::forward_inference) {
    Context c(e);
    std::vector<Real> r(rv.size());
    for (size_t s = 0; s < r.size(); ++s) r[s] = 1 / std::sqrt(rv[s] + e.in.eps);
    o["y"] = forward_y(c, e.in.batches.back(), rm, r, [&](int64_t i) { return e.part.affine_of(i); });
  }
  return o;
}

/// The textbook one-pass variance max(Σx²/m − (Σx/m)², 0) of set s of batch x, replayed in the
/// accumulation type A with both sums recursive in increasing logical order (a loop over the set).
template <class A>
Real one_pass_variance(const Partition& part, const std::vector<double>& x, int64_t s) {
  A sum = 0, sq = 0;
  for (int64_t k = 0; k < part.set_size; ++k) {
    const A v = static_cast<A>(x[part.member(s, k)]);
    sum += v;
    sq += v * v;
  }
  const A m = static_cast<A>(part.set_size), mean = sum / m, ms = sq / m;
  return std::max<A>(ms - mean * mean, 0);
}

/// Forward training with the variance computed one-pass, E[x²] − E[x]², in the accumulation
/// dtype (catastrophic cancellation when |mean| ≫ std: the error grows like κ²; pytorch#54293):
/// the replay of a kernel that sums x and x² recursively in logical order. It predicts the
/// variance, inv_std and y of the compared batch, and the running statistics of every step.
/// Kernels that sum in another order round differently: the κ² envelope (step 2) judges those.
std::optional<Outputs> one_pass_signature(const CaseEvidence& e) {
  const Problem& p = e.problem;
  if (p.pass != Pass::forward_training || !e.part.subtract_mean) return std::nullopt;
  const bool f64 = stats_dtype(p.dtype) == DType::f64;
  auto var_of = [&](const std::vector<double>& x, int64_t s) {
    return f64 ? one_pass_variance<double>(e.part, x, s) : one_pass_variance<float>(e.part, x, s);
  };
  Context c(e);
  const SetStats& st = e.ref.batch_stats.back();
  const size_t n = static_cast<size_t>(e.part.num_sets);
  // The replayed variance of every set of every call (training steps, then the compared batch).
  std::vector<std::vector<Real>> vars(e.in.batches.size(), std::vector<Real>(n));
  for (size_t k = 0; k < vars.size(); ++k)
    for (size_t s = 0; s < n; ++s) vars[k][s] = var_of(e.in.batches[k], static_cast<int64_t>(s));
  const std::vector<Real>& v = vars.back();
  std::vector<Real> mean(st.mean.begin(), st.mean.end()), r(n);
  for (size_t s = 0; s < n; ++s) r[s] = 1 / std::sqrt(v[s] + static_cast<Real>(e.in.eps));
  Outputs o{{"y", forward_y(c, e.in.batches.back(), mean, r, [&](int64_t i) { return e.part.affine_of(i); })}};
  o["variance"].assign(v.begin(), v.end());
  o["inv_std"].assign(r.begin(), r.end());
  // The kernel's own mean error (within E_μ) reaches y multiplied by its r, not the exact one.
  auto& extra = o[kExtra + std::string("y")];
  extra.resize(static_cast<size_t>(e.part.numel));
  for (size_t i = 0; i < extra.size(); ++i) {
    const int64_t s = c.set(static_cast<int64_t>(i));
    extra[i] = static_cast<double>((std::max<Real>(1, r[s] / st.inv_std[s]) - 1) * e.tol.y[i]);
  }
  if (p.op == Op::batch_norm && !e.in.running_mean.empty()) {
    const Real m = static_cast<Real>(e.part.set_size);
    std::vector<Real> rm(e.in.running_mean.begin(), e.in.running_mean.end()),
        rv(e.in.running_var.begin(), e.in.running_var.end());
    for (size_t k = 0; k < e.in.batches.size(); ++k) {
      const Real f = e.in.weight_of_step(k);
      for (size_t ch = 0; ch < rm.size(); ++ch) {
        rm[ch] = (1 - f) * rm[ch] + f * e.ref.batch_stats[k].mean[ch];
        rv[ch] = (1 - f) * rv[ch] + f * vars[k][ch] * (e.in.running_var_unbiased && m > 1 ? m / (m - 1) : 1);
      }
    }
    o["running_mean"].assign(rm.begin(), rm.end());
    o["running_var"].assign(rv.begin(), rv.end());
  }
  return o;
}

/// gamma/beta of group_norm indexed by group instead of channel.
std::optional<Outputs> gn_per_group(const CaseEvidence& e) {
  if (e.problem.op != Op::group_norm || e.in.gamma.empty()) return std::nullopt;
  Context c(e);
  const int64_t cpg = channels_per_group(e.problem);
  auto by_group = [&](int64_t i) { return e.part.affine_of(i) / cpg; };
  std::vector<Real> mean, r;
  used_stats(e, mean, r);
  if (!is_backward(e.problem.pass)) return Outputs{{"y", forward_y(c, e.in.batches.back(), mean, r, by_group)}};
  Outputs o = backward(c, e.in.batches.back(), e.in.dy, mean, r, false, by_group, false);
  o.erase("dgamma");
  o.erase("dbeta");
  return o;
}

/// x, y, dy, dx addressed as dense NCHW whatever their strides.
std::optional<Outputs> strides_ignored(const CaseEvidence& e) {
  const Problem& p = e.problem;
  if (p.layout == Layout::nchw || e.in.batches.size() != 1) return std::nullopt;
  const Tensor t(p.dtype, p.dims, p.layout);
  const int64_t size = dtype_size(p.dtype);
  std::vector<int64_t> off(static_cast<size_t>(p.numel()));
  for (int64_t i = 0; i < p.numel(); ++i) off[i] = t.offset_of(i) / size;
  auto physical = [&](const std::vector<double>& v) {  // the buffer as the bug reads it
    std::vector<double> ph(v.size());
    for (size_t i = 0; i < v.size(); ++i) ph[off[i]] = v[i];
    return ph;
  };
  auto logical = [&](const std::vector<double>& v) {  // what the bug wrote, read back properly
    std::vector<double> l(v.size());
    for (size_t i = 0; i < v.size(); ++i) l[i] = v[off[i]];
    return l;
  };
  Context c(e);
  auto affine = [&](int64_t i) { return e.part.affine_of(i); };
  const std::vector<double> x = physical(e.in.batches.back());
  if (!is_backward(p.pass)) {
    if (p.pass != Pass::forward_training) return std::nullopt;
    std::vector<Real> mean, var, r;
    set_moments(e.part, [&](int64_t i) { return x[i]; }, mean, var);
    r.resize(var.size());
    for (size_t s = 0; s < r.size(); ++s) r[s] = 1 / std::sqrt(var[s] + e.in.eps);
    Outputs o{{"y", logical(forward_y(c, x, mean, r, affine))}};
    if (e.part.subtract_mean) o["mean"].assign(mean.begin(), mean.end());
    o[p.op == Op::rms_norm ? "mean_square" : "variance"].assign(var.begin(), var.end());
    o[p.op == Op::rms_norm ? "inv_rms" : "inv_std"].assign(r.begin(), r.end());
    if (p.op == Op::batch_norm && !e.in.running_mean.empty()) {  // one training step on the wrong sets
      const Real f = e.in.weight_of_step(0), m = static_cast<Real>(e.part.set_size);
      auto& rm = o["running_mean"];
      auto& rv = o["running_var"];
      for (size_t k = 0; k < mean.size(); ++k) {
        rm.push_back(static_cast<double>((1 - f) * e.in.running_mean[k] + f * mean[k]));
        rv.push_back(static_cast<double>((1 - f) * e.in.running_var[k] +
                                         f * var[k] * (e.in.running_var_unbiased ? m / (m - 1) : 1)));
      }
    }
    return o;
  }
  std::vector<Real> mean, r;
  used_stats(e, mean, r);
  Outputs o = backward(c, x, physical(e.in.dy), mean, r, p.pass == Pass::backward_inference, affine, false);
  o["dx"] = logical(o["dx"]);
  return o;
}

/// GroupNorm backward with the dx reductions taken per channel over N·spatial (dbeta_c and
/// dgamma_c) instead of per (n, group): dx = gamma_c·r·(dy − (dbeta_c + x̂·dgamma_c)/m), m = (C/G)·S.
std::optional<Outputs> gn_backward_per_channel(const CaseEvidence& e) {
  if (e.problem.op != Op::group_norm || e.problem.pass != Pass::backward_training) return std::nullopt;
  Context c(e);
  std::vector<Real> mean, r;
  used_stats(e, mean, r);
  const auto& x = e.in.batches.back();
  const auto& dy = e.in.dy;
  std::vector<Real> dg(static_cast<size_t>(e.part.num_affine), 0), db(dg.size(), 0);
  for (size_t i = 0; i < x.size(); ++i) {
    const int64_t s = c.set(i), j = e.part.affine_of(i);
    dg[j] += dy[i] * (x[i] - mean[s]) * r[s];
    db[j] += dy[i];
  }
  const Real m = static_cast<Real>(e.part.set_size);
  std::vector<double> dx(x.size());
  for (size_t i = 0; i < x.size(); ++i) {
    const int64_t s = c.set(i), j = e.part.affine_of(i);
    const Real xh = (x[i] - mean[s]) * r[s];
    dx[i] = static_cast<double>(c.gamma(j) * r[s] * (dy[i] - (db[j] + xh * dg[j]) / m));
  }
  return Outputs{{"dx", dx}};
}

const std::vector<Signature>& signatures() {
  static const std::vector<Signature> all = {
      {"unbiased variance used in the normalization (v·m/(m−1) instead of the biased v)",
       [](const CaseEvidence& e) {
         return inv_std_signature(e, [&](Real v, Real m) {
           return 1 / std::sqrt((m > 1 ? v * m / (m - 1) : v) + static_cast<Real>(e.in.eps));
         });
       }},
      {"eps added outside the square root: 1/(sqrt(v) + eps)",
       [](const CaseEvidence& e) {
         return inv_std_signature(e, [&](Real v, Real) { return 1 / (std::sqrt(v) + static_cast<Real>(e.in.eps)); });
       }},
      {"eps omitted: 1/sqrt(v)",
       [](const CaseEvidence& e) {
         return e.in.eps > 0 ? inv_std_signature(e, [](Real v, Real) { return 1 / std::sqrt(v); }) : std::nullopt;
       }},
      {"momentum applied to the wrong term: running ← f·running + (1−f)·batch (PyTorch and Keras momentum confused)",
       [](const CaseEvidence& e) { return running_signature(e, true, false); }},
      {"wrong Bessel correction in running_var (biased where the convention is unbiased, or the reverse)",
       [](const CaseEvidence& e) { return running_signature(e, false, true); }},
      {"dgamma misses the −mean term: Σ dy·x·inv_std instead of Σ dy·x̂",
       [](const CaseEvidence& e) -> std::optional<Outputs> {
         if (!is_backward(e.problem.pass) || e.in.gamma.empty()) return std::nullopt;
         Context c(e);
         std::vector<Real> mean, r;
         used_stats(e, mean, r);
         Outputs o = backward(c, e.in.batches.back(), e.in.dy, mean, r, e.problem.pass == Pass::backward_inference,
                              [&](int64_t i) { return e.part.affine_of(i); }, true);
         return Outputs{{"dgamma", o["dgamma"]}};
       }},
      {"GroupNorm gamma/beta applied per group instead of per channel (ONNX GroupNormalization-18 semantics)",
       gn_per_group},
      {"strides ignored: the NHWC tensor was read and written as dense NCHW (channel-stride bug)", strides_ignored},
      {"GroupNorm backward dx reduces per channel over the whole batch instead of per (n, group) "
       "(the signature of oneDNN#3543)",
       gn_backward_per_channel},
      {"one-pass variance E[x²] − E[x]² (replayed in the accumulation dtype: cancellation when |mean| ≫ std)",
       one_pass_signature},
  };
  return all;
}

/// Largest |got − predicted| / allowance over a tensor; NaN/Inf must agree in kind. The
/// allowance is the tensor's budget, plus the bug's extra allowance where it has one, plus the
/// rounding the buggy kernel does at the scale of its own result: 2·(h + 4)·u·|predicted|.
double distance(const std::vector<double>& got, const std::vector<double>& pred, const std::vector<double>& tol,
                const std::vector<double>* extra, double rel) {
  double worst = 0;
  for (size_t i = 0; i < got.size() && i < pred.size() && i < tol.size(); ++i) {
    if (!std::isfinite(got[i]) || !std::isfinite(pred[i])) {
      if (!(std::isnan(got[i]) && std::isnan(pred[i])) && got[i] != pred[i]) return HUGE_VAL;
      continue;
    }
    const double allowed = tol[i] + (extra && i < extra->size() ? (*extra)[i] : 0.0) + rel * std::fabs(pred[i]);
    const double d = std::fabs(got[i] - pred[i]);
    worst = std::max(worst, allowed > 0 ? d / allowed : (d > 0 ? HUGE_VAL : 0));
  }
  return worst;
}

/// A signature matches when every compared tensor it changes is within 2× budget of its
/// prediction, at least one of those failed, and every tensor it leaves alone passed.
/// The reference value of a compared tensor (rms_norm's names included); nullptr when unknown.
const std::vector<double>* reference_of(const ReferenceResult& r, std::string_view name) {
  if (name == "y") return &r.y;
  if (name == "mean") return &r.mean;
  if (name == "variance" || name == "mean_square") return &r.variance;
  if (name == "inv_std" || name == "inv_rms") return &r.inv_std;
  if (name == "running_mean") return &r.running_mean;
  if (name == "running_var") return &r.running_var;
  if (name == "dx") return &r.dx;
  if (name == "dgamma") return &r.dgamma;
  if (name == "dbeta") return &r.dbeta;
  return nullptr;
}

/// The tensor y checked against the backend's own saved statistics (compare.hpp): derived
/// evidence, not an output a signature predicts.
constexpr std::string_view kVsSaved = "y_vs_saved_stats";

/// The bug's predicted change of a tensor exceeds its budget somewhere: the worst-case one, or
/// kProbabilisticFailFactor × the probabilistic one (the two ways a tensor FAILs).
bool resolvable(const CaseEvidence& e, const std::string& name, const std::vector<double>& ref,
                const std::vector<double>& pred, const std::vector<double>& tol) {
  if (distance(ref, pred, tol, nullptr, 0) > 1) return true;
  const auto* prob = e.tol_prob ? e.tol_prob->of(name) : nullptr;
  if (!prob || prob->size() != tol.size()) return false;
  std::vector<double> scaled(*prob);
  for (double& v : scaled) v *= kProbabilisticFailFactor;
  return distance(ref, pred, scaled, nullptr, 0) > 1;
}

std::optional<double> match(const CaseEvidence& e, const Outputs& pred) {
  double worst = 0;
  bool explains_a_failure = false;
  for (const auto& t : e.tensors) {
    if (t.name == kVsSaved) {
      // y inconsistent with the backend's own statistics (weak cases only): a signature's y is
      // matched against the weak y budget, too wide to confirm it, so no signature explains it.
      if (!t.pass) return std::nullopt;
      continue;
    }
    auto it = pred.find(t.name);
    if (it == pred.end()) {  // (scale entries are never tensor names)
      if (!t.pass) return std::nullopt;
      continue;
    }
    const auto* tol = e.tol.of(t.name);
    const auto got = e.got.find(t.name);
    if (!tol || got == e.got.end()) return std::nullopt;
    const auto scale = pred.find(kExtra + t.name);
    const double rel = 2 * (e.depth + 4) * e.u + unit_roundoff(t.dtype);
    const double d = distance(got->second, it->second, *tol, scale == pred.end() ? nullptr : &scale->second, rel);
    if (d > 2) return std::nullopt;
    worst = std::max(worst, d);
    if (!t.pass) {
      // The bug explains a failure only where its predicted change is resolvable: beyond the
      // tensor's budget somewhere (otherwise the allowance, not the bug, is what matched). Other
      // failing tensors may fail by the rounding the bug amplifies (its extra allowance).
      const auto* ref = reference_of(e.ref, t.name);
      explains_a_failure = explains_a_failure || (ref && resolvable(e, t.name, *ref, it->second, *tol));
    }
  }
  if (!explains_a_failure) return std::nullopt;
  return worst;
}

/// Per-set least-squares fit of the forward y error: mean error and relative inv_std error.
struct SetFit {
  double mean_error = 0;  ///< δμ, absolute
  double inv_std_rel = 0; ///< δr
};

std::vector<SetFit> fit_forward(const CaseEvidence& e) {
  std::vector<SetFit> fits;
  const auto got = e.got.find("y");
  if (got == e.got.end() || e.ref.y.empty() || e.problem.pass != Pass::forward_training) return fits;
  Context c(e);
  const SetStats& st = e.ref.batch_stats.back();
  for (int64_t s = 0; s < e.part.num_sets; ++s) {
    // d_i ≈ α·γ_i + δr·γ_i·x̂_i  →  normal equations of the 2×2 least-squares problem.
    Real saa = 0, sab = 0, sbb = 0, sad = 0, sbd = 0;
    const auto idx = [&](int64_t k) { return e.part.member(s, k); };
    for (int64_t k = 0; k < e.part.set_size; ++k) {
      const int64_t i = idx(k);
      const Real g = c.gamma(e.part.affine_of(i));
      const Real xh = (e.in.batches.back()[i] - st.mean[s]) * st.inv_std[s];
      const Real d = got->second[i] - e.ref.y[i];
      if (!std::isfinite(static_cast<double>(d))) return {};
      saa += g * g, sab += g * g * xh, sbb += g * g * xh * xh, sad += g * d, sbd += g * xh * d;
    }
    const Real det = saa * sbb - sab * sab;
    SetFit f;
    if (std::fabs(det) > 1e-300L) {
      const Real alpha = (sad * sbb - sbd * sab) / det, dr = (saa * sbd - sab * sad) / det;
      f.mean_error = static_cast<double>(-alpha / st.inv_std[s]);
      f.inv_std_rel = static_cast<double>(dr);
    } else if (saa > 0) {  // x̂ ≡ 0 (constant set): only the mean term
      f.mean_error = static_cast<double>(-(sad / saa) / st.inv_std[s]);
    }
    fits.push_back(f);
  }
  return fits;
}

std::string describe(const std::vector<SetFit>& fits, const CaseEvidence& e) {
  double worst_mu = 0, worst_dr = 0;
  for (size_t s = 0; s < fits.size(); ++s) {
    const Envelope env = envelope(e, static_cast<int64_t>(s), e.u);
    worst_mu = std::max(worst_mu, std::fabs(fits[s].mean_error) / std::max(env.e_mean, 1e-300));
    worst_dr = std::max(worst_dr, std::fabs(fits[s].inv_std_rel) / std::max(env.delta_r, 1e-300));
  }
  return fmt::format("per-set fit over {} sets: mean error up to {:.3g}× its budget E_μ, inv_std error up to "
                     "{:.3g}× its budget δr",
                     fits.size(), worst_mu, worst_dr);
}

/// 16-bit accumulation is a candidate only for 16-bit data (a declared 16-bit accumulator is
/// already in the budget): for f32 data the factor u16/u is 2^13, for f64 2^42, so nearly any
/// error would fit.
bool sixteen_bit_data(const Problem& p) { return p.dtype == DType::f16 || p.dtype == DType::bf16; }

/// Non-finite outputs where the reference is finite get their own cause, with the element: no
/// signature or envelope is evidence for them.
/// Reduction outputs: the statistics and the gamma/beta gradients (sums of their own).
bool reduction_output(std::string_view n) {
  return n == "mean" || n == "variance" || n == "inv_std" || n == "mean_square" || n == "inv_rms" ||
         n == "running_mean" || n == "running_var" || n == "dgamma" || n == "dbeta";
}

/// The largest exact set sum of |x| or of x² (an f16 accumulator's range is 65504).
double largest_set_sum(const CaseEvidence& e) {
  double sum = 0;
  const double m = static_cast<double>(e.part.set_size);
  for (const auto& st : e.ref.batch_stats)
    for (size_t k = 0; k < st.mean_abs.size(); ++k)
      sum = std::max({sum, st.mean_abs[k] * m, m * (st.variance[k] + st.mean[k] * st.mean[k])});
  return sum;
}

std::optional<std::string> nonfinite_cause(const CaseEvidence& e) {
  // A reduction output (kept in f32) non-finite while an exact set sum exceeds the f16 range: an
  // f16 accumulator overflowed.
  if (e.problem.dtype == DType::f16)
    for (const auto& t : e.tensors)
      if (t.nonfinite_mismatch > 0 && reduction_output(t.name) && largest_set_sum(e) > 65504)
        return fmt::format("sums accumulated in 16 bits suspected: an f16 accumulator overflows (an exact set sum of "
                           "|x| or x², {:.3g}, exceeds the f16 range 65504, and {}[{}] = {} where the reference is "
                           "{:.6g})",
                           largest_set_sum(e), t.name, fmt::join(t.worst.coords, ", "), t.worst.got, t.worst.expected);
  for (const auto& t : e.tensors) {
    if (t.nonfinite_mismatch == 0 || t.worst.index < 0) continue;
    const bool data = t.name == "y" || t.name == "dx" || t.name == kVsSaved;
    const bool per_set = t.name == "mean" || t.name == "variance" || t.name == "inv_std" || t.name == "mean_square" ||
                         t.name == "inv_rms" || t.name == "running_mean" || t.name == "running_var";
    const int64_t s = data ? e.part.set_of(t.worst.index) : per_set ? t.worst.index : -1;
    const DType cdt = stats_dtype(e.problem.dtype);
    const double big = cdt == DType::f64 ? std::numeric_limits<double>::max() : std::numeric_limits<float>::max();
    const double tiny = cdt == DType::f64 ? std::numeric_limits<double>::min() : std::numeric_limits<float>::min();
    std::string why = std::isinf(t.worst.got) ? "overflow" : "0/0 or Inf − Inf after an overflow or underflow";
    if (s >= 0 && s < e.part.num_sets && !e.ref.batch_stats.empty()) {
      const SetStats& st = e.ref.batch_stats.back();
      const double m = static_cast<double>(e.part.set_size);
      const double sum_sq = m * (st.variance[s] + st.mean[s] * st.mean[s]);
      const double denom = st.variance[s] + e.in.eps;
      if (sum_sq > big)
        why += fmt::format(": Σx² of its set is {:.3g}, beyond the {} range", sum_sq, to_string(cdt));
      else if (denom < tiny)
        why += fmt::format(": v + eps = {:.3g} of its set is below the smallest normal {} ({:.3g}), so x² or the "
                           "variance underflows and 1/sqrt(v + eps) overflows",
                           denom, to_string(cdt), tiny);
      else if (st.max_abs[s] > std::sqrt(big))
        why += fmt::format(": max |x| of its set is {:.3g}, so x² overflows {}", st.max_abs[s], to_string(cdt));
    }
    return fmt::format("non-finite output ({}): {}[{}] = {} where the reference is {:.6g}; {} non-finite value(s) in {}",
                       why, t.name, fmt::join(t.worst.coords, ", "), t.worst.got, t.worst.expected,
                       t.nonfinite_mismatch, t.name);
  }
  return std::nullopt;
}

/// Consistency across tensors: when the backend saved its statistics, they were compared and all
/// passed, and y failed (or y disagrees with those statistics), the reductions are right and the
/// error is in the element-wise path, which no accumulation or variance-algorithm bug explains.
std::optional<std::string> elementwise_cause(const CaseEvidence& e, const std::vector<SetFit>& fits) {
  bool stats_seen = false, stats_ok = true, y_failed = false, vs_saved_failed = false;
  for (const auto& t : e.tensors) {
    const bool stat = t.name == "mean" || t.name == "variance" || t.name == "inv_std" || t.name == "mean_square" ||
                      t.name == "inv_rms";
    if (stat) stats_seen = true, stats_ok = stats_ok && t.pass;
    if (t.name == "y") y_failed = !t.pass;
    if (t.name == kVsSaved) vs_saved_failed = !t.pass;
  }
  if (!(stats_seen && stats_ok && y_failed) && !vs_saved_failed) return std::nullopt;
  return fmt::format("unexplained: {} ({})",
                     vs_saved_failed ? "y disagrees with the backend's own saved statistics"
                                     : "the saved statistics are within budget and only y is wrong",
                     fits.empty() ? "no per-set fit" : describe(fits, e));
}

/// The common relative error c of the per-set variances when at least 2 sets agree on it: all of
/// one sign, within 10% of their mean, and |c| < ½; std::nullopt otherwise.
std::optional<double> common_factor(const std::vector<double>& rel) {
  if (rel.size() < 2) return std::nullopt;
  const auto [lo, hi] = std::minmax_element(rel.begin(), rel.end());
  double mean = 0;
  for (double r : rel) mean += r / static_cast<double>(rel.size());
  // |c| ≥ ½ (a variance lost entirely: underflow or a stagnating accumulator) is not a formula's factor.
  if (!(*lo * *hi > 0) || !(*hi - *lo <= 0.1 * std::fabs(mean)) || !(std::fabs(mean) < 0.5)) return std::nullopt;
  return mean;
}

/// True when summing every set's x in increasing logical order in the 16-bit data type (one
/// rounding per addition) loses nothing: then a 16-bit accumulator leaves the mean exact too (small
/// sets, values on a coarse common grid such as f16 subnormals), and an exact mean is no evidence
/// against it.
bool sixteen_bit_set_sums_exact(const CaseEvidence& e) {
  if (e.in.batches.empty()) return false;
  const std::vector<double>& x = e.in.batches.back();
  bool exact = true;
  for (int64_t s = 0; s < e.part.num_sets && exact; ++s) {
    double acc = 0;
    for_each_in_set(e.part, s, [&](int64_t i, int64_t) {
      const double sum = acc + x[i], bv = sum - acc;  // TwoSum (Knuth): sum + err = acc + x[i] exactly
      const double err = (acc - (sum - bv)) + (x[i] - bv);
      exact = exact && err == 0 && round_to(e.problem.dtype, sum) == sum;
      acc = sum;
    });
  }
  return exact;
}

/// Step 2: per-set mean and variance errors against the stable, one-pass and 16-bit envelopes.
/// The variance error a kernel's inverse standard deviation r_got implies, against the exact v
/// (r its exact 1/sqrt(v + eps)): v_got − v with v_got = 1/r_got² − eps, exact inversion rather
/// than the first-order −2·(v + eps)·δr, which is wrong by orders of magnitude when the variance
/// cancelled to 0 and r_got = 1/sqrt(eps). The first-order form where r_got is not positive.
double implied_variance(double r_got, double r, double v, double eps) {
  if (r_got > 0 && std::isfinite(r_got)) return (1 / (r_got * r_got) - eps) - v;
  return -2 * (v + eps) * (r_got / r - 1);
}

std::optional<std::string> envelope_cause(const CaseEvidence& e, const std::vector<SetFit>& fits) {
  const Problem& p = e.problem;
  if (p.pass != Pass::forward_training || e.ref.batch_stats.empty()) return std::nullopt;
  const SetStats& st = e.ref.batch_stats.back();
  auto got = [&](const char* name) -> const std::vector<double>* {
    const auto it = e.got.find(name);
    return it == e.got.end() ? nullptr : &it->second;
  };
  const auto* g_mean = got("mean");
  const auto* g_var = got(p.op == Op::rms_norm ? "mean_square" : "variance");
  const auto* g_r = got(p.op == Op::rms_norm ? "inv_rms" : "inv_std");
  const double u16 = p.dtype == DType::bf16 ? 0x1p-8 : 0x1p-11, eta16 = p.dtype == DType::bf16 ? 0x1p-134 : 0x1p-25;
  bool beyond = false, one_pass = true, acc16 = sixteen_bit_data(p), any_evidence = false, any_mean_bad = false;
  double worst_mean = 0, worst_var = 0;
  std::vector<double> var_rel;  // signed variance error / v per set, for the common-factor test
  for (int64_t s = 0; s < e.part.num_sets; ++s) {
    std::optional<double> mean_err, var_err, var_signed;
    const double v = st.variance[s];
    if (!std::isfinite(v) || !std::isfinite(st.mean[s])) continue;  // a NaN/Inf input set: compared as such
    if (g_mean) mean_err = std::fabs((*g_mean)[s] - st.mean[s]);
    else if (!fits.empty()) mean_err = std::fabs(fits[s].mean_error);
    if (g_var) var_signed = (*g_var)[s] - v;
    else if (g_r) var_signed = implied_variance((*g_r)[s], st.inv_std[s], v, e.in.eps);
    else if (!fits.empty()) var_signed = implied_variance(st.inv_std[s] * (1 + fits[s].inv_std_rel), st.inv_std[s], v, e.in.eps);
    if (var_signed) var_err = std::fabs(*var_signed);
    if (var_signed && v > 0) var_rel.push_back(*var_signed / v);
    if (!mean_err && !var_err) continue;
    if ((mean_err && !std::isfinite(*mean_err)) || (var_err && !std::isfinite(*var_err))) {
      one_pass = acc16 = false;
      beyond = true;
      continue;
    }
    any_evidence = true;
    const Envelope stable = envelope(e, s, e.u), low = envelope(e, s, u16, eta16);
    const Envelope prob = envelope(e, s, e.u, 0x1p-150, true);
    // Beyond a stable algorithm: 4× the worst case, or the factor rule's F× the probabilistic one.
    const double mean_limit = std::min(4 * stable.e_mean, kProbabilisticFailFactor * prob.e_mean);
    const double var_limit = std::min(4 * stable.d_var, kProbabilisticFailFactor * prob.d_var);
    const bool mean_bad = p.op != Op::rms_norm && mean_err && *mean_err > mean_limit;
    const bool var_bad = var_err && *var_err > var_limit;
    worst_mean = std::max(worst_mean, mean_err ? *mean_err / std::max(stable.e_mean, 1e-300) : 0);
    worst_var = std::max(worst_var, var_err ? *var_err / std::max(stable.d_var, 1e-300) : 0);
    any_mean_bad = any_mean_bad || mean_bad;
    if (!mean_bad && !var_bad) continue;
    beyond = true;
    one_pass = one_pass && !mean_bad && p.op != Op::rms_norm && *var_err <= 2 * stable.one_pass_d_var;
    acc16 = acc16 && (!mean_err || *mean_err <= 2 * low.e_mean) && (!var_err || *var_err <= 2 * low.d_var);
  }
  if (!any_evidence || !beyond) return std::nullopt;
  const std::string evidence = fmt::format(
      "per set, the mean error reaches {:.3g}× and the variance error {:.3g}× the budget of a stable algorithm",
      worst_mean, worst_var);
  // Rounding (one-pass cancellation, a 16-bit accumulator) scatters per set; a wrong formula
  // scales every set's variance by the same factor, with the mean exact (an accumulator that
  // stagnates alike in every set errs in the mean too).
  if (const auto c = worst_mean <= 1 ? common_factor(var_rel) : std::nullopt)
    return fmt::format("unexplained (the variance of every one of {} sets is off by the same factor 1 {} {:.3g}: a "
                       "formula, not rounding; {})",
                       var_rel.size(), *c < 0 ? "−" : "+", std::fabs(*c), evidence);
  if (one_pass)
    return "error grows like κ²: one-pass variance E[x²] − E[x]² suspected (" + evidence +
           ", within the one-pass envelope (h+4)·u·(μ² + v))";
  // A 16-bit accumulator rounds the sum of x as well as the sum of squares: with the mean exact
  // (every set within the stable budget), the fault is not in the accumulation, unless a 16-bit
  // sum of these x is exact anyway.
  if (acc16 && (p.op == Op::rms_norm || any_mean_bad || (!g_mean && fits.empty()) || sixteen_bit_set_sums_exact(e)))
    return fmt::format("sums accumulated in 16 bits suspected ({}, within the budget of a u = 2^{} accumulator)",
                       evidence, p.dtype == DType::bf16 ? -8 : -11);
  if (!fits.empty()) return "unexplained (" + evidence + "; " + describe(fits, e) + ")";
  return std::nullopt;  // step 3 may still find specific evidence
}

/// Backward training: is the dx error of every set the error of its two reductions a = mean(g)
/// and b = mean(g·x̂), i.e. δdx_i ≈ α + β·x̂_i (least squares, ≥ 90% of the squared error)? An
/// accumulation bug changes a and b; a wrong element-wise formula leaves a residual that follows
/// g_i = gamma·dy_i.
bool dx_error_in_reductions(const CaseEvidence& e) {
  const auto got = e.got.find("dx");
  if (e.problem.pass != Pass::backward_training || got == e.got.end()) return false;
  if (e.part.set_size == 1) {  // dx = r·(g − mean(g)) = 0 exactly: any error is g − a, a's rounding
    const double u16 = e.problem.dtype == DType::bf16 ? 0x1p-8 : 0x1p-11;
    bool any = false;
    for (int64_t i = 0; i < e.part.numel; ++i) {
      const int64_t s = e.part.set_of(i);
      const double g = e.in.dy[i] * (e.in.gamma.empty() ? 1.0 : e.in.gamma[e.part.affine_of(i)]);
      const double d = std::fabs(got->second[i] - e.ref.dx[i]);
      if (!(d <= 2 * static_cast<double>(e.ref.batch_stats.back().inv_std[s]) * u16 * std::fabs(g))) return false;
      any = any || d > 0;
    }
    return any;
  }
  // With m ≤ 3 the two-parameter fit explains (almost) any error: no evidence.
  if (e.part.set_size < 4) return false;
  const int ulp_shift = e.problem.dtype == DType::f16 ? 10 : e.problem.dtype == DType::bf16 ? 7 : 23;
  const int min_exp = e.problem.dtype == DType::f16 ? -14 : -126;
  std::vector<Real> mean, r;
  used_stats(e, mean, r);
  const auto& x = e.in.batches.back();
  Real total = 0, residual = 0, rounding = 0;
  for (int64_t s = 0; s < e.part.num_sets; ++s) {
    Real n = 0, sx = 0, sxx = 0, sd = 0, sxd = 0, sdd = 0;
    for (int64_t k = 0; k < e.part.set_size; ++k) {
      const int64_t i = e.part.member(s, k);
      const Real xh = (x[i] - mean[s]) * r[s], d = got->second[i] - e.ref.dx[i];
      if (!std::isfinite(static_cast<double>(d))) return false;
      n += 1, sx += xh, sxx += xh * xh, sd += d, sxd += xh * d, sdd += d * d;
      // the output rounding of dx: variance ulp²/12 per element, allowed 4×
      const double a = std::fabs(e.ref.dx[i]);
      const double ulp = std::ldexp(1.0, std::max(a > 0 ? std::ilogb(a) : min_exp, min_exp) - ulp_shift);
      rounding += ulp * ulp / 3;
    }
    const Real det = n * sxx - sx * sx;
    Real explained = n > 0 ? sd * sd / n : 0;
    if (std::fabs(det) > 1e-300L) {
      const Real beta = (n * sxd - sx * sd) / det, alpha = (sd - beta * sx) / n;
      explained = alpha * sd + beta * sxd;
    }
    total += sdd;
    residual += std::max<Real>(sdd - explained, 0);
  }
  return total > 0 && residual <= 0.1L * total + rounding;
}

/// Step 3, 16-bit data only: every failing tensor, a statistic among them, within what its budget
/// becomes with a 16-bit accumulator's u, or an f16 overflow where an exact set sum of |x| or x²
/// exceeds 65504.
std::optional<std::string> size_cause(const CaseEvidence& e) {
  const Problem& p = e.problem;
  const double u16 = p.dtype == DType::bf16 ? 0x1p-8 : 0x1p-11;
  if (!sixteen_bit_data(p) || !(u16 > e.u)) return std::nullopt;
  const double sum_abs = largest_set_sum(e);
  bool all_within = true, any_failed = false, overflow = false, statistic_failed = false, mean_passed = false;
  for (const auto& t : e.tensors) {
    if ((t.name == "mean" || t.name == "running_mean") && t.pass && e.part.subtract_mean) mean_passed = true;
    if (t.pass || t.name == kVsSaved) continue;
    any_failed = true;
    statistic_failed = statistic_failed || reduction_output(t.name) || (t.name == "dx" && dx_error_in_reductions(e));
    overflow = overflow || (t.nonfinite_mismatch > 0 && p.dtype == DType::f16 && sum_abs > 65504);
    if (!(t.nonfinite_mismatch == 0 && t.worst_ratio <= 2 * u16 / e.u)) all_within = false;
  }
  if (!any_failed) return std::nullopt;
  if (overflow)
    return fmt::format("sums accumulated in 16 bits suspected (an exact set sum of |x| or x², {:.3g}, exceeds the "
                       "f16 range 65504, and the output is non-finite)",
                       sum_abs);
  // The size of the errors alone allows a factor u16/u = 2^13 (f16) or 2^16 (bf16): evidence only
  // where a reduction's own output (a statistic, dgamma or dbeta) is among the failures.
  if (all_within && statistic_failed && !mean_passed)
    return fmt::format("sums accumulated in 16 bits suspected (every failing tensor, a reduction's own output among them, is "
                       "within the budget of a u = 2^{} accumulator)",
                       p.dtype == DType::bf16 ? -8 : -11);
  return std::nullopt;
}

}  // namespace

std::string suspected_cause(const CaseEvidence& e) {
  // 0. Non-finite outputs: their own cause, with the element.
  if (auto c = nonfinite_cause(e)) return *c;
  // 1. Exact signatures.
  for (const Signature& sig : signatures()) {
    const auto pred = sig.predict(e);
    if (!pred) continue;
    if (const auto d = match(e, *pred))
      return fmt::format("{} (the outputs match this bug's prediction to {:.2g}× the budget)", sig.cause, *d);
  }
  const std::vector<SetFit> fits = fit_forward(e);
  // 2. Consistency across tensors, then the error envelopes per set.
  if (auto c = elementwise_cause(e, fits)) return *c;
  if (auto c = envelope_cause(e, fits)) return *c;
  // 3. 16-bit accumulation from the size of the errors (16-bit data only).
  if (auto c = size_cause(e)) return *c;
  if (!fits.empty()) return "unexplained (" + describe(fits, e) + ")";
  return "unexplained (no known signature matches the failing tensors)";
}

}  // namespace normcheck
