// Shared by the libFuzzer harnesses: a property violation is a crash libFuzzer records.
#pragma once

#include <cstdio>
#include <cstdlib>

/// Aborts (a finding for libFuzzer) with a message when `cond` is false.
#define FUZZ_CHECK(cond, what)                                                 \
  do {                                                                         \
    if (!(cond)) {                                                             \
      std::fprintf(stderr, "fuzz property violated: %s (%s)\n", what, #cond); \
      std::abort();                                                            \
    }                                                                          \
  } while (0)
