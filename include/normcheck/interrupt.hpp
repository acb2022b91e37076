// normcheck — a process-wide cancellation flag.
//
// The CLI's signal handlers (SIGINT, and where installed SIGTERM/SIGHUP) set it; long loops (the
// reference, the comparison, a plugin call's wait) poll it and stop early, so an interrupt is
// honoured within about a second even in the middle of one large case. Async-signal-safe:
// request_interrupt() only stores to a lock-free atomic.
#pragma once

namespace normcheck {

/// Sets the flag; `signal_number` (e.g. SIGINT = 2) is kept for the exit code 128 + n.
void request_interrupt(int signal_number) noexcept;
/// True once request_interrupt() was called since the last clear_interrupt().
bool interrupted() noexcept;
/// The signal number given to request_interrupt(), 0 when none.
int interrupt_signal() noexcept;
/// Clears the flag (at the start of a run).
void clear_interrupt() noexcept;

/// Thrown by long computations that stopped because interrupted() became true.
struct Interrupted {};

/// Throws Interrupted when interrupted(): call it every ~1e6 elements in long loops.
inline void poll_interrupt() {
  if (interrupted()) throw Interrupted{};
}

}  // namespace normcheck
