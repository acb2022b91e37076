// normcheck — the persistent plugin worker (docs/plugins.md "Isolation: one worker process per
// plugin").
//
// A Worker is a child process, forked once per plugin, that loads the library, reads its table,
// calls its optional init hook, and then serves calls: the parent lays the call out in a shared
// memory arena (a memfd both processes map), sends the arena's size over a socketpair, and waits
// for one byte back. The parent never runs plugin code (not even its constructors) unless
// --in-process asks it to. The worker is the leader of its own process group, so ending the
// group ends anything the plugin started.
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <string>

#include "normcheck/plugin.h"

namespace normcheck::plugin {

inline constexpr int kOps = 5, kDtypes = 4, kLayouts = 2;

/// What a plugin declares, copied out of its nc_plugin table in the process that loaded it (a
/// plain struct, so it crosses the socket as bytes). Strings are NUL-terminated, truncated to fit.
struct Declarations {
  char error[1024];  ///< non-empty: the plugin was refused at load, and why (one line)
  uint32_t struct_size, abi_major, abi_minor;
  uint32_t ops, passes, dtypes, layouts;
  int32_t accumulation_dtype, summation;
  int32_t has_convention;
  char name[256], version[256], description[1024], convention[128];
  // ABI 1.1 (zero for a 1.0 plugin)
  int64_t block_count;
  double rsqrt_error;
  int32_t memory_kind, device_id;
  int32_t params;
  int32_t has_init;
  int32_t has_profile[kOps][kDtypes][kLayouts];
  nc_precision profile[kOps][kDtypes][kLayouts];
  char device_problem[512];  ///< non-empty: device buffers declared but they cannot be staged here
};

/// Offsets of the ABI 1.1 fields: a table whose struct_size ends at kPluginSize10 is a 1.0 one.
inline constexpr size_t kPluginSize10 = offsetof(nc_plugin, block_count);

/// Validates `t` and copies it into *d (d->error set when refused). Runs plugin code (the
/// precision query) when the table has one: call it in the process that loaded the library.
void read_table(const nc_plugin* t, const std::string& path, Declarations* d);

/// The block at the start of the arena: the call (tensor `data` fields hold byte offsets into the
/// arena, 0 meaning absent) and the worker's answer.
struct CallBlock {
  nc_run_args args;
  int32_t status;
  uint32_t produced;
  char message[1024];
};
/// Where the tensors start in the arena: after the CallBlock, 64-byte aligned.
inline constexpr size_t kArenaHeader = (sizeof(CallBlock) + 63) / 64 * 64;

class Worker {
 public:
  /// Forks the worker and waits up to `load_timeout` seconds for it to load `path` and report
  /// its table. Throws Error (one line, exit code 2) when loading crashes, exits, hangs or the
  /// plugin is refused; throws Interrupted when interrupted() becomes true meanwhile.
  Worker(std::string path, double load_timeout);
  ~Worker();
  Worker(const Worker&) = delete;
  Worker& operator=(const Worker&) = delete;

  const Declarations& declarations() const { return decl_; }

  /// The shared arena, grown to at least `bytes` (its contents are kept up to the old size).
  /// Returns nullptr with `why` set when it cannot be grown.
  unsigned char* arena(size_t bytes, std::string& why);

  enum class Kind { ok, crash, timeout };
  struct Outcome {
    Kind kind;
    std::string message;  ///< crash: how the worker died; timeout: the limit
  };
  /// Runs the call laid out in the first `bytes` of the arena, waiting up to `timeout` seconds.
  /// A worker that died or was killed is restarted by the next call (`restarts()` counts them).
  /// Throws Interrupted (after ending the worker) when interrupted() becomes true meanwhile.
  Outcome call(size_t bytes, double timeout);
  /// Ends the worker (and its process group); the next call starts a new one.
  void stop();
  int restarts() const { return restarts_; }

 private:
  void spawn();
  /// Waits until the socket is readable, the worker died, the deadline passed or an interrupt.
  enum class Wait { readable, dead, timeout };
  Wait wait_readable(double seconds);
  /// Reaps the worker (ending its group first) and describes how it ended.
  std::string reap();

  std::string path_;
  double load_timeout_;
  Declarations decl_{};
  int memfd_ = -1;
  int sock_ = -1;
  pid_t pid_ = -1;
  unsigned char* map_ = nullptr;
  size_t map_bytes_ = 0;
  int restarts_ = 0;
  bool started_once_ = false;
};

/// "SIGSEGV (Segmentation fault)".
std::string signal_name(int sig);

}  // namespace normcheck::plugin
