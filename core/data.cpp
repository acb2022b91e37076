#include "normcheck/data.hpp"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <fstream>
#include <nlohmann/json.hpp>

#include <limits>
#include <sstream>

#include "normcheck/error.hpp"
#include "normcheck/problem.hpp"

namespace normcheck {
namespace embedded {
struct File {
  const char* path;
  const char* text;
};
extern const File kFiles[];
extern const std::size_t kFileCount;
}  // namespace embedded

namespace {

const char* embedded_file(std::string_view path) {
  for (std::size_t i = 0; i < embedded::kFileCount; ++i)
    if (path == embedded::kFiles[i].path) return embedded::kFiles[i].text;
  return nullptr;
}

std::string trim(std::string_view s) {
  const auto b = s.find_first_not_of(" \t\r");
  if (b == std::string_view::npos) return "";
  const auto e = s.find_last_not_of(" \t\r");
  return std::string(s.substr(b, e - b + 1));
}

SingleValueRunningVar single_value_running_var_of(const std::string& s) {
  for (auto v : {SingleValueRunningVar::nan, SingleValueRunningVar::error, SingleValueRunningVar::skip,
                 SingleValueRunningVar::biased, SingleValueRunningVar::unknown})
    if (s == to_string(v)) return v;
  throw Error("conventions.json: single_value_running_var must be nan, error, skip, biased or unknown, not '" + s + "'");
}

}  // namespace

std::string_view to_string(SingleValueRunningVar v) {
  switch (v) {
    case SingleValueRunningVar::nan: return "nan";
    case SingleValueRunningVar::error: return "error";
    case SingleValueRunningVar::skip: return "skip";
    case SingleValueRunningVar::biased: return "biased";
    case SingleValueRunningVar::unknown: return "unknown";
  }
  return "unknown";
}

const std::vector<Convention>& conventions() {
  static const std::vector<Convention> table = [] {
    const char* text = embedded_file("conventions/conventions.json");
    if (!text) throw Error("conventions/conventions.json is not embedded in this build");
    const auto j = nlohmann::json::parse(text);
    std::vector<Convention> out;
    auto text_of = [](const nlohmann::json& v) -> std::string {
      if (v.is_null()) return "";
      if (v.is_string()) return v.get<std::string>();
      return format_number(v.get<double>());
    };
    auto number_of = [](const nlohmann::json& v) {
      return v.is_null() ? std::numeric_limits<double>::quiet_NaN() : v.get<double>();
    };
    for (const auto& c : j.at("conventions")) {
      Convention v;
      v.name = c.at("name").get<std::string>();
      v.library = c.at("library").get<std::string>();
      v.momentum_meaning = c.at("momentum_meaning").get<std::string>();
      v.default_momentum = number_of(c.at("default_momentum"));
      v.running_var_unbiased = c.at("running_var_unbiased").is_boolean() && c.at("running_var_unbiased").get<bool>();
      v.default_eps = number_of(c.at("default_eps"));
      v.cumulative_average = text_of(c.at("cumulative_average"));
      v.saved_statistic = text_of(c.at("saved_statistic"));
      v.eps_placement = text_of(c.at("eps_placement"));
      v.layer_norm_eps = text_of(c.at("layer_norm_eps"));
      v.group_norm_eps = text_of(c.at("group_norm_eps"));
      v.rms_norm_eps = text_of(c.at("rms_norm_eps"));
      v.single_value_per_channel = text_of(c.at("single_value_per_channel"));
      v.single_value_running_var = single_value_running_var_of(c.at("single_value_running_var").get<std::string>());
      v.affine = text_of(c.at("affine"));
      v.variance_algorithm = text_of(c.at("variance_algorithm"));
      v.source = c.at("source").get<std::string>();
      if (!v.drives_running_stats() && v.momentum_meaning != "none")
        throw Error("conventions.json: momentum_meaning of " + v.name + " must be new_weight, old_weight or none");
      if (v.drives_running_stats() && !(v.default_momentum >= 0 && v.default_momentum <= 1))
        throw Error("conventions.json: " + v.name + " drives running statistics and needs a default_momentum in [0, 1]");
      out.push_back(std::move(v));
    }
    return out;
  }();
  return table;
}

const Convention& find_convention(std::string_view name) {
  std::vector<std::string> known;
  for (const auto& c : conventions()) {
    if (c.name == name) return c;
    known.push_back(c.name);
  }
  throw Error(fmt::format("unknown convention '{}'; known: {}", name, fmt::join(known, ", ")));
}

const Convention& running_stats_convention(std::string_view name) {
  const Convention& c = find_convention(name);
  if (!c.drives_running_stats())
    throw Error(fmt::format("convention '{}' ({}) keeps no running statistics as a new- or old-weight average, so it "
                            "cannot drive a batch_norm run; `normcheck list` shows the ones that can",
                            name, c.library));
  return c;
}

double batch_weight(const Convention& c, double momentum) {
  return c.momentum_meaning == "new_weight" ? momentum : 1.0 - momentum;
}

std::vector<std::string> builtin_suite_names() {
  std::vector<std::string> names;
  for (std::size_t i = 0; i < embedded::kFileCount; ++i) {
    std::string_view p = embedded::kFiles[i].path;
    if (p.rfind("suites/", 0) == 0 && p.size() > 11 && p.substr(p.size() - 4) == ".txt")
      names.emplace_back(p.substr(7, p.size() - 11));
  }
  return names;
}

namespace {

/// Length of the UTF-8 sequence starting at text[i], 0 when it is not valid UTF-8 (overlong
/// forms and surrogates included).
size_t utf8_length(std::string_view text, size_t i) {
  const auto b = [&](size_t k) { return static_cast<unsigned char>(text[k]); };
  const unsigned char c = b(i);
  if (c < 0x80) return 1;
  size_t n = c >= 0xf0 && c <= 0xf4 ? 4 : c >= 0xe0 ? 3 : c >= 0xc2 && c < 0xe0 ? 2 : 0;
  if (n == 0 || c > 0xf4 || i + n > text.size()) return 0;
  for (size_t k = 1; k < n; ++k)
    if ((b(i + k) & 0xc0) != 0x80) return 0;
  if ((c == 0xe0 && b(i + 1) < 0xa0) || (c == 0xed && b(i + 1) >= 0xa0) || (c == 0xf0 && b(i + 1) < 0x90) ||
      (c == 0xf4 && b(i + 1) >= 0x90))
    return 0;
  return n;
}

/// Throws unless text is UTF-8 text: no byte-order mark, no NUL or other control bytes except
/// tab, and CR only before LF.
void check_text(const std::string& name, std::string_view text) {
  if (text.substr(0, 3) == "\xef\xbb\xbf")
    throw Error(fmt::format("suite {} starts with a UTF-8 byte-order mark; save it as plain UTF-8 without one", name));
  int line = 1;
  for (size_t i = 0; i < text.size();) {
    const auto c = static_cast<unsigned char>(text[i]);
    const bool cr_lf = c == '\r' && (i + 1 == text.size() || text[i + 1] == '\n');
    if (c == '\n') ++line;
    if ((c < 0x20 && c != '\n' && c != '\t' && !cr_lf) || c == 0x7f)
      throw Error(fmt::format("suite {} line {}: control byte 0x{:02x} ({}); a suite is a text file of descriptors",
                              name, line, c, c == 0 ? "NUL: a binary file?"
                              : c == '\r' ? "CR inside a line; descriptors have no white space"
                                           : "not text"));
    const size_t n = utf8_length(text, i);
    if (n == 0)
      throw Error(fmt::format("suite {} line {}: byte 0x{:02x} is not UTF-8 text; a suite is a text file of descriptors",
                              name, line, c));
    i += n;
  }
}

}  // namespace

Suite parse_suite(std::string name, std::string_view text) {
  check_text(name, text);
  Suite s;
  s.name = std::move(name);
  std::istringstream in{std::string(text)};
  std::string line;
  int lineno = 0;
  while (std::getline(in, line)) {
    ++lineno;
    const std::string t = trim(line);
    if (t.empty()) continue;
    if (t[0] == '#') {
      if (t.rfind("# title:", 0) == 0) s.title = trim(t.substr(8));
      if (t.rfind("# kind:", 0) == 0) {
        const std::string kind = trim(t.substr(7));
        if (kind != "correctness" && kind != "throughput")
          throw Error(fmt::format("{} line {}: # kind: must be correctness or throughput, not '{}'", s.name, lineno, kind));
        s.throughput = kind == "throughput";
      }
      continue;
    }
    SuiteCase c;
    c.line = lineno;
    const auto hash = t.find('#');
    c.descriptor = trim(t.substr(0, hash));
    if (hash != std::string::npos) c.note = trim(t.substr(hash + 1));
    try {
      parse_descriptor(c.descriptor);
    } catch (const Error& e) {
      throw Error(fmt::format("suite {} line {}: {}", s.name, lineno, e.what()));
    }
    s.cases.push_back(std::move(c));
  }
  if (s.cases.empty()) throw Error(fmt::format("suite {} has no cases", s.name));
  return s;
}

Suite load_suite(std::string_view name_or_path) {
  const std::string embedded_path = "suites/" + std::string(name_or_path) + ".txt";
  if (const char* text = embedded_file(embedded_path)) return parse_suite(std::string(name_or_path), text);
  std::ifstream f{std::string(name_or_path), std::ios::binary};
  if (!f) {
    throw Error(fmt::format("unknown suite '{}': neither a built-in suite ({}) nor a readable file",
                            name_or_path, fmt::join(builtin_suite_names(), ", ")));
  }
  // Bounded: /dev/zero or a mistaken multi-gigabyte path ends in a one-line error, not bad_alloc.
  std::string text(kMaxSuiteBytes + 1, '\0');
  f.read(text.data(), static_cast<std::streamsize>(text.size()));
  if (f.bad()) throw Error(fmt::format("suite {}: read error", name_or_path));
  text.resize(static_cast<size_t>(f.gcount()));
  if (text.size() > kMaxSuiteBytes)
    throw Error(fmt::format("suite {} is larger than {} MiB; a suite is a text file of descriptors", name_or_path,
                            kMaxSuiteBytes >> 20));
  return parse_suite(std::string(name_or_path), text);
}

std::map<std::string, std::string> known_failures(const Suite& s) {
  std::map<std::string, std::string> known;
  for (const auto& c : s.cases) {
    if (c.note.empty())
      throw Error(fmt::format("{} line {}: a known failure needs its reason after '#'", s.name, c.line));
    const std::string d = to_descriptor(parse_descriptor(c.descriptor));
    if (!known.emplace(d, c.note).second)
      throw Error(fmt::format("{} line {}: {} is listed twice", s.name, c.line, d));
  }
  return known;
}

}  // namespace normcheck
