// Exit code 5 (docs/cli.md): a run in which no case passed and none failed (every case unsupported
// or not certifiable) verified nothing and is not green; a run with at least one pass still is.
#include <gtest/gtest.h>

#include <fmt/format.h>

#include <string>

#include "normcheck/data.hpp"
#include "shell.hpp"

namespace {

using normcheck::testing::sh;

const std::string kBin = NORMCHECK_BIN;
const std::string kExample = NORMCHECK_EXAMPLE_PLUGIN;  // examples/plugin-c: f32 only

TEST(NothingVerified, EveryCaseUnsupportedIsExitFiveAndSaysSo) {
  const size_t n = normcheck::load_suite("smoke").cases.size();
  const auto o = sh(kBin + " --backend " + kExample + " --suite smoke --dtype f16");
  EXPECT_EQ(o.exit_code, 5) << o.output;
  EXPECT_NE(o.output.find(fmt::format("NOTHING VERIFIED: 0 of {} cases passed, 0 failed, 0 errors, {} unsupported", n, n)),
            std::string::npos)
      << o.output;
  EXPECT_EQ(o.output.find("PASS:"), std::string::npos) << o.output;
}

// Recursive f32 sums over 2^20 elements have no first-order bound (tolerance model:
// (h + 4)·u = 0.0625 > 0.05), so the naive backend's only case is NOT_CERTIFIABLE.
TEST(NothingVerified, EveryCaseNotCertifiableIsExitFive) {
  const auto o = sh(kBin + " --backend naive --case layer_norm,shape=1x1048576,data=uniform:0.5:1");
  EXPECT_EQ(o.exit_code, 5) << o.output;
  EXPECT_NE(o.output.find("NOT CERTIFIABLE"), std::string::npos) << o.output;
  EXPECT_NE(o.output.find("NOTHING VERIFIED: 0 of 1 cases passed, 0 failed, 0 errors, 0 unsupported, 1 not certifiable"),
            std::string::npos)
      << o.output;
}

// Unsupported cases beside passing ones are listed, not failures: the run stays green.
TEST(NothingVerified, SomeUnsupportedBesideAPassIsExitZero) {
  const auto o = sh(kBin + " --backend " + kExample + " --suite smoke");
  EXPECT_EQ(o.exit_code, 0) << o.output;
  EXPECT_NE(o.output.find("UNSUPPORTED"), std::string::npos) << o.output;
  EXPECT_NE(o.output.find("\nPASS: "), std::string::npos) << o.output;
}

// A FAIL among unsupported cases is still exit 1, not 5.
TEST(NothingVerified, AFailureIsStillExitOne) {
  const auto o = sh(std::string(NORMCHECK_MUTANTS_BIN) +
                    " --backend mutant_unbiased_variance --case batch_norm,pass=forward_training,dtype=f32,shape=2x3");
  EXPECT_EQ(o.exit_code, 1) << o.output;
  EXPECT_NE(o.output.find("\nFAIL: 0 of 1 cases passed"), std::string::npos) << o.output;
}

}  // namespace
