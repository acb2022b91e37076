// normcheck — throughput against the memory roofline (`normcheck bench`, docs/bench.md).
//
// Normalization layers are memory-bound, so a call's honest figure is the bandwidth it achieves
// as a fraction of what the machine can move. Three parts:
//   - bytes_moved(): the bytes one call must read and write at least (each tensor once);
//   - measure_stream_bandwidth(): the machine's bandwidth, STREAM copy and triad (McCalpin,
//     "Memory Bandwidth and Machine Balance", IEEE TCCA Newsletter 1995) on arrays far larger
//     than the last-level cache;
//   - run_bench(): one Google Benchmark per case; its JSON output is the raw result format.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "normcheck/backend.hpp"
#include "normcheck/problem.hpp"

namespace normcheck {

/// One tensor's part of a call's memory traffic.
struct TensorTraffic {
  std::string name;      ///< x, y, dy, dx, gamma, beta, mean, inv_std, running_mean, …
  int64_t elements = 0;  ///< elements of the tensor
  int64_t bytes = 0;     ///< elements × element size of its dtype, in bytes
  bool written = false;  ///< false: read once; true: written once (running stats: read and written,
                         ///< listed twice)
};

/// The bytes-moved model of one call (docs/bench.md "Bytes moved"): every tensor the pass must
/// read is read once and every tensor it must write is written once, at its dtype's size (data
/// tensors in the problem's dtype; gamma, beta, statistics and their gradients in the statistics
/// dtype: f64 for f64 data, f32 otherwise). Saved statistics count two per reduction set (mean
/// and inv_std; rms_norm one). A kernel that reads x twice (two-pass) moves more than this
/// minimum, so its roofline fraction is lower: that is the point of the figure.
struct Traffic {
  std::vector<TensorTraffic> tensors;
  int64_t read_bytes = 0;
  int64_t written_bytes = 0;
  int64_t total_bytes() const { return read_bytes + written_bytes; }
};

/// The model for problem p (which must be valid). Throws Error for an invalid problem.
Traffic bytes_moved(const Problem& p);

/// STREAM-style bandwidth, in bytes per second, counted as STREAM does (copy: 2 × 8 bytes per
/// element, triad: 3 × 8; write-allocate traffic not counted).
struct StreamBandwidth {
  double copy_bytes_per_second = 0;   ///< best of the trials of b[i] = a[i]
  double triad_bytes_per_second = 0;  ///< best of the trials of a[i] = b[i] + s·c[i]
  int64_t array_bytes = 0;            ///< bytes per array (three arrays)
  int threads = 1;
  int trials = 0;
  /// The roofline: the larger of copy and triad (main-memory bandwidth). With a warm cache a
  /// working set that fits in cache can run above it (fraction > 1): that is cache bandwidth,
  /// which the report shows as such rather than clipping it.
  double roofline_bytes_per_second() const;
};

/// Runs copy and triad `trials` times each with `threads` threads (std::thread, static split of
/// the arrays, first-touch by the same threads) on three arrays of 4 × the last-level cache,
/// clamped to [64 MiB, 1 GiB], bytes each, and keeps the best rate of each.
StreamBandwidth measure_stream_bandwidth(int threads, int trials = 5);

/// Bytes of the last-level cache: the larger of what /sys and sysconf (CPUID) report, 32 MiB
/// when neither says. Inside a virtual machine CPUID may report the host's whole L3.
int64_t last_level_cache_bytes();

/// Options of `normcheck bench` (docs/cli.md).
struct BenchOptions {
  std::string backend_label;     ///< --backend as given, recorded in the JSON
  std::string suite_label;
  std::string json_path;         ///< Google Benchmark JSON goes here ("" = console only)
  int threads = 0;               ///< 0: the backend's default
  bool cold_cache = false;       ///< flush the last-level cache before every timed call
  int repetitions = 5;
  double min_time = 0.1;         ///< seconds per repetition (Google Benchmark's min_time)
  std::string command;           ///< recorded in the JSON context
  std::vector<std::string> benchmark_flags;  ///< passed through to Google Benchmark
  /// Measure STREAM again instead of taking the bandwidth cached for this machine and thread
  /// count ($XDG_CACHE_HOME/normcheck/stream-bandwidth.json; docs/bench.md "Bandwidth cache").
  bool remeasure_bandwidth = false;
};

struct BenchCase {
  Problem problem;
  std::string suite;  ///< the suite it came from ("cases" for --case); names the benchmark
};

/// Measures the bandwidth, then benchmarks every case on backend b (cases the backend does not
/// support are listed and skipped). Benchmark names are "SUITE/DESCRIPTOR/manual_time" (Google Benchmark adds the last part), labels the descriptor. Prints Google Benchmark's console table and a summary (median
/// GB/s and roofline fraction per case, median fraction per suite). Returns the exit code: 0, or
/// kExitMismatch when a backend call failed during the run. Throws Error for bad options.
int run_bench(Backend& b, const std::vector<BenchCase>& cases, const BenchOptions& opt);

}  // namespace normcheck
