// libFuzzer: the suite-file parser (core/data.cpp parse_suite).
// Properties: it fails only with normcheck::Error; an accepted suite has at least one case,
// every case's descriptor parses, line numbers increase, and title and notes hold no control
// bytes (they reach terminals and reports).
#include <cstdint>
#include <string>
#include <string_view>

#include "fuzz_check.hpp"
#include "normcheck/data.hpp"
#include "normcheck/error.hpp"
#include "normcheck/problem.hpp"

using namespace normcheck;

namespace {
bool printable(const std::string& s) {
  for (const char ch : s) {
    const auto c = static_cast<unsigned char>(ch);
    if ((c < 0x20 && c != '\t') || c == 0x7f) return false;
  }
  return true;
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  Suite s;
  try {
    s = parse_suite("fuzz", text);
  } catch (const Error&) {
    return 0;
  }
  FUZZ_CHECK(!s.cases.empty(), "an accepted suite has cases");
  FUZZ_CHECK(printable(s.title), "title without control bytes");
  int line = 0;
  for (const auto& c : s.cases) {
    FUZZ_CHECK(c.line > line, "line numbers increase");
    line = c.line;
    FUZZ_CHECK(printable(c.note), "note without control bytes");
    parse_descriptor(c.descriptor);  // throws (a finding) if an accepted line does not parse
  }
  return 0;
}
