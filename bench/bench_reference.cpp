// The fast exact reference and the whole case against a float64 two-pass of the same problem,
// measured side by side in the same benchmark (each iteration times both), so the ratio does not
// depend on what else the machine is doing between benchmarks (issue 11).
//
// Run: normcheck_bench_reference --benchmark_format=json --benchmark_out=ref.json
//      NORMCHECK_BENCH_MAX_LOG2=28 raises the largest size (default 2^22 elements; 2^28 needs
//      about 11 GB and minutes per case on 2 cores).
// Counters (per benchmark):
//   ns_per_element      the measured thing (reference or whole case), nanoseconds per element
//   f64_ns_per_element  the float64 two-pass of the same partition, measured in the same loop
//   ratio               ns_per_element / f64_ns_per_element (wall clock)
//   cpu_ratio           the same from the thread's CPU time (1 thread only: all the work is on
//                       the calling thread), insensitive to other processes' load
//   input_bytes_per_element  resident memory of the inputs in the reference's form (doubles in
//                       logical order), per element of x
//   peak_bytes_per_element   the process's peak resident set (VmHWM, reset through
//                       /proc/self/clear_refs after the setup) over its size before the setup, per
//                       element of x: inputs + everything the measured thing allocates
//   own_peak_bytes_per_element  the peak resident set over the size after the setup, per element
//                       of x: what the measured thing itself allocates at its peak. For the whole
//                       case that is everything it needs (it generates its own inputs; the setup's
//                       ReferenceInputs feed only the float64 two-pass)
//   backend_ns_per_element  whole case only: the time inside the naive backend's calls
//                       (CaseResult::backend_seconds), nanoseconds per element
//   own_ratio           whole case only: (ns_per_element − backend_ns_per_element) /
//                       f64_ns_per_element, normcheck's own cost without the backend under test
//   threads             reference threads
#include <benchmark/benchmark.h>

#include <chrono>
#include <cmath>
#include <cstdlib>
#include <ctime>
#include <fstream>
#include <functional>
#include <string>
#include <thread>

#include "normcheck/backend.hpp"
#include "normcheck/generate.hpp"
#include "normcheck/parallel.hpp"
#include "normcheck/reference.hpp"
#include "normcheck/runner.hpp"

namespace normcheck {
namespace {

/// The plain float64 two-pass of the same problem: per set Σx, then Σ(x−μ)², then y (forward)
/// or Σg, Σg·x̂, dx, dgamma, dbeta (backward), over the same strided partition.
void float64_two_pass(const Problem& p, const Partition& part, const ReferenceInputs& in, std::vector<double>& out,
                      std::vector<double>& dgamma) {
  const std::vector<double>& x = in.batches.back();
  const bool affine = !in.gamma.empty();
  const auto m = static_cast<double>(part.set_size);
  out.resize(x.size());
  dgamma.assign(static_cast<size_t>(part.num_affine), 0.0);
  for (int64_t s = 0; s < part.num_sets; ++s) {
    double sum = 0, ss = 0;
    for_each_in_set(part, s, [&](int64_t i, int64_t) { sum += x[i]; });
    const double mu = part.subtract_mean ? sum / m : 0;
    for_each_in_set(part, s, [&](int64_t i, int64_t) { ss += (x[i] - mu) * (x[i] - mu); });
    const double r = 1 / std::sqrt(ss / m + in.eps);
    if (!is_backward(p.pass)) {
      for_each_in_set(part, s, [&](int64_t i, int64_t j) {
        const double g = affine ? in.gamma[j] : 1, b = affine && part.has_beta ? in.beta[j] : 0;
        out[i] = g * (x[i] - mu) * r + b;
      });
      continue;
    }
    double sg = 0, sgx = 0;
    for_each_in_set(part, s, [&](int64_t i, int64_t j) {
      const double g = in.dy[i] * (affine ? in.gamma[j] : 1);
      sg += g;
      sgx += g * (x[i] - mu) * r;
      dgamma[j] += in.dy[i] * (x[i] - mu) * r;
    });
    const double a = part.subtract_mean ? sg / m : 0, c = sgx / m;
    for_each_in_set(part, s, [&](int64_t i, int64_t j) {
      const double g = in.dy[i] * (affine ? in.gamma[j] : 1);
      out[i] = r * (g - a - (x[i] - mu) * r * c);
    });
  }
}

long read_status_kb(const char* key) {
  std::ifstream f("/proc/self/status");
  std::string line;
  while (std::getline(f, line))
    if (line.rfind(key, 0) == 0) return std::atol(line.c_str() + std::string(key).size());
  return 0;
}
void reset_peak_rss() { std::ofstream("/proc/self/clear_refs") << "5"; }

double thread_cpu_seconds() {
  timespec t{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
  return static_cast<double>(t.tv_sec) + 1e-9 * static_cast<double>(t.tv_nsec);
}

/// Wall seconds of f(); *cpu += the calling thread's CPU seconds (robust to other load on the
/// machine, and the whole cost when the work runs on this one thread).
double seconds_of(const std::function<void()>& f, double* cpu) {
  const double c0 = thread_cpu_seconds();
  const auto t0 = std::chrono::steady_clock::now();
  f();
  *cpu += thread_cpu_seconds() - c0;
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

/// The benchmark loop: each iteration times the float64 two-pass of the problem, then measured();
/// the manual time is measured()'s. Sets ns_per_element, f64_ns_per_element, ratio and (1 thread)
/// cpu_ratio.
void time_against_float64(benchmark::State& state, const Problem& p, const Partition& part, const ReferenceInputs& in,
                          int threads, const std::function<void()>& measured) {
  std::vector<double> out, dg;
  double t_m = 0, t_f64 = 0, c_m = 0, c_f64 = 0;
  for (auto _ : state) {
    t_f64 += seconds_of([&] { float64_two_pass(p, part, in, out, dg); }, &c_f64);
    benchmark::DoNotOptimize(out.data());
    const double t = seconds_of(measured, &c_m);
    t_m += t;
    state.SetIterationTime(t);
  }
  const auto elems = static_cast<double>(p.numel()) * static_cast<double>(state.iterations());
  state.counters["ns_per_element"] = 1e9 * t_m / elems;
  state.counters["f64_ns_per_element"] = 1e9 * t_f64 / elems;
  state.counters["ratio"] = t_m / t_f64;
  if (threads == 1) state.counters["cpu_ratio"] = c_m / c_f64;
}

std::string shape_for(Op op, int log2) {
  const int64_t n = int64_t{1} << log2;
  switch (op) {
    case Op::batch_norm: return "batch_norm,shape=8x64x" + std::to_string(n / 512);
    case Op::group_norm: return "group_norm,groups=32,shape=8x64x" + std::to_string(n / 512);
    case Op::layer_norm: return "layer_norm,shape=" + std::to_string(n / 1024) + "x1024";
    case Op::rms_norm: return "rms_norm,shape=" + std::to_string(n / 1024) + "x1024";
    case Op::instance_norm: return "instance_norm,shape=8x64x" + std::to_string(n / 512);
  }
  return {};
}

/// state.range(0): log2 elements; range(1): 0 forward_training, 1 backward_training;
/// range(2): threads (0: all cores); range(3): 0 reference alone, 1 whole case (naive backend).
void BM_ReferenceVsFloat64(benchmark::State& state, Op op) {
  const int threads = state.range(2) == 0 ? static_cast<int>(std::thread::hardware_concurrency())
                                          : static_cast<int>(state.range(2));
  const bool whole = state.range(3) == 1;
  const std::string pass = state.range(1) == 0 ? "forward_training" : "backward_training";
  const long rss0_kb = read_status_kb("VmRSS:");
  const Problem p = parse_descriptor(shape_for(op, static_cast<int>(state.range(0))) + ",pass=" + pass);
  const Partition part = make_partition(p);
  const ReferenceInputs in = reference_inputs(p, generate_inputs(p, part));
  BackendRegistry reg;
  register_builtin_backends(reg);
  auto naive = reg.create("naive");
  naive->set_threads(threads);  // the backend on the same threads (cpu_ratio counts this thread's time only)
  RunOptions opt;
  opt.threads = threads;
  const long base_kb = read_status_kb("VmRSS:");
  reset_peak_rss();
  double backend_seconds = 0;
  time_against_float64(state, p, part, in, threads, [&] {
    if (whole) {
      const CaseResult r = run_case(*naive, p, opt);
      backend_seconds += r.backend_seconds;
      benchmark::DoNotOptimize(r.verdict);
    } else {
      benchmark::DoNotOptimize(fast_reference_run(p, part, in, threads).y.size());
    }
  });
  const double numel = static_cast<double>(p.numel());
  if (whole) {  // the backend's share, and normcheck's own cost against the float64 two-pass
    const double backend_ns = 1e9 * backend_seconds / (numel * static_cast<double>(state.iterations()));
    state.counters["backend_ns_per_element"] = backend_ns;
    state.counters["own_ratio"] =
        (state.counters["ns_per_element"] - backend_ns) / state.counters["f64_ns_per_element"];
  }
  state.counters["input_bytes_per_element"] = 1024.0 * static_cast<double>(base_kb - rss0_kb) / numel;
  const long hwm_kb = read_status_kb("VmHWM:");
  state.counters["peak_bytes_per_element"] = 1024.0 * static_cast<double>(hwm_kb - rss0_kb) / numel;
  state.counters["own_peak_bytes_per_element"] = 1024.0 * static_cast<double>(hwm_kb - base_kb) / numel;
  state.counters["threads"] = threads;
  state.SetLabel(to_descriptor(p) + (whole ? " [whole case]" : " [reference]"));
}

void sizes(benchmark::internal::Benchmark* b) {
  const char* env = std::getenv("NORMCHECK_BENCH_MAX_LOG2");
  const int max_log2 = env ? std::atoi(env) : 22;
  for (int log2 = 16; log2 <= max_log2; log2 += 2)
    for (int pass : {0, 1})
      for (int threads : {1, 0})
        for (int whole : {0, 1}) b->Args({log2, pass, threads, whole});
  b->UseManualTime()->Unit(benchmark::kMillisecond)->MinTime(0.2);
}

/// Input generation alone (generate_inputs, issue 11 item 5) against the float64 two-pass of the
/// same problem, timed in the same loop. state.range(0): log2 elements; range(1): 0
/// forward_training, 1 backward_training (x and dy); range(2): threads (0: all cores).
/// batch_norm f32 8×64×S, NCHW.
void BM_Generate(benchmark::State& state) {
  const int threads = resolve_threads(static_cast<int>(state.range(2)));
  const std::string pass = state.range(1) == 0 ? "forward_training" : "backward_training";
  const Problem p = parse_descriptor(shape_for(Op::batch_norm, static_cast<int>(state.range(0))) + ",pass=" + pass);
  const Partition part = make_partition(p);
  const ReferenceInputs in = reference_inputs(p, generate_inputs(p, part, threads));
  time_against_float64(state, p, part, in, threads,
                       [&] { benchmark::DoNotOptimize(generate_inputs(p, part, threads).batches.size()); });
  state.counters["threads"] = threads;
  state.SetLabel(to_descriptor(p) + " [generate_inputs]");
}
BENCHMARK(BM_Generate)
    ->ArgsProduct({{20, 22}, {0, 1}, {1, 0}})
    ->UseManualTime()->Unit(benchmark::kMillisecond)->MinTime(0.2);

BENCHMARK_CAPTURE(BM_ReferenceVsFloat64, batch_norm, Op::batch_norm)->Apply(sizes);
BENCHMARK_CAPTURE(BM_ReferenceVsFloat64, layer_norm, Op::layer_norm)->Apply(sizes);
BENCHMARK_CAPTURE(BM_ReferenceVsFloat64, group_norm, Op::group_norm)->Apply(sizes);
BENCHMARK_CAPTURE(BM_ReferenceVsFloat64, rms_norm, Op::rms_norm)->Apply(sizes);

}  // namespace
}  // namespace normcheck

BENCHMARK_MAIN();
