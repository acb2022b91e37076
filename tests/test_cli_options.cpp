// The normcheck command for daily use (issue 17): -k/--filter, --list-cases, list --json, -v,
// colour, options checked per subcommand, values checked, shards from SLURM and Kubernetes
// variables, and the determinism mode --repeat. End to end, through the built binaries.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <regex>
#include <sstream>
#include <string>
#include <vector>

#include "normcheck/data.hpp"
#include "shell.hpp"

namespace {

using normcheck::testing::sh;

const std::string kBin = NORMCHECK_BIN;
const std::string kMutants = NORMCHECK_MUTANTS_BIN;

std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream in(text);
  for (std::string l; std::getline(in, l);) out.push_back(l);
  return out;
}

size_t count_prefix(const std::string& text, const std::string& prefix) {
  size_t n = 0;
  for (const auto& l : lines_of(text)) n += l.rfind(prefix, 0) == 0;
  return n;
}

std::filesystem::path temp_dir(const std::string& name) {
  auto d = std::filesystem::temp_directory_path() / ("normcheck_opts_" + name + "_" + std::to_string(getpid()));
  std::filesystem::remove_all(d);
  std::filesystem::create_directories(d);
  return d;
}

/// The edge suite's cases as the CLI lists them with no filter and no shard.
std::vector<std::string> all_edge_cases() {
  const auto o = sh(kBin + " --suite edge --list-cases 2>/dev/null");
  EXPECT_EQ(o.exit_code, 0) << o.output;
  return lines_of(o.output);
}

TEST(CliListCases, ListsEverySuiteCaseOnceAndRunsNothing) {
  const auto all = all_edge_cases();
  EXPECT_EQ(all.size(), normcheck::load_suite("edge").cases.size());
  for (const auto& l : all) EXPECT_EQ(l.find("PASS"), std::string::npos) << l;  // nothing ran
  // Nothing is written either: a report of an earlier run at --json stays.
  const auto d = temp_dir("list");
  std::ofstream(d / "r.json") << "{}\n";
  EXPECT_EQ(sh(kBin + " --suite smoke --list-cases --json " + (d / "r.json").string()).exit_code, 0);
  EXPECT_TRUE(std::filesystem::exists(d / "r.json"));
}

TEST(CliFilter, SubstringSelectsExactlyTheDescriptorsContainingIt) {
  std::vector<std::string> expected;
  for (const auto& d : all_edge_cases())
    if (d.find("layer_norm") != std::string::npos) expected.push_back(d);
  ASSERT_FALSE(expected.empty());
  const auto o = sh(kBin + " --suite edge -k layer_norm --list-cases");
  EXPECT_EQ(o.exit_code, 0) << o.output;
  EXPECT_EQ(lines_of(o.output), expected);
}

TEST(CliFilter, SlashesMakeARegexAndSeveralFiltersSelectTheUnion) {
  const std::regex re("^group_norm,.*layout=nhwc");
  std::vector<std::string> expected;
  for (const auto& d : all_edge_cases())
    if (std::regex_search(d, re) || d.find("rms_norm") != std::string::npos) expected.push_back(d);
  ASSERT_GE(expected.size(), 2u);
  const auto o = sh(kBin + " --suite edge -k '/^group_norm,.*layout=nhwc/' --filter rms_norm --list-cases");
  EXPECT_EQ(o.exit_code, 0) << o.output;
  EXPECT_EQ(lines_of(o.output), expected);
}

TEST(CliFilter, MatchingNothingIsExitTwoWithOneLine) {
  const auto o = sh(kBin + " --suite edge -k no_such_op");
  EXPECT_EQ(o.exit_code, 2) << o.output;
  EXPECT_NE(o.output.find("no case matches --filter 'no_such_op'"), std::string::npos) << o.output;
  EXPECT_EQ(lines_of(o.output).size(), 1u) << o.output;
  const auto bad = sh(kBin + " --suite edge -k '/(/'");
  EXPECT_EQ(bad.exit_code, 2) << bad.output;
  EXPECT_NE(bad.output.find("not a valid regular expression"), std::string::npos) << bad.output;
}

TEST(CliFilter, RunsOnlyTheSelectedCases) {
  const auto o = sh(kBin + " --suite smoke -k rms_norm");
  EXPECT_EQ(o.exit_code, 0) << o.output;
  EXPECT_NE(o.output.find("PASS: 2 of 2 cases passed"), std::string::npos) << o.output;
}

TEST(CliListCases, AppliesDtypeAndShardAfterTheFilter) {
  const auto all = all_edge_cases();
  const auto bf16 = lines_of(sh(kBin + " --suite edge --dtype bf16 --list-cases").output);
  ASSERT_EQ(bf16.size(), all.size());
  for (const auto& d : bf16) EXPECT_NE(d.find("dtype=bf16"), std::string::npos) << d;
  // Shard 1 of 3: the cases at positions 1, 4, 7, … of the run.
  std::vector<std::string> expected;
  for (size_t i = 1; i < all.size(); i += 3) expected.push_back(all[i]);
  EXPECT_EQ(lines_of(sh(kBin + " --suite edge --shard 1/3 --list-cases").output), expected);
  // A filter first, then the shard over the filtered cases.
  std::vector<std::string> ln;
  for (const auto& d : all)
    if (d.find("layer_norm") != std::string::npos) ln.push_back(d);
  expected.clear();
  for (size_t i = 0; i < ln.size(); i += 2) expected.push_back(ln[i]);
  EXPECT_EQ(lines_of(sh(kBin + " --suite edge -k layer_norm --shard 0/2 --list-cases").output), expected);
}

TEST(CliShard, SlurmArrayAndKubernetesIndexedJobVariablesShardLikeShardOption) {
  const std::string shard13 = sh(kBin + " --suite edge --shard 1/3 --list-cases").output;
  const std::string shard23 = sh(kBin + " --suite edge --shard 2/3 --list-cases").output;
  ASSERT_NE(shard13, shard23);
  // An array --array=1-3: task ids 1, 2, 3, SLURM_ARRAY_TASK_MIN = 1.
  EXPECT_EQ(sh("env SLURM_ARRAY_TASK_ID=2 SLURM_ARRAY_TASK_MIN=1 SLURM_ARRAY_TASK_COUNT=3 " + kBin +
               " --suite edge --list-cases")
                .output,
            shard13);
  EXPECT_EQ(sh("env SLURM_ARRAY_TASK_ID=1 SLURM_ARRAY_TASK_COUNT=3 " + kBin + " --suite edge --list-cases").output,
            shard13);
  EXPECT_EQ(sh("env JOB_COMPLETION_INDEX=2 NORMCHECK_TOTAL_SHARDS=3 " + kBin + " --suite edge --list-cases").output,
            shard23);
  // --shard wins over the environment.
  EXPECT_EQ(sh("env JOB_COMPLETION_INDEX=2 NORMCHECK_TOTAL_SHARDS=3 " + kBin + " --suite edge --shard 1/3 --list-cases")
                .output,
            shard13);
  const auto no_total = sh("env JOB_COMPLETION_INDEX=0 " + kBin + " --suite edge --list-cases");
  EXPECT_EQ(no_total.exit_code, 2);
  EXPECT_NE(no_total.output.find("NORMCHECK_TOTAL_SHARDS"), std::string::npos) << no_total.output;
  const auto out_of_range = sh("env SLURM_ARRAY_TASK_ID=3 SLURM_ARRAY_TASK_COUNT=3 " + kBin + " --suite edge");
  EXPECT_EQ(out_of_range.exit_code, 2) << out_of_range.output;
  EXPECT_NE(out_of_range.output.find("SLURM_ARRAY_TASK"), std::string::npos) << out_of_range.output;
}

TEST(CliList, JsonHasTheBackendsSuitesAndConventions) {
  const auto o = sh(kBin + " list --json 2>/dev/null");
  ASSERT_EQ(o.exit_code, 0) << o.output;
  const auto j = nlohmann::json::parse(o.output);
  EXPECT_EQ(j["schema"], "normcheck-list/1");
  bool naive = false;
  for (const auto& b : j["backends"]) naive |= b["name"] == "naive" && !b["version"].get<std::string>().empty();
  EXPECT_TRUE(naive) << o.output;
  bool edge = false;
  for (const auto& s : j["suites"])
    edge |= s["name"] == "edge" && s["cases"] == normcheck::load_suite("edge").cases.size();
  EXPECT_TRUE(edge);
  bool pytorch = false;
  for (const auto& c : j["conventions"])
    pytorch |= c["name"] == "pytorch" && c["default_momentum"] == 0.1 && c["running_var_unbiased"] == true;
  EXPECT_TRUE(pytorch);
  EXPECT_EQ(j["ops"].size(), 5u);
}

TEST(CliVerbose, OneLinePerPassingCaseWithVAndTensorFiguresWithVv) {
  const size_t n = normcheck::load_suite("smoke").cases.size();
  EXPECT_EQ(count_prefix(sh(kBin + " --suite smoke").output, "PASS  "), 0u);
  const auto v = sh(kBin + " --suite smoke -v");
  EXPECT_EQ(v.exit_code, 0);
  EXPECT_EQ(count_prefix(v.output, "PASS  "), n) << v.output;
  const auto vv = sh(kBin + " --case layer_norm,shape=2x3 -vv");
  // layer_norm forward: y, mean, variance, inv_std, each with its figures.
  for (const char* t : {"      y: 6 elements", "      mean: 2 elements", "      variance: 2 elements",
                        "      inv_std: 2 elements"})
    EXPECT_NE(vv.output.find(t), std::string::npos) << t << "\n" << vv.output;
  EXPECT_EQ(sh(kBin + " --suite smoke -v -q").exit_code, 2);
}

TEST(CliColour, OnlyOnATerminalAndNeverWithNoColor) {
  const std::string esc = "\033[";
  EXPECT_EQ(sh(kBin + " --case layer_norm,shape=2x3 -v").output.find(esc), std::string::npos);  // a pipe
  EXPECT_NE(sh(kBin + " --case layer_norm,shape=2x3 -v --color always").output.find(esc + "32mPASS"),
            std::string::npos);
  if (sh("command -v script").exit_code != 0) GTEST_SKIP() << "util-linux `script` not installed: no pseudo-terminal";
  // `script` runs the command on a pseudo-terminal.
  const std::string cmd = kBin + " --case layer_norm,shape=2x3 -v";
  EXPECT_NE(sh("script -qec '" + cmd + "' /dev/null").output.find(esc + "32mPASS"), std::string::npos);
  const auto off = sh("NO_COLOR=1 script -qec '" + cmd + "' /dev/null").output;
  EXPECT_EQ(off.find(esc + "32m"), std::string::npos) << off;
  EXPECT_NE(off.find("PASS  layer_norm"), std::string::npos) << off;
}

TEST(CliSubcommands, AnOptionThatDoesNotApplyIsExitTwoNamingIt) {
  const auto d = temp_dir("apply");
  struct Bad {
    std::string args, option, sub;
  };
  const std::vector<Bad> bad = {
      {"diagnose --junit " + (d / "x.xml").string(), "--junit", "diagnose"},
      {"diagnose --report " + (d / "x.md").string(), "--report", "diagnose"},
      {"diagnose --suite smoke", "--suite", "diagnose"},
      {"diagnose --dtype f64", "--dtype", "diagnose"},
      {"metamorphic --suite smoke --dump " + (d / "dump").string(), "--dump", "metamorphic"},
      {"metamorphic --suite smoke --junit " + (d / "m.xml").string(), "--junit", "metamorphic"},
      {"metamorphic --suite smoke --expect " + (d / "e.txt").string(), "--expect", "metamorphic"},
      {"bench --suite smoke --shard 0/2", "--shard", "bench"},
      {"bench --suite smoke --repeat 2", "--repeat", "bench"},
      {"list --backend naive", "--backend", "list"},
      {"--dtype f64 merge a.json", "--dtype", "merge"},
  };
  for (const auto& b : bad) {
    const auto o = sh(kBin + " " + b.args);
    EXPECT_EQ(o.exit_code, 2) << b.args << "\n" << o.output;
    EXPECT_NE(o.output.find(b.option + " does not apply to `normcheck " + b.sub + "`"), std::string::npos)
        << b.args << "\n" << o.output;
    EXPECT_EQ(lines_of(o.output).size(), 1u) << o.output;
  }
  EXPECT_TRUE(std::filesystem::is_empty(d));  // no report, no dump
  // A subcommand's --help says which main options it takes.
  EXPECT_NE(sh(kBin + " diagnose --help").output.find("--backend, --json, --timeout"), std::string::npos);
  EXPECT_NE(sh(kBin + " metamorphic --help").output.find("--filter"), std::string::npos);
}

TEST(CliValues, CheckedBeforeAnythingRunsWithTheRightNoun) {
  for (const char* t : {"-1", "0", "nan"}) {
    const auto o = sh(kBin + " --suite smoke --timeout " + t);
    EXPECT_EQ(o.exit_code, 2) << t;
    EXPECT_NE(o.output.find("--timeout"), std::string::npos) << o.output;
  }
  const auto e = sh(kBin + " --suite smoke --expect /nonexistent/known.txt");
  EXPECT_EQ(e.exit_code, 2);
  EXPECT_NE(e.output.find("expect file not found"), std::string::npos) << e.output;
  EXPECT_EQ(e.output.find("suite"), std::string::npos) << e.output;
  EXPECT_EQ(sh(kBin + " --suite smoke --repeat 0").exit_code, 2);
  // `--` belongs to bench (Google Benchmark's flags), nowhere else.
  const auto dd = sh(kBin + " --suite smoke -- --benchmark_filter=x");
  EXPECT_EQ(dd.exit_code, 2);
  EXPECT_NE(dd.output.find("only `normcheck bench`"), std::string::npos) << dd.output;
}

TEST(CliRepeat, NondeterministicBackendIsCaughtWithTheFirstDifferingElement) {
  // One ulp off on every second call: within tolerance, so an ordinary run passes it.
  const std::string c = " --case batch_norm,shape=3x5x7x3 --case layer_norm,pass=backward_training,shape=4x6";
  const auto plain = sh(kMutants + " --backend mutant_nondeterministic" + c);
  EXPECT_EQ(plain.exit_code, 0) << plain.output;
  const auto d = temp_dir("repeat");
  const auto r = sh(kMutants + " --backend mutant_nondeterministic --repeat 2" + c + " --json " +
                    (d / "r.json").string() + " --junit " + (d / "r.xml").string());
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_EQ(count_prefix(r.output, "NONDETERMINISTIC batch_norm"), 1u) << r.output;
  // The planted element: the last one, logical [N−1, C−1, H−1, W−1]; dx in the backward pass.
  EXPECT_NE(r.output.find("differs bitwise from run 1: y at [2,4,6,2]"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("differs bitwise from run 1: dx at [3,5]"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("FAIL: 0 of 2 cases passed, 2 failed"), std::string::npos) << r.output;
  std::ifstream jf(d / "r.json");
  const auto j = nlohmann::json::parse(jf);
  ASSERT_EQ(j["cases"].size(), 2u);
  for (const auto& cs : j["cases"]) EXPECT_EQ(cs["verdict"], "NONDETERMINISTIC");
  EXPECT_EQ(j["summary"]["fail"], 2);
  std::ifstream xf(d / "r.xml");
  std::stringstream xml;
  xml << xf.rdbuf();
  EXPECT_NE(xml.str().find("<failure type=\"nondeterministic\""), std::string::npos);
  // The deterministic naive backend passes the same check.
  const auto naive = sh(kBin + " --suite smoke --repeat 3");
  EXPECT_EQ(naive.exit_code, 0) << naive.output;
  EXPECT_EQ(naive.output.find("NONDETERMINISTIC"), std::string::npos);
}

TEST(CliMetamorphic, AViolationNamesTheElementByItsCoordinates) {
  // Strides ignored: the NHWC run reads NCHW order, so NCHW = NHWC is violated somewhere in y.
  const auto o = sh(kMutants + " metamorphic --backend mutant_ignore_strides --case batch_norm,shape=2x3x4x5");
  EXPECT_EQ(o.exit_code, 1) << o.output;
  EXPECT_TRUE(std::regex_search(o.output, std::regex(R"(VIOLATED [a-z_]+ .*\n.*y\[[0-9]+,[0-9]+,[0-9]+,[0-9]+\]: )")))
      << o.output;
}

TEST(CliDiagnose, NothingDeterminedIsNotGreen) {
  // The cuDNN backend on a machine without a CUDA device answers every probe case UNSUPPORTED:
  // diagnose then determined nothing and must exit 5 (NOTHING VERIFIED), not 0.
  const auto o = sh(kBin + " diagnose --backend cudnn 2>&1");
  if (o.output.find("unknown backend") != std::string::npos) GTEST_SKIP() << "the cudnn backend is not built here";
  if (o.output.find("no CUDA device") == std::string::npos)
    GTEST_SKIP() << "a CUDA device is present: diagnose determines something here";
  EXPECT_EQ(o.exit_code, 5) << o.output;
  EXPECT_NE(o.output.find("NOTHING DETERMINED"), std::string::npos) << o.output;
  EXPECT_NE(o.output.find("0 of "), std::string::npos) << o.output;
}

}  // namespace
