// STREAM-style copy and triad (McCalpin 1995; https://www.cs.virginia.edu/stream/ref.html):
// arrays of doubles far larger than the last-level cache, each thread owning a static slice that
// it first-touches itself, best rate of several trials, bytes counted as STREAM counts them.
#include <unistd.h>

#include <algorithm>
#include <barrier>
#include <chrono>
#include <fstream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "normcheck/bench.hpp"

namespace normcheck {

double StreamBandwidth::roofline_bytes_per_second() const {
  return std::max(copy_bytes_per_second, triad_bytes_per_second);
}

int64_t last_level_cache_bytes() {
  // /sys lists every cache of cpu0 (sizes read "32768K"); sysconf asks CPUID, which in a virtual
  // machine may describe the host's whole cache. The larger of the two keeps STREAM honest.
  int64_t best = 0;
  for (int i = 0; i < 8; ++i) {
    std::ifstream f("/sys/devices/system/cpu/cpu0/cache/index" + std::to_string(i) + "/size");
    std::string s;
    if (!(f >> s) || s.empty()) continue;
    int64_t v = std::stoll(s);
    if (s.back() == 'K') v <<= 10;
    if (s.back() == 'M') v <<= 20;
    best = std::max(best, v);
  }
#ifdef _SC_LEVEL3_CACHE_SIZE
  best = std::max<int64_t>(best, sysconf(_SC_LEVEL3_CACHE_SIZE));
#endif
  return best > 0 ? best : int64_t{32} << 20;
}

StreamBandwidth measure_stream_bandwidth(int threads, int trials) {
  threads = std::max(1, threads);
  trials = std::max(1, trials);
  StreamBandwidth r;
  r.threads = threads;
  r.trials = trials;
  r.array_bytes = std::clamp(4 * last_level_cache_bytes(), int64_t{64} << 20, int64_t{1} << 30);
  const int64_t n = r.array_bytes / static_cast<int64_t>(sizeof(double));
  // Uninitialized storage, so each thread's first touch places its own pages.
  std::unique_ptr<double[]> a(new double[static_cast<size_t>(n)]), b(new double[static_cast<size_t>(n)]),
      c(new double[static_cast<size_t>(n)]);
  // Every phase ends at a barrier whose completion step (run by one thread) stamps the clock:
  // stamp 0 after the first touch, then one after each copy and one after each triad.
  std::vector<std::chrono::steady_clock::time_point> stamps;
  stamps.reserve(static_cast<size_t>(2 * trials + 1));
  auto on_phase = [&]() noexcept { stamps.push_back(std::chrono::steady_clock::now()); };
  std::barrier sync(threads, on_phase);
  auto worker = [&](int id) {
    const int64_t lo = n * id / threads, hi = n * (id + 1) / threads;
    for (int64_t i = lo; i < hi; ++i) a[i] = 1.0, b[i] = 2.0, c[i] = 0.5;
    sync.arrive_and_wait();
    for (int t = 0; t < trials; ++t) {
      for (int64_t i = lo; i < hi; ++i) b[i] = a[i];
      sync.arrive_and_wait();
      for (int64_t i = lo; i < hi; ++i) a[i] = b[i] + 3.0 * c[i];
      sync.arrive_and_wait();
    }
  };
  std::vector<std::thread> pool;
  for (int i = 1; i < threads; ++i) pool.emplace_back(worker, i);
  worker(0);
  for (auto& t : pool) t.join();
  double copy_best = 1e300, triad_best = 1e300;
  for (size_t t = 0; t < static_cast<size_t>(trials); ++t) {
    copy_best = std::min(copy_best, std::chrono::duration<double>(stamps[2 * t + 1] - stamps[2 * t]).count());
    triad_best = std::min(triad_best, std::chrono::duration<double>(stamps[2 * t + 2] - stamps[2 * t + 1]).count());
  }
  r.copy_bytes_per_second = 2.0 * 8.0 * static_cast<double>(n) / copy_best;
  r.triad_bytes_per_second = 3.0 * 8.0 * static_cast<double>(n) / triad_best;
  return r;
}

}  // namespace normcheck
