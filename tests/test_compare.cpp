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

TEST(CompareTensor, PassesWithinToleranceAndReportsTheWorstElement) {
  const std::vector<double> ref = {1, 2, 3, 4, 5, 6};
  const std::vector<double> got = {1, 2.0005, 3, 4, 5.002, 6};
  const std::vector<double> tol(6, 0.01);
  const auto c = compare_tensor("y", DType::f64, {2, 3}, ref, got, tol);
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
  const auto c = compare_tensor("mean", DType::f32, {3}, ref, got, {0.1, 0.1, 0.1});
  EXPECT_FALSE(c.pass);
  EXPECT_EQ(c.over_tolerance, 2);
  EXPECT_EQ(c.worst.index, 2);
  EXPECT_EQ(c.worst.expected, 3);
  EXPECT_EQ(c.worst.got, 2);
}

TEST(CompareTensor, NonFiniteWhereTheReferenceIsFiniteAlwaysFails) {
  const auto c = compare_tensor("y", DType::f32, {3}, {1, 2, 3}, {1, kNaN, kInf}, {kInf, kInf, kInf});
  EXPECT_FALSE(c.pass);
  EXPECT_EQ(c.nonfinite_mismatch, 2);
}

TEST(CompareTensor, NonFiniteReferenceNeedsTheSameClass) {
  auto c = compare_tensor("y", DType::f32, {3}, {kNaN, kInf, -kInf}, {kNaN, kInf, -kInf}, {0, 0, 0});
  EXPECT_TRUE(c.pass);
  c = compare_tensor("y", DType::f32, {2}, {kNaN, kInf}, {0.0, kNaN}, {1, 1});
  EXPECT_FALSE(c.pass);
  EXPECT_EQ(c.nonfinite_mismatch, 2);
}

TEST(CompareTensor, UndefinedReferenceIsSkippedAndCounted) {
  const auto c = compare_tensor("running_var", DType::f32, {2}, {kNaN, kNaN}, {0.0, 1.0}, {0, 0}, true);
  EXPECT_TRUE(c.pass);
  EXPECT_EQ(c.undefined, 2);
}

}  // namespace
}  // namespace normcheck
