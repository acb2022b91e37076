// `normcheck bench`: one Google Benchmark per case, timed around the backend call only.
// Method and JSON fields: docs/bench.md.
#include <benchmark/benchmark.h>
#include <unistd.h>
#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <sstream>
#include <type_traits>

#include "normcheck/bench.hpp"
#include "normcheck/data.hpp"
#include "normcheck/error.hpp"
#include "normcheck/generate.hpp"
#include "normcheck/partition.hpp"
#include "normcheck/report.hpp"
#include "normcheck/runner.hpp"
#include "normcheck/version.hpp"

namespace normcheck {
namespace {

/// The buffers of one case, prepared once (outside the timed region) and kept while its
/// repetitions run.
struct PreparedCase {
  GeneratedInputs in;
  Tensor y, dx, mean, variance, inv_std, dgamma, dbeta;
  RunArgs args;
};

/// Inputs as the correctness run draws them, for the compared call only: forward_training gets
/// one batch, forward_inference running statistics drawn from the distribution, and the
/// backward passes their saved statistics computed in double (exactness is irrelevant to timing).
std::unique_ptr<PreparedCase> prepare(const Problem& problem) {
  Problem p = problem;
  if (p.op == Op::batch_norm && !is_backward(p.pass))
    p.steps = p.pass == Pass::forward_training ? 1 : 0;
  auto c = std::make_unique<PreparedCase>();
  const Partition part = make_partition(p);
  c->in = generate_inputs(p, part);
  const DType sdt = stats_dtype(p.dtype);
  const auto sshape = stats_shape(p), ashape = affine_shape(p);
  RunArgs& a = c->args;
  a = make_run_args(p);
  c->mean = Tensor(sdt, sshape);
  c->variance = Tensor(sdt, sshape);
  c->inv_std = Tensor(sdt, sshape);
  Tensor& x = c->in.batches.back();
  if (is_backward(p.pass)) {
    if (!p.inplace) c->dx = Tensor(p.dtype, p.dims, p.layout);
    if (p.affine) c->dgamma = Tensor(sdt, ashape);
    if (p.affine && part.has_beta) c->dbeta = Tensor(sdt, ashape);
    if (p.pass == Pass::backward_training) {
      std::vector<double> mean, var;
      set_moments(part, [&](int64_t i) { return x.get(i); }, mean, var);
      for (int64_t s = 0; s < part.num_sets; ++s) {
        c->mean.set(s, mean[s]);
        c->variance.set(s, var[s]);
        c->inv_std.set(s, 1.0 / std::sqrt(var[s] + a.eps));
      }
    }
  } else if (!p.inplace) {
    c->y = Tensor(p.dtype, p.dims, p.layout);
  }
  a.x = x.arg();
  a.gamma = c->in.gamma.arg();
  a.beta = c->in.beta.arg();
  a.y = p.inplace ? a.x : c->y.arg();
  a.dy = c->in.dy.arg();
  a.dx = p.inplace && is_backward(p.pass) ? a.dy : c->dx.arg();
  a.dgamma = c->dgamma.arg();
  a.dbeta = c->dbeta.arg();
  const bool saved = p.pass == Pass::forward_training || p.pass == Pass::backward_training;
  if (saved) {
    if (part.subtract_mean) a.mean = c->mean.arg();
    a.variance = c->variance.arg();
    a.inv_std = c->inv_std.arg();
  }
  if (p.op == Op::batch_norm && p.pass != Pass::backward_training) {
    a.running_mean = c->in.running_mean.arg();
    a.running_var = c->in.running_var.arg();
  }
  return c;
}

// Google Benchmark 1.8 renamed Run::error_occurred / error_message to skipped / skip_message;
// these pick whichever the installed version has (the int overload wins where both would do).
template <class R>
auto run_failed(const R& r, int) -> decltype(static_cast<bool>(r.error_occurred)) {
  return r.error_occurred;
}
template <class R>
bool run_failed(const R& r, long) {
  return static_cast<unsigned>(r.skipped) != 0;
}
template <class R>
auto run_message(const R& r, int) -> decltype(std::string(r.error_message)) {
  return r.error_message;
}
template <class R>
std::string run_message(const R& r, long) {
  return r.skip_message;
}

using Run = benchmark::BenchmarkReporter::Run;

double counter(const Run& r, const char* name) {
  auto it = r.counters.find(name);
  return it == r.counters.end() ? 0.0 : it->second.value;
}

/// Seconds per call of a run: one repetition's mean, or an aggregate's statistic of those.
double run_seconds(const Run& r) { return r.GetAdjustedRealTime() / benchmark::GetTimeUnitMultiplier(r.time_unit); }

/// Google Benchmark computes each aggregate of each counter on its own, so with an even
/// --repetitions the median row paired the mean of the two middle times with the mean of two
/// rates, and the min row the fastest time with the slowest rate. Here the rate of the median,
/// mean and min rows is recomputed from the row's own time (bytes / that time: the rate of the
/// median time, of the mean time, of the fastest repetition), and the fraction from that rate
/// (docs/bench.md "Summary"). stddev and cv keep Google Benchmark's spread of the rates.
std::vector<Run> consistent_aggregates(const std::vector<Run>& runs, double roof) {
  std::vector<Run> out = runs;
  for (Run& r : out) {
    if (run_failed(r, 0) || r.run_type != Run::RT_Aggregate) continue;
    if (r.aggregate_name != "median" && r.aggregate_name != "mean" && r.aggregate_name != "min") continue;
    const double s = run_seconds(r), bytes = counter(r, "bytes");
    if (!(s > 0) || r.counters.count("bytes_per_second") == 0) continue;
    r.counters["bytes_per_second"].value = bytes / s;
    if (r.counters.count("roofline_fraction")) r.counters["roofline_fraction"].value = bytes / s / roof;
  }
  return out;
}

/// The JSON file (--json): Google Benchmark's JSONReporter on consistent_aggregates.
class ConsistentJsonReporter final : public benchmark::JSONReporter {
 public:
  explicit ConsistentJsonReporter(double roof) : roof_(roof) {}
  void ReportRuns(const std::vector<Run>& runs) override { JSONReporter::ReportRuns(consistent_aggregates(runs, roof_)); }

 private:
  double roof_;
};

/// Google Benchmark's console table (on consistent_aggregates, the roofline fraction shown as
/// roofline_%, every rate in decimal units: G = 10⁹), plus the median rows kept for normcheck's summary.
class SummaryReporter final : public benchmark::ConsoleReporter {
 public:
  struct Row {
    std::string name, label;
    double seconds = 0, bytes = 0, bytes_per_second = 0, fraction = 0;
    std::string error;
  };
  std::vector<Row> rows;
  SummaryReporter(OutputOptions o, double roof) : ConsoleReporter(o), roof_(roof) {}

  void ReportRuns(const std::vector<Run>& given) override {
    std::vector<Run> runs = consistent_aggregates(given, roof_);
    for (Run& r : runs) {
      const bool failed = run_failed(r, 0);
      const bool median = r.run_type == Run::RT_Aggregate && r.aggregate_name == "median";
      const bool single = r.run_type == Run::RT_Iteration && r.repetitions <= 1;
      if (median || single || failed) {
        Row row{r.run_name.str(), r.report_label, 0, 0, 0, 0, failed ? run_message(r, 0) : ""};
        if (!failed) {
          row.seconds = run_seconds(r);
          row.bytes = counter(r, "bytes");
          row.bytes_per_second = counter(r, "bytes_per_second");
          row.fraction = counter(r, "roofline_fraction");
        }
        rows.push_back(std::move(row));
      }
      // The console: a fraction is no rate ("0.101/s") and reads best as a percentage.
      auto it = r.counters.find("roofline_fraction");
      if (it == r.counters.end()) continue;
      const double f = it->second.value;
      r.counters.erase(it);
      const bool spread = r.run_type == Run::RT_Aggregate && (r.aggregate_name == "stddev" || r.aggregate_name == "cv");
      if (!spread) r.counters["roofline_%"] = benchmark::Counter(100 * f);
    }
    ConsoleReporter::ReportRuns(runs);
  }

 private:
  double roof_;
};

/// Where the STREAM bandwidth is cached: $XDG_CACHE_HOME/normcheck, else ~/.cache/normcheck
/// (XDG Base Directory Specification 0.8); "" when neither is set.
std::filesystem::path bandwidth_cache_path() {
  const char* xdg = std::getenv("XDG_CACHE_HOME");
  const char* home = std::getenv("HOME");
  std::filesystem::path dir;
  if (xdg && *xdg == '/') dir = xdg;
  else if (home && *home) dir = std::filesystem::path(home) / ".cache";
  else return {};
  return dir / "normcheck" / "stream-bandwidth.json";
}

std::string host_name() {
  char buf[256] = {};
  return gethostname(buf, sizeof buf - 1) == 0 ? buf : "unknown";
}

/// The bandwidth measured on this machine: one entry per host, CPU (machine_description()) and
/// thread count, with its date. Measured (about 14 s) and written back when there is none,
/// when --remeasure-bandwidth is given, or when the entry is older than kMaxAgeDays.
struct Bandwidth {
  StreamBandwidth bw;
  std::string measured_utc;
  bool cached = false;
  std::string path;  ///< the cache file, "" when there is none
};
constexpr int kMaxAgeDays = 30;

Bandwidth machine_bandwidth(int threads, bool remeasure) {
  namespace fs = std::filesystem;
  Bandwidth out;
  const fs::path path = bandwidth_cache_path();
  out.path = path.string();
  const std::string key = fmt::format("{} | {} | {} threads", host_name(), machine_description(), threads);
  nlohmann::json cache = nlohmann::json::object();
  if (!path.empty()) {
    std::ifstream f(path);
    if (f) {
      try {
        cache = nlohmann::json::parse(f);
        if (!cache.is_object()) cache = nlohmann::json::object();
      } catch (const std::exception&) {
        cache = nlohmann::json::object();  // unreadable: measured again and rewritten
      }
    }
  }
  if (!remeasure && cache.contains(key)) {
    try {
      const auto& e = cache[key];
      const double age_days = (static_cast<double>(std::time(nullptr)) - e.at("measured_unix").get<double>()) / 86400;
      if (age_days >= 0 && age_days < kMaxAgeDays) {
        out.bw.copy_bytes_per_second = e.at("copy_bytes_per_second").get<double>();
        out.bw.triad_bytes_per_second = e.at("triad_bytes_per_second").get<double>();
        out.bw.array_bytes = e.at("array_bytes").get<int64_t>();
        out.bw.trials = e.at("trials").get<int>();
        out.bw.threads = threads;
        out.measured_utc = e.at("measured_utc").get<std::string>();
        out.cached = out.bw.copy_bytes_per_second > 0 && out.bw.triad_bytes_per_second > 0;
        if (out.cached) return out;
      }
    } catch (const std::exception&) {
      // a malformed entry: measured again below
    }
  }
  fmt::print("normcheck bench: measuring memory bandwidth (STREAM copy and triad, {} thread{})…\n", threads,
             threads == 1 ? "" : "s");
  std::fflush(stdout);
  out.bw = measure_stream_bandwidth(threads);
  out.measured_utc = utc_now_iso8601();
  if (path.empty()) return out;
  cache[key] = {{"copy_bytes_per_second", out.bw.copy_bytes_per_second},
                {"triad_bytes_per_second", out.bw.triad_bytes_per_second},
                {"array_bytes", out.bw.array_bytes}, {"trials", out.bw.trials}, {"threads", threads},
                {"measured_utc", out.measured_utc}, {"measured_unix", static_cast<double>(std::time(nullptr))},
                {"normcheck_version", kVersion}};
  std::error_code ec;
  fs::create_directories(path.parent_path(), ec);
  const fs::path tmp = path.string() + fmt::format(".tmp{}", getpid());
  {
    std::ofstream f(tmp);
    f << cache.dump(2) << "\n";
  }
  fs::rename(tmp, path, ec);
  if (ec) {
    fs::remove(tmp, ec);
    fmt::print("normcheck bench: note: cannot cache the bandwidth in {}\n", path.string());
  }
  return out;
}

double median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const size_t h = v.size() / 2;
  return v.size() % 2 ? v[h] : 0.5 * (v[h - 1] + v[h]);
}

/// Writes and reads a buffer larger than the last-level cache so the next call starts cold.
class CacheFlusher {
 public:
  explicit CacheFlusher(int64_t bytes) : buf_(static_cast<size_t>(bytes)) {}
  void flush() {
    ++fill_;
    std::memset(buf_.data(), fill_, buf_.size());
    benchmark::DoNotOptimize(buf_.data());
    benchmark::ClobberMemory();
  }

 private:
  std::vector<unsigned char> buf_;
  unsigned char fill_ = 0;
};

/// normcheck's summary: per case the median row (its time and the rate of that time), then the
/// median roofline fraction per suite.
void print_bench_summary(const std::vector<SummaryReporter::Row>& rows, double roof, int threads) {
  // Summary: median per case, then the median fraction per suite.
  fmt::print("\n{:<70} {:>10} {:>12} {:>9} {:>9}\n", "case (median time; its rate)", "MB moved",
             "time [µs]", "GB/s", "roofline");
  std::map<std::string, std::vector<double>> per_suite;
  for (const auto& r : rows) {
    const std::string suite = r.name.substr(0, r.name.find('/'));
    std::string d = r.label.empty() ? r.name : r.label;
    if (d.size() > 70) d = d.substr(0, 67) + "...";
    if (!r.error.empty()) {
      fmt::print("{:<70} ERROR: {}\n", d, r.error);
      continue;
    }
    const double mb = r.bytes / 1e6;
    fmt::print("{:<70} {:>10.2f} {:>12.1f} {:>9.2f} {:>8.1f}%\n", d, mb, r.seconds * 1e6,
               r.bytes_per_second / 1e9, 100 * r.fraction);
    per_suite[suite].push_back(r.fraction);
  }
  for (const auto& [suite, f] : per_suite)
    fmt::print("suite {}: median roofline fraction {:.1f}% over {} cases (roofline {:.2f} GB/s, {} thread{})\n",
               suite, 100 * median(f), f.size(), roof / 1e9, threads, threads == 1 ? "" : "s");
}

/// Google Benchmark's own flags, checked before the bandwidth is measured: ours first, the
/// user's pass-through after (they win). `flags` receives them and must outlive the run: Google
/// Benchmark keeps a pointer to argv[0]. Throws Error for a flag or value it rejects.
void initialize_google_benchmark(const BenchOptions& opt, std::vector<std::string>& flags) {
  flags = {"normcheck-bench", fmt::format("--benchmark_repetitions={}", opt.repetitions),
           fmt::format("--benchmark_min_time={}", opt.min_time), "--benchmark_display_aggregates_only=true"};
  if (!opt.json_path.empty()) {
    flags.push_back("--benchmark_out=" + opt.json_path);
    flags.push_back("--benchmark_out_format=json");
  }
  flags.insert(flags.end(), opt.benchmark_flags.begin(), opt.benchmark_flags.end());
  std::vector<char*> argv;
  for (auto& f : flags) argv.push_back(f.data());
  int argc = static_cast<int>(argv.size());
  benchmark::Initialize(&argc, argv.data());
  if (argc > 1)
    throw Error(fmt::format("Google Benchmark rejected '{}': an unknown flag, or a value the installed version does "
                            "not take (1.7 wants --benchmark_min_time=0.05, 1.8 also 0.05s)",
                            argv[1]));
}

}  // namespace

int run_bench(Backend& b, const std::vector<BenchCase>& cases, const BenchOptions& opt) {
  if (opt.repetitions < 1) throw Error("--repetitions must be ≥ 1");
  if (!(opt.min_time > 0)) throw Error("--min-time must be > 0 seconds");
  const int threads = opt.threads > 0 ? b.set_threads(opt.threads) : b.threads();
  if (opt.threads > 0 && threads != opt.threads)
    fmt::print("normcheck bench: backend {} runs single-threaded; --threads {} ignored\n", b.name(), opt.threads);

  // Plan: what the backend declines is listed, never timed.
  std::vector<const BenchCase*> plan;
  for (const auto& c : cases) {
    validate(c.problem);
    if (auto why = b.unsupported_reason(make_run_args(c.problem), c.problem.layout)) {
      fmt::print("UNSUPPORTED  {}\n      {}\n", to_descriptor(c.problem), *why);
      continue;
    }
    plan.push_back(&c);
  }
  if (plan.empty()) throw Error("nothing to benchmark: the backend supports none of the cases");

  std::vector<std::string> flags;  // alive until the benchmarks have run
  initialize_google_benchmark(opt, flags);

  const Bandwidth measured = machine_bandwidth(threads, opt.remeasure_bandwidth);
  const StreamBandwidth& bw = measured.bw;
  double roof = bw.roofline_bytes_per_second();
  fmt::print("normcheck bench: copy {:.2f} GB/s, triad {:.2f} GB/s on {} MiB arrays (best of {}); roofline {:.2f} GB/s; "
             "{} {}{}\n",
             bw.copy_bytes_per_second / 1e9, bw.triad_bytes_per_second / 1e9, bw.array_bytes >> 20, bw.trials,
             roof / 1e9, measured.cached ? "measured" : "measured now,", measured.measured_utc,
             measured.cached ? fmt::format(" (cached in {}; --remeasure-bandwidth measures again)", measured.path)
                             : "");
  const std::optional<double> device_bw = b.device_bandwidth();  // a device backend: its own memory
  if (device_bw) {
    roof = *device_bw;
    fmt::print("normcheck bench: device copy {:.2f} GB/s; that is the roofline, and times are the backend's "
               "device-side kernel times\n", roof / 1e9);
  }

  auto ctx = [](const std::string& k, const std::string& v) { benchmark::AddCustomContext(k, v); };
  ctx("normcheck_version", kVersion);
  ctx("normcheck_command", opt.command);
  ctx("normcheck_backend", opt.backend_label);
  ctx("normcheck_backend_name", b.name());
  ctx("normcheck_backend_version", b.version());
  ctx("normcheck_suite", opt.suite_label);
  ctx("normcheck_threads", std::to_string(threads));
  ctx("normcheck_cache", opt.cold_cache ? "cold" : "warm");
  ctx("normcheck_cpu", machine_description());
  ctx("normcheck_compiler", compiler_description());
  ctx("normcheck_os", os_description());
  ctx("normcheck_memory_bytes", std::to_string(memory_bytes()));
  ctx("normcheck_commit", normcheck_commit());
  ctx("normcheck_bytes_model", "docs/bench.md#bytes-moved, version 1");
  ctx("normcheck_stream_copy_bytes_per_second", fmt::format("{:.6g}", bw.copy_bytes_per_second));
  ctx("normcheck_stream_triad_bytes_per_second", fmt::format("{:.6g}", bw.triad_bytes_per_second));
  ctx("normcheck_stream_array_bytes", std::to_string(bw.array_bytes));
  ctx("normcheck_llc_bytes", std::to_string(last_level_cache_bytes()));
  ctx("normcheck_roofline_bytes_per_second", fmt::format("{:.6g}", roof));
  ctx("normcheck_roofline_source", device_bw ? "device copy (backend)" : "host STREAM");
  ctx("normcheck_stream_measured_utc", measured.measured_utc);
  ctx("normcheck_stream_cached", measured.cached ? "true" : "false");

  std::unique_ptr<PreparedCase> current;
  const BenchCase* current_case = nullptr;
  std::unique_ptr<CacheFlusher> flusher;
  if (opt.cold_cache) flusher = std::make_unique<CacheFlusher>(2 * last_level_cache_bytes());
  int failed_calls = 0;

  for (const BenchCase* c : plan) {
    const std::string descriptor = to_descriptor(c->problem);
    const Traffic traffic = bytes_moved(c->problem);
    const double bytes = static_cast<double>(traffic.total_bytes());
    auto fn = [&, c, descriptor, bytes](benchmark::State& state) {
      if (current_case != c) {  // repetitions of one case run back to back
        current.reset();
        current = prepare(c->problem);
        current_case = c;
      }
      RunArgs& a = current->args;
      for (auto _ : state) {
        if (flusher) flusher->flush();
        const auto t0 = std::chrono::steady_clock::now();
        const RunResult r = b.run(a);
        const auto t1 = std::chrono::steady_clock::now();
        if (!r.ok) {
          ++failed_calls;
          const std::string why = (r.unsupported ? "unsupported: " : "backend error: ") + r.message;
          state.SkipWithError(why.c_str());
          break;
        }
        state.SetIterationTime(b.last_kernel_seconds().value_or(std::chrono::duration<double>(t1 - t0).count()));
      }
      // Decimal units (G = 10⁹) like every GB/s normcheck prints; SetBytesProcessed would count in 2³⁰.
      state.counters["bytes_per_second"] =
          benchmark::Counter(bytes, benchmark::Counter::kIsIterationInvariantRate, benchmark::Counter::kIs1000);
      state.counters["bytes"] = bytes;
      state.counters["elements"] = static_cast<double>(c->problem.numel());
      state.counters["threads_used"] = threads;
      state.counters["roofline_fraction"] =
          benchmark::Counter(bytes / roof, benchmark::Counter::kIsIterationInvariantRate);
      state.SetLabel(descriptor);
    };
    const std::string name = fmt::format("{}/{}", c->suite, descriptor);
    auto* bm = benchmark::RegisterBenchmark(name.c_str(), fn);
    bm->UseManualTime()->Unit(benchmark::kMicrosecond);
    bm->ComputeStatistics("min", [](const std::vector<double>& v) { return *std::min_element(v.begin(), v.end()); });
    if (opt.cold_cache) {
      // Every iteration pays a flush outside the timed region: cap the count (docs/bench.md).
      const auto probe = prepare(c->problem);
      const auto t0 = std::chrono::steady_clock::now();
      b.run(probe->args);
      const double once = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      bm->Iterations(std::clamp<benchmark::IterationCount>(
          static_cast<benchmark::IterationCount>(opt.min_time / std::max(once, 1e-9)), 1, 50));
    }
  }

  SummaryReporter display(isatty(STDOUT_FILENO) ? benchmark::ConsoleReporter::OO_Color
                                                : benchmark::ConsoleReporter::OO_None,
                          roof);
  ConsistentJsonReporter file(roof);
  if (opt.json_path.empty())
    benchmark::RunSpecifiedBenchmarks(&display);
  else
    benchmark::RunSpecifiedBenchmarks(&display, &file);
  benchmark::ClearRegisteredBenchmarks();
  current.reset();

  print_bench_summary(display.rows, roof, threads);
  if (!opt.json_path.empty()) fmt::print("normcheck bench: Google Benchmark JSON written to {}\n", opt.json_path);
  return failed_calls ? kExitMismatch : kExitPass;
}

}  // namespace normcheck
