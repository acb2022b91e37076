// Bug signatures and error envelopes (diagnosis.hpp). Predictions are computed in long double
// from the exact inputs and the reference's per-set statistics.
#include "normcheck/diagnosis.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <functional>
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
Envelope envelope(const CaseEvidence& e, int64_t s, double u, double eta = 0x1p-150) {
  const SetStats& st = e.ref.batch_stats.back();
  const double h = e.depth, g = (h + 4) * u / std::max(1 - (h + 4) * u, 1e-300);
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
    spread[s] = std::max(std::fabs(inv_std_of(st.variance[s] + dv, m) - r[s]),
                         std::fabs(inv_std_of(std::max<Real>(st.variance[s] - dv, 0), m) - r[s]));
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
std::optional<double> match(const CaseEvidence& e, const Outputs& pred) {
  double worst = 0;
  bool explains_a_failure = false;
  for (const auto& t : e.tensors) {
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
    explains_a_failure = explains_a_failure || !t.pass;
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

}  // namespace

std::string suspected_cause(const CaseEvidence& e) {
  // 1. Exact signatures.
  for (const Signature& sig : signatures()) {
    const auto pred = sig.predict(e);
    if (!pred) continue;
    if (const auto d = match(e, *pred))
      return fmt::format("{} (the outputs match this bug's prediction to {:.2g}× the budget)", sig.cause, *d);
  }
  // 2. Error envelopes. Per set, the mean error and the variance error, each from the best
  // evidence compared: the saved statistic itself, else the per-set fit of y (δv ≈ 2(v+ε)·δr).
  const Problem& p = e.problem;
  if (p.pass == Pass::forward_training && !e.ref.batch_stats.empty()) {
    const SetStats& st = e.ref.batch_stats.back();
    const std::vector<SetFit> fits = fit_forward(e);
    auto got = [&](const char* name) -> const std::vector<double>* {
      const auto it = e.got.find(name);
      return it == e.got.end() ? nullptr : &it->second;
    };
    const auto* g_mean = got("mean");
    const auto* g_var = got(p.op == Op::rms_norm ? "mean_square" : "variance");
    const auto* g_r = got(p.op == Op::rms_norm ? "inv_rms" : "inv_std");
    const double u16 = p.dtype == DType::bf16 ? 0x1p-8 : 0x1p-11, eta16 = p.dtype == DType::bf16 ? 0x1p-134 : 0x1p-25;
    bool beyond = false, one_pass = true, acc16 = true, any_evidence = false;
    double worst_mean = 0, worst_var = 0;
    for (int64_t s = 0; s < e.part.num_sets; ++s) {
      std::optional<double> mean_err, var_err;
      const double v = st.variance[s];
      if (g_mean) mean_err = std::fabs((*g_mean)[s] - st.mean[s]);
      else if (!fits.empty()) mean_err = std::fabs(fits[s].mean_error);
      if (g_var) var_err = std::fabs((*g_var)[s] - v);
      else if (g_r) var_err = 2 * (v + e.in.eps) * std::fabs((*g_r)[s] / st.inv_std[s] - 1);
      else if (!fits.empty()) var_err = 2 * (v + e.in.eps) * std::fabs(fits[s].inv_std_rel);
      if (!mean_err && !var_err) continue;
      if ((mean_err && !std::isfinite(*mean_err)) || (var_err && !std::isfinite(*var_err))) {
        one_pass = acc16 = false;  // non-finite statistics: reported below
        beyond = true;
        continue;
      }
      any_evidence = true;
      const Envelope stable = envelope(e, s, e.u), low = envelope(e, s, u16, eta16);
      const bool mean_bad = p.op != Op::rms_norm && mean_err && *mean_err > 4 * stable.e_mean;
      const bool var_bad = var_err && *var_err > 4 * stable.d_var;
      worst_mean = std::max(worst_mean, mean_err ? *mean_err / std::max(stable.e_mean, 1e-300) : 0);
      worst_var = std::max(worst_var, var_err ? *var_err / std::max(stable.d_var, 1e-300) : 0);
      if (!mean_bad && !var_bad) continue;
      beyond = true;
      one_pass = one_pass && !mean_bad && p.op != Op::rms_norm && *var_err <= 2 * stable.one_pass_d_var;
      acc16 = acc16 && (!mean_err || *mean_err <= 2 * low.e_mean) && (!var_err || *var_err <= 2 * low.d_var);
    }
    const std::string evidence =
        fmt::format("per set, the mean error reaches {:.3g}× and the variance error {:.3g}× the budget of a stable "
                    "algorithm",
                    worst_mean, worst_var);
    if (any_evidence && beyond && one_pass)
      return "error grows like κ²: one-pass variance E[x²] − E[x]² suspected (" + evidence +
             ", within the one-pass envelope (h+4)·u·(μ² + v))";
    if (any_evidence && beyond && acc16)
      return fmt::format("sums accumulated in 16 bits suspected ({}, within the budget of a u = 2^{} accumulator)",
                         evidence, p.dtype == DType::bf16 ? -8 : -11);
    if (any_evidence && beyond && !fits.empty()) return "unexplained (" + describe(fits, e) + ")";
  }
  // 3. 16-bit accumulation, from the size of the errors: every failing tensor within what the
  // budget becomes when u is a 16-bit accumulator's (the reduction terms scale with u), or an
  // overflow where an exact set sum exceeds the f16 range.
  {
    const double u16 = p.dtype == DType::bf16 ? 0x1p-8 : 0x1p-11;
    double sum_abs = 0;  // the largest exact set sum of |x| or of x² (an f16 accumulator's range)
    const double m = static_cast<double>(e.part.set_size);
    for (const auto& st : e.ref.batch_stats)
      for (size_t k = 0; k < st.mean_abs.size(); ++k)
        sum_abs = std::max({sum_abs, st.mean_abs[k] * m, m * (st.variance[k] + st.mean[k] * st.mean[k])});
    bool all_within = true, any_failed = false, overflow = false;
    for (const auto& t : e.tensors) {
      if (t.pass) continue;
      any_failed = true;
      // An accumulator that overflowed makes everything downstream of it garbage.
      overflow = overflow || (t.nonfinite_mismatch > 0 && p.dtype == DType::f16 && sum_abs > 65504);
      if (!(t.nonfinite_mismatch == 0 && t.worst_ratio <= 2 * u16 / e.u)) all_within = false;
    }
    if (any_failed && (all_within || overflow) && u16 > e.u)
      return fmt::format("sums accumulated in 16 bits suspected (every failing tensor is within the budget of a "
                         "u = 2^{} accumulator, or overflows where an exact set sum of |x| or x², {:.3g}, exceeds the f16 range)",
                         p.dtype == DType::bf16 ? -8 : -11, sum_abs);
  }
  for (const auto& t : e.tensors)
    if (t.nonfinite_mismatch > 0)
      return fmt::format("unexplained: {} has {} non-finite value(s) where the reference is finite (overflow, 0/0 "
                         "or a negative variance in the kernel)",
                         t.name, t.nonfinite_mismatch);
  return "unexplained (no known signature matches the failing tensors)";
}

}  // namespace normcheck
