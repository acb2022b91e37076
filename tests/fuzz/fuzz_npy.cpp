// libFuzzer harness for the .npy reader (core/npy.cpp parse_npy): any byte string either parses
// into an array whose data size matches its header exactly, or throws normcheck::Error. Crashes,
// sanitizer reports and any other exception are findings.
//   cmake --preset fuzz && cmake --build --preset fuzz && bash tests/fuzz/run.sh build/fuzz 60 (tests/fuzz/README.md)
#include <cstddef>
#include <cstdint>
#include <cstdlib>

#include "normcheck/error.hpp"
#include "normcheck/npy.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    const normcheck::NpyArray a = normcheck::parse_npy(data, size);
    const int64_t n = a.numel();
    if (a.data.size() != static_cast<size_t>(n) * static_cast<size_t>(a.itemsize)) std::abort();
    for (int64_t i = 0; i < n && i < 64; ++i) {
      const int64_t k = a.file_position(i);
      if (k < 0 || k >= n) std::abort();
      (void)a.raw(k);
    }
  } catch (const normcheck::Error&) {
  }
  return 0;
}
