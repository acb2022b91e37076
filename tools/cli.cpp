#include "cli.hpp"

#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <nlohmann/json.hpp>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <chrono>
#include <cerrno>
#include <cmath>
#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <algorithm>
#include <map>
#include <optional>
#include <regex>
#include <set>
#include <string_view>
#include <tuple>

#include "normcheck/bench.hpp"
#include "normcheck/data.hpp"
#include "normcheck/file_inputs.hpp"
#include "normcheck/interrupt.hpp"
#include "normcheck/metamorphic.hpp"
#include "normcheck/probes.hpp"
#include "plugin/plugin_backend.hpp"
#include "normcheck/report.hpp"
#include "normcheck/version.hpp"

namespace normcheck {
namespace {

/// SIGINT, SIGTERM, SIGHUP: the run stops at the next poll (within about a second), writes its
/// reports marked incomplete and exits 128 + n. A second signal ends the process at once.
extern "C" void on_interrupt_signal(int sig) {
  if (interrupted()) {
    std::signal(sig, SIG_DFL);
    std::raise(sig);
    return;
  }
  request_interrupt(sig);
}

/// Installs on_interrupt_signal for the signals a run honours; the destructor restores the
/// previous handlers.
class InterruptHandlers {
 public:
  InterruptHandlers() {
    for (size_t i = 0; i < kSignals.size(); ++i) previous_[i] = std::signal(kSignals[i], on_interrupt_signal);
  }
  ~InterruptHandlers() {
    for (size_t i = 0; i < kSignals.size(); ++i) std::signal(kSignals[i], previous_[i]);
  }
  InterruptHandlers(const InterruptHandlers&) = delete;
  InterruptHandlers& operator=(const InterruptHandlers&) = delete;

 private:
  static constexpr std::array<int, 3> kSignals = {SIGINT, SIGTERM, SIGHUP};
  std::array<void (*)(int), 3> previous_{};
};

std::string signal_name(int sig) {
  switch (sig) {
    case SIGINT: return "SIGINT";
    case SIGTERM: return "SIGTERM";
    case SIGHUP: return "SIGHUP";
    default: return fmt::format("signal {}", sig);
  }
}

std::string join(const std::vector<std::string>& v) { return fmt::format("{}", fmt::join(v, ", ")); }
template <class E, size_t N>
std::string join_enum(const E (&all)[N]) {
  std::vector<std::string> v;
  for (auto e : all) v.emplace_back(to_string(e));
  return join(v);
}
template <class V>
std::string join_names(const V& list) {
  std::vector<std::string> v;
  for (auto e : list) v.emplace_back(to_string(e));
  return join(v);
}

/// Colour on stdout (docs/cli.md "Output"): --color auto (the default) colours verdicts when
/// stdout is a terminal and NO_COLOR is unset or empty (https://no-color.org); always/never force it.
bool g_color = false;
/// Verbosity: -1 with --quiet, 0 by default, 1 with -v (a line per passing case), 2 with -vv
/// (every tensor's figures, passing ones too).
int g_verbosity = 0;

bool colour_wanted(const std::string& mode) {
  if (mode == "always") return true;
  if (mode == "never") return false;
  const char* no_color = std::getenv("NO_COLOR");
  return isatty(STDOUT_FILENO) && !(no_color && *no_color);
}

/// `text` in the SGR colour `sgr` ("31" red, …) when colour is on, else as is.
std::string paint(const std::string& text, std::string_view sgr) {
  return g_color ? fmt::format("\033[{}m{}\033[0m", sgr, text) : text;
}

std::string_view verdict_colour(Verdict v) {
  switch (v) {
    case Verdict::pass: return "32";
    case Verdict::warn: return "33";
    case Verdict::unsupported: return "2";
    case Verdict::not_certifiable: return "35";
    default: return "1;31";
  }
}

/// -k/--filter (docs/cli.md): a case is selected when its canonical descriptor contains one of
/// the expressions as a substring, or, for an expression written /RE/, when the ECMAScript
/// regular expression RE matches part of it (std::regex_search). Throws Error for a bad RE.
class CaseFilter {
 public:
  explicit CaseFilter(const std::vector<std::string>& exprs) : exprs_(exprs) {
    for (const auto& e : exprs) {
      if (e.empty()) throw Error("--filter: empty expression (give a substring of the descriptors, or /REGEX/)");
      if (e.size() >= 2 && e.front() == '/' && e.back() == '/') {
        try {
          regexes_.emplace_back(e.substr(1, e.size() - 2), std::regex::ECMAScript);
        } catch (const std::regex_error& err) {
          throw Error(fmt::format("--filter '{}': not a valid regular expression: {}", e, err.what()));
        }
      } else {
        substrings_.push_back(e);
      }
    }
  }
  bool active() const { return !exprs_.empty(); }
  bool matches(const std::string& descriptor) const {
    for (const auto& s : substrings_)
      if (descriptor.find(s) != std::string::npos) return true;
    for (const auto& r : regexes_)
      if (std::regex_search(descriptor, r)) return true;
    return false;
  }
  std::string text() const {
    std::vector<std::string> q;
    for (const auto& e : exprs_) q.push_back("'" + e + "'");
    return join(q);
  }

 private:
  std::vector<std::string> exprs_, substrings_;
  std::vector<std::regex> regexes_;
};

/// `normcheck list --json`: what `normcheck list` prints, as one JSON object on stdout.
nlohmann::json list_json(const BackendRegistry& registry) {
  using nlohmann::json;
  auto names = [](const auto& list) {
    std::vector<std::string> v;
    for (auto e : list) v.emplace_back(to_string(e));
    return v;
  };
  json j;
  j["schema"] = "normcheck-list/1";
  j["normcheck_version"] = kVersion;
  j["backends"] = json::array();
  for (const auto& e : registry.entries()) {
    auto b = e.factory();
    const Capabilities c = b->capabilities();
    json prec = {{"summation", to_string(c.precision.summation)}, {"rsqrt_error_u", c.precision.rsqrt_error}};
    if (c.precision.summation == Summation::blocked) prec["block"] = c.precision.block;
    if (c.precision.accumulation) prec["accumulation"] = to_string(*c.precision.accumulation);
    j["backends"].push_back({{"name", e.name}, {"version", b->version()}, {"description", b->description()},
                             {"ops", names(c.ops)}, {"passes", names(c.passes)}, {"dtypes", names(c.dtypes)},
                             {"layouts", names(c.layouts)}, {"precision", prec}, {"convention", c.convention},
                             {"notes", c.notes}});
  }
  j["suites"] = json::array();
  for (const auto& n : builtin_suite_names()) {
    const Suite s = load_suite(n);
    j["suites"].push_back({{"name", n}, {"cases", s.cases.size()}, {"throughput", s.throughput}, {"title", s.title}});
  }
  std::vector<std::string> ops, passes;
  for (auto o : kAllOps) ops.emplace_back(to_string(o));
  for (auto p : kAllPasses) passes.emplace_back(to_string(p));
  j["ops"] = ops;
  j["passes"] = passes;
  j["conventions"] = json::array();
  for (const auto& c : conventions()) {
    json cj = {{"name", c.name}, {"drives_running_stats", c.drives_running_stats()},
               {"saved_statistic", c.saved_statistic}};
    if (c.drives_running_stats()) {
      cj["momentum_meaning"] = c.momentum_meaning;
      cj["default_momentum"] = c.default_momentum;
      cj["running_var_unbiased"] = c.running_var_unbiased;
      cj["default_eps"] = std::isnan(c.default_eps) ? json(nullptr) : json(c.default_eps);
    }
    j["conventions"].push_back(cj);
  }
  return j;
}

int cmd_list(const BackendRegistry& registry) {
  fmt::print("normcheck {}\n\nbackends:\n", kVersion);
  for (const auto& e : registry.entries()) {
    auto b = e.factory();
    const Capabilities c = b->capabilities();
    fmt::print("  {:<10} {}\n             {}\n             ops: {}\n             passes: {}\n"
               "             dtypes: {}; layouts: {}\n",
               e.name, b->version(), b->description(), join_names(c.ops), join_names(c.passes),
               join_names(c.dtypes), join_names(c.layouts));
    fmt::print("             precision profile: {} sums{}{}; inverse sqrt error ρ = {}·u\n",
               to_string(c.precision.summation),
               c.precision.summation == Summation::blocked ? fmt::format(" over {} accumulators", c.precision.block) : "",
               c.precision.accumulation ? fmt::format(", {} accumulator", to_string(*c.precision.accumulation)) : "",
               format_number(c.precision.rsqrt_error));
    fmt::print("             running-statistics convention: {}\n",
               c.convention.empty() ? "none of its own (applies the one normcheck passes)" : c.convention);
    for (const auto& n : c.notes) fmt::print("             {}\n", n);
  }
  fmt::print("\nsuites:\n");
  for (const auto& n : builtin_suite_names()) {
    const Suite s = load_suite(n);
    fmt::print("  {:<18} {:>3} cases  {}{}\n", n, s.cases.size(), s.throughput ? "[throughput] " : "", s.title);
  }
  fmt::print("\nops: {}\npasses: {}\n\nconventions (conventions/conventions.json; --convention NAME, docs/conventions.md):\n",
             join_enum(kAllOps), join_enum(kAllPasses));
  for (const auto& c : conventions()) {
    if (c.drives_running_stats())
      fmt::print("  {:<13} {} momentum, default {}; running_var {}; BN eps {}; saves {}\n", c.name,
                 c.momentum_meaning, format_number(c.default_momentum), c.running_var_unbiased ? "unbiased" : "biased",
                 std::isnan(c.default_eps) ? "caller-set" : format_number(c.default_eps), c.saved_statistic);
    else
      fmt::print("  {:<13} no new/old-weight running statistics (not usable with --convention); saves {}\n", c.name,
                 c.saved_statistic);
  }
  return kExitPass;
}

/// -vv: every tensor's figures, passing ones too (the failing ones are in explain()).
std::string tensor_figures(const CaseResult& c) {
  std::string out;
  for (const auto& t : c.tensors)
    out += fmt::format("      {}: {} elements, max |err| {:.3g}, worst {:.3g}× tolerance at [{}]; max {:.3g} ulp{}\n",
                       t.name, t.numel, t.max_abs_err, t.worst_ratio, fmt::join(t.worst.coords, ","), t.max_ulp,
                       t.pass ? "" : " (over)");
  return out;
}

/// -v: one line for a passing case: the tensor closest to its tolerance and the case's time.
void print_pass_line(const CaseResult& c) {
  const TensorComparison* worst = nullptr;
  for (const auto& t : c.tensors)
    if (!worst || t.worst_ratio > worst->worst_ratio) worst = &t;
  fmt::print("{}  {}  ({}{:.3f} s)\n", paint("PASS", verdict_colour(Verdict::pass)), c.descriptor,
             worst ? fmt::format("worst: {} at {:.3g}× tolerance; ", worst->name, worst->worst_ratio) : "",
             c.seconds);
}

void print_case_outcome(const CaseResult& c, const std::string& backend) {
  if (!c.known_failure.empty() && is_failure(c.verdict)) {
    fmt::print("{} {} {}\n      known failure: {}\n      {}\n", paint("KNOWN", "33"), to_string(c.verdict),
               c.descriptor, c.known_failure, c.reason);
    return;
  }
  switch (c.verdict) {
    case Verdict::warn:
      fmt::print("{} {}\n      {}\n", paint(c.weak_check ? "WARN WEAK" : "WARN ", "33"), c.descriptor, c.reason);
      break;
    case Verdict::not_certifiable:
      fmt::print("{}  {}\n      {}\n", paint("NOT CERTIFIABLE", verdict_colour(c.verdict)), c.descriptor, c.reason);
      break;
    case Verdict::pass:
      if (!c.reason.empty())
        fmt::print("{}  {}\n      {}\n", paint(c.weak_check ? "WEAK" : "NOTE", "36"), c.descriptor, c.reason);
      else if (g_verbosity >= 1)
        print_pass_line(c);
      break;
    case Verdict::unsupported:
      fmt::print("{}  {}\n      {}\n", paint("UNSUPPORTED", verdict_colour(c.verdict)), c.descriptor, c.reason);
      break;
    case Verdict::fail:
    case Verdict::error:
    case Verdict::crash:
    case Verdict::timeout:
    case Verdict::overrun:
    case Verdict::nondeterministic:
      fmt::print("{} {}\n", paint(fmt::format("{:<5}", to_string(c.verdict)), verdict_colour(c.verdict)),
                 c.descriptor);
      if (!c.note.empty()) fmt::print("      expected: {}\n", c.note);
      fmt::print("      {}\n", c.reason);
      fmt::print("{}", explain(c));
      if (!c.suspected_cause.empty()) fmt::print("      suspected cause: {}\n", c.suspected_cause);
      fmt::print("      reproduce: {}\n", reproducer(backend, c.descriptor) + c.input_options);
      return;
  }
  if (g_verbosity >= 2) fmt::print("{}", tensor_figures(c));
}

void print_summary(const std::vector<CaseResult>& cases) {
  std::map<std::pair<int, int>, Tally> groups;
  for (const auto& c : cases)
    groups[{static_cast<int>(c.problem.op), static_cast<int>(c.problem.pass)}].add(c.verdict, c.weak_check);
  const char* row = "{:<14} {:<19} {:>5} {:>5} {:>5} {:>5} {:>5} {:>6} {:>5} {:>5}\n";
  fmt::print("\n");
  fmt::print(fmt::runtime(row), "op", "pass", "cases", "pass", "warn", "weak", "fail", "unsup", "error", "n/c");
  for (const auto& [k, t] : groups)
    fmt::print(fmt::runtime(row), to_string(static_cast<Op>(k.first)), to_string(static_cast<Pass>(k.second)),
               t.total(), t.pass, t.warn, t.weak, t.fail, t.unsupported, t.error, t.not_certifiable);
  const Tally t = tally(cases);
  fmt::print(fmt::runtime(row), "total", "", t.total(), t.pass, t.warn, t.weak, t.fail, t.unsupported, t.error,
             t.not_certifiable);
}

/// "I/N" → {I, N}; throws Error unless 0 ≤ I < N.
std::pair<int, int> parse_shard(const std::string& spec, const std::string& what) {
  const auto slash = spec.find('/');
  try {
    if (slash == std::string::npos) throw std::invalid_argument("no slash");
    size_t used = 0;
    const int i = std::stoi(spec.substr(0, slash), &used);
    if (used != slash) throw std::invalid_argument("index");
    const std::string count = spec.substr(slash + 1);
    const int n = std::stoi(count, &used);
    if (used != count.size() || n < 1 || n > kMaxShards || i < 0 || i >= n) throw std::invalid_argument("range");
    return {i, n};
  } catch (const std::exception&) {
    throw Error(fmt::format("{} '{}' must be I/N with 0 ≤ I < N ≤ {}, e.g. 0/4", what, spec, kMaxShards));
  }
}

/// The shard this process runs (docs/cli.md, docs/scale-out.md): --shard I/N; else GoogleTest's
/// GTEST_SHARD_INDEX/GTEST_TOTAL_SHARDS (touching GTEST_SHARD_STATUS_FILE, to say we shard);
/// else a SLURM job array's SLURM_ARRAY_TASK_ID − SLURM_ARRAY_TASK_MIN of SLURM_ARRAY_TASK_COUNT
/// (a contiguous --array); else a Kubernetes Indexed Job's JOB_COMPLETION_INDEX of
/// NORMCHECK_TOTAL_SHARDS (Kubernetes exports no total: the manifest sets it to .spec.completions).
/// `source` says which. Throws Error for a malformed or out-of-range value.
struct Shard {
  int index = 0, count = 1;
  std::string source;
};
Shard resolve_shard(const std::string& spec) {
  auto env = [](const char* name) -> std::string {
    const char* v = std::getenv(name);
    return v ? v : "";
  };
  Shard s;
  if (!spec.empty()) {
    std::tie(s.index, s.count) = parse_shard(spec, "--shard");
    s.source = "--shard";
  } else if (!env("GTEST_TOTAL_SHARDS").empty()) {
    std::tie(s.index, s.count) = parse_shard(env("GTEST_SHARD_INDEX") + "/" + env("GTEST_TOTAL_SHARDS"),
                                             "GTEST_SHARD_INDEX/GTEST_TOTAL_SHARDS");
    if (const char* status = std::getenv("GTEST_SHARD_STATUS_FILE")) std::ofstream{status};
    s.source = "GTEST_SHARD_INDEX";
  } else if (!env("SLURM_ARRAY_TASK_COUNT").empty()) {
    std::string id = env("SLURM_ARRAY_TASK_ID");
    const std::string min = env("SLURM_ARRAY_TASK_MIN");
    try {
      if (!min.empty()) id = std::to_string(std::stoll(id) - std::stoll(min));
    } catch (const std::exception&) {
      throw Error(fmt::format("SLURM_ARRAY_TASK_ID '{}' / SLURM_ARRAY_TASK_MIN '{}' are not integers", id, min));
    }
    std::tie(s.index, s.count) = parse_shard(id + "/" + env("SLURM_ARRAY_TASK_COUNT"),
                                             "SLURM_ARRAY_TASK_ID−SLURM_ARRAY_TASK_MIN/SLURM_ARRAY_TASK_COUNT "
                                             "(a contiguous --array, e.g. 0-3)");
    s.source = "SLURM_ARRAY_TASK_ID";
  } else if (!env("JOB_COMPLETION_INDEX").empty()) {
    if (env("NORMCHECK_TOTAL_SHARDS").empty())
      throw Error("JOB_COMPLETION_INDEX is set (a Kubernetes Indexed Job) but NORMCHECK_TOTAL_SHARDS is not: set it "
                  "to the Job's .spec.completions (docs/scale-out.md), or give --shard I/N");
    std::tie(s.index, s.count) = parse_shard(env("JOB_COMPLETION_INDEX") + "/" + env("NORMCHECK_TOTAL_SHARDS"),
                                             "JOB_COMPLETION_INDEX/NORMCHECK_TOTAL_SHARDS");
    s.source = "JOB_COMPLETION_INDEX";
  }
  return s;
}

/// -k/--filter, then the shard: what the run executes. Indices are renumbered over the selected
/// cases (so the shards and the plan digest of a filtered run are those of its selection).
/// Throws Error "no case matches" when a filter selects nothing.
template <class Plan>
void apply_filter(Plan& plan, const CaseFilter& filter) {
  if (!filter.active()) return;
  const size_t before = plan.size();
  plan.erase(std::remove_if(plan.begin(), plan.end(),
                            [&](const auto& pl) { return !filter.matches(to_descriptor(pl.problem)); }),
             plan.end());
  if (plan.empty())
    throw Error(fmt::format("no case matches --filter {} (of {} case{}; `--list-cases` without the filter lists them)",
                            filter.text(), before, before == 1 ? "" : "s"));
  for (size_t i = 0; i < plan.size(); ++i) plan[i].index = static_cast<int>(i);
}

/// Writes every report asked for (each complete or absent: write_text_file); returns the errors,
/// one line each, so that one failing path does not keep the others from being written.
std::vector<std::string> write_reports(const RunReport& report, const std::string& json_path,
                                       const std::string& junit_path, const std::string& md_path) {
  std::vector<std::string> errors;
  for (const auto& [path, write] :
       {std::pair{json_path, &write_json}, {junit_path, &write_junit}, {md_path, &write_markdown}}) {
    if (path.empty()) continue;
    try {
      write(report, path);
    } catch (const Error& e) {
      errors.emplace_back(e.what());
    }
  }
  return errors;
}

/// Writes the reports asked for, prints the summary and the final line; returns the exit code.
/// Failures listed in --expect do not fail the run; listed cases that pass are reported.
int finish_run(const RunReport& report, const std::string& json_path, const std::string& junit_path,
               const std::string& md_path) {
  print_summary(report.cases);
  const std::vector<std::string> write_errors = write_reports(report, json_path, junit_path, md_path);
  const Tally t = tally(report.cases);
  for (const auto& c : report.cases)
    if (!c.known_failure.empty() && !is_failure(c.verdict))
      fmt::print("FIXED {}\n      listed in {} as a known failure ({}) but it passes now: remove the line\n",
                 c.descriptor, report.expect_file, c.known_failure);
  const int unknown = t.fail + t.error - t.known;
  const bool ok = unknown == 0;
  // Every case unsupported or not certifiable verified nothing: not green (exit 5). A weak check
  // verified its sharp parts (saved statistics, y against them) and is not "nothing".
  const bool verified = t.pass > 0 || t.weak > 0;
  fmt::print("\n{}: {} of {} cases passed{}{}, {} failed, {} errors, {} unsupported{}{} ({:.2f} s){}\n",
             !ok ? paint("FAIL", "1;31") : verified ? paint("PASS", "32") : paint("NOTHING VERIFIED", "35"), t.pass,
             t.total(),
             t.warn ? fmt::format(" ({} with WARN)", t.warn) : "",
             t.weak ? fmt::format(", {} weak check{} (not passed: the budget cannot tell right from wrong there)",
                                  t.weak, t.weak > 1 ? "s" : "")
                    : "",
             t.fail,
             t.error, t.unsupported, t.not_certifiable ? fmt::format(", {} not certifiable", t.not_certifiable) : "",
             t.known ? fmt::format(", {} of the failures known (--expect)", t.known) : "", report.wall_seconds,
             report.complete ? "" : " — INCOMPLETE: " + report.incomplete_reason);
  for (const auto& e : write_errors) fmt::print(stderr, "normcheck: error: {}\n", e);
  if (!write_errors.empty()) return kExitUsage;
  if (!report.complete) return interrupt_signal() ? 128 + interrupt_signal() : kExitMismatch;
  if (!ok) return kExitMismatch;
  return verified ? kExitPass : kExitNothingVerified;
}

/// Exit codes (docs/cli.md): 0 every shard present and complete and every case passed; 1 a FAIL
/// or ERROR, or the merged report incomplete (a shard missing or interrupted); 2 unreadable
/// input, not shards of one run, a report that cannot be written.
int cmd_merge(const std::vector<std::string>& inputs, const std::string& json_path,
              const std::string& junit_path, const std::string& md_path) {
  std::vector<RunReport> parts;
  for (const auto& in : inputs) parts.push_back(read_json(in));
  RunReport merged = merge_reports(parts, inputs);
  if (!merged.complete)
    fmt::print(stderr, "normcheck merge: incomplete: {}; the merged report is marked incomplete\n",
               merged.incomplete_reason);
  merged.command = "normcheck merge " + join(inputs);
  fmt::print("normcheck merge: {} reports, {} cases\n", parts.size(), merged.cases.size());
  return finish_run(merged, json_path, junit_path, md_path);
}

/// Before anything runs (exit 2 rather than after a long run): every report path writable,
/// no two outputs the same file, --dump a directory (created), none of them one of `inputs`;
/// reports earlier runs left at these paths are removed (prepare_output_path). Throws Error.
void prepare_outputs(const std::vector<std::pair<std::string, std::string>>& reports, const std::string& dump_dir,
                     const std::vector<std::string>& inputs = {}) {
  namespace fs = std::filesystem;
  std::map<fs::path, std::string> taken;  // canonical path → the flag that names it
  auto claim = [&](const std::string& path, const std::string& flag) {
    std::error_code ec;
    if (fs::exists(path, ec) && !fs::is_regular_file(path, ec) && !fs::is_directory(path, ec)) return;  // a device
    const fs::path key = fs::weakly_canonical(fs::absolute(path), ec);
    if (auto [it, fresh] = taken.emplace(key, flag); !fresh)
      throw Error(fmt::format("{} and {} name the same file {}: give each its own path", it->second, flag, path));
  };
  std::set<std::string> seen_inputs;  // an input given twice is merge's "given twice", not this error
  for (const auto& in : inputs)
    if (seen_inputs.insert(in).second) claim(in, "input " + in);
  for (const auto& [flag, path] : reports)
    if (!path.empty()) claim(path, flag);
  if (!dump_dir.empty()) {
    claim(dump_dir, "--dump");
    std::error_code ec;
    if (fs::exists(dump_dir, ec) && !fs::is_directory(dump_dir, ec))
      throw Error(fmt::format("--dump {}: exists and is not a directory", dump_dir));
    fs::create_directories(dump_dir, ec);
    if (ec) throw Error(fmt::format("--dump {}: cannot create the directory: {}", dump_dir, ec.message()));
  }
  for (const auto& [flag, path] : reports) prepare_output_path(path, flag);
}

/// A case to run, with its suite line's note and its position in the whole run.
struct Planned {
  Problem problem;
  std::string note;
  int index;
  std::string suite;
};

/// Resolves --suite and --case (and --dtype) into cases before anything runs: a typo costs no
/// time. `label` gets "smoke+edge", "cases", … Throws Error.
std::vector<Planned> plan_cases(const std::vector<std::string>& suites, const std::vector<std::string>& cases,
                                const std::string& dtype_override, std::string& label) {
  if (suites.empty() && cases.empty())
    throw Error("nothing to run: give --suite NAME (e.g. --suite edge) or --case DESCRIPTOR");
  std::vector<Planned> plan;
  label.clear();
  for (const auto& s : suites) {
    const Suite suite = load_suite(s);
    label += (label.empty() ? "" : "+") + suite.name;
    for (const auto& c : suite.cases)
      plan.push_back({parse_descriptor(c.descriptor), c.note, static_cast<int>(plan.size()), suite.name});
  }
  for (const auto& c : cases) plan.push_back({parse_descriptor(c), "", static_cast<int>(plan.size()), "cases"});
  if (!cases.empty()) label += label.empty() ? "cases" : "+cases";
  if (!dtype_override.empty()) {
    const DType t = parse_dtype(dtype_override);
    for (auto& pl : plan) {
      pl.problem.dtype = t;
      validate(pl.problem);
    }
  }
  return plan;
}

/// run_case, except that a case the machine has not the memory for (memory_refusal) or that
/// runs out of memory is that case's ERROR, so the other cases and the reports survive it.
/// Interrupted passes through.
CaseResult run_planned(Backend& backend, const Problem& p, const RunOptions& opt) {
  const int bits = opt.reference == ReferenceKind::fast ? 0 : opt.reference_bits;  // 0: the fast reference
  std::string refusal = memory_refusal(p, bits);
  if (refusal.empty()) {
    try {
      return run_case(backend, p, opt);
    } catch (const std::bad_alloc&) {
      refusal = fmt::format("ran out of memory (std::bad_alloc); the estimate was {:.2f} GiB",
                            memory_estimate_bytes(p, bits) / (1024.0 * 1024 * 1024));
    }
  }
  CaseResult c;
  c.problem = p;
  c.descriptor = to_descriptor(p);
  c.verdict = Verdict::error;
  c.reason = refusal;
  return c;
}

/// A built-in backend by name, else a plugin (a path, or a name on NORMCHECK_PLUGIN_PATH).
/// Throws Error naming the known backends.
std::unique_ptr<Backend> open_backend(const BackendRegistry& registry, const std::string& name, double timeout,
                                      bool isolate) {
  std::unique_ptr<Backend> backend;
  if (!looks_like_plugin(name)) {
    for (const auto& e : registry.entries())
      if (e.name == name) backend = e.factory();
  }
  if (!backend) backend = load_plugin(name, timeout, isolate);
  if (!backend) backend = registry.create(name);  // throws: unknown backend, known names
  return backend;
}

/// --convention: every batch_norm case expects `name`'s running statistics (or the backend's
/// declared convention for "native"). A momentum left at the old convention's default takes the
/// new one's. Throws Error for an unknown or unusable convention.
void apply_convention(std::vector<Planned>& plan, const std::string& name, const Backend& backend) {
  if (name.empty()) return;
  std::string conv = name;
  if (name == "native") {
    conv = backend.capabilities().convention;
    if (conv.empty())
      throw Error(fmt::format("--convention native: backend {} declares no native convention (it follows the one "
                              "normcheck passes); give a name from `normcheck list`",
                              backend.name()));
  }
  const Convention& c = running_stats_convention(conv);
  for (auto& pl : plan) {
    if (pl.problem.op != Op::batch_norm) continue;
    const bool default_momentum = pl.problem.momentum == find_convention(pl.problem.convention).default_momentum;
    pl.problem.convention = c.name;
    if (default_momentum) pl.problem.momentum = c.default_momentum;
    validate(pl.problem);
  }
}

std::string command_line(int argc, char** argv) {
  std::string cmd;
  for (int i = 0; i < argc; ++i) cmd += (i ? " " : "") + std::string(argv[i]);
  return cmd;
}

/// The first Python that imports matplotlib: $NORMCHECK_PYTHON, then Debian's /usr/bin/python3,
/// then python3 on PATH (which may be a separate build without Debian's modules).
std::string find_python() {
  std::vector<std::string> candidates;
  if (const char* env = std::getenv("NORMCHECK_PYTHON")) candidates.emplace_back(env);
  candidates.insert(candidates.end(), {"/usr/bin/python3", "python3"});
  for (const auto& py : candidates) {
    const std::string probe = fmt::format("'{}' -c 'import matplotlib' >/dev/null 2>&1", py);
    if (std::system(probe.c_str()) == 0) return py;
  }
  throw Error("normcheck report needs a Python with matplotlib (tried $NORMCHECK_PYTHON, /usr/bin/python3, "
              "python3); install python3-matplotlib (tools/setup.sh)");
}

/// reports/build_report.py next to an installed binary (PREFIX/share/normcheck/reports), else
/// in the source tree this binary was built from.
std::string find_report_script() {
  namespace fs = std::filesystem;
  std::error_code ec;
  const fs::path exe = fs::read_symlink("/proc/self/exe", ec);
  std::vector<fs::path> candidates;
  if (!ec) candidates.push_back(exe.parent_path().parent_path() / NORMCHECK_INSTALL_DATADIR / "normcheck/reports/build_report.py");
  candidates.push_back(fs::path(NORMCHECK_SOURCE_DIR) / "reports/build_report.py");
  for (const auto& c : candidates)
    if (fs::exists(c, ec)) return c.string();
  throw Error("cannot find reports/build_report.py (looked next to the binary and in " NORMCHECK_SOURCE_DIR ")");
}

int cmd_report(const std::vector<std::string>& inputs, const std::string& dir, const std::string& title) {
  const std::string py = find_python(), script = find_report_script();
  std::vector<std::string> args = {py, script, "-o", dir};
  if (!title.empty()) args.insert(args.end(), {"--title", title});
  args.insert(args.end(), inputs.begin(), inputs.end());
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  std::fflush(stdout);
  const pid_t pid = fork();
  if (pid < 0) throw Error("normcheck report: fork failed");
  if (pid == 0) {
    execvp(argv[0], argv.data());
    std::_Exit(127);
  }
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (WIFEXITED(status)) return WEXITSTATUS(status) == 127 ? kExitUsage : WEXITSTATUS(status);
  fmt::print(stderr, "normcheck report: {} died of signal {}\n", script, WTERMSIG(status));
  return kExitInternal;
}

int cmd_metamorphic(Backend& b, const std::string& label, const std::string& suite,
                    const std::vector<Planned>& plan, const std::string& json_path) {
  fmt::print("normcheck {} metamorphic: backend {} ({}), {}: {} case{}\n", kVersion, label, b.version(), suite,
             plan.size(), plan.size() == 1 ? "" : "s");
  std::map<std::string, std::array<int, 3>> counts;  // relation → held, violated, skipped
  nlohmann::json results = nlohmann::json::array();
  int violated = 0, faults = 0;
  for (const auto& pl : plan) {
    for (const auto& r : check_relations(b, pl.problem)) {
      results.push_back({{"relation", r.relation}, {"descriptor", r.descriptor}, {"holds", r.holds},
                         {"skipped", r.skipped}, {"worst_ratio", r.worst_ratio}, {"detail", r.detail}});
      if (!r.fault.empty()) {  // the backend crashed, hung, overran or failed: an error, not a skip
        results.back()["fault"] = r.fault;
        ++faults;
        fmt::print("{} {} {}\n      {}\n", r.fault, r.relation, r.descriptor, r.detail);
        continue;
      }
      auto& c = counts[r.relation];
      ++c[r.skipped ? 2 : r.holds ? 0 : 1];
      if (r.skipped || r.holds) continue;
      ++violated;
      fmt::print("VIOLATED {} {}\n      {:.3g}× the allowance: {}\n      reproduce: normcheck metamorphic --backend {} "
                 "--case {}\n",
                 r.relation, r.descriptor, r.worst_ratio, r.detail, label, r.descriptor);
    }
  }
  fmt::print("\n{:<12} {:>5} {:>8} {:>7}\n", "relation", "held", "violated", "skipped");
  for (const auto& [rel, c] : counts) fmt::print("{:<12} {:>5} {:>8} {:>7}\n", rel, c[0], c[1], c[2]);
  fmt::print("\n{}: {} relation check{} violated{}\n", violated || faults ? "FAIL" : "PASS", violated,
             violated == 1 ? "" : "s",
             faults ? fmt::format(", {} not checked: the backend failed (CRASH, TIMEOUT, OVERRUN or ERROR)", faults) : "");
  if (!json_path.empty()) {
    nlohmann::json j;
    j["schema"] = "normcheck-metamorphic/1";
    j["normcheck_version"] = kVersion;
    j["backend"] = {{"name", label}, {"id", b.name()}, {"version", b.version()}};
    j["suite"] = suite;
    j["results"] = results;
    write_text_file(json_path, j.dump(2) + "\n");
  }
  return violated || faults ? kExitMismatch : kExitPass;
}

int cmd_diagnose(Backend& b, const std::string& label, const std::string& json_path) {
  fmt::print("normcheck {} diagnose: backend {} ({})\n\n", kVersion, label, b.version());
  std::fflush(stdout);
  const std::vector<ProbeResult> probes = run_probes(b);
  size_t w = 5;
  for (const auto& p : probes) w = std::max(w, p.point.size());
  for (const auto& p : probes) {
    fmt::print("{:<{}}  {}\n{:<{}}  {}\n", p.point, w, p.finding, "", w, p.evidence);
  }
  int determined = 0;
  for (const auto& p : probes) determined += p.determined;
  fmt::print("\n{} of {} points determined\n", determined, probes.size());
  if (determined == 0)  // e.g. every probe case unsupported: nothing was learnt, so not green
    fmt::print("NOTHING DETERMINED: the backend ran none of the probe cases (the reasons are above)\n");
  if (!json_path.empty()) {
    nlohmann::json j;
    j["schema"] = "normcheck-diagnose/1";
    j["normcheck_version"] = kVersion;
    j["backend"] = {{"name", label}, {"id", b.name()}, {"version", b.version()}};
    j["probes"] = nlohmann::json::array();
    for (const auto& p : probes)
      j["probes"].push_back({{"point", p.point}, {"finding", p.finding}, {"evidence", p.evidence},
                             {"determined", p.determined}});
    write_text_file(json_path, j.dump(2) + "\n");
  }
  return determined > 0 ? kExitPass : kExitNothingVerified;
}

int cmd_bench(const BackendRegistry& registry, const std::string& backend_name, const std::vector<Planned>& plan,
              BenchOptions opt) {
  // Plugins run in process: through the worker, bench would time the copies and the round trip too (docs/bench.md).
  auto backend = open_backend(registry, backend_name, 0, false);
  prepare_outputs({{"--json", opt.json_path}}, "");
  std::vector<BenchCase> cases;
  for (const auto& pl : plan) cases.push_back({pl.problem, pl.suite});
  fmt::print("normcheck {} bench: backend {} ({}), {}: {} case{}, {} cache\n", kVersion, backend_name,
             backend->version(), opt.suite_label, cases.size(), cases.size() == 1 ? "" : "s",
             opt.cold_cache ? "cold" : "warm");
  return run_bench(*backend, cases, opt);
}

/// The main-command options each subcommand takes; any other given is an error (exit 2,
/// docs/cli.md), never silently ignored. A correctness run (no subcommand) takes all of them.
const std::map<std::string, std::vector<std::string>>& options_of_subcommands() {
  static const std::map<std::string, std::vector<std::string>> m = {
      {"bench", {"--backend", "--suite", "--case", "--dtype", "--json", "--filter", "--list-cases"}},
      {"diagnose", {"--backend", "--json", "--timeout", "--in-process", "--color"}},
      {"metamorphic",
       {"--backend", "--suite", "--case", "--dtype", "--json", "--timeout", "--in-process", "--filter", "--list-cases",
        "--color"}},
      {"list", {}},
      {"merge", {"--color"}},
      {"report", {}},
  };
  return m;
}

/// The footer of a subcommand's --help: the main options it takes (they are defined once, above it).
std::string applicable_options_text(const std::string& sub) {
  const auto& opts = options_of_subcommands().at(sub);
  return fmt::format("Options of the main command that `normcheck {}` takes (before or after the subcommand): {}; "
                     "see `normcheck --help`\n",
                     sub, join(opts));
}

/// Throws Error for a main option given to a subcommand it does not apply to.
void check_options_apply(const CLI::App& app, const std::string& sub) {
  if (sub.empty()) return;
  const auto& allowed = options_of_subcommands().at(sub);
  for (const CLI::Option* o : app.get_options()) {
    if (o->count() == 0) continue;
    const std::string name = o->get_name();
    if (name == "--help" || name == "--version") continue;
    if (std::find(allowed.begin(), allowed.end(), name) == allowed.end())
      throw Error(fmt::format("{} does not apply to `normcheck {}` (it takes {})", name, sub,
                              allowed.empty() ? std::string("none of the main options") : join(allowed)));
  }
}

/// --expect FILE exists and is a file (else load_suite would call it an unknown suite). Throws Error.
void check_expect_file(const std::string& expect_path) {
  namespace fs = std::filesystem;
  if (expect_path.empty()) return;
  std::error_code ec;
  if (!fs::exists(expect_path, ec)) throw Error(fmt::format("--expect {}: expect file not found", expect_path));
  if (fs::is_directory(expect_path, ec))
    throw Error(fmt::format("--expect {}: is a directory, not an expect file", expect_path));
}

/// Values checked before anything runs, each naming its option. Throws Error.
void check_values(double timeout, int repeat, int verbose, bool quiet) {
  if (!(timeout > 0) || !std::isfinite(timeout))
    throw Error(fmt::format("--timeout {} must be a number of seconds > 0", format_number(timeout)));
  if (repeat < 1 || repeat > 1000) throw Error(fmt::format("--repeat {} must be between 1 and 1000", repeat));
  if (verbose > 0 && quiet) throw Error("--verbose and --quiet contradict each other: give one");
}

/// --list-cases: the canonical descriptors, one per line; exit 0.
template <class Plan>
int print_cases(const Plan& plan) {
  for (const auto& pl : plan) fmt::print("{}\n", to_descriptor(pl.problem));
  return kExitPass;
}

/// Bits of an output value as captured (every dtype widens exactly to double, so equal bits in
/// double mean equal bits in the backend's dtype; −0 and +0 and NaN payloads are told apart).
uint64_t bits_of(double v) {
  uint64_t b;
  std::memcpy(&b, &v, sizeof b);
  return b;
}

/// The first element (in the order of the report's tensors, logical row-major) whose bits differ
/// between two captures of one case: "y at [0,2]: 0x1.8p-1 in run 1, 0x1.80002p-1 in run 2".
std::optional<std::string> first_difference(const CaseResult& c, const CaseCapture& a, const CaseCapture& b,
                                            int run) {
  for (const auto& t : c.tensors) {
    const auto ia = a.got.find(t.name), ib = b.got.find(t.name);
    if (ia == a.got.end()) continue;
    if (ib == b.got.end() || ib->second.size() != ia->second.size())
      return fmt::format("{} was produced in run 1 but not in run {}", t.name, run);
    for (size_t k = 0; k < ia->second.size(); ++k) {
      if (bits_of(ia->second[k]) == bits_of(ib->second[k])) continue;
      std::vector<int64_t> coords(t.dims.size());
      int64_t rest = static_cast<int64_t>(k);
      for (size_t d = t.dims.size(); d-- > 0;) {
        coords[d] = rest % t.dims[d];
        rest /= t.dims[d];
      }
      return fmt::format("{} at [{}]: {} ({:a}) in run 1, {} ({:a}) in run {}", t.name, fmt::join(coords, ","),
                         format_number(ia->second[k]), ia->second[k], format_number(ib->second[k]), ib->second[k], run);
    }
  }
  return std::nullopt;
}

/// --repeat N (docs/cli.md "Determinism"): the case N times on identical inputs (the descriptor
/// generates them bit for bit). The first run's verdict stands unless a later run's outputs
/// differ bitwise from the first's: then the case is NONDETERMINISTIC (a failure), naming the
/// first differing element. A later run that faults (ERROR, CRASH, …) gives that verdict.
CaseResult run_repeated(Backend& backend, const Problem& p, RunOptions opt, int repeat) {
  CaseCapture first;
  opt.capture = &first;
  CaseResult c = run_planned(backend, p, opt);
  if (c.verdict != Verdict::pass && c.verdict != Verdict::warn && c.verdict != Verdict::fail &&
      c.verdict != Verdict::not_certifiable)
    return c;  // unsupported or a fault: nothing to compare
  opt.dump_dir.clear();
  for (int r = 2; r <= repeat; ++r) {
    CaseCapture again;
    opt.capture = &again;
    const CaseResult cr = run_planned(backend, p, opt);
    if (is_failure(cr.verdict) && cr.verdict != Verdict::fail) {
      c.verdict = cr.verdict;
      c.reason = fmt::format("run {} of {} (--repeat): {}", r, repeat, cr.reason);
      return c;
    }
    if (auto diff = first_difference(c, first, again, r)) {
      c.verdict = Verdict::nondeterministic;
      c.reason = fmt::format("run {} of {} on identical inputs differs bitwise from run 1: {}", r, repeat, *diff);
      c.seconds += cr.seconds;
      c.backend_seconds += cr.backend_seconds;
      return c;
    }
    c.seconds += cr.seconds;
    c.backend_seconds += cr.backend_seconds;
  }
  return c;
}

}  // namespace

/// The main command's options (normcheck --help).
struct MainOptions {
  std::string backend_name = "naive";
  std::vector<std::string> suites, cases;
  std::vector<std::string> input_specs;  // --input NAME=FILE.npy
  std::string dtype_override, json_path, junit_path, md_path, dump_dir, expect_path, shard_spec;
  int reference_bits = 128;
  int threads = 0;
  std::string reference_kind = "fast";
  double timeout = 60;
  bool quiet = false, in_process = false;
  std::string convention_override;
  std::vector<std::string> filters;
  bool list_cases = false;
  int verbose = 0, repeat = 1;
  std::string color_mode = "auto";
};

void add_main_options(CLI::App& app, MainOptions& o) {
  app.add_option("--backend,-b", o.backend_name,
                 "backend to test: a built-in name (see `normcheck list`), a plugin PATH.so, or a plugin "
                 "name found on NORMCHECK_PLUGIN_PATH")
      ->capture_default_str();
  app.add_option("--timeout", o.timeout, "plugin backends: seconds one call may take before it is killed")
      ->capture_default_str();
  app.add_flag("--in-process", o.in_process,
               "plugin backends: call the plugin in normcheck's own process (to debug it under gdb); "
               "a crash then ends normcheck");
  app.add_option("--suite,-s", o.suites, "built-in suite name or path to a suite file (repeatable)");
  app.add_option("--case,-c", o.cases, "one case descriptor (repeatable); see docs/descriptor.md");
  app.add_option("--dtype", o.dtype_override, "run every case in this dtype instead (f32, f64, f16, bf16)");
  app.add_option("--convention", o.convention_override,
                 "batch_norm cases: expect this framework's running-statistics convention (a name from `normcheck "
                 "list`, or `native`: the one the backend declares); momentum not given in a case takes the "
                 "convention's default");
  app.add_option("--json", o.json_path, "write the JSON report here");
  app.add_option("--junit", o.junit_path, "write JUnit XML here");
  app.add_option("--report", o.md_path, "write the Markdown summary here");
  app.add_option("--input", o.input_specs,
                 "NAME=FILE.npy: your own tensor instead of a generated one (x, x0, x1, …, dy, gamma, beta, "
                 "running_mean, running_var; repeatable; docs/descriptor.md)");
  app.add_option("--dump", o.dump_dir, "write each case's inputs and outputs as .npy under DIR");
  app.add_option("--reference", o.reference_kind,
                 "fast: exact sums and correctly rounded outputs (docs/reference.md); slow: the independent "
                 "Boost.Multiprecision reference at --reference-bits")
      ->check(CLI::IsMember({"fast", "slow"}))
      ->capture_default_str();
  app.add_option("--reference-bits", o.reference_bits, "slow reference precision: 128 or 256")
      ->capture_default_str();
  app.add_option("--threads", o.threads, "threads of the input generation, the reference, the budgets and the comparison (0: all cores); results do not depend on it")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  app.add_flag("--quiet,-q", o.quiet, "print only failures and the summary");
  app.add_option("--expect", o.expect_path,
                 "known failures: a file of `DESCRIPTOR  # reason` lines; they do not fail the run, and "
                 "listed cases that pass again are reported");
  app.add_option("--shard", o.shard_spec,
                 "run shard I of N (I/N, 0-based: the cases whose index % N == I); default from "
                 "GTEST_SHARD_INDEX/GTEST_TOTAL_SHARDS, SLURM_ARRAY_TASK_ID/SLURM_ARRAY_TASK_COUNT, or "
                 "JOB_COMPLETION_INDEX/NORMCHECK_TOTAL_SHARDS (docs/scale-out.md)");
  app.add_option("-k,--filter", o.filters,
                 "run only the cases whose canonical descriptor contains EXPR, or matches /REGEX/ (ECMAScript, "
                 "searched); repeatable: a case matching any is run. Applied after --dtype and --convention, "
                 "before --shard");
  app.add_flag("--list-cases", o.list_cases,
               "print the canonical descriptors the run would execute (after --dtype, --convention, --filter, "
               "--shard), one per line, and exit 0 without running them");
  app.add_flag("-v,--verbose", o.verbose, "-v: a line per passing case; -vv: every tensor's figures too");
  app.add_option("--color", o.color_mode, "colour verdicts: auto (on a terminal, unless NO_COLOR is set), always, never")
      ->check(CLI::IsMember({"auto", "always", "never"}))
      ->capture_default_str();
  app.add_option("--repeat", o.repeat,
                 "determinism: run every case N times on identical inputs; outputs that differ bitwise between "
                 "runs make the case NONDETERMINISTIC (a failure), with the first differing element")
      ->capture_default_str();
}

/// The subcommands and their own options.
struct Subcommands {
  CLI::App *list = nullptr, *merge = nullptr, *bench = nullptr, *diagnose = nullptr, *metamorphic = nullptr,
           *report_cmd = nullptr;
  bool list_as_json = false;
  std::vector<std::string> merge_inputs;
  std::string merge_json, merge_junit, merge_md;
  BenchOptions bench_opt;
  std::string cache_mode = "warm";
  std::vector<std::string> report_inputs;
  std::string report_dir, report_title;
};

void add_subcommands(CLI::App& app, Subcommands& s) {
  s.list = app.add_subcommand("list", "list backends (with versions), suites, ops and conventions");
  s.list->add_flag("--json", s.list_as_json, "print it as one JSON object (schema normcheck-list/1) instead");
  s.list->fallthrough();  // a main option given to it is then named by check_options_apply
  s.merge = app.add_subcommand("merge", "combine the JSON reports of shards 0..N-1 into one report");
  s.merge->add_option("reports", s.merge_inputs, "JSON reports written with --json by each shard")->required();
  s.merge->add_option("-o,--json", s.merge_json, "write the merged JSON report here");
  s.merge->add_option("--junit", s.merge_junit, "write merged JUnit XML here");
  s.merge->add_option("--report", s.merge_md, "write the merged Markdown summary here");
  s.merge->fallthrough();
  s.bench = app.add_subcommand(
      "bench", "throughput per case against the measured memory bandwidth (Google Benchmark; docs/bench.md). "
               "Takes --backend, --suite, --case, --dtype, -k, --list-cases and --json (the Google Benchmark JSON) from "
               "above; "
               "Google Benchmark flags go after --");
  s.bench->fallthrough();
  s.bench->add_option("--threads", s.bench_opt.threads, "threads per call (default: the backend's own default)");
  s.bench->add_option("--cache", s.cache_mode, "warm: buffers stay cached between calls; cold: a buffer twice the "
                                           "last-level cache is written before every call")
      ->check(CLI::IsMember({"warm", "cold"}))
      ->capture_default_str();
  s.bench->add_option("--repetitions", s.bench_opt.repetitions, "repetitions per case (min, median, spread over these)")
      ->capture_default_str();
  s.bench->add_option("--min-time", s.bench_opt.min_time, "seconds of timed calls per repetition")->capture_default_str();
  s.bench->add_flag("--remeasure-bandwidth", s.bench_opt.remeasure_bandwidth,
                  "measure the STREAM bandwidth again instead of taking the one cached for this machine and thread "
                  "count ($XDG_CACHE_HOME/normcheck/stream-bandwidth.json, docs/bench.md)");
  s.bench->footer(applicable_options_text("bench") + "\nGoogle Benchmark flags go after --, e.g. -- --benchmark_filter=RE");
  s.diagnose = app.add_subcommand(
      "diagnose", "probe what a backend does, point by point: momentum direction, Bessel correction, variance and "
                  "eps in the normalization, saved statistics, accumulation precision, variance algorithm, summation "
                  "depth (docs/diagnose.md). Takes --backend and --json from above");
  s.diagnose->fallthrough();
  s.diagnose->footer(applicable_options_text("diagnose"));
  s.metamorphic = app.add_subcommand(
      "metamorphic", "check relations a correct kernel satisfies without an expected value: NCHW = NHWC, in place = "
                     "out of place, batch permutation, shift invariance, batch_norm inference affine per channel "
                     "(docs/metamorphic.md). Takes --backend, --suite, --case, --dtype and --json from above");
  s.metamorphic->fallthrough();
  s.metamorphic->footer(applicable_options_text("metamorphic"));
  s.report_cmd = app.add_subcommand(
      "report", "build an HTML page and Markdown from result, bench, diagnose and metamorphic JSON files "
                "(reports/build_report.py; needs a Python with matplotlib)");
  s.report_cmd->add_option("results", s.report_inputs, "JSON from `normcheck --json`, `normcheck bench --json`, `normcheck diagnose --json` and "
                         "`normcheck metamorphic --json`")
      ->required();
  s.report_cmd->add_option("-o,--output", s.report_dir, "directory for index.html, report.md and the plots")->required();
  s.report_cmd->add_option("--title", s.report_title, "page title");
  s.report_cmd->fallthrough();
}

/// The subcommand given, if any, run to its exit code; std::nullopt for the main command.
std::optional<int> run_subcommand(const BackendRegistry& registry, MainOptions& o, Subcommands& s,
                                  const CaseFilter& filter, int argc, char** argv) {
  if (s.list->parsed()) {
    if (!s.list_as_json) return cmd_list(registry);
    fmt::print("{}\n", list_json(registry).dump(2));
    return kExitPass;
  }
  if (s.merge->parsed()) {
    prepare_outputs({{"--json", s.merge_json}, {"--junit", s.merge_junit}, {"--report", s.merge_md}}, "",
                    s.merge_inputs);
    return cmd_merge(s.merge_inputs, s.merge_json, s.merge_junit, s.merge_md);
  }
  if (s.report_cmd->parsed()) return cmd_report(s.report_inputs, s.report_dir, s.report_title);
  if (s.metamorphic->parsed()) {
    std::string label;
    auto plan = plan_cases(o.suites, o.cases, o.dtype_override, label);
    apply_filter(plan, filter);
    if (o.list_cases) return print_cases(plan);
    prepare_outputs({{"--json", o.json_path}}, "");
    auto backend = open_backend(registry, o.backend_name, o.timeout, !o.in_process);
    return cmd_metamorphic(*backend, o.backend_name, label, plan, o.json_path);
  }
  if (s.diagnose->parsed()) {
    prepare_outputs({{"--json", o.json_path}}, "");
    auto backend = open_backend(registry, o.backend_name, o.timeout, !o.in_process);
    return cmd_diagnose(*backend, o.backend_name, o.json_path);
  }
  if (s.bench->parsed()) {
    for (const auto& f : s.bench_opt.benchmark_flags)
      if (f.rfind("--benchmark_", 0) != 0)
        throw Error(fmt::format("'{}' after -- is not a Google Benchmark flag (--benchmark_…)", f));
    std::string label;
    auto plan = plan_cases(o.suites, o.cases, o.dtype_override, label);
    apply_filter(plan, filter);
    if (o.list_cases) return print_cases(plan);
    s.bench_opt.cold_cache = s.cache_mode == "cold";
    s.bench_opt.json_path = o.json_path;
    s.bench_opt.backend_label = o.backend_name;
    s.bench_opt.suite_label = label;
    s.bench_opt.command = command_line(argc, argv);
    return cmd_bench(registry, o.backend_name, plan, s.bench_opt);
  }
  return std::nullopt;
}

/// The main command: plan, shard, run every case, write the reports.
/// The report's header: what ran, where, on what plan (the cases are added as they finish).
RunReport new_report(const MainOptions& o, const Backend& backend, const Shard& shard, const std::string& suite_label,
                     const std::vector<std::string>& planned_descriptors, int argc, char** argv) {
  RunReport report;
  report.shard_index = shard.index;
  report.shard_count = shard.count;
  report.expect_file = o.expect_path;
  report.normcheck_version = kVersion;
  report.command = command_line(argc, argv);
  report.backend = o.backend_name;
  report.backend_name = backend.name();
  report.backend_notes = backend.capabilities().notes;
  report.backend_version = backend.version();
  report.suite = suite_label;
  report.machine = machine_description();
  report.compiler = compiler_description();
  report.started_utc = utc_now_iso8601();
  report.reference_bits = o.reference_bits;
  report.reference_kind = o.reference_kind;
  report.dtype_override = o.dtype_override;
  report.convention_override = o.convention_override;
  report.planned_cases = static_cast<int>(planned_descriptors.size());
  report.plan_digest = plan_digest(planned_descriptors);
  return report;
}

/// Runs the planned cases in order into report.cases, printing each outcome; stops at an
/// interrupt (the report is then marked incomplete).
void run_plan(Backend& backend, const MainOptions& o, const std::vector<Planned>& plan,
              const std::map<std::string, std::string>& known, const SuppliedInputs& supplied, RunReport& report) {
  const bool tty = isatty(STDERR_FILENO) && !o.quiet;
  clear_interrupt();
  std::optional<InterruptHandlers> handlers(std::in_place);
  const auto t0 = std::chrono::steady_clock::now();
  RunOptions opt;
  opt.reference_bits = o.reference_bits;
  opt.reference = o.reference_kind == "slow" ? ReferenceKind::slow : ReferenceKind::fast;
  opt.threads = o.threads;
  opt.dump_dir = o.dump_dir;
  opt.inputs = &supplied;
  for (size_t i = 0; i < plan.size(); ++i) {
    if (interrupted()) break;
    if (tty) {
      std::string d = to_descriptor(plan[i].problem);
      if (d.size() > 90) d = d.substr(0, 87) + "...";
      fmt::print(stderr, "\r\033[K[{:>3}/{}] {}", i + 1, plan.size(), d);
      std::fflush(stderr);
    }
    CaseResult c;
    try {
      c = o.repeat > 1 ? run_repeated(backend, plan[i].problem, opt, o.repeat)
                       : run_planned(backend, plan[i].problem, opt);
    } catch (const Interrupted&) {  // abandoned at the signal (a plugin call too): nobody's fault
      if (tty) fmt::print(stderr, "\r\033[K");
      break;
    }
    c.note = plan[i].note;
    c.index = plan[i].index;
    if (auto it = known.find(c.descriptor); it != known.end()) c.known_failure = it->second;
    if (tty) fmt::print(stderr, "\r\033[K");
    if (!o.quiet || (c.verdict != Verdict::pass && c.verdict != Verdict::unsupported))
      print_case_outcome(c, o.backend_name);
    std::fflush(stdout);
    report.cases.push_back(std::move(c));
  }
  handlers.reset();
  if (report.cases.size() < plan.size()) {
    report.complete = false;
    report.incomplete_reason = fmt::format("interrupted by {} after {} of {} cases",
                                           signal_name(interrupt_signal()), report.cases.size(), plan.size());
  }
  report.wall_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

/// The main command: plan, shard, run every case, write the reports.
int cmd_run(const BackendRegistry& registry, MainOptions& o, const CaseFilter& filter, int argc, char** argv) {
  // First, so that a run that stops anywhere below leaves no stale report of an earlier run.
  // (--list-cases writes nothing, so it leaves the report paths alone.)
  if (!o.list_cases) prepare_outputs({{"--json", o.json_path}, {"--junit", o.junit_path}, {"--report", o.md_path}}, o.dump_dir);
  check_expect_file(o.expect_path);  // after: a bad --expect leaves no stale report either
  if (o.reference_bits != 128 && o.reference_bits != 256)
    throw Error("--reference-bits must be 128 or 256");
  std::string suite_label;
  std::vector<Planned> plan = plan_cases(o.suites, o.cases, o.dtype_override, suite_label);
  SuppliedInputs supplied;  // --input: read, hashed and checked against every case before running
  for (const auto& spec : o.input_specs) add_input(supplied, spec);
  for (auto& pl : plan) bind_inputs(pl.problem, supplied);
  const std::string what = o.suites.empty() ? "--case" : "suite " + suite_label;
  std::unique_ptr<Backend> backend = open_backend(registry, o.backend_name, o.timeout, !o.in_process);
  apply_convention(plan, o.convention_override, *backend);
  apply_filter(plan, filter);

  // Known failures, by canonical descriptor.
  std::map<std::string, std::string> known;
  if (!o.expect_path.empty()) known = known_failures(load_suite(o.expect_path));
  // Sharding: --shard, else GoogleTest's, SLURM's or Kubernetes' variables (resolve_shard).
  const Shard shard = resolve_shard(o.shard_spec);
  std::vector<std::string> planned_descriptors;
  for (const auto& pl : plan) planned_descriptors.push_back(to_descriptor(pl.problem));
  if (shard.count > 1)
    plan.erase(std::remove_if(plan.begin(), plan.end(),
                              [&](const Planned& pl) { return pl.index % shard.count != shard.index; }),
               plan.end());
  if (o.list_cases) return print_cases(plan);

  RunReport report = new_report(o, *backend, shard, suite_label, planned_descriptors, argc, argv);
  if (!o.quiet)
    fmt::print("normcheck {}: backend {} ({}), {}: {} case{}, reference {}{}{}{}\n", kVersion,
               o.backend_name, report.backend_version, what, plan.size(), plan.size() == 1 ? "" : "s",
               reference_label(report), filter.active() ? ", filter " + filter.text() : "",
               shard.count > 1 ? fmt::format(", shard {}/{} ({})", shard.index, shard.count, shard.source) : "",
               o.repeat > 1 ? fmt::format(", each case {} times (--repeat)", o.repeat) : "");
  std::fflush(stdout);
  run_plan(*backend, o, plan, known, supplied, report);
  return finish_run(report, o.json_path, o.junit_path, o.md_path);
}

int cli_main(int argc, char** argv, const BackendRegistry& registry) {
  // `--` ends normcheck's options wherever it stands (CLI11 would hand what follows to the
  // multi-value option before it, or refuse it): what follows is Google Benchmark's (bench only).
  std::vector<std::string> passthrough;
  int own_argc = argc;
  for (int i = 1; i < argc; ++i)
    if (std::string_view(argv[i]) == "--") {
      passthrough.assign(argv + i + 1, argv + argc);
      own_argc = i;
      break;
    }
  CLI::App app{"normcheck: a correctness oracle for normalization layers (BatchNorm, LayerNorm, "
               "InstanceNorm, GroupNorm, RMSNorm).\nExit codes: 0 all pass, 1 any FAIL or ERROR, "
               "2 usage or setup error (including a plugin that cannot be loaded), 3 internal error, 5 nothing verified "
               "(no case passed: all unsupported or not certifiable), 128+n interrupted by signal n (130 SIGINT, 143 "
               "SIGTERM, 129 SIGHUP).\n"
               "Plugins: calls run in a worker process of their own; CRASH, TIMEOUT and OVERRUN count as errors (exit 1).",
               "normcheck"};
  app.set_version_flag("--version", std::string("normcheck ") + kVersion);
  MainOptions o;
  add_main_options(app, o);
  Subcommands s;
  add_subcommands(app, s);
  app.require_subcommand(0, 1);

  try {
    app.parse(own_argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    fmt::print(stderr, "normcheck: error: {} (see normcheck --help)\n", e.what());
    return kExitUsage;
  }

  try {
    const std::string sub = app.get_subcommands().empty() ? "" : app.get_subcommands().front()->get_name();
    check_options_apply(app, sub);
    if (!passthrough.empty() && sub != "bench")
      throw Error(fmt::format("arguments after -- ({}) are Google Benchmark flags: only `normcheck bench` takes them",
                              join(passthrough)));
    s.bench_opt.benchmark_flags = passthrough;
    check_values(o.timeout, o.repeat, o.verbose, o.quiet);
    g_color = colour_wanted(o.color_mode);
    g_verbosity = o.quiet ? -1 : o.verbose;
    const CaseFilter filter(o.filters);
    if (auto code = run_subcommand(registry, o, s, filter, argc, argv)) return *code;
    return cmd_run(registry, o, filter, argc, argv);
  } catch (const Error& e) {
    fmt::print(stderr, "normcheck: error: {}\n", e.what());
    return kExitUsage;
  } catch (const std::exception& e) {
    fmt::print(stderr, "normcheck: internal error: {}\n", e.what());
    return kExitInternal;
  }
}

}  // namespace normcheck
