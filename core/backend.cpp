#include "normcheck/backend.hpp"

#include <algorithm>
#include <cmath>

#include <fmt/format.h>
#include <fmt/ranges.h>

namespace normcheck {

std::optional<std::string> Backend::unsupported_reason(const RunArgs& args, Layout layout) const {
  const Capabilities c = capabilities();
  auto has = [](const auto& v, auto x) { return std::find(v.begin(), v.end(), x) != v.end(); };
  if (!has(c.ops, args.op)) return fmt::format("op {} not supported by {}", to_string(args.op), name());
  if (!has(c.passes, args.pass))
    return fmt::format("pass {} not supported by {}", to_string(args.pass), name());
  if (!has(c.dtypes, args.x.dtype))
    return fmt::format("dtype {} not supported by {}", to_string(args.x.dtype), name());
  if (!has(c.layouts, layout))
    return fmt::format("layout {} not supported by {}", to_string(layout), name());
  return std::nullopt;
}

void BackendRegistry::add(std::string name, std::string summary, Factory f) {
  entries_.push_back({std::move(name), std::move(summary), std::move(f)});
}

std::unique_ptr<Backend> BackendRegistry::create(const std::string& name) const {
  std::vector<std::string> known;
  for (const auto& e : entries_) {
    if (e.name == name) return e.factory();
    known.push_back(e.name);
  }
  throw Error(fmt::format("unknown backend '{}'; known: {}", name, fmt::join(known, ", ")));
}

}  // namespace normcheck

namespace normcheck {

std::string_view to_string(Summation s) {
  switch (s) {
    case Summation::recursive: return "recursive";
    case Summation::pairwise: return "pairwise";
    case Summation::blocked: return "blocked";
    case Summation::compensated: return "compensated";
  }
  return "?";
}

double PrecisionProfile::unit_roundoff(DType stats) const {
  const double u = normcheck::unit_roundoff(stats);
  return accumulation ? std::max(u, normcheck::unit_roundoff(*accumulation)) : u;
}

double PrecisionProfile::depth(double k, double u) const {
  k = std::max(k, 1.0);
  switch (summation) {
    case Summation::recursive: return k - 1;
    case Summation::pairwise: return std::ceil(std::log2(k));
    case Summation::blocked: {
      const double p = static_cast<double>(std::max<int64_t>(block, 1));
      return std::ceil(k / p) - 1 + std::ceil(std::log2(p));
    }
    // Kahan/Neumaier: 2u·Σ|x| plus the compensation term, itself a recursive sum of k terms each
    // at most u·|partial sum|: (k·u)²·Σ|x| in the worst case, so h = 2 + k²·u (in units of u).
    // While k·u is small this is the textbook (2u + O(k·u²)) bound; when k·u nears 1 (f32 at 2^24)
    // the compensation itself stagnates and the depth makes the case NOT_CERTIFIABLE.
    case Summation::compensated: return std::min(k - 1, 2.0 + k * k * u);
  }
  return k - 1;
}

}  // namespace normcheck
