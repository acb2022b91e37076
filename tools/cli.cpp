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
#include <fstream>
#include <algorithm>
#include <map>
#include <optional>
#include <set>
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

void print_case_outcome(const CaseResult& c, const std::string& backend) {
  if (!c.known_failure.empty() && is_failure(c.verdict)) {
    fmt::print("KNOWN {} {}\n      known failure: {}\n      {}\n", to_string(c.verdict), c.descriptor,
               c.known_failure, c.reason);
    return;
  }
  switch (c.verdict) {
    case Verdict::warn:
      fmt::print("WARN{} {}\n      {}\n", c.weak_check ? " WEAK" : " ", c.descriptor, c.reason);
      return;
    case Verdict::not_certifiable:
      fmt::print("NOT CERTIFIABLE  {}\n      {}\n", c.descriptor, c.reason);
      return;
    case Verdict::pass:
      if (!c.reason.empty())
        fmt::print("{}  {}\n      {}\n", c.weak_check ? "WEAK" : "NOTE", c.descriptor, c.reason);
      return;
    case Verdict::unsupported:
      fmt::print("UNSUPPORTED  {}\n      {}\n", c.descriptor, c.reason);
      return;
    case Verdict::fail:
    case Verdict::error:
    case Verdict::crash:
    case Verdict::timeout:
    case Verdict::overrun:
      fmt::print("{:<5} {}\n", to_string(c.verdict), c.descriptor);
      if (!c.note.empty()) fmt::print("      expected: {}\n", c.note);
      fmt::print("      {}\n", c.reason);
      fmt::print("{}", explain(c));
      if (!c.suspected_cause.empty()) fmt::print("      suspected cause: {}\n", c.suspected_cause);
      fmt::print("      reproduce: {}\n", reproducer(backend, c.descriptor) + c.input_options);
      return;
  }
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
             !ok ? "FAIL" : verified ? "PASS" : "NOTHING VERIFIED", t.pass, t.total(),
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
  return kExitPass;
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

}  // namespace

int cli_main(int argc, char** argv, const BackendRegistry& registry) {
  CLI::App app{"normcheck: a correctness oracle for normalization layers (BatchNorm, LayerNorm, "
               "InstanceNorm, GroupNorm, RMSNorm).\nExit codes: 0 all pass, 1 any FAIL or ERROR, "
               "2 usage or setup error (including a plugin that cannot be loaded), 3 internal error, 5 nothing verified "
               "(no case passed: all unsupported or not certifiable), 128+n interrupted by signal n (130 SIGINT, 143 "
               "SIGTERM, 129 SIGHUP).\n"
               "Plugins: calls run in a worker process of their own; CRASH, TIMEOUT and OVERRUN count as errors (exit 1).",
               "normcheck"};
  app.set_version_flag("--version", std::string("normcheck ") + kVersion);
  std::string backend_name = "naive";
  std::vector<std::string> suites, cases;
  std::vector<std::string> input_specs;  // --input NAME=FILE.npy
  std::string dtype_override, json_path, junit_path, md_path, dump_dir, expect_path, shard_spec;
  int reference_bits = 128;
  int threads = 0;
  std::string reference_kind = "fast";
  double timeout = 60;
  bool quiet = false, in_process = false;
  app.add_option("--backend,-b", backend_name,
                 "backend to test: a built-in name (see `normcheck list`), a plugin PATH.so, or a plugin "
                 "name found on NORMCHECK_PLUGIN_PATH")
      ->capture_default_str();
  app.add_option("--timeout", timeout, "plugin backends: seconds one call may take before it is killed")
      ->capture_default_str();
  app.add_flag("--in-process", in_process,
               "plugin backends: call the plugin in normcheck's own process (to debug it under gdb); "
               "a crash then ends normcheck");
  app.add_option("--suite,-s", suites, "built-in suite name or path to a suite file (repeatable)");
  app.add_option("--case,-c", cases, "one case descriptor (repeatable); see docs/descriptor.md");
  app.add_option("--dtype", dtype_override, "run every case in this dtype instead (f32, f64, f16, bf16)");
  std::string convention_override;
  app.add_option("--convention", convention_override,
                 "batch_norm cases: expect this framework's running-statistics convention (a name from `normcheck "
                 "list`, or `native`: the one the backend declares); momentum not given in a case takes the "
                 "convention's default");
  app.add_option("--json", json_path, "write the JSON report here");
  app.add_option("--junit", junit_path, "write JUnit XML here");
  app.add_option("--report", md_path, "write the Markdown summary here");
  app.add_option("--input", input_specs,
                 "NAME=FILE.npy: your own tensor instead of a generated one (x, x0, x1, …, dy, gamma, beta, "
                 "running_mean, running_var; repeatable; docs/descriptor.md)");
  app.add_option("--dump", dump_dir, "write each case's inputs and outputs as .npy under DIR");
  app.add_option("--reference", reference_kind,
                 "fast: exact sums and correctly rounded outputs (docs/reference.md); slow: the independent "
                 "Boost.Multiprecision reference at --reference-bits")
      ->check(CLI::IsMember({"fast", "slow"}))
      ->capture_default_str();
  app.add_option("--reference-bits", reference_bits, "slow reference precision: 128 or 256")
      ->capture_default_str();
  app.add_option("--threads", threads, "threads of the reference (0: all cores); results do not depend on it")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  app.add_flag("--quiet,-q", quiet, "print only failures and the summary");
  app.add_option("--expect", expect_path,
                 "known failures: a file of `DESCRIPTOR  # reason` lines; they do not fail the run, and "
                 "listed cases that pass again are reported");
  app.add_option("--shard", shard_spec,
                 "run shard I of N (I/N, 0-based: the cases whose index % N == I); default from "
                 "GTEST_SHARD_INDEX and GTEST_TOTAL_SHARDS");
  CLI::App* list = app.add_subcommand("list", "list backends (with versions), suites, ops and conventions");
  CLI::App* merge = app.add_subcommand("merge", "combine the JSON reports of shards 0..N-1 into one report");
  std::vector<std::string> merge_inputs;
  std::string merge_json, merge_junit, merge_md;
  merge->add_option("reports", merge_inputs, "JSON reports written with --json by each shard")->required();
  merge->add_option("-o,--json", merge_json, "write the merged JSON report here");
  merge->add_option("--junit", merge_junit, "write merged JUnit XML here");
  merge->add_option("--report", merge_md, "write the merged Markdown summary here");
  CLI::App* bench = app.add_subcommand(
      "bench", "throughput per case against the measured memory bandwidth (Google Benchmark; docs/bench.md). "
               "Takes --backend, --suite, --case, --dtype and --json (the Google Benchmark JSON) from above; "
               "Google Benchmark flags go after --");
  bench->fallthrough();
  BenchOptions bench_opt;
  std::string cache_mode = "warm";
  bench->add_option("--threads", bench_opt.threads, "threads per call (default: the backend's own default)");
  bench->add_option("--cache", cache_mode, "warm: buffers stay cached between calls; cold: a buffer twice the "
                                           "last-level cache is written before every call")
      ->check(CLI::IsMember({"warm", "cold"}))
      ->capture_default_str();
  bench->add_option("--repetitions", bench_opt.repetitions, "repetitions per case (min, median, spread over these)")
      ->capture_default_str();
  bench->add_option("--min-time", bench_opt.min_time, "seconds of timed calls per repetition")->capture_default_str();
  bench->add_option("benchmark_flags", bench_opt.benchmark_flags, "after --: flags for Google Benchmark");
  CLI::App* diagnose = app.add_subcommand(
      "diagnose", "probe what a backend does, point by point: momentum direction, Bessel correction, variance and "
                  "eps in the normalization, saved statistics, accumulation precision, variance algorithm, summation "
                  "depth (docs/diagnose.md). Takes --backend and --json from above");
  diagnose->fallthrough();
  CLI::App* metamorphic = app.add_subcommand(
      "metamorphic", "check relations a correct kernel satisfies without an expected value: NCHW = NHWC, in place = "
                     "out of place, batch permutation, shift invariance, batch_norm inference affine per channel "
                     "(docs/metamorphic.md). Takes --backend, --suite, --case, --dtype and --json from above");
  metamorphic->fallthrough();
  CLI::App* report_cmd = app.add_subcommand(
      "report", "build an HTML page and Markdown from result and bench JSON files (reports/build_report.py; "
                "needs a Python with matplotlib)");
  std::vector<std::string> report_inputs;
  std::string report_dir, report_title;
  report_cmd->add_option("results", report_inputs, "JSON from `normcheck --json` and `normcheck bench --json`")
      ->required();
  report_cmd->add_option("-o,--output", report_dir, "directory for index.html, report.md and the plots")->required();
  report_cmd->add_option("--title", report_title, "page title");
  app.require_subcommand(0, 1);

  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    fmt::print(stderr, "normcheck: error: {} (see normcheck --help)\n", e.what());
    return kExitUsage;
  }

  try {
    if (!input_specs.empty() && !(app.get_subcommands().empty()))
      throw Error("--input applies to correctness runs (no subcommand), not to a subcommand");
    if (list->parsed()) return cmd_list(registry);
    if (merge->parsed()) {
      prepare_outputs({{"--json", merge_json}, {"--junit", merge_junit}, {"--report", merge_md}}, "", merge_inputs);
      return cmd_merge(merge_inputs, merge_json, merge_junit, merge_md);
    }
    if (report_cmd->parsed()) return cmd_report(report_inputs, report_dir, report_title);
    if (metamorphic->parsed()) {
      std::string label;
      const auto plan = plan_cases(suites, cases, dtype_override, label);
      prepare_outputs({{"--json", json_path}}, "");
      auto backend = open_backend(registry, backend_name, timeout, !in_process);
      return cmd_metamorphic(*backend, backend_name, label, plan, json_path);
    }
    if (diagnose->parsed()) {
      prepare_outputs({{"--json", json_path}}, "");
      auto backend = open_backend(registry, backend_name, timeout, !in_process);
      return cmd_diagnose(*backend, backend_name, json_path);
    }
    if (bench->parsed()) {
      for (const auto& [flag, given] : {std::pair{"--junit", !junit_path.empty()}, {"--report", !md_path.empty()},
                                        {"--dump", !dump_dir.empty()}, {"--expect", !expect_path.empty()},
                                        {"--shard", !shard_spec.empty()}})
        if (given) throw Error(fmt::format("{} applies to correctness runs, not to `normcheck bench`", flag));
      for (const auto& f : bench_opt.benchmark_flags)
        if (f.rfind("--benchmark_", 0) != 0)
          throw Error(fmt::format("'{}' after -- is not a Google Benchmark flag (--benchmark_…)", f));
      std::string label;
      const auto plan = plan_cases(suites, cases, dtype_override, label);
      bench_opt.cold_cache = cache_mode == "cold";
      bench_opt.json_path = json_path;
      bench_opt.backend_label = backend_name;
      bench_opt.suite_label = label;
      bench_opt.command = command_line(argc, argv);
      return cmd_bench(registry, backend_name, plan, bench_opt);
    }
    // First, so that a run that stops anywhere below leaves no stale report of an earlier run.
    prepare_outputs({{"--json", json_path}, {"--junit", junit_path}, {"--report", md_path}}, dump_dir);
    if (reference_bits != 128 && reference_bits != 256)
      throw Error("--reference-bits must be 128 or 256");
    std::string suite_label;
    std::vector<Planned> plan = plan_cases(suites, cases, dtype_override, suite_label);
    SuppliedInputs supplied;  // --input: read, hashed and checked against every case before running
    for (const auto& spec : input_specs) add_input(supplied, spec);
    for (auto& pl : plan) bind_inputs(pl.problem, supplied);
    const std::string what = suites.empty() ? "--case" : "suite " + suite_label;
    std::unique_ptr<Backend> backend = open_backend(registry, backend_name, timeout, !in_process);
    apply_convention(plan, convention_override, *backend);

    // Known failures, by canonical descriptor.
    std::map<std::string, std::string> known;
    if (!expect_path.empty()) known = known_failures(load_suite(expect_path));
    // Sharding: --shard, else GoogleTest's variables (and its status file, to say we shard).
    int shard_index = 0, shard_count = 1;
    if (!shard_spec.empty()) {
      std::tie(shard_index, shard_count) = parse_shard(shard_spec, "--shard");
    } else if (const char* total = std::getenv("GTEST_TOTAL_SHARDS")) {
      const char* index = std::getenv("GTEST_SHARD_INDEX");
      std::tie(shard_index, shard_count) =
          parse_shard(fmt::format("{}/{}", index ? index : "", total), "GTEST_SHARD_INDEX/GTEST_TOTAL_SHARDS");
      if (const char* status = std::getenv("GTEST_SHARD_STATUS_FILE")) std::ofstream{status};
    }
    std::vector<std::string> planned_descriptors;
    for (const auto& pl : plan) planned_descriptors.push_back(to_descriptor(pl.problem));
    if (shard_count > 1)
      plan.erase(std::remove_if(plan.begin(), plan.end(),
                                [&](const Planned& pl) { return pl.index % shard_count != shard_index; }),
                 plan.end());

    RunReport report;
    report.shard_index = shard_index;
    report.shard_count = shard_count;
    report.expect_file = expect_path;
    report.normcheck_version = kVersion;
    report.command = command_line(argc, argv);
    report.backend = backend_name;
    report.backend_name = backend->name();
    report.backend_notes = backend->capabilities().notes;
    report.backend_version = backend->version();
    report.suite = suite_label;
    report.machine = machine_description();
    report.compiler = compiler_description();
    report.started_utc = utc_now_iso8601();
    report.reference_bits = reference_bits;
    report.dtype_override = dtype_override;
    report.convention_override = convention_override;
    report.planned_cases = static_cast<int>(planned_descriptors.size());
    report.plan_digest = plan_digest(planned_descriptors);

    if (!quiet)
      fmt::print("normcheck {}: backend {} ({}), {}: {} case{}, reference {} bits\n", kVersion,
                 backend_name, report.backend_version, what, plan.size(), plan.size() == 1 ? "" : "s",
                 reference_bits);
    std::fflush(stdout);
    const bool tty = isatty(STDERR_FILENO) && !quiet;
    clear_interrupt();
    std::optional<InterruptHandlers> handlers(std::in_place);
    const auto t0 = std::chrono::steady_clock::now();
    RunOptions opt;
    opt.reference_bits = reference_bits;
    opt.reference = reference_kind == "slow" ? ReferenceKind::slow : ReferenceKind::fast;
    opt.threads = threads;
    opt.dump_dir = dump_dir;
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
        c = run_planned(*backend, plan[i].problem, opt);
      } catch (const Interrupted&) {  // abandoned at the signal (a plugin call too): nobody's fault
        if (tty) fmt::print(stderr, "\r\033[K");
        break;
      }
      c.note = plan[i].note;
      c.index = plan[i].index;
      if (auto it = known.find(c.descriptor); it != known.end()) c.known_failure = it->second;
      if (tty) fmt::print(stderr, "\r\033[K");
      if (!quiet || (c.verdict != Verdict::pass && c.verdict != Verdict::unsupported))
        print_case_outcome(c, backend_name);
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

    return finish_run(report, json_path, junit_path, md_path);
  } catch (const Error& e) {
    fmt::print(stderr, "normcheck: error: {}\n", e.what());
    return kExitUsage;
  } catch (const std::exception& e) {
    fmt::print(stderr, "normcheck: internal error: {}\n", e.what());
    return kExitInternal;
  }
}

}  // namespace normcheck
