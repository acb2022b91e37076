// Throughput of exact summation (include/normcheck/exact_sum.hpp) against a plain double loop and
// Kahan's compensated sum, over the same data in one run (Google Benchmark).
// Run: normcheck_bench_exact_sum --benchmark_counters_tabular=true
// Counters: ns_per_element (CPU time of one pass / elements); ratio_to_plain (one pass / one plain
// recursive double sum of the same data, the fastest of 3 timed here in CPU time, so both come from
// this run and the same clock).
// Data: doubles uniform in [−1, 1) scaled by 2^k, k uniform in [−30, 30] (random chunk positions,
// so the superaccumulator's writes move around), from a fixed seed.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cmath>
#include <ctime>
#include <memory>
#include <random>
#include <vector>

#include "normcheck/exact_sum.hpp"

namespace normcheck {
namespace {

std::vector<double> make_data(std::size_t n, unsigned seed) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> u(-1.0, 1.0);
  std::uniform_int_distribution<int> k(-30, 30);
  std::vector<double> v(n);
  for (double& x : v) x = std::ldexp(u(rng), k(rng));
  return v;
}

/// Recursive summation, the order written (the compiler may not reassociate: no -ffast-math).
double plain_sum(const std::vector<double>& v) {
  double s = 0.0;
  for (double x : v) s += x;
  return s;
}

/// Kahan's compensated summation (Kahan 1965, CACM 8(1):40; Higham, Accuracy and Stability of
/// Numerical Algorithms, 2nd ed., Algorithm 4.2).
double kahan_sum(const std::vector<double>& v) {
  double s = 0.0, c = 0.0;
  for (double x : v) {
    const double y = x - c;
    const double t = s + y;
    c = (t - s) - y;
    s = t;
  }
  return s;
}

/// Process CPU seconds, the clock Google Benchmark's CPU time (and so the counters) uses.
double cpu_seconds() {
  timespec t{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
  return static_cast<double>(t.tv_sec) + 1e-9 * static_cast<double>(t.tv_nsec);
}

/// CPU seconds for one plain sum of v: the fastest of 3.
double plain_seconds(const std::vector<double>& v) {
  double best = 1e30;
  for (int r = 0; r < 3; ++r) {
    const double t0 = cpu_seconds();
    benchmark::DoNotOptimize(plain_sum(v));
    best = std::min(best, cpu_seconds() - t0);
  }
  return best;
}

void set_counters(benchmark::State& state, std::size_t n, double plain_s) {
  state.counters["ns_per_element"] = benchmark::Counter(static_cast<double>(n) * 1e-9,
                                                        benchmark::Counter::kIsIterationInvariantRate |
                                                            benchmark::Counter::kInvert);
  // ratio = (time per pass) / plain_s, as an inverted rate of plain_s per iteration.
  state.counters["ratio_to_plain"] = benchmark::Counter(
      plain_s, benchmark::Counter::kIsIterationInvariantRate | benchmark::Counter::kInvert);
  state.SetItemsProcessed(state.iterations() * static_cast<std::int64_t>(n));
}

void BM_PlainSum(benchmark::State& state) {
  const auto n = static_cast<std::size_t>(state.range(0));
  const std::vector<double> v = make_data(n, 1);
  const double p = plain_seconds(v);
  for (auto _ : state) benchmark::DoNotOptimize(plain_sum(v));
  set_counters(state, n, p);
}

void BM_KahanSum(benchmark::State& state) {
  const auto n = static_cast<std::size_t>(state.range(0));
  const std::vector<double> v = make_data(n, 1);
  const double p = plain_seconds(v);
  for (auto _ : state) benchmark::DoNotOptimize(kahan_sum(v));
  set_counters(state, n, p);
}

/// add(double) per element, then round(): what a caller's own loop gets.
void BM_ExactSumAdd(benchmark::State& state) {
  const auto n = static_cast<std::size_t>(state.range(0));
  const std::vector<double> v = make_data(n, 1);
  const double p = plain_seconds(v);
  for (auto _ : state) {
    ExactSum s;
    for (double x : v) s.add(x);
    benchmark::DoNotOptimize(s.round());
  }
  set_counters(state, n, p);
}

/// add(span): the carry check once per block.
void BM_ExactSumAddSpan(benchmark::State& state) {
  const auto n = static_cast<std::size_t>(state.range(0));
  const std::vector<double> v = make_data(n, 1);
  const double p = plain_seconds(v);
  for (auto _ : state) {
    ExactSum s;
    s.add(std::span<const double>(v));
    benchmark::DoNotOptimize(s.round());
  }
  set_counters(state, n, p);
}

/// ExactSumBuffer::add per element (the large superaccumulator), then flush_into and round().
void BM_ExactSumBufferAdd(benchmark::State& state) {
  const auto n = static_cast<std::size_t>(state.range(0));
  const std::vector<double> v = make_data(n, 1);
  const double p = plain_seconds(v);
  auto buf = std::make_unique<ExactSumBuffer>();
  for (auto _ : state) {
    for (double x : v) buf->add(x);
    ExactSum s;
    buf->flush_into(s);
    benchmark::DoNotOptimize(s.round());
  }
  set_counters(state, n, p);
}

/// Σx and Σx² of f32 data at once (x² is exact in double), two buffers: the statistics pass of a
/// normalization layer. The ratio is to a plain double sum of the same n values.
void BM_ExactSumBufferMoments(benchmark::State& state) {
  const auto n = static_cast<std::size_t>(state.range(0));
  std::vector<double> v = make_data(n, 1);
  std::vector<float> f(n);
  for (std::size_t i = 0; i < n; ++i) f[i] = static_cast<float>(v[i]);
  const double p = plain_seconds(v);
  auto s1 = std::make_unique<ExactSumBuffer>(), s2 = std::make_unique<ExactSumBuffer>();
  for (auto _ : state) {
    for (float x : f) {
      const double d = x;
      s1->add(d);
      s2->add(d * d);
    }
    ExactSum a, b;
    s1->flush_into(a);
    s2->flush_into(b);
    benchmark::DoNotOptimize(a.round());
    benchmark::DoNotOptimize(b.round());
  }
  set_counters(state, n, p);
}

/// Σ a_i·b_i exactly, f64 data; the ratio is to a plain sum of n doubles (one array, not two).
void BM_ExactSumAddProduct(benchmark::State& state) {
  const auto n = static_cast<std::size_t>(state.range(0));
  const std::vector<double> a = make_data(n, 1), b = make_data(n, 2);
  const double p = plain_seconds(a);
  for (auto _ : state) {
    ExactSum s;
    for (std::size_t i = 0; i < n; ++i) s.add_product(a[i], b[i]);
    benchmark::DoNotOptimize(s.round());
  }
  set_counters(state, n, p);
}

/// Σ a_i·b_i·c_i exactly (a·b·c with c = a: the backward's Σ dy·γ·x shape of term).
void BM_ExactSumAddProduct3(benchmark::State& state) {
  const auto n = static_cast<std::size_t>(state.range(0));
  const std::vector<double> a = make_data(n, 1), b = make_data(n, 2);
  const double p = plain_seconds(a);
  for (auto _ : state) {
    ExactSum s;
    for (std::size_t i = 0; i < n; ++i) s.add_product(a[i], b[i], a[i]);
    benchmark::DoNotOptimize(s.round());
  }
  set_counters(state, n, p);
}

/// The O(chunks) finishing step alone.
void BM_ExactSumRound(benchmark::State& state) {
  ExactSum s;
  for (double x : make_data(1000, 3)) s.add(x);
  for (auto _ : state) benchmark::DoNotOptimize(s.round());
}

#define NORMCHECK_SIZES RangeMultiplier(4)->Range(1 << 16, 1 << 24)->Unit(benchmark::kMillisecond)
BENCHMARK(BM_PlainSum)->NORMCHECK_SIZES;
BENCHMARK(BM_KahanSum)->NORMCHECK_SIZES;
BENCHMARK(BM_ExactSumAdd)->NORMCHECK_SIZES;
BENCHMARK(BM_ExactSumAddSpan)->NORMCHECK_SIZES;
BENCHMARK(BM_ExactSumBufferAdd)->NORMCHECK_SIZES;
BENCHMARK(BM_ExactSumBufferMoments)->NORMCHECK_SIZES;
BENCHMARK(BM_ExactSumAddProduct)->NORMCHECK_SIZES;
BENCHMARK(BM_ExactSumAddProduct3)->NORMCHECK_SIZES;
BENCHMARK(BM_ExactSumRound)->Unit(benchmark::kMicrosecond);

}  // namespace
}  // namespace normcheck

BENCHMARK_MAIN();
