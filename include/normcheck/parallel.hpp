// normcheck — the one thread pool pattern of the project: tasks [0, n) handed out in order to
// `threads` threads (the caller is one of them); the first exception is rethrown on the caller.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

namespace normcheck {

/// The thread count a request means: `requested` when positive, else every core (at least 1).
inline int resolve_threads(int requested) {
  return requested > 0 ? requested : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
}

/// Calls f(i) for every i in [0, n), on min(threads, n) threads (threads ≤ 1: on the caller, in
/// order). f must be safe to call concurrently for different i. After the first exception no new
/// task starts; it is rethrown once all threads have stopped.
template <class F>
void parallel_for(int64_t n, int threads, const F& f) {
  const int t = static_cast<int>(std::min<int64_t>(std::max(threads, 1), n));
  if (t <= 1) {
    for (int64_t i = 0; i < n; ++i) f(i);
    return;
  }
  std::atomic<int64_t> next{0};
  std::exception_ptr error;
  std::mutex mu;
  auto work = [&] {
    try {
      for (int64_t i; (i = next.fetch_add(1)) < n;) f(i);
    } catch (...) {
      std::lock_guard<std::mutex> lock(mu);
      if (!error) error = std::current_exception();
      next = n;
    }
  };
  std::vector<std::thread> pool;
  for (int k = 1; k < t; ++k) pool.emplace_back(work);
  work();
  for (auto& th : pool) th.join();
  if (error) std::rethrow_exception(error);
}

}  // namespace normcheck
