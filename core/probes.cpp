// The probes of `normcheck diagnose` (probes.hpp, docs/diagnose.md).
#include "normcheck/probes.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <optional>

#include "normcheck/compare.hpp"
#include "normcheck/partition.hpp"
#include "normcheck/runner.hpp"

namespace normcheck {
namespace {

/// One probe case, run through the ordinary runner with its raw outputs captured.
struct Probe {
  Problem problem;
  CaseResult result;
  CaseCapture cap;
  Tolerances tol;
  bool ran = false;
  std::string why;  ///< when !ran: the verdict and reason

  const std::vector<double>* got(const std::string& name) const {
    const auto it = cap.got.find(name);
    return it == cap.got.end() ? nullptr : &it->second;
  }

  /// max |got − candidate| / budget over the tensor (∞ when absent or non-finite).
  double distance(const std::string& name, const std::vector<double>& candidate) const {
    const auto* g = got(name);
    const auto* budget = tol.of(name);
    if (!g || !budget || g->size() != candidate.size() || budget->size() != g->size()) return HUGE_VAL;
    const auto& b = *budget;
    double worst = 0;
    for (size_t i = 0; i < g->size(); ++i) {
      const double d = std::fabs((*g)[i] - candidate[i]);
      if (!std::isfinite(d)) return HUGE_VAL;
      worst = std::max(worst, b[i] > 0 ? d / b[i] : (d > 0 ? HUGE_VAL : 0));
    }
    return worst;
  }
};

Probe run_probe(Backend& b, const std::string& descriptor);

/// The first of equivalent probe cases the backend runs: a layer_norm case, then the same
/// reduction as batch_norm over (N, C, H, W) for backends with channel-wise ops only.
Probe run_first(Backend& b, std::initializer_list<std::string> descriptors) {
  Probe last;
  for (const auto& d : descriptors) {
    last = run_probe(b, d);
    if (last.ran) return last;
  }
  return last;
}

Probe run_probe(Backend& b, const std::string& descriptor) {
  Probe pr;
  pr.problem = parse_descriptor(descriptor);
  RunOptions opt;
  opt.capture = &pr.cap;
  pr.result = run_case(b, pr.problem, opt);
  const Verdict v = pr.result.verdict;
  pr.ran = v == Verdict::pass || v == Verdict::fail || v == Verdict::warn || v == Verdict::not_certifiable;
  if (!pr.ran) {
    pr.why = fmt::format("{}: {}", to_string(v), pr.result.reason);
    return pr;
  }
  BudgetModel model;
  model.profile = b.capabilities().precision;
  const Partition part = make_partition(pr.problem);
  pr.tol = make_tolerances(pr.problem, part, pr.cap.inputs, pr.cap.reference, model);
  return pr;
}

ProbeResult not_determined(std::string point, std::string why) { return {std::move(point), "not determined", std::move(why), false}; }

/// The candidate nearest to the backend's output, if it is within `accept` budgets and clearly
/// nearer than the others.
struct Candidate {
  std::string finding;
  double distance;
};
ProbeResult choose(std::string point, std::vector<Candidate> cands, const std::string& tensor, double accept = 4) {
  std::sort(cands.begin(), cands.end(), [](const Candidate& a, const Candidate& b) { return a.distance < b.distance; });
  std::string evidence = tensor + " within ";
  for (size_t i = 0; i < cands.size(); ++i)
    evidence += fmt::format("{}{:.3g} budgets of '{}'", i ? ", " : "", cands[i].distance, cands[i].finding);
  if (cands.empty() || cands[0].distance > accept || (cands.size() > 1 && cands[1].distance <= accept))
    return {std::move(point), "none of the candidates fits", evidence, false};
  return {std::move(point), cands[0].finding, evidence, true};
}

/// Running statistics after one step from (rm0, rv0) with weight f on the batch and the given Bessel choice.
std::vector<double> running_after(const Probe& pr, bool running_mean, bool swap, bool unbiased) {
  const auto& in = pr.cap.inputs;
  const SetStats& st = pr.cap.reference.batch_stats.back();
  const double m = static_cast<double>(pr.problem.numel() / pr.problem.channels());
  const double f = swap ? 1 - in.batch_weight : in.batch_weight;
  std::vector<double> out(st.mean.size());
  for (size_t c = 0; c < out.size(); ++c)
    out[c] = running_mean ? (1 - f) * in.running_mean[c] + f * st.mean[c]
                          : (1 - f) * in.running_var[c] + f * st.variance[c] * (unbiased ? m / (m - 1) : 1);
  return out;
}

/// One batch_norm training step with m = 4 from running_mean = 0, running_var = 1, on N(5, 3)
/// data: running statistics far from the batch (G10).
Probe one_training_step(Backend& b) {
  return run_first(b, {"batch_norm,pass=forward_training,dtype=f32,shape=4x4,data=normal:5:3",
                       "batch_norm,pass=forward_training,dtype=f32,shape=4x4x1x1,data=normal:5:3"});
}

ProbeResult probe_momentum(const Probe& pr) {
  const char* point = "momentum direction (running_mean)";
  if (!pr.ran) return not_determined(point, pr.why);
  if (!pr.got("running_mean")) return not_determined(point, "the backend did not report running_mean");
  return choose(point,
                {{"new-weight: running ← (1−f)·running + f·batch, as asked", pr.distance("running_mean", running_after(pr, true, false, true))},
                 {"swapped: running ← f·running + (1−f)·batch", pr.distance("running_mean", running_after(pr, true, true, true))}},
                "running_mean");
}

ProbeResult probe_bessel(const Probe& pr) {
  const char* point = "Bessel correction in running_var";
  if (!pr.ran) return not_determined(point, pr.why);
  if (!pr.got("running_var")) return not_determined(point, "the backend did not report running_var");
  const bool asked = pr.cap.inputs.running_var_unbiased;
  // Whichever way the backend applies the momentum (probed separately).
  auto best = [&](bool unbiased) {
    return std::min(pr.distance("running_var", running_after(pr, false, false, unbiased)),
                    pr.distance("running_var", running_after(pr, false, true, unbiased)));
  };
  return choose(point, {{"unbiased v·m/(m−1)", best(true)}, {"biased v", best(false)}},
                fmt::format("running_var (asked: {}, m = 4)", asked ? "unbiased" : "biased"));
}

/// y and inv_std of a forward-training probe with r = inv_std_of(v, m).
using InvStdForm = std::function<double(double v, double m, double eps)>;
/// A candidate answer and the r formulas consistent with it (one per choice of the other point:
/// v·m/(m−1) and eps placement both change r, so each is probed allowing either choice of the other).
using Candidates = std::vector<std::pair<std::string, std::vector<InvStdForm>>>;

ProbeResult probe_inv_std(Backend& b, const char* point, std::initializer_list<std::string> descriptors,
                          const Candidates& forms) {
  const Probe pr = run_first(b, descriptors);
  if (!pr.ran) return not_determined(point, pr.why);
  const Partition part = make_partition(pr.problem);
  const auto& in = pr.cap.inputs;
  const SetStats& st = pr.cap.reference.batch_stats.back();
  const bool use_r = pr.got("inv_std") != nullptr;
  const double m = static_cast<double>(part.set_size);
  std::vector<Candidate> cands;
  for (const auto& [name, alternatives] : forms) {
    double best = HUGE_VAL;
    for (const auto& form : alternatives) {
      std::vector<double> r(st.variance.size());
      for (size_t s = 0; s < r.size(); ++s) r[s] = form(st.variance[s], m, in.eps);
      if (use_r) {
        best = std::min(best, pr.distance("inv_std", r));
        continue;
      }
      std::vector<double> y(static_cast<size_t>(part.numel));
      for (int64_t s = 0; s < part.num_sets; ++s)
        for (int64_t k = 0; k < part.set_size; ++k) {
          const int64_t i = part.member(s, k);
          const int64_t j = part.affine_of(i);
          y[i] = in.gamma[j] * (in.batches.back()[i] - st.mean[s]) * r[s] + in.beta[j];
        }
      best = std::min(best, pr.distance("y", y));
    }
    cands.push_back({name, best});
  }
  return choose(point, cands, use_r ? "inv_std" : "y (no inv_std reported)");
}

ProbeResult probe_saved(Backend& b) {
  const char* point = "saved statistics (forward training)";
  const Probe pr = run_first(b, {"layer_norm,pass=forward_training,dtype=f32,shape=4x32",
                                 "batch_norm,pass=forward_training,dtype=f32,shape=4x4x2x2"});
  if (!pr.ran) return not_determined(point, pr.why);
  std::vector<std::string> saved;
  if (pr.cap.produced & kOutMean) saved.push_back("mean");
  if (pr.cap.produced & kOutVariance) saved.push_back("biased variance");
  if (pr.cap.produced & kOutInvStd) saved.push_back("inv_std");
  std::string list;
  for (size_t i = 0; i < saved.size(); ++i) list += (i ? ", " : "") + saved[i];
  return {point, saved.empty() ? "none" : list,
          fmt::format("the outputs the backend wrote in a {} forward_training call", to_string(pr.problem.op)), true};
}

/// Largest error of the saved mean over the sets, as a ratio to the f32 and 16-bit budgets.
ProbeResult probe_accumulation(Backend& b) {
  const char* point = "effective accumulation precision";
  std::string finding, evidence;
  bool any = false, worse_than_f32 = false, worse_than_16 = false;
  for (DType t : {DType::f16, DType::bf16, DType::f32}) {
    Probe pr = run_first(
        b, {fmt::format("layer_norm,pass=forward_training,dtype={},shape=4x4096,data=uniform:1:2", to_string(t)),
            fmt::format("batch_norm,pass=forward_training,dtype={},shape=1x4x64x64,data=uniform:1:2", to_string(t))});
    if (!pr.ran) {
      evidence += fmt::format("{}{}: {}", evidence.empty() ? "" : "; ", to_string(t), pr.why);
      continue;
    }
    if (!pr.got("mean")) {
      evidence += fmt::format("{}{}: no mean reported", evidence.empty() ? "" : "; ", to_string(t));
      continue;
    }
    any = true;
    const Partition part = make_partition(pr.problem);
    const double r32 = pr.distance("mean", pr.cap.reference.mean);
    BudgetModel m16;
    m16.profile = b.capabilities().precision;
    m16.profile.accumulation = t == DType::bf16 ? DType::bf16 : DType::f16;
    pr.tol = make_tolerances(pr.problem, part, pr.cap.inputs, pr.cap.reference, m16);
    const double r16 = pr.distance("mean", pr.cap.reference.mean);
    worse_than_f32 = worse_than_f32 || r32 > 1;
    worse_than_16 = worse_than_16 || r16 > 1;
    evidence += fmt::format("{}{} data: mean error {:.3g}× the f32-accumulation budget, {:.3g}× a {} accumulator's",
                            evidence.empty() ? "" : "; ", to_string(t), r32, r16,
                            t == DType::bf16 ? "bf16" : "f16");
  }
  if (!any) return not_determined(point, evidence);
  finding = !worse_than_f32 ? "f32 or wider (errors within the f32 budget for every dtype tried)"
            : !worse_than_16 ? "16-bit: errors beyond the f32 budget, within a 16-bit accumulator's"
                             : "worse than a 16-bit accumulator";
  return {point, finding, evidence + " (n = 4096 per set, data U[1, 2])", true};
}

/// log-log slope of y against x by least squares; nullopt with fewer than two points.
std::optional<double> slope(const std::vector<double>& x, const std::vector<double>& y) {
  if (x.size() < 2) return std::nullopt;
  double mx = 0, my = 0;
  for (size_t i = 0; i < x.size(); ++i) mx += std::log(x[i]), my += std::log(y[i]);
  mx /= static_cast<double>(x.size()), my /= static_cast<double>(x.size());
  double sxy = 0, sxx = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    sxy += (std::log(x[i]) - mx) * (std::log(y[i]) - my);
    sxx += (std::log(x[i]) - mx) * (std::log(x[i]) - mx);
  }
  return sxx > 0 ? std::optional<double>(sxy / sxx) : std::nullopt;
}

/// Relative error of the saved variance (from inv_std when no variance is reported) against κ.
ProbeResult probe_variance_algorithm(Backend& b) {
  const char* point = "variance algorithm (error growth against κ)";
  std::vector<double> kappa, err;
  std::string evidence;
  const double floor = 8 * unit_roundoff(DType::f32);
  for (double c : {1.0, 64.0, 512.0, 4096.0}) {
    const Probe pr =
        run_first(b, {fmt::format("layer_norm,pass=forward_training,dtype=f32,shape=16x64,data=normal:{}:1", format_number(c)),
                      fmt::format("batch_norm,pass=forward_training,dtype=f32,shape=4x16x4x4,data=normal:{}:1",
                                  format_number(c))});
    if (!pr.ran) return not_determined(point, pr.why);
    const SetStats& st = pr.cap.reference.batch_stats.back();
    double e = 0;
    if (const auto* v = pr.got("variance")) {
      for (size_t s = 0; s < v->size(); ++s) e = std::max(e, std::fabs((*v)[s] - st.variance[s]) / st.variance[s]);
    } else if (const auto* r = pr.got("inv_std")) {
      for (size_t s = 0; s < r->size(); ++s) e = std::max(e, 2 * std::fabs((*r)[s] / st.inv_std[s] - 1));
    } else {
      return not_determined(point, "the backend reports neither variance nor inv_std");
    }
    const double k = *std::max_element(st.mean_abs.begin(), st.mean_abs.end()) *
                     *std::max_element(st.inv_std.begin(), st.inv_std.end());
    evidence += fmt::format("{}κ {:.3g}: {:.2g}", evidence.empty() ? "" : ", ", k, e);
    if (e > floor) kappa.push_back(k), err.push_back(e);
  }
  evidence = "relative variance error at " + evidence;
  const auto sl = slope(kappa, err);
  if (!sl) return {point, "stable: no error above the rounding floor up to κ ≈ 4096", evidence, true};
  evidence += fmt::format("; log-log slope {:.2f} over {} points above the floor", *sl, kappa.size());
  if (*sl >= 1.5) return {point, "one-pass E[x²] − E[x]²: error grows like κ²", evidence, true};
  return {point, "stable (two-pass, Welford or shifted): error grows at most like κ", evidence, true};
}

/// RMS over the sets of the relative error of the saved mean, and of one f32 accumulator's mean
/// of the same data (for scale). Every set of the probe cases is contiguous (layer_norm rows,
/// batch_norm channels with N = 1).
std::pair<double, double> mean_errors(const Probe& pr, const std::vector<double>& mean, int64_t n) {
  const auto& x = pr.cap.inputs.batches.back();
  double se = 0, so = 0;
  for (size_t s = 0; s < mean.size(); ++s) {
    const double exact = pr.cap.reference.mean[s];
    float acc = 0;
    for (int64_t k = 0; k < n; ++k) acc += static_cast<float>(x[s * n + k]);
    const double one = (static_cast<double>(acc / static_cast<float>(n)) - exact) / exact;
    const double e = (mean[s] - exact) / exact;
    se += e * e, so += one * one;
  }
  const double sets = static_cast<double>(std::max<size_t>(mean.size(), 1));
  return {std::sqrt(se / sets), std::sqrt(so / sets)};
}

/// Relative error of the saved mean against n, on non-constant data (normal, mean 1, std 0.25).
/// Constant data would be exact for Welford (x − mean = 0 after the first step) and for any
/// kernel that subtracts a shift; random data is not, and its rounding errors add like a random
/// walk, so the relative error of the mean grows like √n·u for one accumulator (slope ½ against
/// n; Welford alike) and is 1/P of that for P blocked accumulators (each sums n/P terms whose
/// partial sums are P times smaller); a tree stays near the rounding of the mean itself.
ProbeResult probe_summation(Backend& b) {
  const char* point = "summation depth (error growth against n)";
  std::vector<double> n_list, err, one_acc;
  std::string evidence;
  constexpr double kFloor = 0x1p-25;  // the rounding of the mean itself to f32 (relative, near 1)
  for (int n : {300, 1200, 4800, 19200, 76800}) {
    const Probe pr = run_first(b, {fmt::format("layer_norm,pass=forward_training,dtype=f32,shape=8x{},data=normal:1:0.25", n),
                                   fmt::format("batch_norm,pass=forward_training,dtype=f32,shape=1x8x1x{},data=normal:1:0.25", n)});
    if (!pr.ran) return not_determined(point, pr.why);
    const auto* mean = pr.got("mean");
    if (!mean) return not_determined(point, "the backend does not report the mean");
    const auto [e, one] = mean_errors(pr, *mean, n);
    evidence += fmt::format("{}n {}: {:.2g} (one f32 accumulator {:.2g})", evidence.empty() ? "" : ", ", n, e, one);
    if (e > kFloor) n_list.push_back(n), err.push_back(e), one_acc.push_back(one);
  }
  evidence = "RMS relative error of the mean over 8 sets of normal(1, 0.25) data at " + evidence;
  const auto sl = slope(n_list, err);
  if (!sl || n_list.size() < 3)
    return {point, "no error above the f32 rounding of the mean at most n: tree-like (pairwise), compensated or wider "
                   "accumulation",
            evidence, true};
  evidence += fmt::format("; log-log slope {:.2f}", *sl);
  if (*sl >= 0.35) {
    // Against one f32 accumulator on the same data: P partial accumulators divide the error by ~P.
    const double ratio = err.back() / std::max(one_acc.back(), 1e-300);
    evidence += fmt::format("; {:.2g}× the error of one f32 accumulator at n = {}", ratio, n_list.back());
    if (ratio > 0.5) return {point, "recursive: depth ∝ n (one accumulator, or Welford's updates)", evidence, true};
    return {point, fmt::format("blocked: depth ∝ n/P with about P ≈ {:.0f} partial accumulators", 1 / ratio),
            evidence, true};
  }
  if (*sl >= 0.15) return {point, "blocked or partial accumulators: growth between log n and n", evidence, true};
  return {point, "tree-like: depth ∝ log n (pairwise or blocked with a tree)", evidence, true};
}

}  // namespace

std::vector<ProbeResult> run_probes(Backend& b) {
  std::vector<ProbeResult> out;
  const Probe step = one_training_step(b);
  out.push_back(probe_momentum(step));
  out.push_back(probe_bessel(step));
  // Variance used in r (biased or unbiased) and eps placement.
  using V = std::function<double(double v, double m)>;
  const V biased = [](double v, double) { return v; };
  const V unbiased = [](double v, double m) { return m > 1 ? v * m / (m - 1) : v; };
  const std::function<InvStdForm(V)> inside = [](V f) {
    return [f](double v, double m, double eps) { return 1 / std::sqrt(f(v, m) + eps); };
  };
  const std::function<InvStdForm(V)> outside = [](V f) {
    return [f](double v, double m, double eps) { return 1 / (std::sqrt(f(v, m)) + eps); };
  };
  const std::function<InvStdForm(V)> omitted = [](V f) {
    return [f](double v, double m, double) { return 1 / std::sqrt(f(v, m)); };
  };
  out.push_back(probe_inv_std(b, "variance in the normalization",
                              {"batch_norm,pass=forward_training,dtype=f32,shape=2x4",
                               "batch_norm,pass=forward_training,dtype=f32,shape=2x4x1x1"},
                              {{"biased v (population)", {inside(biased), outside(biased)}},
                               {"unbiased v·m/(m−1)", {inside(unbiased), outside(unbiased)}}}));
  out.push_back(probe_inv_std(b, "eps placement",
                              {"layer_norm,pass=forward_training,dtype=f32,shape=4x256,data=normal:0:0.0031623",
                               "batch_norm,pass=forward_training,dtype=f32,shape=4x4x8x8,data=normal:0:0.0031623"},
                              {{"inside the square root: 1/sqrt(v + eps)", {inside(biased), inside(unbiased)}},
                               {"outside: 1/(sqrt(v) + eps)", {outside(biased), outside(unbiased)}},
                               {"omitted: 1/sqrt(v)", {omitted(biased), omitted(unbiased)}}}));
  out.push_back(probe_saved(b));
  out.push_back(probe_accumulation(b));
  out.push_back(probe_variance_algorithm(b));
  out.push_back(probe_summation(b));
  return out;
}

}  // namespace normcheck
