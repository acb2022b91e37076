// Plugins through the C ABI: the example passes like the same code called in process, and each
// misbehaving plugin gets its documented outcome without taking normcheck down.
#include <gtest/gtest.h>

#include "shell.hpp"
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "normcheck/data.hpp"
#include "normcheck/runner.hpp"
#include "plugin/plugin_backend.hpp"

namespace normcheck {
namespace {

using normcheck::testing::sh;

const std::string kBin = NORMCHECK_BIN;
const std::string kExample = NORMCHECK_EXAMPLE_PLUGIN;
std::string plugin(const std::string& name) { return std::string(NORMCHECK_TEST_PLUGIN_DIR) + "/libplugin_" + name + ".so"; }

TEST(Plugins, ExampleGivesTheSameResultsIsolatedAndInProcess) {
  auto isolated = load_plugin(kExample, 60, true);
  auto in_process = load_plugin(kExample, 60, false);
  int compared = 0;
  for (const char* suite : {"smoke", "edge"}) {
    for (const auto& c : load_suite(suite).cases) {
      const Problem p = parse_descriptor(c.descriptor);
      const CaseResult a = run_case(*isolated, p, {}), b = run_case(*in_process, p, {});
      SCOPED_TRACE(c.descriptor);
      EXPECT_EQ(a.verdict, b.verdict);
      EXPECT_NE(a.verdict, Verdict::fail) << a.reason;
      EXPECT_NE(a.verdict, Verdict::error) << a.reason;
      ASSERT_EQ(a.tensors.size(), b.tensors.size());
      for (size_t i = 0; i < a.tensors.size(); ++i) {  // bit-identical outputs
        EXPECT_EQ(a.tensors[i].max_abs_err, b.tensors[i].max_abs_err) << a.tensors[i].name;
        EXPECT_EQ(a.tensors[i].worst.got, b.tensors[i].worst.got) << a.tensors[i].name;
      }
      compared += a.verdict == Verdict::pass;
    }
  }
  EXPECT_GE(compared, 40);
}

TEST(Plugins, ExampleGatesLikeABuiltInBackendThroughTheCli) {
  // Per process: two test runs (two build trees) may share /tmp.
  const auto json_path =
      (std::filesystem::temp_directory_path() / ("nc_example_plugin_" + std::to_string(getpid()) + ".json")).string();
  const auto o = sh(kBin + " --backend " + kExample + " --suite edge -q --json " + json_path);
  EXPECT_EQ(o.exit_code, 0) << o.output;
  EXPECT_NE(o.output.find("0 failed, 0 errors"), std::string::npos) << o.output;
  // What the plugin declares about itself is recorded in the report.
  const auto j = nlohmann::json::parse(std::ifstream(json_path));
  EXPECT_EQ(j["backend"]["id"], "normcheck_example");
  bool declared = false;
  for (const auto& n : j["backend"]["notes"])
    declared |= n.get<std::string>().find("accumulation f64, summation recursive") != std::string::npos;
  EXPECT_TRUE(declared) << j["backend"]["notes"].dump();
  std::filesystem::remove(json_path);
}

struct Planted {
  const char* plugin;
  const char* verdict;
  const char* detail;
};

class MisbehavingPlugin : public ::testing::TestWithParam<Planted> {};

TEST_P(MisbehavingPlugin, IsReportedAndTheRunGoesOn) {
  const auto dir = std::filesystem::temp_directory_path() /
                   ("nc_plugin_" + std::string(GetParam().plugin) + "_" + std::to_string(getpid()));
  std::filesystem::create_directories(dir);
  const auto json = (dir / "r.json").string();
  const auto o = sh(kBin + " --backend " + plugin(GetParam().plugin) +
                    " --timeout 1 --case batch_norm,shape=2x3x4 --case layer_norm,shape=3x5 --json " + json);
  EXPECT_EQ(o.exit_code, 1) << o.output;
  EXPECT_NE(o.output.find(GetParam().detail), std::string::npos) << o.output;
  const auto j = nlohmann::json::parse(std::ifstream(json));
  EXPECT_TRUE(j["complete"].get<bool>());
  ASSERT_EQ(j["cases"].size(), 2u);  // both cases ran: the first failure did not end the run
  for (const auto& c : j["cases"]) EXPECT_EQ(c["verdict"], GetParam().verdict);
  std::filesystem::remove_all(dir);
}

INSTANTIATE_TEST_SUITE_P(
    Faults, MisbehavingPlugin,
    ::testing::Values(Planted{"segv", "CRASH", "SIGSEGV"}, Planted{"abort", "CRASH", "SIGABRT"},
                      Planted{"hang", "TIMEOUT", "longer than 1 s"},
                      Planted{"overrun", "OVERRUN", "outside tensor y"},
                      Planted{"error", "ERROR", "planted error: out of workspace"}),
    [](const auto& tp) { return std::string(tp.param.plugin); });

TEST(Plugins, LoadFailuresAreUsageErrorsWithOneLine) {
  struct Bad {
    std::string spec, message;
  };
  for (const Bad& b : {Bad{plugin("bad_abi"), "built for plugin ABI 99.0"},
                       Bad{plugin("no_entry"), "does not export normcheck_plugin_entry"},
                       Bad{"/nonexistent/libx.so", "no such file"},
                       Bad{std::string(NORMCHECK_BIN), "cannot load"}}) {
    const auto o = sh(kBin + " --backend " + b.spec + " --suite smoke");
    EXPECT_EQ(o.exit_code, 2) << b.spec << ": " << o.output;
    EXPECT_NE(o.output.find(b.message), std::string::npos) << o.output;
    EXPECT_EQ(std::count(o.output.begin(), o.output.end(), '\n'), 1) << o.output;
  }
}

TEST(Plugins, FoundByNameOnNormcheckPluginPath) {
  const auto o = sh("NORMCHECK_PLUGIN_PATH=/nonexistent:" + std::filesystem::path(kExample).parent_path().string() +
                    " " + kBin + " --backend normcheck_example_plugin --case layer_norm,shape=3x5 -q");
  EXPECT_EQ(o.exit_code, 0) << o.output;
  EXPECT_EQ(sh(kBin + " --backend normcheck_example_plugin --case layer_norm,shape=3x5").exit_code, 2);
}

}  // namespace
}  // namespace normcheck

namespace normcheck {
namespace {

// What a plugin declares reaches normcheck: its precision profile sets the budget's depth and
// accumulator, and --convention native takes its running-statistics convention.
TEST(PluginDeclarations, ProfileAndConventionAreUsed) {
  auto b = load_plugin(plugin("declarations"), 5, true);
  ASSERT_TRUE(b);
  const Capabilities c = b->capabilities();
  EXPECT_EQ(c.convention, "keras");
  EXPECT_EQ(c.precision.summation, Summation::pairwise);
  ASSERT_TRUE(c.precision.accumulation.has_value());
  EXPECT_EQ(*c.precision.accumulation, DType::f16);
  const std::string json = ::testing::TempDir() + "/declarations_" + std::to_string(getpid()) + ".json";
  const auto o = sh(std::string(NORMCHECK_BIN) + " --backend " + plugin("declarations") +
                    " --convention native --case batch_norm,shape=4x3 --json " + json);
  EXPECT_EQ(o.exit_code, 1) << o.output;  // it computes nothing: the outputs are missing
  std::ifstream f(json);
  const auto j = nlohmann::json::parse(f);
  EXPECT_EQ(j["cases"][0]["descriptor"], "batch_norm,pass=forward_training,dtype=f32,shape=4x3,convention=keras")
      << "--convention native takes the plugin's keras, with Keras's default momentum";
}

}  // namespace
}  // namespace normcheck
