#include "normcheck/runner.hpp"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>

#include "normcheck/data.hpp"
#include "normcheck/diagnosis.hpp"
#include "normcheck/parallel.hpp"
#include "normcheck/file_inputs.hpp"
#include "normcheck/generate.hpp"
#include "normcheck/npy.hpp"
#include "normcheck/reference.hpp"
#include "normcheck/tensor.hpp"

namespace normcheck {

std::string_view to_string(Verdict v) {
  switch (v) {
    case Verdict::pass: return "PASS";
    case Verdict::fail: return "FAIL";
    case Verdict::unsupported: return "UNSUPPORTED";
    case Verdict::error: return "ERROR";
    case Verdict::crash: return "CRASH";
    case Verdict::timeout: return "TIMEOUT";
    case Verdict::overrun: return "OVERRUN";
    case Verdict::nondeterministic: return "NONDETERMINISTIC";
    case Verdict::warn: return "WARN";
    case Verdict::not_certifiable: return "NOT_CERTIFIABLE";
  }
  return "?";
}

namespace {

/// Threads of the comparison: RunOptions::threads, 0 meaning every core.
int compare_threads(const RunOptions& opt) { return resolve_threads(opt.threads); }


/// Output slots: name as reported (rms_norm renames the statistics), the bit a backend sets,
/// where the backend wrote it, the reference value and its tolerance.
struct Slot {
  std::string name;
  uint32_t bit;
  Tensor* got;
  const std::vector<double>* ref;
  const std::vector<double>* tol;
  const std::vector<double>* tol_prob;
  bool required;
  BudgetTerm term;
  const std::vector<BudgetTerm>* terms = nullptr;
};

bool all_finite(const std::vector<double>& v) {
  for (double x : v)
    if (!std::isfinite(x)) return false;
  return true;
}

/// Every input the reference saw is finite: a non-finite reference is then 0/0 or 1/0 (eps = 0 on
/// a zero-variance set), an undefined exact value rather than a propagated NaN/Inf.
bool inputs_finite(const ReferenceInputs& in) {
  for (const auto& b : in.batches)
    if (!all_finite(b)) return false;
  return all_finite(in.dy) && all_finite(in.gamma) && all_finite(in.beta) && all_finite(in.running_mean) &&
         all_finite(in.running_var) && std::isfinite(in.eps);
}

/// The m = 1 note: the unbiased running_var of one value is 0/0. The note shows what the backend
/// wrote and what its convention (the backend's declared one, else the case's) says it does.
std::string single_value_note(const Backend& backend, const Problem& p, const std::vector<double>& got) {
  const std::string declared = backend.capabilities().convention;
  const Convention* found = nullptr;
  for (const Convention& c : conventions())
    if (c.name == declared) found = &c;
  const Convention& conv = found ? *found : find_convention(p.convention);
  std::string value = got.empty() ? "nothing" : fmt::format("{}", got[0]);
  bool alike = true;
  for (double v : got) alike = alike && (v == got[0] || (std::isnan(v) && std::isnan(got[0])));
  if (got.size() > 1) value += alike ? fmt::format(" (all {} channels alike)", got.size()) : " in channel 0 (channels differ)";
  return fmt::format("running_var not compared: the unbiased variance of a single value is 0/0, undefined; the "
                     "backend wrote {}; convention {} expects {} ({}); ",
                     value, conv.name, to_string(conv.single_value_running_var), conv.single_value_per_channel);
}

/// "weak check: …": a correct kernel may shift x̂ by more than 10% of |gamma| (docs/comparison.md).
std::optional<std::string> weak_check_reason(const Problem& p, const Partition& part, double kappa, double depth) {
  if (uses_running_stats(p.pass)) return std::nullopt;
  const double u = unit_roundoff(stats_dtype(p.dtype)), k = depth + 4;
  const double shift = k * u < 1 ? 2 * k * u / (1 - k * u) * kappa : HUGE_VAL;
  if (!(shift > 0.1)) return std::nullopt;
  return fmt::format("weak check: condition number κ1 = {:.3g} with m = {} lets a correct {} kernel shift x̂ by up "
                     "to 2·γ_(h+4)·κ1 = {:.2g}, so the tolerance is above 10% of |gamma|; still sharp: the saved "
                     "statistics, y against them, and {}× the probabilistic budget",
                     kappa, part.set_size,
                     p.dtype == stats_dtype(p.dtype) ? std::string(to_string(p.dtype))
                                                     : "f32-accumulating " + std::string(to_string(p.dtype)),
                     shift, kProbabilisticFailFactor);
}

std::string dump_dir_name(const std::string& descriptor) {
  std::string s;
  for (char c : descriptor) s += (std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '.' || c == '-' || c == '=') ? c : (c == ',' ? '+' : '_');
  return s;
}

}  // namespace

RunArgs make_run_args(const Problem& p) {
  const DType sdt = stats_dtype(p.dtype);
  const Convention& conv = find_convention(p.convention);
  RunArgs args;
  args.op = p.op;
  args.pass = p.pass;
  args.rank = p.rank();
  for (int d = 0; d < p.rank(); ++d) args.dims[d] = p.dims[d];
  args.norm_dims = p.norm_dims;
  args.groups = p.groups;
  args.eps = round_to(sdt, p.eps);
  args.affine = p.affine;
  // momentum=cumulative: the first step weighs the batch by 1 (the runner sets 1/k per step).
  args.batch_weight = p.cumulative_average ? 1.0 : round_to(sdt, batch_weight(conv, round_to(sdt, p.momentum)));
  args.running_var_unbiased = conv.running_var_unbiased;
  args.x.dtype = p.dtype;
  return args;
}

ReferenceInputs reference_inputs(const Problem& p, const GeneratedInputs& in) {
  const RunArgs args = make_run_args(p);
  ReferenceInputs rin;
  for (const auto& b : in.batches) rin.batches.push_back(b.to_vector());
  rin.dy = in.dy.to_vector();
  rin.gamma = in.gamma.to_vector();
  rin.beta = in.beta.to_vector();
  rin.running_mean = in.running_mean.to_vector();
  rin.running_var = in.running_var.to_vector();
  rin.eps = args.eps;
  rin.batch_weight = args.batch_weight;
  if (p.cumulative_average)  // step k (from 1) weighs the batch by 1/k
    for (int k = 1; k <= num_calls(p); ++k) rin.batch_weights.push_back(round_to(stats_dtype(p.dtype), 1.0 / k));
  rin.running_var_unbiased = args.running_var_unbiased;
  return rin;
}

CaseResult run_case(Backend& backend, const Problem& p, const RunOptions& opt) {
  const auto t0 = std::chrono::steady_clock::now();
  validate(p);
  CaseResult res;
  res.problem = p;
  res.descriptor = to_descriptor(p);
  auto finish = [&](Verdict v, std::string reason) {
    res.verdict = v;
    res.reason = std::move(reason);
    res.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    return res;
  };

  const Partition part = make_partition(p);
  const DType sdt = stats_dtype(p.dtype);
  const bool bn = p.op == Op::batch_norm;

  RunArgs args = make_run_args(p);
  if (auto why = backend.unsupported_reason(args, p.layout)) return finish(Verdict::unsupported, *why);

  GeneratedInputs in = generate_inputs(p, part);
  apply_inputs(p, opt.inputs, in);  // tensors from .npy files, where the descriptor names them
  res.input_options = input_options(p, opt.inputs);
  if (opt.transform_inputs) opt.transform_inputs(in);

  // The reference sees exactly what the backend sees.
  const ReferenceInputs rin = reference_inputs(p, in);
  const ReferenceResult ref = opt.reference == ReferenceKind::fast ? fast_reference_run(p, part, rin, opt.threads)
                                                                  : reference_run(p, part, rin, opt.reference_bits);
  res.condition_number = condition_number(ref);
  // The budgets for the backend's declared precision profile: worst case (the verdict) and
  // probabilistic (the WARN tier); docs/comparison.md.
  BudgetModel model;
  model.profile = backend.precision(p.op, p.dtype, p.layout);
  model.threads = compare_threads(opt);
  const double u_arith = model.profile.unit_roundoff(sdt);  // of the reductions the budget assumes
  const double depth = model.profile.depth(static_cast<double>(part.set_size), u_arith);
  const Tolerances tol = make_tolerances(p, part, rin, ref, model);
  model.probabilistic = true;
  const Tolerances tol_prob = make_tolerances(p, part, rin, ref, model);

  const auto sshape = stats_shape(p);
  const auto ashape = affine_shape(p);
  Tensor y, dx, mean(sdt, sshape), variance(sdt, sshape), inv_std(sdt, sshape), dgamma, dbeta;
  Tensor running_mean = in.running_mean, running_var = in.running_var;
  if (is_backward(p.pass)) {
    if (!p.inplace) dx = Tensor(p.dtype, p.dims, p.layout);  // in place, dx is written over dy
    if (p.affine) dgamma = Tensor(sdt, ashape);
    if (p.affine && part.has_beta) dbeta = Tensor(sdt, ashape);
    if (p.pass == Pass::backward_training) {  // saved statistics: the exact ones, rounded once
      const SetStats& st = ref.batch_stats.back();
      for (int64_t s = 0; s < part.num_sets; ++s) {
        mean.set(s, st.mean[s]);
        variance.set(s, st.variance[s]);
        inv_std.set(s, st.inv_std[s]);
      }
    }
  } else {
    if (!p.inplace) y = Tensor(p.dtype, p.dims, p.layout);  // in place, y is written over x
  }
  args.gamma = in.gamma.arg();
  args.beta = in.beta.arg();

  // Training steps, then the compared call.
  const int calls = static_cast<int>(in.batches.size());
  const int n_train = p.pass == Pass::forward_training ? calls
                      : p.pass == Pass::forward_inference ? calls - 1 : 0;
  uint32_t produced = 0;
  for (int k = 0; k < calls; ++k) {
    const bool training = k < n_train;
    args.pass = training ? Pass::forward_training : p.pass;
    if (training && p.cumulative_average) args.batch_weight = rin.weight_of_step(static_cast<size_t>(k));
    args.x = in.batches[k].arg();
    args.y = p.inplace ? args.x : y.arg();
    args.dy = in.dy.arg();
    args.dx = p.inplace && is_backward(args.pass) ? args.dy : dx.arg();
    args.dgamma = dgamma.arg();
    args.dbeta = dbeta.arg();
    const bool saved = args.pass == Pass::forward_training || args.pass == Pass::backward_training;
    args.mean = saved && part.subtract_mean ? mean.arg() : TensorArg{};
    args.variance = saved ? variance.arg() : TensorArg{};
    args.inv_std = saved ? inv_std.arg() : TensorArg{};
    const bool running = bn && args.pass != Pass::backward_training;  // RunArgs documents which
    args.running_mean = running ? running_mean.arg() : TensorArg{};
    args.running_var = running ? running_var.arg() : TensorArg{};
    RunResult rr = backend.run(args);
    if (!rr.ok && rr.unsupported)
      return finish(Verdict::unsupported, "unsupported by backend: " + rr.message);
    if (!rr.ok && rr.fault == RunResult::Fault::input_modified)
      return finish(Verdict::fail, fmt::format("call {} of {} ({}): {}", k + 1, calls, to_string(args.pass), rr.message));
    if (!rr.ok && rr.fault != RunResult::Fault::none) {
      const Verdict v = rr.fault == RunResult::Fault::crash   ? Verdict::crash
                        : rr.fault == RunResult::Fault::timeout ? Verdict::timeout
                                                                : Verdict::overrun;
      return finish(v, fmt::format("call {} of {} ({}): {}", k + 1, calls, to_string(args.pass), rr.message));
    }
    if (!rr.ok)
      return finish(Verdict::error, fmt::format("backend error on call {} of {} ({}): {}", k + 1,
                                                calls, to_string(args.pass), rr.message));
    if (k == calls - 1 || (k == n_train - 1)) produced |= rr.produced;
  }

  const bool fwd = !is_backward(p.pass);
  // In place, the outputs are where the inputs were (the reference kept its own copy).
  Tensor& y_out = p.inplace ? in.batches.back() : y;
  Tensor& dx_out = p.inplace ? in.dy : dx;
  const bool track = bn && (p.pass == Pass::forward_training || (p.pass == Pass::forward_inference && p.steps > 0));
  const bool rms = p.op == Op::rms_norm;
  using BT = BudgetTerm;
  std::vector<Slot> slots = {
      {"y", kOutY, &y_out, &ref.y, &tol.y, &tol_prob.y, fwd, BT::element_rounding, &tol.y_terms},
      {"mean", kOutMean, &mean, &ref.mean, &tol.mean, &tol_prob.mean, false, BT::reduction},
      {rms ? "mean_square" : "variance", kOutVariance, &variance, &ref.variance, &tol.variance, &tol_prob.variance,
       false, BT::reduction},
      {rms ? "inv_rms" : "inv_std", kOutInvStd, &inv_std, &ref.inv_std, &tol.inv_std, &tol_prob.inv_std, false,
       BT::inv_std},
      {"running_mean", kOutRunningMean, &running_mean, &ref.running_mean, &tol.running_mean,
       &tol_prob.running_mean, track, BT::running_update},
      {"running_var", kOutRunningVar, &running_var, &ref.running_var, &tol.running_var, &tol_prob.running_var,
       track, BT::running_update},
      {"dx", kOutDx, &dx_out, &ref.dx, &tol.dx, &tol_prob.dx, !fwd, BT::reduction},
      {"dgamma", kOutDgamma, &dgamma, &ref.dgamma, &tol.dgamma, &tol_prob.dgamma, !fwd && p.affine, BT::reduction},
      {"dbeta", kOutDbeta, &dbeta, &ref.dbeta, &tol.dbeta, &tol_prob.dbeta, !fwd && p.affine && part.has_beta,
       BT::reduction},
  };
  const bool finite_in = inputs_finite(rin);
  std::vector<std::string> missing;
  std::map<std::string, std::vector<double>> got_values;
  for (const Slot& s : slots) {
    if (s.ref->empty()) continue;
    if (!(produced & s.bit)) {
      if (s.required) missing.push_back(s.name);
      continue;
    }
    const bool undefined = s.bit == kOutRunningVar && ref.running_var_undefined;
    TensorBudget budget{s.tol, s.tol_prob->size() == s.tol->size() ? s.tol_prob : nullptr,
                        s.terms && s.terms->size() == s.tol->size() ? s.terms : nullptr, s.term};
    budget.nonfinite_reference_undefined = finite_in;
    std::vector<double> got = s.got->to_vector();
    res.tensors.push_back(
        compare_tensor(s.name, s.got->dtype(), s.got->dims(), *s.ref, got, budget, undefined, compare_threads(opt)));
    got_values[s.name] = std::move(got);
  }
  // Weak check (docs/comparison.md): y is still checked sharply against the backend's own saved
  // statistics, with element-wise budgets only.
  const std::optional<std::string> weak = weak_check_reason(p, part, res.condition_number, depth);
  res.weak_check = weak.has_value();
  if (weak && got_values.count("y")) {
    auto saved = [&](const std::string& name) {
      const auto it = got_values.find(name);
      return it == got_values.end() ? std::vector<double>{} : it->second;
    };
    const SavedStatistics st{saved("mean"), saved(rms ? "mean_square" : "variance"), saved(rms ? "inv_rms" : "inv_std")};
    if (auto c = compare_with_saved_statistics(p, part, rin, got_values["y"], st, model.profile))
      res.tensors.push_back(std::move(*c));
  }
  if (opt.capture) {
    opt.capture->inputs = rin;
    opt.capture->reference = ref;
    opt.capture->got = got_values;
    opt.capture->produced = produced;
  }

  if (!opt.dump_dir.empty()) {
    namespace fs = std::filesystem;
    const fs::path dir = fs::path(opt.dump_dir) / dump_dir_name(res.descriptor);
    std::error_code ec;
    fs::create_directories(dir, ec);
    if (ec) throw Error(fmt::format("--dump: cannot create {}: {}", dir.string(), ec.message()));
    auto dump = [&](const std::string& name, const Tensor& t) {
      if (!t.empty()) write_npy((dir / (name + ".npy")).string(), t.dtype(), t.dims(), t.to_vector());
    };
    // x and dy from the reference's copy: in place, the backend has overwritten the buffers.
    auto dump_input = [&](const std::string& name, const std::vector<double>& v) {
      if (!v.empty()) write_npy((dir / (name + ".npy")).string(), p.dtype, p.dims, v);
    };
    dump_input("input_x", rin.batches.back());
    for (int k = 0; k + 1 < calls; ++k) dump_input(fmt::format("input_x_step{}", k + 1), rin.batches[k]);
    dump_input("input_dy", rin.dy);
    dump("input_gamma", in.gamma);
    dump("input_beta", in.beta);
    dump("input_running_mean", in.running_mean);
    dump("input_running_var", in.running_var);
    if (p.pass == Pass::backward_training) {
      if (part.subtract_mean) dump("input_saved_mean", mean);
      dump("input_saved_variance", variance);
      dump("input_saved_inv_std", inv_std);
    }
    for (const Slot& s : slots) {
      if (s.ref->empty()) continue;
      write_npy((dir / ("reference_" + s.name + ".npy")).string(), DType::f64, s.got->dims(), *s.ref);
      if (produced & s.bit) dump("backend_" + s.name, *s.got);
    }
    std::ofstream(dir / "descriptor.txt") << res.descriptor << "\n";
  }

  std::vector<std::string> failed;
  for (const auto& t : res.tensors)
    if (!t.pass)
      failed.push_back(t.over_tolerance == 0 && t.nonfinite_mismatch == 0
                           ? fmt::format("{} ({:.3g}× the probabilistic budget, over the factor {} random rounding "
                                         "allows)",
                                         t.name, t.worst_ratio_prob, kProbabilisticFailFactor)
                           : t.name);
  if (!missing.empty() || !failed.empty()) {
    std::string reason;
    if (!failed.empty()) reason = fmt::format("mismatch in {}", fmt::join(failed, ", "));
    if (!missing.empty())
      reason += fmt::format("{}backend did not produce {}", reason.empty() ? "" : "; ", fmt::join(missing, ", "));
    if (!failed.empty()) {
      const CaseEvidence ev{p, part, rin, ref, tol, std::move(got_values), res.tensors, u_arith, depth, &tol_prob};
      res.suspected_cause = suspected_cause(ev);
    } else {
      res.suspected_cause = "the backend did not write an output it must produce";
    }
    return finish(Verdict::fail, reason);
  }
  if (!tol.certifiable) return finish(Verdict::not_certifiable, tol.not_certifiable_reason);
  std::string note;
  for (const auto& t : res.tensors) {
    if (t.undefined == 0) continue;
    if (t.name == "running_var" && ref.running_var_undefined)
      note += single_value_note(backend, p, got_values["running_var"]);
    else
      note += fmt::format("{} of {} not compared: the exact value is undefined (0/0 or 1/0: eps = 0 on a "
                          "zero-variance set); ",
                          t.undefined, t.name);
  }
  if (weak) note += *weak + "; ";
  if (!note.empty()) note.resize(note.size() - 2);  // drop the trailing "; "
  std::vector<std::string> warned;
  for (const auto& t : res.tensors)
    if (t.warn) warned.push_back(fmt::format("{} ({:.3g}× the probabilistic budget, λ = {:.2f})", t.name,
                                             t.worst_ratio_prob, tol_prob.lambda));
  if (!warned.empty())
    return finish(Verdict::warn, fmt::format("within the worst-case budget, above the probabilistic one: {}{}{}",
                                             fmt::join(warned, ", "), note.empty() ? "" : "; ", note));
  return finish(Verdict::pass, note);
}

}  // namespace normcheck
