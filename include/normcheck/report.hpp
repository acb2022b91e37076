// normcheck — reports: JSON (docs/report-format.md, reports/schema/result.schema.json),
// JUnit XML and a Markdown summary grouped by op × pass.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "normcheck/runner.hpp"

namespace normcheck {

/// Provenance of the machine a report is written on (docs/report-format.md): the host name
/// (gethostname), the OS ("PRETTY_NAME of /etc/os-release, kernel uname -sr"), the memory
/// (MemTotal of /proc/meminfo, bytes; 0 when unknown) and the git commit normcheck was built from
/// (`git describe --always --dirty` at build time, cmake/git_commit.cmake).
std::string host_description();
std::string os_description();
long long memory_bytes();
std::string normcheck_commit();

struct RunReport {
  std::string normcheck_version;
  std::string command;           ///< the command line that produced the report
  std::string backend;            ///< --backend as given (a name or a plugin path): the reproducer's
  std::string backend_name;       ///< the backend's own name(), for test names
  std::string backend_version;
  std::vector<std::string> backend_notes;  ///< Capabilities::notes: what the backend does itself
  std::string suite;             ///< suite name or "cases"
  std::string machine;           ///< CPU model, cores
  std::string compiler;
  // Filled on the machine that creates the report; read back from JSON ("" / 0 when a report
  // of an earlier version lacks them), so a merge keeps the first shard's.
  std::string host = host_description();
  std::string os = os_description();
  long long memory = memory_bytes();
  std::string commit = normcheck_commit();
  std::string started_utc;       ///< ISO 8601
  double wall_seconds = 0;
  int reference_bits = 128;      ///< precision of the slow reference (used only when reference_kind is "slow")
  /// "fast" (exact, correctly rounded: docs/reference.md) or "slow" (Boost at reference_bits);
  /// "" in a file written before the field existed.
  std::string reference_kind = "fast";
  bool complete = true;          ///< false when the run was interrupted or a merge lacks shards
  std::string incomplete_reason; ///< why complete is false ("interrupted by SIGTERM", "shard 2/4 missing")
  int shard_index = 0, shard_count = 1;  ///< this report holds the cases with index % count == index
  std::string expect_file;       ///< --expect FILE, "" when none
  // What makes shards parts of one run (merge refuses shards that differ in any of them):
  std::string dtype_override;      ///< --dtype, "" when none
  std::string convention_override; ///< --convention, "" when none
  int planned_cases = 0;           ///< cases in the whole run, before sharding
  std::string plan_digest;         ///< plan_digest() of the whole run's canonical descriptors
  std::vector<CaseResult> cases;
};

/// "exact (fast reference)", "slow, 128 bits" or "128 bits (kind not recorded)": how a run's
/// reference is named on the console and in reports.
std::string reference_label(const RunReport& r);

/// Counts per verdict.
/// Counts per verdict; `error` counts ERROR, CRASH, TIMEOUT and OVERRUN together. `known`
/// counts failures listed in the --expect file (they are also in fail or error).
/// `pass` includes WARN (a pass with a warning, also counted in `warn`); NOT_CERTIFIABLE cases
/// are counted apart.
struct Tally {
  /// pass: sharp passes (WARN included); weak: PASS or WARN on a weak check (docs/comparison.md),
  /// counted apart and never as passed; warn: every WARN, weak or not.
  int pass = 0, fail = 0, unsupported = 0, error = 0, known = 0, warn = 0, not_certifiable = 0, weak = 0;
  int total() const { return pass + weak + fail + unsupported + error + not_certifiable; }
  void add(Verdict v, bool weak_check = false);
};
Tally tally(const std::vector<CaseResult>& cases);

/// The one-line command that reproduces a case: `normcheck --backend B --case DESCRIPTOR`.
std::string reproducer(const std::string& backend, const std::string& descriptor);

/// Writers. Each throws Error when the file cannot be written.
void write_json(const RunReport& r, const std::string& path);
void write_junit(const RunReport& r, const std::string& path);
void write_markdown(const RunReport& r, const std::string& path);

/// Writes text to path (binary, replacing it): a regular file through a temporary file in the
/// same directory renamed over it (complete or absent, never partial); a device or pipe in place. Throws Error when the file cannot be written.
/// Every report and JSON file normcheck writes goes through it.
void write_text_file(const std::string& path, const std::string& text);

/// JSON text of the report (what write_json writes).
std::string to_json_text(const RunReport& r);
/// Reads a report from JSON text; `origin` names it in errors. Throws Error as read_json.
RunReport parse_json_report(std::string_view text, const std::string& origin);
/// Reads a report written by write_json. Throws Error for unreadable files, other schemas, or
/// missing fields.
RunReport read_json(const std::string& path);

/// The most shards a run may have (--shard, and shard.count in a report).
inline constexpr int kMaxShards = 100000;

/// 16 hex digits (FNV-1a, 64 bits) of the canonical descriptors of a run's cases in order, each
/// followed by a newline: equal for every shard of one run, different when any case differs.
std::string plan_digest(const std::vector<std::string>& descriptors);

/// Combines the reports of shards of one run (`names`: their file names, for messages). Throws
/// Error when the reports are not shards of one run (differing backend, backend version, suite,
/// reference bits, --dtype, --convention, --expect file, shard count, planned cases or plan
/// digest, naming the field), when a shard is given twice, when a case index is outside its
/// shard or appears twice, or when a shard marked complete lacks cases. A missing or
/// interrupted shard gives complete = false with incomplete_reason "shard k/N missing".
RunReport merge_reports(const std::vector<RunReport>& parts, const std::vector<std::string>& names);

/// Checks, before a run, that a report can be written at path (given with `flag`, for
/// messages), and removes a report an earlier run left there, so that a run that dies leaves no
/// stale report. Devices and pipes are left alone. Throws Error.
void prepare_output_path(const std::string& path, const std::string& flag);

/// Failures (FAIL, ERROR, CRASH, TIMEOUT, OVERRUN) not listed as known; known failures that
/// passed again.
bool is_failure(Verdict v);
/// Markdown text of the report.
std::string to_markdown(const RunReport& r);

/// One line per failing tensor: "y: 3/120 over tolerance, worst at [0,1,2,2] got … expected …".
std::string explain(const CaseResult& c);

std::string machine_description();
std::string compiler_description();
std::string utc_now_iso8601();

}  // namespace normcheck
