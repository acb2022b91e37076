// Metamorphic relations (metamorphic.hpp, docs/metamorphic.md).
#include "normcheck/metamorphic.hpp"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <cmath>
#include <functional>

#include "normcheck/compare.hpp"
#include "normcheck/partition.hpp"
#include "normcheck/runner.hpp"

namespace normcheck {
namespace {

/// One run of a case (possibly transformed) with its outputs and budgets.
struct Run {
  CaseResult res;
  CaseCapture cap;
  Tolerances tol;
  bool ok = false;
};

Run run(Backend& b, const Problem& p, std::function<void(GeneratedInputs&)> transform = {}) {
  Run r;
  RunOptions opt;
  opt.capture = &r.cap;
  opt.transform_inputs = std::move(transform);
  r.res = run_case(b, p, opt);
  const Verdict v = r.res.verdict;
  r.ok = v == Verdict::pass || v == Verdict::fail || v == Verdict::warn || v == Verdict::not_certifiable;
  if (!r.ok) return r;
  BudgetModel model;
  model.profile = b.precision(p.op, p.dtype, p.layout);
  r.tol = make_tolerances(p, make_partition(p), r.cap.inputs, r.cap.reference, model);
  return r;
}

/// Element i (logical row-major) of tensor `name` of run a as coordinates, "[0,2,1]", like the
/// main run's reports (flat "[i]" when the tensor is not in the run's comparisons).
std::string coords_in(const Run& a, const std::string& name, int64_t i) {
  for (const auto& t : a.res.tensors) {
    if (t.name != name || t.dims.empty()) continue;
    std::vector<int64_t> c(t.dims.size());
    for (size_t d = t.dims.size(); d-- > 0;) {
      c[d] = t.dims[d] > 0 ? i % t.dims[d] : 0;
      i = t.dims[d] > 0 ? i / t.dims[d] : 0;
    }
    return fmt::format("[{}]", fmt::join(c, ","));
  }
  return fmt::format("[{}]", i);
}

/// Compares tensor `name` of runs a and b, element ia(k) of a against ib(k) of b for k < count,
/// allowing the sum of both budgets plus extra(k). Updates r (worst ratio, detail, holds).
void compare(RelationResult& r, const Run& a, const Run& b, const std::string& name,
             const std::function<int64_t(int64_t)>& ia, const std::function<int64_t(int64_t)>& ib,
             const std::function<double(int64_t)>& extra = {}) {
  const auto ga = a.cap.got.find(name), gb = b.cap.got.find(name);
  const auto* ta = a.tol.of(name);
  const auto* tb = b.tol.of(name);
  if (ga == a.cap.got.end() || gb == b.cap.got.end() || !ta || !tb || ta->size() != ga->second.size()) return;
  const int64_t count = static_cast<int64_t>(ga->second.size());
  for (int64_t k = 0; k < count; ++k) {
    const double va = ga->second[ia(k)], vb = gb->second[ib(k)];
    double ratio;
    if (!std::isfinite(va) || !std::isfinite(vb)) {
      ratio = (std::isnan(va) && std::isnan(vb)) || va == vb ? 0 : HUGE_VAL;
    } else {
      const double allowed = (*ta)[ia(k)] + (*tb)[ib(k)] + (extra ? extra(k) : 0.0);
      const double d = std::fabs(va - vb);
      ratio = allowed > 0 ? d / allowed : (d > 0 ? HUGE_VAL : 0);
    }
    if (ratio > r.worst_ratio) {
      r.worst_ratio = ratio;
      r.detail = fmt::format("{}{}: {} vs {}", name, coords_in(a, name, ia(k)), va, vb);
    }
  }
  r.holds = r.worst_ratio <= 1;
}

const char* kAllTensors[] = {"y", "mean", "variance", "mean_square", "inv_std", "inv_rms", "running_mean",
                             "running_var", "dx", "dgamma", "dbeta"};

RelationResult skipped(const char* relation, const Problem& p, std::string why) {
  RelationResult r{relation, to_descriptor(p), true, 0, "", false, ""};
  r.skipped = true;
  r.detail = std::move(why);
  return r;
}

/// A relation whose run did not give outputs: skipped when the backend declined the case, a
/// fault (CRASH, TIMEOUT, OVERRUN, ERROR) when the backend failed on it.
RelationResult not_run(const char* relation, const Problem& p, const Run& r, const std::string& what = "") {
  const Verdict v = r.res.verdict;
  std::string detail = fmt::format("{}{} {}", what, to_string(v), r.res.reason);
  if (v != Verdict::crash && v != Verdict::timeout && v != Verdict::overrun && v != Verdict::error)
    return skipped(relation, p, std::move(detail));
  RelationResult out{relation, to_descriptor(p), false, 0, std::move(detail), false, ""};
  out.fault = std::string(to_string(v));
  return out;
}

/// Same values under a changed problem (layout, in place): every output, element by element.
RelationResult same_values(Backend& b, const char* relation, const Problem& p, const Run& a, Problem q) {
  validate(q);
  const Run c = run(b, q);
  if (!c.ok) return not_run(relation, p, c, to_descriptor(q) + ": ");
  RelationResult r{relation, to_descriptor(p), true, 0, "", false, ""};
  auto id = [](int64_t k) { return k; };
  for (const char* t : kAllTensors) compare(r, a, c, t, id, id);
  r.detail = fmt::format("against {}{}{}", to_descriptor(q), r.detail.empty() ? "" : "; worst ", r.detail);
  return r;
}

/// Reverses the batch (N) of every data input.
void reverse_batch(GeneratedInputs& in, int64_t n) {
  auto flip = [n](Tensor& t) {
    if (t.empty()) return;
    const int64_t per = t.numel() / n;
    std::vector<double> v = t.to_vector();
    for (int64_t i = 0; i < t.numel(); ++i) t.set(i, v[(n - 1 - i / per) * per + i % per]);
  };
  for (auto& x : in.batches) flip(x);
  flip(in.dy);
}

RelationResult permutation(Backend& b, const Problem& p, const Run& a) {
  const int64_t n = p.dims[0];
  if (n < 2) return skipped("permutation", p, "N = 1");
  const Run c = run(b, p, [n](GeneratedInputs& in) { reverse_batch(in, n); });
  if (!c.ok) return not_run("permutation", p, c);
  RelationResult r{"permutation", to_descriptor(p), true, 0, "", false, ""};
  const int64_t per = p.numel() / n;
  auto rev = [n, per](int64_t k) { return (n - 1 - k / per) * per + k % per; };
  auto id = [](int64_t k) { return k; };
  compare(r, a, c, "y", id, rev);
  compare(r, a, c, "dx", id, rev);
  compare(r, a, c, "dgamma", id, id);
  compare(r, a, c, "dbeta", id, id);
  const Partition part = make_partition(p);
  const int64_t sets_per_sample = part.num_sets / n;
  for (const char* t : {"mean", "variance", "mean_square", "inv_std", "inv_rms"}) {
    if (p.op == Op::batch_norm) {
      compare(r, a, c, t, id, id);
    } else {
      compare(r, a, c, t, id, [&](int64_t k) { return (n - 1 - k / sets_per_sample) * sets_per_sample + k % sets_per_sample; });
    }
  }
  compare(r, a, c, "running_mean", id, id);
  compare(r, a, c, "running_var", id, id);
  return r;
}

int precision_bits(DType t) {
  switch (t) {
    case DType::f16: return 11;
    case DType::bf16: return 8;
    case DType::f32: return 24;
    case DType::f64: return 53;
  }
  return 24;
}

RelationResult shift(Backend& b, const Problem& p, const Run& a) {
  if (p.op == Op::rms_norm) return skipped("shift", p, "rms_norm does not subtract the mean");
  if (p.pass != Pass::forward_training) return skipped("shift", p, "y(x + c) = y(x) needs batch statistics (forward_training)");
  const std::vector<double>& x = a.cap.inputs.batches.back();
  double mean = 0, sq = 0;
  for (double v : x) mean += v;
  mean /= static_cast<double>(x.size());
  for (double v : x) sq += (v - mean) * (v - mean);
  const double sigma = std::sqrt(sq / static_cast<double>(x.size()));
  if (!(sigma > 0)) return skipped("shift", p, "constant input");
  // A power of two whose ulp in the data dtype is at most σ/16, at most 1024·σ, and small enough
  // that |x| + c stays at most half the dtype's largest finite value.
  double max_abs = 0;
  for (double v : x) max_abs = std::max(max_abs, std::fabs(v));
  const double largest = p.dtype == DType::f16 ? 65504.0 : p.dtype == DType::f64 ? 1.7e308 : 3.4e38;
  const double c_max = std::min(std::min(1024.0, std::ldexp(1.0, precision_bits(p.dtype) - 4)) * sigma,
                                largest / 2 - max_abs);
  if (!(c_max >= sigma)) return skipped("shift", p, "no shift of at least σ fits in the dtype's range");
  const double c = std::ldexp(1.0, static_cast<int>(std::floor(std::log2(c_max))));
  const Run s = run(b, p, [c](GeneratedInputs& in) {
    for (auto& t : in.batches)
      for (int64_t i = 0; i < t.numel(); ++i) t.set(i, t.get(i) + c);
  });
  if (!s.ok) return not_run("shift", p, s);
  // The shifted input is rounded: x' = x + c + δ. To first order y changes by at most
  // |gamma|·r·(|δ_i| + max|δ|·(1 + |x̂_i|)) (the mean moves by mean δ, r by at most r²·σ·max|δ|).
  const Partition part = make_partition(p);
  const std::vector<double>& xs = s.cap.inputs.batches.back();
  const SetStats& st = a.cap.reference.batch_stats.back();
  std::vector<double> max_delta(static_cast<size_t>(part.num_sets), 0);
  for (int64_t i = 0; i < part.numel; ++i)
    max_delta[part.set_of(i)] = std::max(max_delta[part.set_of(i)], std::fabs(xs[i] - x[i] - c));
  const auto& gamma = a.cap.inputs.gamma;
  auto extra = [&](int64_t i) {
    const auto q = static_cast<size_t>(part.set_of(i));
    const double g = gamma.empty() ? 1.0 : std::fabs(gamma[part.affine_of(i)]);
    const double xh = std::fabs((x[i] - st.mean[q]) * st.inv_std[q]);
    return 2 * g * st.inv_std[q] * (std::fabs(xs[i] - x[i] - c) + max_delta[q] * (1 + xh));
  };
  RelationResult r{"shift", to_descriptor(p), true, 0, "", false, ""};
  auto id = [](int64_t k) { return k; };
  compare(r, a, s, "y", id, id, extra);
  r.detail = fmt::format("c = {}{}{}", c, r.detail.empty() ? "" : "; worst ", r.detail);
  return r;
}

RelationResult affine(const Problem& p, const Run& a) {
  if (p.op != Op::batch_norm || p.pass != Pass::forward_inference)
    return skipped("affine", p, "batch_norm forward_inference only");
  const auto y = a.cap.got.find("y");
  if (y == a.cap.got.end()) return skipped("affine", p, "no y");
  const Partition part = make_partition(p);
  const std::vector<double>& x = a.cap.inputs.batches.back();
  RelationResult r{"affine", to_descriptor(p), true, 0, "", false, ""};
  for (int64_t c = 0; c < part.num_sets; ++c) {
    const auto idx = [&](int64_t k) { return part.member(c, k); };
    const double m = static_cast<double>(part.set_size);
    double mx = 0, my = 0, sxx = 0, sxy = 0;
    for (int64_t k = 0; k < part.set_size; ++k) mx += x[idx(k)], my += y->second[idx(k)];
    mx /= m, my /= m;
    for (int64_t k = 0; k < part.set_size; ++k) {
      sxx += (x[idx(k)] - mx) * (x[idx(k)] - mx);
      sxy += (x[idx(k)] - mx) * (y->second[idx(k)] - my);
    }
    const double slope = sxx > 0 ? sxy / sxx : 0;
    // Each y_j is within t_j of the exact line. The least-squares line then deviates from it at
    // x_i by at most max_j t_j · Σ_j |h_ij| ≤ max_j t_j · (1 + |z_i|), z_i = (x_i − mean x)/sd(x)
    // (h: the hat matrix of simple regression; Cauchy–Schwarz), so a residual is at most
    // max_j t_j · (2 + |z_i|).
    double t_max = 0;
    for (int64_t k = 0; k < part.set_size; ++k) t_max = std::max(t_max, a.tol.y[idx(k)]);
    const double sd = std::sqrt(sxx / m);
    for (int64_t k = 0; k < part.set_size; ++k) {
      const int64_t i = idx(k);
      const double residual = std::fabs(y->second[i] - (my + slope * (x[i] - mx)));
      const double z = sd > 0 ? std::fabs(x[i] - mx) / sd : 0;
      const double ratio = residual / (t_max * (2 + z));
      if (ratio > r.worst_ratio) {
        r.worst_ratio = ratio;
        r.detail = fmt::format("channel {}: y{} is {} off the per-channel line a·x + b", c, coords_in(a, "y", i), residual);
      }
    }
  }
  r.holds = r.worst_ratio <= 1;
  return r;
}

}  // namespace

std::vector<RelationResult> check_relations(Backend& b, const Problem& p) {
  std::vector<RelationResult> out;
  if (p.special == Special::nan || p.special == Special::inf) {
    out.push_back(skipped("all", p, "NaN/Inf planted: the relations compare finite values"));
    return out;
  }
  const Run a = run(b, p);
  if (!a.ok) {
    out.push_back(not_run("all", p, a));
    return out;
  }
  if (p.rank() >= 3) {
    Problem q = p;
    q.layout = p.layout == Layout::nchw ? Layout::nhwc : Layout::nchw;
    out.push_back(same_values(b, "layout", p, a, q));
  } else {
    out.push_back(skipped("layout", p, "rank 2 has one layout"));
  }
  Problem q = p;
  q.inplace = !p.inplace;
  out.push_back(same_values(b, "inplace", p, a, q));
  out.push_back(permutation(b, p, a));
  out.push_back(shift(b, p, a));
  out.push_back(affine(p, a));
  return out;
}

}  // namespace normcheck
