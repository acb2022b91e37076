// normcheck — the command-line interface, as a function so that test builds can run the very
// same CLI with extra (mutant) backends registered.
#pragma once

#include "normcheck/backend.hpp"

namespace normcheck {

/// Runs the normcheck command line. Returns the process exit code (error.hpp ExitCode, or
/// 128 + n when interrupted by signal n: SIGINT, SIGTERM or SIGHUP). Usage: docs/cli.md.
int cli_main(int argc, char** argv, const BackendRegistry& registry);

}  // namespace normcheck
