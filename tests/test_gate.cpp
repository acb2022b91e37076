// CI-gate features end to end: sharding, merge, and known-failure baselines (--expect).
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include <fmt/format.h>

#include "shell.hpp"

namespace {

using nlohmann::json;
using normcheck::testing::sh;
namespace fs = std::filesystem;

const std::string kMutants = NORMCHECK_MUTANTS_BIN;
const std::string kRun = kMutants + " --backend mutant_unbiased_variance --suite smoke --suite edge -q";

struct TempDir {
  fs::path path;
  explicit TempDir(const std::string& name)
      : path(fs::temp_directory_path() / fmt::format("normcheck_gate_{}_{}", name, getpid())) {
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~TempDir() { fs::remove_all(path); }
  std::string operator/(const std::string& f) const { return (path / f).string(); }
};

json load(const std::string& path) { return json::parse(std::ifstream(path)); }

/// Cases without their timing, which differs from run to run.
json cases_of(const json& report) {
  json out = report["cases"];
  for (auto& c : out) c.erase("seconds"), c.erase("backend_seconds");  // timings differ between runs
  return out;
}

TEST(Gate, ShardsMergedEqualTheUnshardedRun) {
  TempDir d("shards");
  ASSERT_EQ(sh(kRun + " --json " + d / "all.json").exit_code, 1);
  std::string parts;
  size_t sharded_cases = 0;
  for (int i = 0; i < 3; ++i) {
    const std::string f = d / fmt::format("s{}.json", i);
    sh(fmt::format("{} --shard {}/3 --json {}", kRun, i, f));
    const json s = load(f);
    EXPECT_EQ(s["shard"]["index"], i);
    sharded_cases += s["cases"].size();
    parts += " " + f;
  }
  const auto m = sh(kMutants + " merge" + parts + " -o " + d / "merged.json");
  EXPECT_EQ(m.exit_code, 1) << m.output;  // the same failures as the unsharded run
  const json all = load(d / "all.json"), merged = load(d / "merged.json");
  EXPECT_EQ(sharded_cases, all["cases"].size());
  EXPECT_EQ(cases_of(merged), cases_of(all));
  EXPECT_EQ(merged["summary"], all["summary"]);
  EXPECT_TRUE(merged["complete"].get<bool>());
}

TEST(Gate, GoogleTestShardVariablesActLikeShard) {
  TempDir d("gtest");
  sh(kRun + " --shard 1/4 --json " + d / "a.json");
  sh("GTEST_SHARD_INDEX=1 GTEST_TOTAL_SHARDS=4 GTEST_SHARD_STATUS_FILE=" + d / "status " + kRun + " --json " +
     d / "b.json");
  EXPECT_EQ(cases_of(load(d / "a.json")), cases_of(load(d / "b.json")));
  EXPECT_TRUE(fs::exists(d / "status"));  // tells the runner that normcheck shards
}

TEST(Gate, MergeRefusesDuplicatesAndMarksMissingShards) {
  TempDir d("merge");
  sh(kRun + " --shard 0/2 --json " + d / "s0.json");
  const auto dup = sh(kMutants + " merge " + d / "s0.json " + d / "s0.json");
  EXPECT_EQ(dup.exit_code, 2);
  EXPECT_NE(dup.output.find("shard 0/2 given twice"), std::string::npos) << dup.output;
  const auto part = sh(kMutants + " merge " + d / "s0.json -o " + d / "m.json");
  EXPECT_NE(part.output.find("incomplete: shard 1/2 missing"), std::string::npos) << part.output;
  EXPECT_FALSE(load(d / "m.json")["complete"].get<bool>());
  EXPECT_EQ(part.exit_code, 1);
}

TEST(Gate, KnownFailuresPassTheGateUnknownOnesFailItFixedOnesAreReported) {
  TempDir d("expect");
  sh(kRun + " --json " + d / "all.json");
  std::vector<std::string> fails;
  const json report = load(d / "all.json");
  for (const auto& c : report["cases"])
    if (c["verdict"] == "FAIL") fails.push_back(c["descriptor"]);
  ASSERT_GT(fails.size(), 1u);
  {
    std::ofstream all(d / "expect.txt"), short_list(d / "short.txt");
    for (size_t i = 0; i < fails.size(); ++i) {
      all << fails[i] << "  # planted: unbiased variance in the normalization\n";
      if (i > 0) short_list << fails[i] << "  # planted\n";
    }
    all << "batch_norm,pass=forward_inference,dtype=f32,shape=3x5x7x3  # listed though it passes\n";
  }
  const auto known = sh(kRun + " --expect " + d / "expect.txt --junit " + d / "j.xml");
  EXPECT_EQ(known.exit_code, 0) << known.output;
  EXPECT_NE(known.output.find("FIXED batch_norm,pass=forward_inference"), std::string::npos) << known.output;
  std::ifstream junit(d / "j.xml");
  const std::string xml((std::istreambuf_iterator<char>(junit)), std::istreambuf_iterator<char>());
  EXPECT_NE(xml.find("failures=\"0\" errors=\"0\""), std::string::npos);
  const auto unknown = sh(kRun + " --expect " + d / "short.txt");
  EXPECT_EQ(unknown.exit_code, 1) << unknown.output;  // the one failure not listed fails the gate
}

TEST(Gate, BadShardOrExpectIsAUsageError) {
  EXPECT_EQ(sh(kRun + " --shard 3/3").exit_code, 2);
  EXPECT_EQ(sh(kRun + " --shard x").exit_code, 2);
  EXPECT_EQ(sh("GTEST_TOTAL_SHARDS=2 " + kRun).exit_code, 2);  // index missing
  TempDir d("noreason");
  std::ofstream(d / "e.txt") << "batch_norm,shape=2x3\n";
  const auto o = sh(kRun + " --expect " + d / "e.txt");
  EXPECT_EQ(o.exit_code, 2);
  EXPECT_NE(o.output.find("needs its reason"), std::string::npos) << o.output;
}

}  // namespace
