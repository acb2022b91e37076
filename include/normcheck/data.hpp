// normcheck — the data files compiled into the binary: suites (suites/*.txt) and running-stat
// conventions (conventions/conventions.json). Both are plain data; the build embeds them so the
// binary needs no install tree, and --suite also accepts a path to a suite file of one's own.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace normcheck {

/// A framework's running-statistics convention (shared/research/conventions.md §1a).
struct Convention {
  std::string name;
  std::string momentum_meaning;  ///< "new_weight": R ← (1−m)R + m·batch; "old_weight": R ← m·R + (1−m)·batch
  double default_momentum = 0;
  bool running_var_unbiased = true;  ///< running_var updated with the unbiased (m/(m−1)) variance
  double default_eps = 0;
  std::string source;  ///< library function or doc page the convention is taken from
};

/// All conventions in conventions/conventions.json.
const std::vector<Convention>& conventions();
/// Throws Error("unknown convention 'x'; known: …").
const Convention& find_convention(std::string_view name);
/// The new-weight factor f applied to the batch statistic: m for new_weight, 1 − m for old_weight.
double batch_weight(const Convention& c, double momentum);

struct SuiteCase {
  std::string descriptor;
  std::string note;  ///< the comment after '#' on the same line
  int line = 0;      ///< 1-based line in the suite file
};

struct Suite {
  std::string name;
  std::string title;  ///< first line "# title: …"
  /// "# kind: throughput": shapes for `normcheck bench` (real models, size sweeps), too large for
  /// routine correctness runs against the multi-precision reference. Default: correctness.
  bool throughput = false;
  std::vector<SuiteCase> cases;
};

/// Suite format: one case per line, `DESCRIPTOR  # note`; blank lines and lines starting with '#'
/// are ignored; "# title: …" names the suite; "# kind: throughput" marks a benchmark suite.
/// name_or_path: a built-in suite name (builtin_suite_names()) or a path to a file.
/// Throws Error for unknown names, unreadable files and malformed descriptors (with file:line).
Suite load_suite(std::string_view name_or_path);
Suite parse_suite(std::string name, std::string_view text);
std::vector<std::string> builtin_suite_names();

}  // namespace normcheck
