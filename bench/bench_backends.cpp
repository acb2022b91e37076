// Throughput of one backend call and of the reference, side by side in one run (Google Benchmark).
// Run: normcheck_bench --benchmark_format=json --benchmark_out=bench.json
// Counters: bytes_per_second counts x read and y written once (forward), in bytes.
#include <benchmark/benchmark.h>

#include "normcheck/backend.hpp"
#include "normcheck/generate.hpp"
#include "normcheck/reference.hpp"
#include "normcheck/runner.hpp"

namespace normcheck {
namespace {

void BM_NaiveForward(benchmark::State& state, const char* descriptor) {
  const Problem p = parse_descriptor(descriptor);
  const Partition part = make_partition(p);
  GeneratedInputs in = generate_inputs(p, part);
  BackendRegistry reg;
  register_builtin_backends(reg);
  auto b = reg.create("naive");
  Tensor y(p.dtype, p.dims, p.layout);
  RunArgs a = make_run_args(p);
  a.x = in.batches.back().arg();
  a.y = y.arg();
  a.gamma = in.gamma.arg();
  a.beta = in.beta.arg();
  for (auto _ : state) benchmark::DoNotOptimize(b->run(a));
  state.SetBytesProcessed(state.iterations() * 2 * p.numel() * dtype_size(p.dtype));
}

void BM_Reference(benchmark::State& state, const char* descriptor) {
  const Problem p = parse_descriptor(descriptor);
  const Partition part = make_partition(p);
  GeneratedInputs g = generate_inputs(p, part);
  ReferenceInputs in;
  in.batches.push_back(g.batches.back().to_vector());
  in.gamma = g.gamma.to_vector();
  in.beta = g.beta.to_vector();
  in.eps = p.eps;
  for (auto _ : state) benchmark::DoNotOptimize(reference_run(p, part, in, static_cast<int>(state.range(0))));
  state.SetItemsProcessed(state.iterations() * p.numel());
}

BENCHMARK_CAPTURE(BM_NaiveForward, layer_norm_64x768, "layer_norm,shape=64x768")->Unit(benchmark::kMicrosecond);
BENCHMARK_CAPTURE(BM_NaiveForward, batch_norm_8x64x28x28, "batch_norm,shape=8x64x28x28")->Unit(benchmark::kMicrosecond);
BENCHMARK_CAPTURE(BM_Reference, layer_norm_8x768, "layer_norm,shape=8x768")->Arg(128)->Arg(256)->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace normcheck

BENCHMARK_MAIN();
