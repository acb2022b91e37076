#include "normcheck/interrupt.hpp"

#include <atomic>

namespace normcheck {
namespace {
std::atomic<int> g_signal{0};
static_assert(std::atomic<int>::is_always_lock_free, "signal handlers need a lock-free flag");
}  // namespace

void request_interrupt(int signal_number) noexcept { g_signal.store(signal_number == 0 ? -1 : signal_number); }
bool interrupted() noexcept { return g_signal.load() != 0; }
int interrupt_signal() noexcept { int s = g_signal.load(); return s < 0 ? 0 : s; }
void clear_interrupt() noexcept { g_signal.store(0); }

}  // namespace normcheck
