// The oneDNN backend over the built-in suites, every result explained, and a planted wrong output.
// Built only when oneDNN is found (NORMCHECK_HAVE_ONEDNN).
#include <gtest/gtest.h>
#include <oneapi/dnnl/dnnl.h>

#include <cstdio>
#include <map>
#include <optional>

#include "mutants.hpp"
#include "normcheck/data.hpp"
#include "normcheck/metamorphic.hpp"
#include "normcheck/probes.hpp"
#include "normcheck/runner.hpp"
#include "onednn/onednn.hpp"

namespace normcheck {
namespace {

int library_version() {
  const dnnl_version_t* v = dnnl_version();
  return v->major * 100 + v->minor;
}

/// Where oneDNN disagrees with the reference, and why: the tensor that is wrong and the cause.
/// A disagreement not listed here fails the test until it is understood and listed.
struct Disagreement {
  std::string tensor, why;
};
std::optional<Disagreement> known_disagreement(const Problem& p) {
  // oneDNN < 3.9 ref_group_normalization backward: dx subtracts per-channel sums of dy and
  // dy·x̂ over the whole batch instead of per-(n, group) sums of γ·dy (uxlfoundation/oneDNN#3543,
  // fixed by PR #3615 in July 2025). Right only when N = 1 and groups = C.
  if (p.op == Op::group_norm && p.pass == Pass::backward_training && library_version() < 309 &&
      !(p.dims[0] == 1 && p.groups == p.channels()))
    return Disagreement{"dx", "oneDNN#3543: group_normalization backward dx uses batch-wide per-channel sums"};
  return std::nullopt;
}

bool library_has(Op op) {
  const int ver = library_version();
  if (op == Op::group_norm) return ver >= 303;
  if (op == Op::rms_norm) return ver >= 309;
  return true;
}

class OneDnnOnSuite : public ::testing::TestWithParam<std::tuple<std::string, bool, DType>> {};

TEST_P(OneDnnOnSuite, EveryResultIsAPassAKnownDisagreementOrAReasonedUnsupported) {
  const auto& [suite, blocked, dtype] = GetParam();
  auto b = make_onednn_backend(blocked);
  int ran = 0;
  for (const auto& c : load_suite(suite).cases) {
    Problem p = parse_descriptor(c.descriptor);
    p.dtype = dtype;
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
    const auto known = known_disagreement(p);
    if (!known) {
      EXPECT_EQ(r.verdict, Verdict::pass) << "new disagreement";
      continue;
    }
    // A known bug must show exactly where it is said to: that tensor fails, the others pass.
    EXPECT_EQ(r.verdict, Verdict::fail) << known->why << " no longer reproduces: update the list";
    for (const auto& t : r.tensors) EXPECT_EQ(t.pass, t.name != known->tensor) << t.name << ": " << known->why;
    // …and the report names it: the outputs match the bug's predicted signature.
    EXPECT_NE(r.suspected_cause.find("oneDNN#3543"), std::string::npos) << r.suspected_cause;
  }
  // Which f32 cases must run is checked case by case above; f16/bf16 run where the library and
  // CPU implement them, else they are UNSUPPORTED with oneDNN's message (checked non-empty).
  if (dtype == DType::f32) {
    EXPECT_GT(ran, 0);
  }
  std::printf("[ info     ] %s %s %s: %d cases ran\n", suite.c_str(), blocked ? "blocked" : "plain",
              std::string(to_string(dtype)).c_str(), ran);
}

INSTANTIATE_TEST_SUITE_P(Suites, OneDnnOnSuite,
                         ::testing::Combine(::testing::Values("smoke", "edge"), ::testing::Bool(),
                                            ::testing::Values(DType::f32, DType::bf16, DType::f16)),
                         [](const auto& tp) {
                           return std::get<0>(tp.param) + (std::get<1>(tp.param) ? "_blocked_" : "_plain_") +
                                  std::string(to_string(std::get<2>(tp.param)));
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

TEST(OneDnn, GroupNormBackwardControlCaseOfTheKnownBugPasses) {
  if (library_version() < 303) GTEST_SKIP() << "group_normalization needs oneDNN ≥ 3.3";
  // With N = 1 and groups = C, batch-wide per-channel sums are per-(n, group) sums: the
  // diagnosis of oneDNN#3543 predicts this case right, and it is.
  auto b = make_onednn_backend();
  const auto r = run_case(*b, parse_descriptor("group_norm,shape=1x4x5,groups=4,pass=backward_training"), {});
  EXPECT_EQ(r.verdict, Verdict::pass) << r.reason;
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

TEST(OneDnn, DiagnoseDeterminesEveryPoint) {
  auto b = make_onednn_backend();
  std::map<std::string, ProbeResult> p;
  for (auto& r : run_probes(*b)) p[r.point] = r;
  ASSERT_EQ(p.size(), 8u);
  for (const auto& [point, r] : p) EXPECT_TRUE(r.determined) << point << ": " << r.evidence;
  EXPECT_NE(p["saved statistics (forward training)"].finding, "mean, biased variance, inv_std");  // no inv_std
  EXPECT_NE(p["eps placement"].finding.find("inside"), std::string::npos);
  EXPECT_NE(p["variance in the normalization"].finding.find("biased v (population)"), std::string::npos);
  std::printf("[ info     ] oneDNN summation: %s (%s)\n", p["summation depth (error growth against n)"].finding.c_str(),
              p["summation depth (error growth against n)"].evidence.c_str());
}

TEST(OneDnn, HoldsEveryMetamorphicRelationOnTheCorrectnessSuites) {
  auto b = make_onednn_backend();
  int held = 0;
  for (const char* suite : {"smoke", "edge", "adversarial"})
    for (const auto& c : load_suite(suite).cases)
      for (const auto& r : check_relations(*b, parse_descriptor(c.descriptor))) {
        if (r.skipped) continue;
        // The known GroupNorm backward bug (oneDNN#3543, < 3.9) breaks no relation: it is consistent.
        EXPECT_TRUE(r.holds) << r.relation << " " << r.descriptor << ": " << r.detail;
        held += r.holds;
      }
  EXPECT_GT(held, 100);
}

}  // namespace
}  // namespace normcheck
