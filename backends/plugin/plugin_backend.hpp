// normcheck — third-party backends loaded from a shared library through the C ABI of
// include/normcheck/plugin.h, called in a persistent worker process of their own (worker.hpp,
// docs/plugins.md).
#pragma once

#include <memory>
#include <string>

#include "normcheck/backend.hpp"

namespace normcheck {

/// True when --backend names a plugin rather than a built-in backend: a path (contains '/') or
/// a file name ending in ".so".
bool looks_like_plugin(const std::string& spec);

/// Loads the plugin at `path_or_name`: a path, or a bare name searched as NAME, libNAME.so and
/// NAME.so in the directories of NORMCHECK_PLUGIN_PATH (colon-separated).
/// timeout_seconds: wall-clock limit of one call (the worker is killed past it: TIMEOUT), and of
/// loading (60 s when ≤ 0 with isolate = false). Loading always happens in a worker first.
/// isolate = false then loads the library into normcheck's own process and calls it on the
/// caller's buffers (for debugging under gdb or a sanitizer; a crash then ends normcheck).
/// Throws Error (exit code 2) when the file is missing or not loadable, loading crashes, exits
/// or hangs, the entry symbol is absent, the table is NULL or incomplete, its abi_major differs
/// from NC_ABI_MAJOR, or its init hook fails; throws Interrupted when interrupted() meanwhile.
/// The backend's run() throws Interrupted (after ending the worker) when interrupted() becomes
/// true during a call: the call is abandoned, not the plugin's fault.
std::unique_ptr<Backend> load_plugin(const std::string& path_or_name, double timeout_seconds,
                                     bool isolate = true);

}  // namespace normcheck
