// normcheck — large buffers on transparent huge pages.
//
// A case of 2^24 elements allocates a few hundred MB of fresh memory (tensors, the reference's
// inputs and outputs), and with 4 KiB pages the kernel takes one page fault per 4 KiB: measured,
// 15% of a whole LayerNorm backward case. Where the kernel offers transparent huge pages on
// request (/sys/kernel/mm/transparent_hugepage/enabled = madvise or always), madvise(MADV_HUGEPAGE)
// on a buffer before its first touch makes that one fault per 2 MiB. Elsewhere it does nothing;
// contents and results never depend on it.
#pragma once

#include <cstddef>
#include <vector>

namespace normcheck {

/// Buffers of at least this many bytes are advised (smaller ones gain nothing: huge pages are 2 MiB).
constexpr std::size_t kHugePageMinBytes = std::size_t{4} << 20;

/// False when the environment variable NORMCHECK_HUGE_PAGES is "0" (read once): then nothing is
/// advised, for comparisons and for systems where huge pages cost more than they save.
bool huge_pages_enabled() noexcept;

/// madvise(MADV_HUGEPAGE) on the whole pages inside [p, p + bytes) when bytes ≥ kHugePageMinBytes
/// and huge_pages_enabled() (Linux; a no-op elsewhere and where the kernel refuses). Never throws.
void advise_huge_pages(const void* p, std::size_t bytes) noexcept;

/// v = n copies of value in a fresh allocation that is advised before it is touched (v's old
/// contents are discarded). Throws std::bad_alloc as std::vector does.
template <class T>
void assign_large(std::vector<T>& v, std::size_t n, const T& value = T()) {
  std::vector<T>().swap(v);
  v.reserve(n);
  advise_huge_pages(v.data(), n * sizeof(T));
  v.assign(n, value);
}

}  // namespace normcheck
