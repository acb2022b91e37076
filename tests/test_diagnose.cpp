// `normcheck diagnose` probes and the metamorphic relations, on the naive backend, the correct
// variants and the planted bugs: each probe must name what the kernel was built to do, and each
// relation must hold for correct kernels and break for the bug it targets.
#include <gtest/gtest.h>

#include <map>
#include <string>

#include "mutants.hpp"
#include "normcheck/data.hpp"
#include "normcheck/metamorphic.hpp"
#include "normcheck/probes.hpp"
#include "normcheck/runner.hpp"

namespace normcheck {
namespace {

std::unique_ptr<Backend> backend(const std::string& name) {
  BackendRegistry reg;
  register_builtin_backends(reg);
  testing::register_mutant_backends(reg);
  testing::register_correct_variants(reg);
  return reg.create(name);
}

std::map<std::string, ProbeResult> probes(const std::string& name) {
  auto b = backend(name);
  std::map<std::string, ProbeResult> out;
  for (auto& p : run_probes(*b)) out[p.point] = p;
  return out;
}

bool finds(const ProbeResult& p, const std::string& phrase) { return p.determined && p.finding.find(phrase) != std::string::npos; }

TEST(Diagnose, NaiveIsTheTextbookKernel) {
  auto p = probes("naive");
  ASSERT_EQ(p.size(), 8u);
  for (const auto& [point, r] : p) EXPECT_TRUE(r.determined) << point << ": " << r.evidence;
  EXPECT_TRUE(finds(p["momentum direction (running_mean)"], "new-weight"));
  EXPECT_TRUE(finds(p["Bessel correction in running_var"], "unbiased"));
  EXPECT_TRUE(finds(p["variance in the normalization"], "biased v (population)"));
  EXPECT_TRUE(finds(p["eps placement"], "inside"));
  EXPECT_TRUE(finds(p["saved statistics (forward training)"], "mean, biased variance, inv_std"));
  EXPECT_TRUE(finds(p["effective accumulation precision"], "f32 or wider"));
  EXPECT_TRUE(finds(p["variance algorithm (error growth against κ)"], "stable"));
  EXPECT_TRUE(finds(p["summation depth (error growth against n)"], "recursive"));
}

struct Expectation {
  const char* backend;
  const char* point;
  const char* finding;
};

class ProbeNamesThePlantedBehaviour : public ::testing::TestWithParam<Expectation> {};

TEST_P(ProbeNamesThePlantedBehaviour, Finding) {
  const auto& e = GetParam();
  auto p = probes(e.backend);
  EXPECT_TRUE(finds(p[e.point], e.finding)) << e.backend << " / " << e.point << ": " << p[e.point].finding << " ("
                                            << p[e.point].evidence << ")";
}

INSTANTIATE_TEST_SUITE_P(
    Probes, ProbeNamesThePlantedBehaviour,
    ::testing::Values(
        Expectation{"mutant_swapped_momentum", "momentum direction (running_mean)", "swapped"},
        Expectation{"mutant_swapped_momentum", "Bessel correction in running_var", "unbiased"},
        Expectation{"mutant_biased_running_var", "Bessel correction in running_var", "biased v"},
        Expectation{"mutant_unbiased_variance", "variance in the normalization", "unbiased"},
        Expectation{"mutant_unbiased_variance", "eps placement", "inside"},
        Expectation{"mutant_eps_outside_sqrt", "eps placement", "outside"},
        Expectation{"mutant_eps_outside_sqrt", "variance in the normalization", "biased v (population)"},
        Expectation{"mutant_one_pass_variance", "variance algorithm (error growth against κ)", "one-pass"},
        Expectation{"mutant_storage_accumulation", "effective accumulation precision", "16-bit"},
        Expectation{"variant_welford", "variance algorithm (error growth against κ)", "stable"},
        Expectation{"variant_pairwise", "summation depth (error growth against n)", "no measurable error"},
        Expectation{"variant_kahan", "summation depth (error growth against n)", "no measurable error"}),
    [](const auto& tp) { return std::string(tp.param.backend) + "_" + std::to_string(tp.index); });

/// Relation → (held, violated) over the correctness suites.
std::map<std::string, std::pair<int, int>> relations(const std::string& name, DType dtype) {
  auto b = backend(name);
  std::map<std::string, std::pair<int, int>> out;
  for (const char* suite : {"smoke", "edge", "adversarial"})
    for (const auto& c : load_suite(suite).cases) {
      Problem p = parse_descriptor(c.descriptor);
      p.dtype = dtype;
      for (const auto& r : check_relations(*b, p)) {
        if (r.skipped) continue;
        (r.holds ? out[r.relation].first : out[r.relation].second)++;
        if (!r.holds && name.rfind("mutant_", 0) != 0)
          ADD_FAILURE() << name << " violates " << r.relation << " on " << r.descriptor << ": " << r.detail;
      }
    }
  return out;
}

class CorrectKernelsHoldEveryRelation : public ::testing::TestWithParam<std::tuple<std::string, DType>> {};

TEST_P(CorrectKernelsHoldEveryRelation, OnTheCorrectnessSuites) {
  const auto r = relations(std::get<0>(GetParam()), std::get<1>(GetParam()));
  for (const char* rel : {"layout", "inplace", "permutation", "shift", "affine"})
    EXPECT_GT(r.count(rel) ? r.at(rel).first : 0, 0) << rel << " was never checked";
}

INSTANTIATE_TEST_SUITE_P(Variants, CorrectKernelsHoldEveryRelation,
                         ::testing::Combine(::testing::ValuesIn(testing::correct_variant_names()),
                                            ::testing::Values(DType::f32, DType::f16)),
                         [](const auto& tp) {
                           return std::get<0>(tp.param) + "_" + std::string(to_string(std::get<1>(tp.param)));
                         });

TEST(Metamorphic, RelationsCatchBugsWithoutAReference) {
  EXPECT_GT(relations("mutant_ignore_strides", DType::f32)["layout"].second, 0);
  EXPECT_GT(relations("mutant_one_pass_variance", DType::f32)["shift"].second, 0);
  const auto acc = relations("mutant_storage_accumulation", DType::f16);
  EXPECT_GT(acc.at("permutation").second + acc.at("shift").second, 0);
}

}  // namespace
}  // namespace normcheck

namespace normcheck {
namespace {

// tolerance-model.md §1: recursive f32 sums over 2^20 elements have (h + 4)·u = 0.0625 > 0.05, so
// no first-order bound exists and the verdict is NOT_CERTIFIABLE; a pairwise kernel (h = 20) is
// judged, and passes.
TEST(Certifiability, DependsOnTheDeclaredSummationDepth) {
  const Problem p = parse_descriptor("layer_norm,shape=1x1048576,data=uniform:0.5:1");
  const auto recursive = run_case(*backend("naive"), p, {});
  EXPECT_EQ(recursive.verdict, Verdict::not_certifiable) << recursive.reason;
  EXPECT_NE(recursive.reason.find("(h + 4)·u = 0.0625"), std::string::npos) << recursive.reason;
  const auto pairwise = run_case(*backend("variant_pairwise"), p, {});
  EXPECT_EQ(pairwise.verdict, Verdict::pass) << pairwise.reason;
}

}  // namespace
}  // namespace normcheck
