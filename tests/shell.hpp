// Runs a shell command for the end-to-end tests: exit code and combined stdout/stderr.
#pragma once

#include <sys/wait.h>

#include <array>
#include <cstdio>
#include <string>

namespace normcheck::testing {

struct Outcome {
  int exit_code;       ///< -1 if the command did not exit normally
  std::string output;  ///< stdout and stderr
};

inline Outcome sh(const std::string& cmd) {
  Outcome o{-1, ""};
  FILE* p = popen((cmd + " 2>&1").c_str(), "r");
  if (!p) return o;
  std::array<char, 4096> buf;
  size_t n;
  while ((n = fread(buf.data(), 1, buf.size(), p)) > 0) o.output.append(buf.data(), n);
  const int status = pclose(p);
  o.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return o;
}

}  // namespace normcheck::testing
