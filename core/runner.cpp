#include "normcheck/runner.hpp"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <optional>

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

ReferenceInputs reference_inputs(const Problem& p, const GeneratedInputs& in, int threads) {
  const RunArgs args = make_run_args(p);
  ReferenceInputs rin;
  for (const auto& b : in.batches) rin.batches.push_back(b.to_vector(threads));
  rin.dy = in.dy.to_vector(threads);
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

namespace {

/// The backend's output buffers: the compared call writes them (training steps too, for the
/// running statistics and the saved ones). backward_training's saved statistics are inputs: the
/// exact ones, rounded once.
struct Outputs {
  Tensor y, dx, mean, variance, inv_std, dgamma, dbeta, running_mean, running_var;
};

Outputs make_outputs(const Problem& p, const Partition& part, const GeneratedInputs& in, const ReferenceResult& ref) {
  const DType sdt = stats_dtype(p.dtype);
  const auto sshape = stats_shape(p), ashape = affine_shape(p);
  Outputs o{{}, {}, Tensor(sdt, sshape), Tensor(sdt, sshape), Tensor(sdt, sshape), {}, {}, in.running_mean,
            in.running_var};
  if (!is_backward(p.pass)) {
    if (!p.inplace) o.y = Tensor(p.dtype, p.dims, p.layout);  // in place, y is written over x
    return o;
  }
  if (!p.inplace) o.dx = Tensor(p.dtype, p.dims, p.layout);  // in place, dx is written over dy
  if (p.affine) o.dgamma = Tensor(sdt, ashape);
  if (p.affine && part.has_beta) o.dbeta = Tensor(sdt, ashape);
  if (p.pass == Pass::backward_training) {
    const SetStats& st = ref.batch_stats.back();
    for (int64_t s = 0; s < part.num_sets; ++s) {
      o.mean.set(s, st.mean[s]);
      o.variance.set(s, st.variance[s]);
      o.inv_std.set(s, st.inv_std[s]);
    }
  }
  return o;
}

/// How the backend calls ended: the verdict and reason of the first that did not succeed, or
/// the outputs the compared call (and the last training step) produced.
struct CallsResult {
  std::optional<std::pair<Verdict, std::string>> stop;
  uint32_t produced = 0;
  double backend_seconds = 0;  ///< wall time inside backend.run, all calls
};

std::optional<std::pair<Verdict, std::string>> call_failure(const RunResult& rr, int k, int calls, Pass pass) {
  if (rr.ok) return std::nullopt;
  const std::string where = fmt::format("call {} of {} ({})", k + 1, calls, to_string(pass));
  if (rr.unsupported) return std::pair{Verdict::unsupported, "unsupported by backend: " + rr.message};
  switch (rr.fault) {
    case RunResult::Fault::input_modified: return std::pair{Verdict::fail, where + ": " + rr.message};
    case RunResult::Fault::crash: return std::pair{Verdict::crash, where + ": " + rr.message};
    case RunResult::Fault::timeout: return std::pair{Verdict::timeout, where + ": " + rr.message};
    case RunResult::Fault::none: break;
    default: return std::pair{Verdict::overrun, where + ": " + rr.message};
  }
  return std::pair{Verdict::error, "backend error on " + where + ": " + rr.message};
}

/// The training steps, then the compared call.
CallsResult run_calls(Backend& backend, const Problem& p, const Partition& part, RunArgs args, GeneratedInputs& in,
                      const ReferenceInputs& rin, Outputs& o) {
  const bool bn = p.op == Op::batch_norm;
  args.gamma = in.gamma.arg();
  args.beta = in.beta.arg();
  const int calls = static_cast<int>(in.batches.size());
  const int n_train = p.pass == Pass::forward_training ? calls
                      : p.pass == Pass::forward_inference ? calls - 1 : 0;
  CallsResult res;
  for (int k = 0; k < calls; ++k) {
    const bool training = k < n_train;
    args.pass = training ? Pass::forward_training : p.pass;
    if (training && p.cumulative_average) args.batch_weight = rin.weight_of_step(static_cast<size_t>(k));
    args.x = in.batches[k].arg();
    args.y = p.inplace ? args.x : o.y.arg();
    args.dy = in.dy.arg();
    args.dx = p.inplace && is_backward(args.pass) ? args.dy : o.dx.arg();
    args.dgamma = o.dgamma.arg();
    args.dbeta = o.dbeta.arg();
    const bool saved = args.pass == Pass::forward_training || args.pass == Pass::backward_training;
    args.mean = saved && part.subtract_mean ? o.mean.arg() : TensorArg{};
    args.variance = saved ? o.variance.arg() : TensorArg{};
    args.inv_std = saved ? o.inv_std.arg() : TensorArg{};
    const bool running = bn && args.pass != Pass::backward_training;  // RunArgs documents which
    args.running_mean = running ? o.running_mean.arg() : TensorArg{};
    args.running_var = running ? o.running_var.arg() : TensorArg{};
    const auto t0 = std::chrono::steady_clock::now();
    const RunResult rr = backend.run(args);
    res.backend_seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if ((res.stop = call_failure(rr, k, calls, args.pass))) return res;
    if (k == calls - 1 || (k == n_train - 1)) res.produced |= rr.produced;
  }
  return res;
}

/// --dump: the case's inputs, the reference and the backend's outputs as .npy under dir.
void dump_case(const std::filesystem::path& dir, const Problem& p, const Partition& part, const ReferenceInputs& rin,
               const GeneratedInputs& in, const Outputs& o, const std::vector<Slot>& slots, uint32_t produced,
               const std::string& descriptor) {
  namespace fs = std::filesystem;
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
  for (size_t k = 0; k + 1 < rin.batches.size(); ++k) dump_input(fmt::format("input_x_step{}", k + 1), rin.batches[k]);
  dump_input("input_dy", rin.dy);
  dump("input_gamma", in.gamma);
  dump("input_beta", in.beta);
  dump("input_running_mean", in.running_mean);
  dump("input_running_var", in.running_var);
  if (p.pass == Pass::backward_training) {
    if (part.subtract_mean) dump("input_saved_mean", o.mean);
    dump("input_saved_variance", o.variance);
    dump("input_saved_inv_std", o.inv_std);
  }
  for (const Slot& s : slots) {
    if (s.ref->empty()) continue;
    write_npy((dir / ("reference_" + s.name + ".npy")).string(), DType::f64, s.got->dims(), *s.ref);
    if (produced & s.bit) dump("backend_" + s.name, *s.got);
  }
  std::ofstream(dir / "descriptor.txt") << descriptor << "\n";
}

/// The case's budgets: the model of the backend's precision profile, worst case (the verdict)
/// and probabilistic (the WARN tier; docs/comparison.md). The per-element ones (y or dx) are
/// computed while comparing (ElementBudgets), not stored.
struct Budgets {
  BudgetModel worst, prob;
  double u_arith = 0, depth = 0;
  Tolerances tol, tol_prob;
  std::unique_ptr<ElementBudgets> element;
};

std::unique_ptr<Budgets> make_budgets(const Backend& backend, const Problem& p, const Partition& part,
                                      const ReferenceInputs& rin, const ReferenceResult& ref, const RunOptions& opt) {
  auto b = std::make_unique<Budgets>();
  b->worst.profile = backend.precision(p.op, p.dtype, p.layout);
  b->worst.threads = compare_threads(opt);
  b->worst.per_element = false;
  b->prob = b->worst;
  b->prob.probabilistic = true;
  b->u_arith = b->worst.profile.unit_roundoff(stats_dtype(p.dtype));  // of the reductions the budget assumes
  b->depth = b->worst.profile.depth(static_cast<double>(part.set_size), b->u_arith);
  b->tol = make_tolerances(p, part, rin, ref, b->worst);
  b->tol_prob = make_tolerances(p, part, rin, ref, b->prob);
  b->element = std::make_unique<ElementBudgets>(p, part, rin, ref, b->worst, &b->prob);
  return b;
}

/// The output slots of a case (Slot); the element-wise one (y or dx) has no tolerance arrays.
std::vector<Slot> output_slots(const Problem& p, const Partition& part, const ReferenceResult& ref, const Budgets& b,
                               Outputs& o, GeneratedInputs& in) {
  const bool fwd = !is_backward(p.pass), bn = p.op == Op::batch_norm, rms = p.op == Op::rms_norm;
  const Tolerances &tol = b.tol, &tp = b.tol_prob;
  // In place, the outputs are where the inputs were (the reference kept its own copy).
  Tensor& y_out = p.inplace ? in.batches.back() : o.y;
  Tensor& dx_out = p.inplace ? in.dy : o.dx;
  const bool track = bn && (p.pass == Pass::forward_training || (p.pass == Pass::forward_inference && p.steps > 0));
  using BT = BudgetTerm;
  return {
      {"y", kOutY, &y_out, &ref.y, nullptr, nullptr, fwd, BT::element_rounding},
      {"mean", kOutMean, &o.mean, &ref.mean, &tol.mean, &tp.mean, false, BT::reduction},
      {rms ? "mean_square" : "variance", kOutVariance, &o.variance, &ref.variance, &tol.variance, &tp.variance, false,
       BT::reduction},
      {rms ? "inv_rms" : "inv_std", kOutInvStd, &o.inv_std, &ref.inv_std, &tol.inv_std, &tp.inv_std, false,
       BT::inv_std},
      {"running_mean", kOutRunningMean, &o.running_mean, &ref.running_mean, &tol.running_mean, &tp.running_mean,
       track, BT::running_update},
      {"running_var", kOutRunningVar, &o.running_var, &ref.running_var, &tol.running_var, &tp.running_var, track,
       BT::running_update},
      {"dx", kOutDx, &dx_out, &ref.dx, nullptr, nullptr, !fwd, BT::reduction},
      {"dgamma", kOutDgamma, &o.dgamma, &ref.dgamma, &tol.dgamma, &tp.dgamma, !fwd && p.affine, BT::reduction},
      {"dbeta", kOutDbeta, &o.dbeta, &ref.dbeta, &tol.dbeta, &tp.dbeta, !fwd && p.affine && part.has_beta,
       BT::reduction},
  };
}

/// Compares every produced output; names the required ones the backend did not produce.
/// got_values receives the small tensors' values (and the element-wise one's when keep_element).
void compare_outputs(const std::vector<Slot>& slots, uint32_t produced, const ReferenceResult& ref,
                     const Budgets& b, bool finite_in, int threads, CaseResult& res,
                     std::vector<std::string>& missing, std::map<std::string, std::vector<double>>& got_values) {
  for (const Slot& s : slots) {
    if (s.ref->empty()) continue;
    if (!(produced & s.bit)) {
      if (s.required) missing.push_back(s.name);
      continue;
    }
    if (!s.tol) {  // the element-wise output: budgets on the fly, the backend's tensor read in place
      res.tensors.push_back(compare_tensor(s.name, *s.got, *s.ref, *b.element, finite_in, threads));
      continue;
    }
    const bool undefined = s.bit == kOutRunningVar && ref.running_var_undefined;
    TensorBudget budget{s.tol, s.tol_prob->size() == s.tol->size() ? s.tol_prob : nullptr, nullptr, s.term};
    budget.nonfinite_reference_undefined = finite_in;
    std::vector<double> got = s.got->to_vector();
    res.tensors.push_back(compare_tensor(s.name, s.got->dtype(), s.got->dims(), *s.ref, got, budget, undefined, threads));
    got_values[s.name] = std::move(got);
  }
}

/// The values of the element-wise output, for what needs them whole (the weak check, the
/// capture, the diagnosis of a failure).
void add_element_values(const std::vector<Slot>& slots, uint32_t produced,
                        std::map<std::string, std::vector<double>>& got_values) {
  for (const Slot& s : slots)
    if (!s.tol && !s.ref->empty() && (produced & s.bit) && !got_values.count(s.name))
      got_values[s.name] = s.got->to_vector();
}

/// FAIL: the tensors over budget (or over the probabilistic factor) and the outputs not produced,
/// with the suspected cause. The diagnosis needs the element budgets as arrays: built here only.
std::string failure_reason(const CaseResult& res, const std::vector<std::string>& missing) {
  std::vector<std::string> failed;
  for (const auto& t : res.tensors)
    if (!t.pass)
      failed.push_back(t.over_tolerance == 0 && t.nonfinite_mismatch == 0
                           ? fmt::format("{} ({:.3g}× the probabilistic budget, over the factor {} random rounding "
                                         "allows)",
                                         t.name, t.worst_ratio_prob, kProbabilisticFailFactor)
                           : t.name);
  std::string reason;
  if (!failed.empty()) reason = fmt::format("mismatch in {}", fmt::join(failed, ", "));
  if (!missing.empty())
    reason += fmt::format("{}backend did not produce {}", reason.empty() ? "" : "; ", fmt::join(missing, ", "));
  return reason;
}

bool any_failed(const CaseResult& res) {
  for (const auto& t : res.tensors)
    if (!t.pass) return true;
  return false;
}

/// The note of a passing case: elements not compared, and the weak check.
std::string pass_note(const Backend& backend, const Problem& p, const ReferenceResult& ref, const CaseResult& res,
                      const std::map<std::string, std::vector<double>>& got_values,
                      const std::optional<std::string>& weak) {
  std::string note;
  for (const auto& t : res.tensors) {
    if (t.undefined == 0) continue;
    if (t.name == "running_var" && ref.running_var_undefined)
      note += single_value_note(backend, p, got_values.at("running_var"));
    else
      note += fmt::format("{} of {} not compared: the exact value is undefined (0/0 or 1/0: eps = 0 on a "
                          "zero-variance set); ",
                          t.undefined, t.name);
  }
  if (weak) note += *weak + "; ";
  if (!note.empty()) note.resize(note.size() - 2);  // drop the trailing "; "
  return note;
}

/// WARN (some tensor above the probabilistic budget) or PASS, with the note.
std::pair<Verdict, std::string> pass_or_warn(const CaseResult& res, double lambda, const std::string& note) {
  std::vector<std::string> warned;
  for (const auto& t : res.tensors)
    if (t.warn)
      warned.push_back(fmt::format("{} ({:.3g}× the probabilistic budget, λ = {:.2f})", t.name, t.worst_ratio_prob,
                                   lambda));
  if (warned.empty()) return {Verdict::pass, note};
  return {Verdict::warn, fmt::format("within the worst-case budget, above the probabilistic one: {}{}{}",
                                     fmt::join(warned, ", "), note.empty() ? "" : "; ", note)};
}

}  // namespace

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
  const RunArgs args = make_run_args(p);
  if (auto why = backend.unsupported_reason(args, p.layout)) return finish(Verdict::unsupported, *why);

  GeneratedInputs in = generate_inputs(p, part, opt.threads);
  apply_inputs(p, opt.inputs, in);  // tensors from .npy files, where the descriptor names them
  res.input_options = input_options(p, opt.inputs);
  if (opt.transform_inputs) opt.transform_inputs(in);

  // The reference sees exactly what the backend sees.
  const ReferenceInputs rin = reference_inputs(p, in, opt.threads);
  const ReferenceResult ref = opt.reference == ReferenceKind::fast ? fast_reference_run(p, part, rin, opt.threads)
                                                                  : reference_run(p, part, rin, opt.reference_bits);
  res.condition_number = condition_number(ref);
  const std::unique_ptr<Budgets> b = make_budgets(backend, p, part, rin, ref, opt);

  Outputs o = make_outputs(p, part, in, ref);
  const CallsResult calls = run_calls(backend, p, part, args, in, rin, o);
  res.backend_seconds = calls.backend_seconds;
  if (calls.stop) return finish(calls.stop->first, calls.stop->second);

  const std::vector<Slot> slots = output_slots(p, part, ref, *b, o, in);
  std::vector<std::string> missing;
  std::map<std::string, std::vector<double>> got_values;
  compare_outputs(slots, calls.produced, ref, *b, inputs_finite(rin), compare_threads(opt), res, missing, got_values);
  // Weak check (docs/comparison.md): y is still checked sharply against the backend's own saved
  // statistics, with element-wise budgets only.
  const std::optional<std::string> weak = weak_check_reason(p, part, res.condition_number, b->depth);
  res.weak_check = weak.has_value();
  const bool y_produced = !is_backward(p.pass) && (calls.produced & kOutY);
  if (weak && y_produced) {
    auto saved = [&](const std::string& name) {
      const auto it = got_values.find(name);
      return it == got_values.end() ? std::vector<double>{} : it->second;
    };
    const bool rms = p.op == Op::rms_norm;
    const SavedStatistics st{saved("mean"), saved(rms ? "mean_square" : "variance"), saved(rms ? "inv_rms" : "inv_std")};
    const Tensor& y = *std::find_if(slots.begin(), slots.end(), [](const Slot& s) { return s.bit == kOutY; })->got;
    if (auto c = compare_with_saved_statistics(p, part, rin, y, st, b->worst.profile, compare_threads(opt)))
      res.tensors.push_back(std::move(*c));
  }
  if (opt.capture || any_failed(res)) add_element_values(slots, calls.produced, got_values);
  if (opt.capture) *opt.capture = CaseCapture{rin, ref, got_values, calls.produced};
  if (!opt.dump_dir.empty())
    dump_case(std::filesystem::path(opt.dump_dir) / dump_dir_name(res.descriptor), p, part, rin, in, o, slots,
              calls.produced, res.descriptor);

  if (!missing.empty() || any_failed(res)) {
    const std::string reason = failure_reason(res, missing);
    if (!any_failed(res)) {
      res.suspected_cause = "the backend did not write an output it must produce";
      return finish(Verdict::fail, reason);
    }
    // The diagnosis reads the element budgets as arrays: materialised for a failing case only.
    BudgetModel worst = b->worst, prob = b->prob;
    worst.per_element = prob.per_element = true;
    const Tolerances tol = make_tolerances(p, part, rin, ref, worst);
    const Tolerances tol_prob = make_tolerances(p, part, rin, ref, prob);
    const CaseEvidence ev{p, part, rin, ref, tol, std::move(got_values), res.tensors, b->u_arith, b->depth, &tol_prob};
    res.suspected_cause = suspected_cause(ev);
    return finish(Verdict::fail, reason);
  }
  if (!b->tol.certifiable) return finish(Verdict::not_certifiable, b->tol.not_certifiable_reason);
  const auto [verdict, why] = pass_or_warn(res, b->tol_prob.lambda, pass_note(backend, p, ref, res, got_values, weak));
  return finish(verdict, why);
}

}  // namespace normcheck
