// The comparison rule on hand-made values.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "normcheck/compare.hpp"

namespace normcheck {
namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr double kInf = std::numeric_limits<double>::infinity();

TEST(UlpDistance, CountsRepresentableStepsInTheDtype) {
  EXPECT_EQ(ulp_distance(DType::f32, 1.0, 1.0), 0);
  EXPECT_EQ(ulp_distance(DType::f32, 1.0, 1.0 + 0x1p-23), 1);       // one f32 ulp above 1
  EXPECT_EQ(ulp_distance(DType::f32, 1.0, 1.0 - 0x1p-24), 1);       // one f32 ulp below 1
  EXPECT_EQ(ulp_distance(DType::f64, 1.0, 1.0 + 3 * 0x1p-52), 3);
  EXPECT_EQ(ulp_distance(DType::f32, -0.0, 0.0), 0);
  EXPECT_EQ(ulp_distance(DType::f32, 0x1p-149, -0x1p-149), 2);      // across zero, subnormals
  EXPECT_EQ(ulp_distance(DType::f64, kNaN, kNaN), 0);
  EXPECT_TRUE(std::isinf(ulp_distance(DType::f64, kNaN, 1.0)));
  EXPECT_TRUE(std::isinf(ulp_distance(DType::f64, kInf, -kInf)));
}

TensorComparison cmp(const char* name, DType t, std::vector<int64_t> dims, const std::vector<double>& ref,
                     const std::vector<double>& got, const std::vector<double>& tol, bool undefined = false,
                     const std::vector<double>* prob = nullptr) {
  return compare_tensor(name, t, std::move(dims), ref, got, TensorBudget{&tol, prob, nullptr, BudgetTerm::reduction},
                        undefined);
}

TEST(CompareTensor, PassesWithinToleranceAndReportsTheWorstElement) {
  const std::vector<double> ref = {1, 2, 3, 4, 5, 6};
  const std::vector<double> got = {1, 2.0005, 3, 4, 5.002, 6};
  const std::vector<double> tol(6, 0.01);
  const auto c = cmp("y", DType::f64, {2, 3}, ref, got, tol);
  EXPECT_TRUE(c.pass);
  EXPECT_EQ(c.over_tolerance, 0);
  EXPECT_NEAR(c.max_abs_err, 0.002, 1e-12);
  EXPECT_NEAR(c.max_rel_err, 0.0004, 1e-12);  // 0.002/5 beats 0.0005/2
  EXPECT_EQ(c.worst.index, 4);
  EXPECT_EQ(c.worst.coords, (std::vector<int64_t>{1, 1}));
  EXPECT_NEAR(c.worst_ratio, 0.2, 1e-9);
}

TEST(CompareTensor, FailsAboveToleranceAndCountsElements) {
  const std::vector<double> ref = {1, 2, 3};
  const std::vector<double> got = {1.5, 2, 2.0};
  const auto c = cmp("mean", DType::f32, {3}, ref, got, {0.1, 0.1, 0.1});
  EXPECT_FALSE(c.pass);
  EXPECT_EQ(c.over_tolerance, 2);
  EXPECT_EQ(c.worst.index, 2);
  EXPECT_EQ(c.worst.expected, 3);
  EXPECT_EQ(c.worst.got, 2);
}

TEST(CompareTensor, NonFiniteWhereTheReferenceIsFiniteAlwaysFails) {
  const auto c = cmp("y", DType::f32, {3}, {1, 2, 3}, {1, kNaN, kInf}, {kInf, kInf, kInf});
  EXPECT_FALSE(c.pass);
  EXPECT_EQ(c.nonfinite_mismatch, 2);
}

TEST(CompareTensor, NonFiniteReferenceNeedsANonFiniteResultOfTheRightKind) {
  auto c = cmp("y", DType::f32, {3}, {kNaN, kInf, -kInf}, {kNaN, kInf, -kInf}, {0, 0, 0});
  EXPECT_TRUE(c.pass);
  // +Inf reference: NaN is accepted (Kahan and Welford compute Inf − Inf where a plain sum keeps Inf).
  c = cmp("mean", DType::f32, {1}, {kInf}, {kNaN}, {1});
  EXPECT_TRUE(c.pass);
  // NaN reference with a finite result, +Inf reference with a finite or opposite infinity: fail.
  c = cmp("y", DType::f32, {3}, {kNaN, kInf, kInf}, {0.0, 1.0, -kInf}, {1, 1, 1});
  EXPECT_FALSE(c.pass);
  EXPECT_EQ(c.nonfinite_mismatch, 3);
}

TEST(CompareTensor, ProbabilisticBudgetGivesAWarningNotAFailure) {
  const std::vector<double> prob = {0.001, 0.001};
  auto c = cmp("y", DType::f64, {2}, {1, 2}, {1.005, 2}, {0.01, 0.01}, false, &prob);
  EXPECT_TRUE(c.pass);
  EXPECT_NEAR(c.worst_ratio, 0.5, 1e-9);
  EXPECT_NEAR(c.worst_ratio_prob, 5, 1e-6);  // 0.005 / 0.001
  EXPECT_TRUE(c.warn);
  c = cmp("y", DType::f64, {2}, {1, 2}, {1.0005, 2}, {0.01, 0.01}, false, &prob);
  EXPECT_FALSE(c.warn);
}

TEST(CompareTensor, AccuracyRatioSubtractsTheOutputRounding) {
  // bf16 at 1.0: half an ulp is 2^-8. An error of exactly that, with a tolerance of 2^-8 + 1e-3,
  // is at ratio ~0.8 of the tolerance but 0 of the part left after the rounding hull.
  const double hull = std::ldexp(1.0, -8);
  auto c = cmp("y", DType::bf16, {1}, {1.0}, {1.0 + hull}, {hull + 1e-3});
  EXPECT_TRUE(c.pass);
  EXPECT_NEAR(c.worst_ratio, hull / (hull + 1e-3), 1e-12);
  EXPECT_EQ(c.worst_ratio_acc, 0);
  EXPECT_EQ(c.dominant, BudgetTerm::output_rounding);  // the half ulp is over half the tolerance
  c = cmp("y", DType::bf16, {1}, {1.0}, {1.0 + hull + 5e-4}, {hull + 1e-3});
  EXPECT_NEAR(c.worst_ratio_acc, 0.5, 1e-9);
}

TEST(CompareTensor, UndefinedReferenceIsSkippedAndCounted) {
  const auto c = cmp("running_var", DType::f32, {2}, {kNaN, kNaN}, {0.0, 1.0}, {0, 0}, true);
  EXPECT_TRUE(c.pass);
  EXPECT_EQ(c.undefined, 2);
}

}  // namespace
}  // namespace normcheck
