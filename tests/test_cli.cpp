// The normcheck command end to end: exit codes, reproducers, report files.
#include <gtest/gtest.h>

#include "shell.hpp"
#include <sys/wait.h>

#include <array>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include <fmt/format.h>

#include "normcheck/data.hpp"

namespace {

using normcheck::testing::sh;

std::string slurp(const std::filesystem::path& p) {
  std::ifstream f(p);
  std::stringstream s;
  s << f.rdbuf();
  return s.str();
}

const std::string kBin = NORMCHECK_BIN;
const std::string kMutants = NORMCHECK_MUTANTS_BIN;

std::filesystem::path temp_dir(const std::string& name) {
  auto d = std::filesystem::temp_directory_path() / ("normcheck_test_" + name + "_" + std::to_string(getpid()));
  std::filesystem::remove_all(d);
  std::filesystem::create_directories(d);
  return d;
}

TEST(Cli, EdgeSuiteOnNaivePassesWithExitZeroAndASummary) {
  const auto o = sh(kBin + " --backend naive --suite edge");
  EXPECT_EQ(o.exit_code, 0) << o.output;
  EXPECT_NE(o.output.find("total"), std::string::npos);
  const size_t n = normcheck::load_suite("edge").cases.size();
  // The two κ ≈ 1e6 cases are weak checks in f32: counted apart, never as passed (docs/comparison.md).
  EXPECT_NE(o.output.find(fmt::format("PASS: {} of {} cases passed, 2 weak checks", n - 2, n)), std::string::npos)
      << o.output;
}

TEST(Cli, PlantedBugGivesExitOneAndAReproducerUnderEveryFailure) {
  const auto o = sh(kMutants + " --backend mutant_unbiased_variance --suite edge");
  EXPECT_EQ(o.exit_code, 1) << o.output;
  size_t fails = 0, repro = 0;
  std::istringstream lines(o.output);
  std::string line, last_fail;
  while (std::getline(lines, line)) {
    if (line.rfind("FAIL  ", 0) == 0) ++fails;
    if (line.find("reproduce: normcheck --backend mutant_unbiased_variance --case ") != std::string::npos) ++repro;
  }
  EXPECT_GT(fails, 0u);
  EXPECT_EQ(fails, repro);
  // The reproducer itself reproduces: run the first one.
  const auto pos = o.output.find("reproduce: normcheck ");
  ASSERT_NE(pos, std::string::npos);
  const auto end = o.output.find('\n', pos);
  const std::string cmd = o.output.substr(pos + 21, end - pos - 21);
  const auto again = sh(kMutants + " " + cmd);
  EXPECT_EQ(again.exit_code, 1) << again.output;
  EXPECT_NE(again.output.find("1 failed"), std::string::npos) << again.output;
}

TEST(Cli, MalformedDescriptorIsExitTwoWithOneLine) {
  const auto o = sh(kBin + " --case batch_norm,shape=2x0");
  EXPECT_EQ(o.exit_code, 2);
  EXPECT_EQ(o.output.rfind("normcheck: error: descriptor 'batch_norm,shape=2x0'", 0), 0u) << o.output;
  EXPECT_EQ(std::count(o.output.begin(), o.output.end(), '\n'), 1) << o.output;
}

TEST(Cli, UsageErrorsAreExitTwo) {
  EXPECT_EQ(sh(kBin + " --backend nosuch --suite smoke").exit_code, 2);
  EXPECT_EQ(sh(kBin + " --suite nosuch").exit_code, 2);
  EXPECT_EQ(sh(kBin).exit_code, 2);
  EXPECT_EQ(sh(kBin + " --frobnicate").exit_code, 2);
  EXPECT_EQ(sh(kBin + " --suite smoke --dtype f128").exit_code, 2);
  EXPECT_EQ(sh(kBin + " --suite smoke --json /nonexistent-dir/x.json").exit_code, 2);
  const auto o = sh(kBin + " --backend nosuch --suite smoke");
  EXPECT_NE(o.output.find("unknown backend 'nosuch'; known: naive"), std::string::npos) << o.output;
}

TEST(Cli, ListShowsBackendsSuitesOpsAndConventions) {
  const auto o = sh(kBin + " list");
  EXPECT_EQ(o.exit_code, 0);
  for (const char* s : {"naive", "normcheck 0.1.0", "smoke", "edge", "rms_norm", "backward_inference",
                        "pytorch", "keras"})
    EXPECT_NE(o.output.find(s), std::string::npos) << s;
}

TEST(Cli, WritesJsonJunitAndMarkdownReports) {
  const auto d = temp_dir("reports");
  const auto o = sh(kMutants + " --backend mutant_swapped_momentum --suite smoke --suite edge --json " +
                    (d / "r.json").string() + " --junit " + (d / "r.xml").string() + " --report " +
                    (d / "r.md").string());
  EXPECT_EQ(o.exit_code, 1) << o.output;
  const auto j = nlohmann::json::parse(slurp(d / "r.json"));
  EXPECT_EQ(j["schema"], "normcheck-result/1");
  EXPECT_EQ(j["backend"]["name"], "mutant_swapped_momentum");
  const int total = static_cast<int>(normcheck::load_suite("smoke").cases.size() +
                                     normcheck::load_suite("edge").cases.size());
  EXPECT_EQ(j["summary"]["total"], total);
  EXPECT_TRUE(j["complete"].get<bool>());
  int fails = 0;
  for (const auto& c : j["cases"]) {
    // The backend's share of the case's wall time: timed around its calls, so within the case's.
    EXPECT_GE(c["backend_seconds"].get<double>(), 0.0) << c["descriptor"];
    EXPECT_LE(c["backend_seconds"].get<double>(), c["seconds"].get<double>()) << c["descriptor"];
    if (c["verdict"] != "FAIL") continue;
    ++fails;
    EXPECT_EQ(c["reproducer"].get<std::string>().rfind("normcheck --backend mutant_swapped_momentum --case ", 0), 0u);
    bool tensor_failed = false;
    for (const auto& t : c["tensors"]) tensor_failed |= !t["pass"].get<bool>();
    EXPECT_TRUE(tensor_failed);
  }
  EXPECT_EQ(j["summary"]["fail"], fails);
  EXPECT_GT(fails, 0);
  const std::string xml = slurp(d / "r.xml");
  EXPECT_NE(xml.find(fmt::format("<testsuites name=\"normcheck\" tests=\"{}\" failures=\"{}\"", total, fails)),
            std::string::npos) << xml.substr(0, 300);
  EXPECT_EQ(static_cast<int>(std::count(xml.begin(), xml.end(), '<') -
                             std::count(xml.begin(), xml.end(), '>')), 0);
  const std::string md = slurp(d / "r.md");
  EXPECT_NE(md.find("| batch_norm | forward_training |"), std::string::npos);
  EXPECT_NE(md.find("Reproduce: `normcheck --backend mutant_swapped_momentum --case "), std::string::npos);
  std::filesystem::remove_all(d);
}

TEST(Cli, DumpWritesNpyFilesPerCase) {
  const auto d = temp_dir("dump");
  const auto o = sh(kBin + " --case layer_norm,shape=3x4,pass=backward_training --dump " + d.string());
  EXPECT_EQ(o.exit_code, 0) << o.output;
  const auto dir = d / "layer_norm+pass=backward_training+dtype=f32+shape=3x4";
  for (const char* f : {"input_x.npy", "input_dy.npy", "input_gamma.npy", "input_beta.npy",
                        "input_saved_mean.npy", "reference_dx.npy", "backend_dx.npy",
                        "reference_dgamma.npy", "backend_dbeta.npy", "descriptor.txt"})
    EXPECT_TRUE(std::filesystem::exists(dir / f)) << f;
  const std::string npy = slurp(dir / "input_x.npy");
  ASSERT_GT(npy.size(), 10u);
  EXPECT_EQ(npy.substr(1, 5), "NUMPY");
  const size_t header = static_cast<unsigned char>(npy[8]) | (static_cast<unsigned char>(npy[9]) << 8);
  EXPECT_EQ((10 + header) % 64, 0u);
  EXPECT_NE(npy.find("'descr': '<f4', 'fortran_order': False, 'shape': (3,4),"), std::string::npos);
  EXPECT_EQ(npy.size(), 10 + header + 12 * 4);
  std::filesystem::remove_all(d);
}

}  // namespace
