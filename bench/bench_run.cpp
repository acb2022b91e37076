// `normcheck bench`: one Google Benchmark per case, timed around the backend call only.
// Method and JSON fields: docs/bench.md.
#include <benchmark/benchmark.h>
#include <unistd.h>
#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <map>
#include <memory>

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

/// Google Benchmark's console table, plus the median runs kept for normcheck's summary.
class SummaryReporter final : public benchmark::ConsoleReporter {
 public:
  struct Row {
    std::string name, label;
    double seconds = 0, bytes = 0, bytes_per_second = 0, fraction = 0;
    std::string error;
  };
  std::vector<Row> rows;
  using ConsoleReporter::ConsoleReporter;

  void ReportRuns(const std::vector<Run>& runs) override {
    for (const Run& r : runs) {
      const bool median = r.run_type == Run::RT_Aggregate && r.aggregate_name == "median";
      const bool single = r.run_type == Run::RT_Iteration && r.repetitions <= 1;
      if (!(median || single || r.error_occurred)) continue;
      Row row{r.run_name.str(), r.report_label, 0, 0, 0, 0, r.error_occurred ? r.error_message : ""};
      if (!r.error_occurred) {
        row.seconds = r.GetAdjustedRealTime() / benchmark::GetTimeUnitMultiplier(r.time_unit);
        row.bytes = counter(r, "bytes");
        row.bytes_per_second = counter(r, "bytes_per_second");
        row.fraction = counter(r, "roofline_fraction");
      }
      rows.push_back(std::move(row));
    }
    ConsoleReporter::ReportRuns(runs);
  }

 private:
  static double counter(const Run& r, const char* name) {
    auto it = r.counters.find(name);
    return it == r.counters.end() ? 0.0 : it->second.value;
  }
};

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

  fmt::print("normcheck bench: measuring memory bandwidth (STREAM copy and triad, {} thread{})…\n",
             threads, threads == 1 ? "" : "s");
  std::fflush(stdout);
  const StreamBandwidth bw = measure_stream_bandwidth(threads);
  double roof = bw.roofline_bytes_per_second();
  fmt::print("normcheck bench: copy {:.2f} GB/s, triad {:.2f} GB/s on {} MiB arrays (best of {}); roofline {:.2f} GB/s\n",
             bw.copy_bytes_per_second / 1e9, bw.triad_bytes_per_second / 1e9, bw.array_bytes >> 20,
             bw.trials, roof / 1e9);
  const std::optional<double> device_bw = b.device_bandwidth();  // a device backend: its own memory
  if (device_bw) {
    roof = *device_bw;
    fmt::print("normcheck bench: device copy {:.2f} GB/s; that is the roofline, and times are the backend's "
               "device-side kernel times\n", roof / 1e9);
  }

  // Google Benchmark's own flags: ours first, the user's pass-through after (they win).
  std::vector<std::string> flags = {"normcheck-bench",
                                    fmt::format("--benchmark_repetitions={}", opt.repetitions),
                                    fmt::format("--benchmark_min_time={}", opt.min_time),
                                    "--benchmark_display_aggregates_only=true"};
  if (!opt.json_path.empty()) {
    flags.push_back("--benchmark_out=" + opt.json_path);
    flags.push_back("--benchmark_out_format=json");
  }
  flags.insert(flags.end(), opt.benchmark_flags.begin(), opt.benchmark_flags.end());
  std::vector<char*> argv;
  for (auto& f : flags) argv.push_back(f.data());
  int argc = static_cast<int>(argv.size());
  benchmark::Initialize(&argc, argv.data());
  if (argc > 1) throw Error(fmt::format("unknown Google Benchmark flag '{}'", argv[1]));

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
      state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) * static_cast<int64_t>(bytes));
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
                                                : benchmark::ConsoleReporter::OO_None);
  benchmark::RunSpecifiedBenchmarks(&display);
  benchmark::ClearRegisteredBenchmarks();
  current.reset();

  // Summary: median per case, then the median fraction per suite.
  fmt::print("\n{:<70} {:>10} {:>12} {:>9} {:>9}\n", "case (median over repetitions)", "MB moved",
             "time [µs]", "GB/s", "roofline");
  std::map<std::string, std::vector<double>> per_suite;
  for (const auto& r : display.rows) {
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
  if (!opt.json_path.empty()) fmt::print("normcheck bench: Google Benchmark JSON written to {}\n", opt.json_path);
  return failed_calls ? kExitMismatch : kExitPass;
}

}  // namespace normcheck
