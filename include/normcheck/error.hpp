// normcheck — errors and exit codes.
#pragma once

#include <stdexcept>
#include <string>

namespace normcheck {

/// Process exit codes of the `normcheck` command (docs/cli.md).
enum ExitCode : int {
  kExitPass = 0,      ///< every case passed (unsupported cases are listed, not failures)
  kExitMismatch = 1,  ///< at least one case FAILed or the backend returned an error
  kExitUsage = 2,     ///< usage or setup error: malformed descriptor, unknown backend or suite,
                      ///< unreadable file; nothing was run
  kExitInternal = 3,  ///< a bug in normcheck itself (an unexpected exception)
  kExitNothingVerified = 5,  ///< no case passed and none failed: every case unsupported or not
                             ///< certifiable (or none selected); a run that verified nothing
};

/// A user-facing error: bad descriptor, unknown name, unreadable file. The message is one line
/// and says what was wrong and what is accepted. The CLI maps it to kExitUsage.
class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

}  // namespace normcheck
