// normcheck — the data files compiled into the binary: suites (suites/*.txt) and running-stat
// conventions (conventions/conventions.json). Both are plain data; the build embeds them so the
// binary needs no install tree, and --suite also accepts a path to a suite file of one's own.
#pragma once

#include <cstddef>
#include <map>
#include <string>
#include <string_view>
#include <vector>

namespace normcheck {

/// A framework's normalization conventions (conventions/conventions.json; sourced in
/// shared/research/conventions.md §1–2; docs/conventions.md).
/// What a running_var update does with one value per channel (m = 1), where the unbiased
/// variance is 0/0 (conventions.json `single_value_running_var`).
enum class SingleValueRunningVar { nan, error, skip, biased, unknown };
std::string_view to_string(SingleValueRunningVar);

struct Convention {
  std::string name;
  std::string library;            ///< the library API the row describes
  /// "new_weight": R ← (1−m)R + m·batch; "old_weight": R ← m·R + (1−m)·batch; "none": keeps no
  /// running statistics (or not in either form), so it cannot drive a batch_norm run.
  std::string momentum_meaning;
  double default_momentum = 0;    ///< NaN when the library has none
  bool running_var_unbiased = true;  ///< running_var updated with the unbiased (m/(m−1)) variance
  double default_eps = 0;         ///< batch_norm's default eps; NaN when the caller must give one
  std::string cumulative_average; ///< how momentum=None / a cumulative mean is expressed, or "none"
  std::string saved_statistic;    ///< what forward training saves for backward
  std::string eps_placement;
  std::string layer_norm_eps, group_norm_eps, rms_norm_eps;  ///< defaults as written ("" when none)
  std::string single_value_per_channel;  ///< behaviour with m = 1 in training
  /// m = 1 running_var, declared: NaN, the call refused, the update skipped, or a guarded Bessel
  /// factor (the biased variance 0); the runner's note shows it next to the backend's value.
  SingleValueRunningVar single_value_running_var = SingleValueRunningVar::unknown;
  std::string affine;             ///< gamma/beta shapes per op
  std::string variance_algorithm;
  std::string source;             ///< library function or doc page the convention is taken from
  /// True when the running-statistics update is a new- or old-weight average (usable in runs).
  bool drives_running_stats() const { return momentum_meaning == "new_weight" || momentum_meaning == "old_weight"; }
};
/// All conventions in conventions/conventions.json.
const std::vector<Convention>& conventions();
/// Throws Error("unknown convention 'x'; known: …").
const Convention& find_convention(std::string_view name);
/// find_convention, and Error("convention x keeps no running statistics …") unless it drives them.
const Convention& running_stats_convention(std::string_view name);
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
/// A suite file larger than this is refused (it is not a list of descriptors).
inline constexpr std::size_t kMaxSuiteBytes = std::size_t{16} << 20;
/// Reads at most kMaxSuiteBytes + 1 bytes of a file (so /dev/zero is refused, not read forever).
Suite load_suite(std::string_view name_or_path);
/// The text must be UTF-8 without a byte-order mark, NUL or other control bytes (tab allowed, CR
/// only as part of a CR LF line end); anything else is an Error naming the line.
Suite parse_suite(std::string name, std::string_view text);
/// --expect FILE (a suite whose every line has a reason): canonical descriptor → reason. Throws
/// Error for a line without a reason after '#' or a case listed twice.
std::map<std::string, std::string> known_failures(const Suite& s);
std::vector<std::string> builtin_suite_names();

}  // namespace normcheck
