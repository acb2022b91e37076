// normcheck — third-party backends loaded from a shared library through the C ABI of
// include/normcheck/plugin.h, each call isolated in a forked child process (docs/plugins.md).
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
/// timeout_seconds: wall-clock limit of one call; the child is killed past it (TIMEOUT).
/// isolate = false calls the plugin in normcheck's own process on the caller's buffers (for
/// debugging a plugin under gdb or a sanitizer; a crash then ends normcheck).
/// Throws Error (exit code 2) when the file is missing or not loadable, the entry symbol is
/// absent, the table is NULL or incomplete, or its abi_major differs from NC_ABI_MAJOR.
std::unique_ptr<Backend> load_plugin(const std::string& path_or_name, double timeout_seconds,
                                     bool isolate = true);

}  // namespace normcheck
