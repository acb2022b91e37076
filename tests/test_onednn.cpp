// The oneDNN backend over the built-in suites, every result explained, and a planted wrong output.
// Built only when oneDNN is found (NORMCHECK_HAVE_ONEDNN).
#include <gtest/gtest.h>
#include <oneapi/dnnl/dnnl.h>

#include <map>

#include "mutants.hpp"
#include "normcheck/data.hpp"
#include "normcheck/runner.hpp"
#include "onednn/onednn.hpp"

namespace normcheck {
namespace {

/// Cases where oneDNN disagrees with the reference, per library version, with the reason.
/// Empty for the versions tested so far; a new disagreement fails the test until it is
/// understood and listed here (and reported upstream).
const std::map<std::string, std::string> kKnownDisagreements = {};

bool library_has(Op op) {
  const dnnl_version_t* v = dnnl_version();
  const int ver = v->major * 100 + v->minor;
  if (op == Op::group_norm) return ver >= 303;
  if (op == Op::rms_norm) return ver >= 309;
  return true;
}

class OneDnnOnSuite : public ::testing::TestWithParam<std::tuple<std::string, bool>> {};

TEST_P(OneDnnOnSuite, EveryResultIsAPassAKnownDisagreementOrAReasonedUnsupported) {
  const auto& [suite, blocked] = GetParam();
  auto b = make_onednn_backend(blocked);
  int ran = 0;
  for (const auto& c : load_suite(suite).cases) {
    const Problem p = parse_descriptor(c.descriptor);
    const CaseResult r = run_case(*b, p, {});
    SCOPED_TRACE(r.descriptor + ": " + r.reason);
    EXPECT_NE(r.verdict, Verdict::error);
    if (r.verdict == Verdict::unsupported) {
      EXPECT_FALSE(r.reason.empty());
      // What the library has must run in the plain variant, whatever the layout.
      if (!blocked && library_has(p.op) && p.dtype == DType::f32) {
        EXPECT_TRUE(p.layout == Layout::nhwc && (p.op == Op::instance_norm || p.norm_dims > 1))
            << "unexpectedly unsupported";
      }
      continue;
    }
    ++ran;
    if (r.verdict == Verdict::fail) {
      EXPECT_TRUE(kKnownDisagreements.count(r.descriptor)) << "new disagreement";
    }
  }
  EXPECT_GT(ran, 0);  // which cases must run is checked case by case above
}

INSTANTIATE_TEST_SUITE_P(Suites, OneDnnOnSuite,
                         ::testing::Combine(::testing::Values("smoke", "edge"), ::testing::Bool()),
                         [](const auto& tp) {
                           return std::get<0>(tp.param) + (std::get<1>(tp.param) ? "_blocked" : "_plain");
                         });

TEST(OneDnn, AWrongOutputElementIsCaught) {
  for (const char* d : {"batch_norm,shape=2x3x4x4", "layer_norm,shape=4x8"}) {
    auto b = testing::perturb_y(make_onednn_backend(), 5, 1e-3f);
    const auto r = run_case(*b, parse_descriptor(d), {});
    ASSERT_EQ(r.verdict, Verdict::fail) << d;
    EXPECT_EQ(r.tensors[0].name, "y");
    EXPECT_EQ(r.tensors[0].over_tolerance, 1) << d;
    EXPECT_EQ(r.tensors[0].worst.index, 5) << d;
  }
}

TEST(OneDnn, SavesMeanAndVarianceNotInvStd) {
  auto b = make_onednn_backend();
  const auto r = run_case(*b, parse_descriptor("batch_norm,shape=2x3x4x4"), {});
  std::vector<std::string> names;
  for (const auto& t : r.tensors) names.push_back(t.name);
  EXPECT_EQ(names, (std::vector<std::string>{"y", "mean", "variance", "running_mean", "running_var"}));
}

TEST(OneDnn, F64IsUnsupportedWithTheReason) {
  auto b = make_onednn_backend();
  const auto r = run_case(*b, parse_descriptor("batch_norm,shape=2x3,dtype=f64"), {});
  EXPECT_EQ(r.verdict, Verdict::unsupported);
  EXPECT_EQ(r.reason, "oneDNN has no f64 normalization primitives");
}

}  // namespace
}  // namespace normcheck
