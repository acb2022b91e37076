#include "normcheck/memory.hpp"

#include <cstdint>
#include <cstdlib>
#include <string_view>

#if defined(__linux__)
#include <sys/mman.h>
#include <unistd.h>
#endif

namespace normcheck {

bool huge_pages_enabled() noexcept {
  static const bool enabled = [] {
    const char* v = std::getenv("NORMCHECK_HUGE_PAGES");
    return v == nullptr || std::string_view(v) != "0";
  }();
  return enabled;
}

void advise_huge_pages(const void* p, std::size_t bytes) noexcept {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  if (p == nullptr || bytes < kHugePageMinBytes || !huge_pages_enabled()) return;
  const auto page = static_cast<std::uintptr_t>(sysconf(_SC_PAGESIZE));
  const auto lo = (reinterpret_cast<std::uintptr_t>(p) + page - 1) / page * page;
  const auto hi = (reinterpret_cast<std::uintptr_t>(p) + bytes) / page * page;
  if (hi > lo) (void)madvise(reinterpret_cast<void*>(lo), hi - lo, MADV_HUGEPAGE);  // advice only
#else
  (void)p;
  (void)bytes;
#endif
}

}  // namespace normcheck
