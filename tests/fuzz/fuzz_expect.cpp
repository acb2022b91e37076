// libFuzzer: the --expect parser (core/data.cpp known_failures over parse_suite).
// Properties: it fails only with normcheck::Error; every key of an accepted file is a canonical
// descriptor (it prints back identically) and every reason is non-empty.
#include <cstdint>
#include <string>
#include <string_view>

#include "fuzz_check.hpp"
#include "normcheck/data.hpp"
#include "normcheck/error.hpp"
#include "normcheck/problem.hpp"

using namespace normcheck;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  std::map<std::string, std::string> known;
  try {
    known = known_failures(parse_suite("expect", text));
  } catch (const Error&) {
    return 0;
  }
  FUZZ_CHECK(!known.empty(), "an accepted file lists failures");
  for (const auto& [descriptor, reason] : known) {
    FUZZ_CHECK(to_descriptor(parse_descriptor(descriptor)) == descriptor, "keys are canonical descriptors");
    FUZZ_CHECK(!reason.empty(), "every known failure has a reason");
  }
  return 0;
}
