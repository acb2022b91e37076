// libFuzzer: the JSON report reader and `normcheck merge` (reports/report.cpp
// parse_json_report, merge_reports). The input is up to four reports separated by a line
// "\n#next\n".
// Properties: reading and merging fail only with normcheck::Error; a merged report has its cases
// in strictly increasing index order, one shard of count 1, every case of every part, and its
// JSON reads back with the same cases; JUnit and Markdown render.
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "fuzz_check.hpp"
#include "normcheck/error.hpp"
#include "normcheck/report.hpp"

using namespace normcheck;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  std::vector<RunReport> parts;
  std::vector<std::string> names;
  size_t total = 0;
  try {
    while (parts.size() < 4) {
      const size_t sep = text.find("\n#next\n");
      names.push_back("part" + std::to_string(parts.size()));
      parts.push_back(parse_json_report(text.substr(0, sep), names.back()));
      total += parts.back().cases.size();
      if (sep == std::string_view::npos) break;
      text.remove_prefix(sep + 7);
    }
  } catch (const Error&) {
    return 0;
  }
  RunReport merged;
  try {
    merged = merge_reports(parts, names);
  } catch (const Error&) {
    return 0;
  }
  FUZZ_CHECK(merged.cases.size() == total, "every case of every part is merged");
  FUZZ_CHECK(merged.shard_index == 0 && merged.shard_count == 1, "the merge is one shard");
  for (size_t i = 1; i < merged.cases.size(); ++i)
    FUZZ_CHECK(merged.cases[i - 1].index < merged.cases[i].index, "case indices strictly increase");
  FUZZ_CHECK(merged.complete == merged.incomplete_reason.empty(), "incomplete exactly when a reason is given");
  const RunReport back = parse_json_report(to_json_text(merged), "merged");  // throws (a finding) if unreadable
  FUZZ_CHECK(back.cases.size() == merged.cases.size(), "the merged JSON reads back");
  (void)to_markdown(merged);
  return 0;
}
