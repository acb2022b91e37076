// Per-call cost of a plugin call through the persistent worker against the same plugin called
// in process (--in-process), on the same RunArgs (Google Benchmark). The difference is the
// worker's overhead: copying the tensors into the shared arena and back, the guard and input
// checks, and one round trip over the socket (docs/plugins.md "Cost").
// Run: build/release/bench/normcheck_bench_plugin [--benchmark_filter=…]
// The plugin is examples/plugin-c (NORMCHECK_BENCH_PLUGIN overrides the path).
#include <benchmark/benchmark.h>

#include <cstdlib>

#include "normcheck/backend.hpp"
#include "normcheck/generate.hpp"
#include "normcheck/runner.hpp"
#include "plugin/plugin_backend.hpp"

namespace normcheck {
namespace {

std::string plugin_path() {
  const char* env = std::getenv("NORMCHECK_BENCH_PLUGIN");
  return env ? env : NORMCHECK_EXAMPLE_PLUGIN;
}

/// One forward_training call of `descriptor`, isolated (worker) or in process.
void BM_PluginCall(benchmark::State& state, const char* descriptor, bool isolated) {
  const Problem p = parse_descriptor(descriptor);
  const Partition part = make_partition(p);
  GeneratedInputs in = generate_inputs(p, part);
  auto b = load_plugin(plugin_path(), 60, isolated);
  const std::vector<int64_t> stats = stats_shape(p);
  const DType sdt = stats_dtype(p.dtype);
  Tensor y(p.dtype, p.dims, p.layout), mean(sdt, stats), variance(sdt, stats), inv_std(sdt, stats);
  RunArgs a = make_run_args(p);
  a.x = in.batches.back().arg();
  a.y = y.arg();
  a.gamma = in.gamma.arg();
  a.beta = in.beta.arg();
  a.mean = mean.arg();
  a.variance = variance.arg();
  a.inv_std = inv_std.arg();
  a.running_mean = in.running_mean.arg();
  a.running_var = in.running_var.arg();
  for (auto _ : state) {
    const RunResult r = b->run(a);
    if (!r.ok) {
      state.SkipWithError(r.message.c_str());
      break;
    }
  }
  state.SetItemsProcessed(state.iterations());
  state.counters["elements"] = static_cast<double>(p.numel());
}

#define NC_PLUGIN_PAIR(name, descriptor)                                                          \
  BENCHMARK_CAPTURE(BM_PluginCall, name##_in_process, descriptor, false)->Unit(benchmark::kMicrosecond); \
  BENCHMARK_CAPTURE(BM_PluginCall, name##_worker, descriptor, true)->Unit(benchmark::kMicrosecond)

NC_PLUGIN_PAIR(layer_norm_1x8, "layer_norm,shape=1x8");
NC_PLUGIN_PAIR(layer_norm_64x768, "layer_norm,shape=64x768");
NC_PLUGIN_PAIR(batch_norm_8x64x28x28, "batch_norm,shape=8x64x28x28");

}  // namespace
}  // namespace normcheck

BENCHMARK_MAIN();
