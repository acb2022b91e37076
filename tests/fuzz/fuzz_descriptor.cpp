// libFuzzer: the descriptor parser (core/problem.cpp).
// Properties: parsing never fails other than with normcheck::Error; an accepted descriptor is a
// valid problem (validate() accepts it) whose memory estimate is finite and positive; and the
// canonical form round-trips: parse(print(p)) == p field by field, and print(parse(print(p)))
// == print(p).
#include <cmath>
#include <cstdint>
#include <string>
#include <string_view>

#include "fuzz_check.hpp"
#include "normcheck/error.hpp"
#include "normcheck/problem.hpp"

using namespace normcheck;

namespace {

bool same(const Problem& a, const Problem& b) {
  return a.op == b.op && a.pass == b.pass && a.dtype == b.dtype && a.layout == b.layout && a.dims == b.dims &&
         a.norm_dims == b.norm_dims && a.groups == b.groups && a.eps == b.eps && a.affine == b.affine &&
         a.convention == b.convention && a.momentum == b.momentum && a.cumulative_average == b.cumulative_average &&
         a.steps == b.steps && a.data.kind == b.data.kind && a.data.a == b.data.a && a.data.b == b.data.b &&
         a.special == b.special && a.dy.kind == b.dy.kind && a.dy.a == b.dy.a && a.dy.b == b.dy.b &&
         a.inplace == b.inplace && a.seed == b.seed;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  Problem p;
  try {
    p = parse_descriptor(text);
  } catch (const Error&) {
    return 0;  // a one-line error: the expected answer to a malformed descriptor
  }
  validate(p);  // throws (a finding) if the parser accepted an invalid problem
  FUZZ_CHECK(p.numel() >= 1 && p.numel() <= kMaxElements, "accepted shape within 1 .. 2^31 elements");
  const double bytes = memory_estimate_bytes(p, 128);
  FUZZ_CHECK(std::isfinite(bytes) && bytes > 0, "finite memory estimate");
  FUZZ_CHECK(std::isfinite(memory_estimate_bytes(p, 256)), "finite memory estimate at 256 bits");
  const std::string canonical = to_descriptor(p);
  const Problem q = parse_descriptor(canonical);  // throws (a finding) if the canonical form is refused
  FUZZ_CHECK(same(p, q), "parse(print(p)) == p");
  FUZZ_CHECK(to_descriptor(q) == canonical, "the canonical form prints back identically");
  return 0;
}
