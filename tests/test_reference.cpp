// The reference against hand derivations, finite differences, invariants and itself at 256 bits.
// Expected values are worked out here, in the test, never taken from the code under test.
#include <gtest/gtest.h>

#include <cmath>

#include "normcheck/compare.hpp"
#include "normcheck/data.hpp"
#include "normcheck/generate.hpp"
#include "normcheck/reference.hpp"
#include "normcheck/runner.hpp"

namespace normcheck {
namespace {

struct Fixture {
  Problem p;
  Partition part;
  ReferenceInputs in;
};

Fixture make(const std::string& desc, std::vector<std::vector<double>> batches,
             std::vector<double> gamma = {}, std::vector<double> beta = {}, double eps = 0) {
  Fixture f;
  f.p = parse_descriptor(desc);
  f.part = make_partition(f.p);
  f.in.batches = std::move(batches);
  f.in.gamma = std::move(gamma);
  f.in.beta = std::move(beta);
  f.in.eps = eps;
  if (f.p.op == Op::batch_norm) {
    f.in.running_mean.assign(f.p.channels(), 0.0);
    f.in.running_var.assign(f.p.channels(), 1.0);
  }
  return f;
}

ReferenceResult run(const Fixture& f, int bits = 128) { return reference_run(f.p, f.part, f.in, bits); }

TEST(ReferenceHand, BatchNormTwoValues) {
  // x = {1, 3}: mean 2, biased variance 1, eps 0 → r = 1, x̂ = {−1, 1}; y = 2·x̂ + 0.5.
  auto f = make("batch_norm,shape=2x1,eps=0", {{1, 3}}, {2}, {0.5});
  f.in.batch_weight = 0.1;
  f.in.running_var_unbiased = true;
  const auto r = run(f);
  EXPECT_EQ(r.y, (std::vector<double>{-1.5, 2.5}));
  EXPECT_EQ(r.mean, (std::vector<double>{2}));
  EXPECT_EQ(r.variance, (std::vector<double>{1}));
  EXPECT_EQ(r.inv_std, (std::vector<double>{1}));
  // PyTorch: running_mean = 0.9·0 + 0.1·2 = 0.2; running_var = 0.9·1 + 0.1·(1·2/1) = 1.1.
  EXPECT_DOUBLE_EQ(r.running_mean[0], 0.2);
  EXPECT_DOUBLE_EQ(r.running_var[0], 1.1);
}

TEST(ReferenceHand, BatchNormEpsInsideTheSquareRoot) {
  // x = {−a, a} → y = ±a/sqrt(a² + eps) (tolerance-model.md §5, closed form 5).
  const double a = 0.75, eps = 1e-5;
  auto f = make("batch_norm,shape=2x1", {{-a, a}}, {}, {}, eps);
  const auto r = run(f);
  const long double expect = a / std::sqrt(static_cast<long double>(a) * a + eps);
  EXPECT_NEAR(r.y[0], -static_cast<double>(expect), 1e-16);
  EXPECT_NEAR(r.y[1], static_cast<double>(expect), 1e-16);
}

TEST(ReferenceHand, RunningStatisticsOverThreeStepsPyTorchAndKeras) {
  // Batches {1,3}, {2,4}, {3,5}: means 2, 3, 4; biased variance 1, unbiased 2.
  auto f = make("batch_norm,shape=2x1,steps=3", {{1, 3}, {2, 4}, {3, 5}});
  f.in.batch_weight = 0.1;  // PyTorch momentum 0.1, new-weight
  f.in.running_var_unbiased = true;
  auto r = run(f);
  // rm: 0 → 0.2 → 0.48 → 0.832;  rv: 1 → 1.1 → 1.19 → 1.271
  EXPECT_NEAR(r.running_mean[0], 0.832, 1e-15);
  EXPECT_NEAR(r.running_var[0], 1.271, 1e-15);
  f.p = parse_descriptor("batch_norm,shape=2x1,steps=3,convention=keras");
  f.in.batch_weight = 0.01;  // Keras momentum 0.99 = old-weight, i.e. new-weight 0.01
  f.in.running_var_unbiased = false;
  r = run(f);
  // rm: 0 → 0.02 → 0.0498 → 0.089302;  rv: 0.99·1 + 0.01·1 = 1 at every step
  EXPECT_NEAR(r.running_mean[0], 0.089302, 1e-15);
  EXPECT_NEAR(r.running_var[0], 1.0, 1e-15);
}

TEST(ReferenceHand, CumulativeAverageIsThePlainMeanOfTheBatches) {
  // PyTorch momentum=None: f_k = 1/k. Batches {1,3}, {2,4}, {3,5}: means 2, 3, 4 average to 3;
  // unbiased variances 2, 2, 2 average to 2 (the initial running stats get weight 0 at step 1).
  auto f = make("batch_norm,shape=2x1,steps=3,momentum=cumulative", {{1, 3}, {2, 4}, {3, 5}});
  f.in.running_var_unbiased = true;
  f.in.batch_weights = {1.0, 0.5, 1.0 / 3};
  const auto r = run(f);
  EXPECT_NEAR(r.running_mean[0], 3.0, 1e-15);
  EXPECT_NEAR(r.running_var[0], 2.0, 1e-15);
}

TEST(ReferenceHand, SingleValuePerChannelIsDefinedExceptUnbiasedRunningVar) {
  auto f = make("batch_norm,shape=1x2", {{5, -7}}, {1.5, 2}, {0.25, -1}, 1e-5);
  f.in.batch_weight = 0.1;
  f.in.running_var_unbiased = true;
  const auto r = run(f);
  EXPECT_EQ(r.y, (std::vector<double>{0.25, -1}));  // x̂ = 0 → y = beta exactly
  EXPECT_TRUE(r.running_var_undefined);
  EXPECT_TRUE(std::isnan(r.running_var[0]));
  EXPECT_DOUBLE_EQ(r.running_mean[0], 0.5);  // 0.1·5
}

TEST(ReferenceHand, LayerNormRow) {
  // x = {1, 2, 3, 4}: mean 2.5, variance 1.25, eps 0: y = (x − 2.5)/sqrt(1.25).
  auto f = make("layer_norm,shape=1x4,eps=0", {{1, 2, 3, 4}});
  const auto r = run(f);
  const long double s = std::sqrt(1.25L);
  const double expect[4] = {double(-1.5L / s), double(-0.5L / s), double(0.5L / s), double(1.5L / s)};
  for (int i = 0; i < 4; ++i) EXPECT_NEAR(r.y[i], expect[i], 2e-16);
  EXPECT_EQ(r.variance[0], 1.25);
}

TEST(ReferenceHand, RmsNormDoesNotSubtractTheMean) {
  // x = {3, 4}: mean square 12.5, eps 0 → y = x/sqrt(12.5); gamma = {2, −1}.
  auto f = make("rms_norm,shape=1x2,eps=0", {{3, 4}}, {2, -1});
  const auto r = run(f);
  const long double s = std::sqrt(12.5L);
  EXPECT_NEAR(r.y[0], double(6.0L / s), 2e-16);
  EXPECT_NEAR(r.y[1], double(-4.0L / s), 2e-16);
  EXPECT_EQ(r.variance[0], 12.5);  // the mean square
  EXPECT_TRUE(r.mean.empty());
}

TEST(ReferenceHand, BackwardThreeValues) {
  // x = {0, 1, 2}, eps 0: μ = 1, v = 2/3, r = sqrt(1.5), x̂ = {−r, 0, r}. dy = {1, 0, 0}:
  // mean(g) = 1/3, mean(g·x̂) = −r/3 → dx = r·(g − 1/3 − x̂·(−r/3)) = {r/6, −r/3, r/6};
  // dgamma = Σ dy·x̂ = −r; dbeta = Σ dy = 1.
  auto f = make("batch_norm,shape=3x1,eps=0,pass=backward_training", {{0, 1, 2}}, {1}, {0});
  f.in.dy = {1, 0, 0};
  const auto res = run(f);
  const long double r = std::sqrt(1.5L);
  EXPECT_NEAR(res.dx[0], double(r / 6), 2e-16);
  EXPECT_NEAR(res.dx[1], double(-r / 3), 2e-16);
  EXPECT_NEAR(res.dx[2], double(r / 6), 2e-16);
  EXPECT_NEAR(res.dgamma[0], double(-r), 2e-16);
  EXPECT_EQ(res.dbeta[0], 1);
}

TEST(ReferenceHand, BackwardWithTwoValuesIsZero) {
  // m = 2, eps = 0: y = ±1 whatever x is, so dx = 0 exactly.
  auto f = make("batch_norm,shape=2x1,eps=0,pass=backward_training", {{1, 3}}, {1}, {0});
  f.in.dy = {0.3, -1.7};
  const auto r = run(f);
  EXPECT_EQ(r.dx, (std::vector<double>{0, 0}));
}

TEST(ReferenceHand, GlobalStatsBackward) {
  // use_global_stats: running mean 1, running var 3, eps 1: r = 1/2; dx = gamma·r·dy;
  // dgamma = Σ dy·(x − 1)·r; dbeta = Σ dy.
  auto f = make("batch_norm,shape=2x1,pass=backward_inference", {{3, 5}}, {4}, {0}, 1.0);
  f.in.running_mean = {1};
  f.in.running_var = {3};
  f.in.dy = {1, -2};
  const auto r = run(f);
  EXPECT_EQ(r.dx, (std::vector<double>{2, -4}));
  EXPECT_EQ(r.dgamma, (std::vector<double>{1 * 1.0 + -2 * 2.0}));
  EXPECT_EQ(r.dbeta, (std::vector<double>{-1}));
}

// Inputs drawn by the generator, used by the property tests below.
Fixture generated(const std::string& desc) {
  Fixture f;
  f.p = parse_descriptor(desc);
  f.part = make_partition(f.p);
  f.in = reference_inputs(f.p, generate_inputs(f.p, f.part));  // exactly what run_case gives the reference
  return f;
}

class FiniteDifferences : public ::testing::TestWithParam<const char*> {};

// L(x, gamma, beta) = Σ dy·y. Central differences with a step t = 2^-20, exact in double for
// these f32-valued inputs; truncation O(t²) ≈ 1e-12, rounding ≈ 1e-16·|L|/t ≈ 1e-10.
TEST_P(FiniteDifferences, BackwardIsTheGradientOfTheForward) {
  const std::string desc = GetParam();
  Fixture bwd = generated(desc + ",pass=backward_training");
  const auto grad = run(bwd, 256);
  Fixture fwd = bwd;
  fwd.p.pass = Pass::forward_training;
  const double t = 0x1p-20;
  auto loss = [&](const Fixture& f) {
    const auto r = run(f, 256);
    long double L = 0;
    for (size_t i = 0; i < r.y.size(); ++i) L += static_cast<long double>(bwd.in.dy[i]) * r.y[i];
    return static_cast<double>(L);
  };
  auto central = [&](std::vector<double>& v, size_t j) {
    const double keep = v[j];
    v[j] = keep + t;
    const double up = loss(fwd);
    v[j] = keep - t;
    const double down = loss(fwd);
    v[j] = keep;
    return (up - down) / (2 * t);
  };
  const size_t n = bwd.in.batches[0].size();
  for (size_t j : {size_t(0), n / 3, n / 2, n - 1}) {
    const double fd = central(fwd.in.batches[0], j);
    EXPECT_NEAR(grad.dx[j], fd, 1e-8 * (1 + std::fabs(fd))) << "dx[" << j << "]";
  }
  for (size_t j : {size_t(0), bwd.in.gamma.size() - 1}) {
    const double fd = central(fwd.in.gamma, j);
    EXPECT_NEAR(grad.dgamma[j], fd, 1e-8 * (1 + std::fabs(fd))) << "dgamma[" << j << "]";
    if (!bwd.in.beta.empty()) {
      const double fdb = central(fwd.in.beta, j);
      EXPECT_NEAR(grad.dbeta[j], fdb, 1e-8 * (1 + std::fabs(fdb))) << "dbeta[" << j << "]";
    }
  }
}

INSTANTIATE_TEST_SUITE_P(AllOps, FiniteDifferences,
                         ::testing::Values("batch_norm,shape=3x2x3x2", "layer_norm,shape=3x4x5,norm_dims=2",
                                           "instance_norm,shape=2x3x7", "group_norm,shape=2x6x5,groups=2",
                                           "rms_norm,shape=3x8", "batch_norm,shape=4x3,eps=0.5",
                                           "layer_norm,shape=2x6,data=normal:3:0.01"),
                         [](const auto& tp) {
                           std::string n = tp.param;
                           for (char& c : n) if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
                           return n;
                         });

TEST(ReferenceInvariants, NormalizedInputSumsToZeroPerSet) {
  for (const char* d : {"batch_norm,shape=3x4x5,affine=0", "layer_norm,shape=3x4x5,norm_dims=2,affine=0",
                        "instance_norm,shape=2x3x9,affine=0", "group_norm,shape=2x6x5,groups=3,affine=0"}) {
    const Fixture f = generated(d);
    const auto r = run(f);
    for (int64_t s = 0; s < f.part.num_sets; ++s) {
      long double sum = 0, mag = 0;
      for (int64_t k = 0; k < f.part.set_size; ++k) {
        sum += r.y[f.part.member(s, k)];
        mag += std::fabs(r.y[f.part.member(s, k)]);
      }
      EXPECT_LE(std::fabs(static_cast<double>(sum)), 1e-15 * static_cast<double>(mag)) << d << " set " << s;
    }
  }
}

TEST(ReferenceInvariants, DbetaIsTheSumOfDy) {
  for (const char* d : {"batch_norm,shape=3x4x5", "layer_norm,shape=3x4x5,norm_dims=2",
                        "group_norm,shape=2x6x5,groups=3"}) {
    const Fixture f = generated(std::string(d) + ",pass=backward_training");
    const auto r = run(f);
    std::vector<long double> expect(f.part.num_affine, 0);
    for (size_t i = 0; i < f.in.dy.size(); ++i) expect[f.part.affine_of(i)] += f.in.dy[i];
    for (int64_t j = 0; j < f.part.num_affine; ++j)
      EXPECT_NEAR(r.dbeta[j], static_cast<double>(expect[j]), 1e-14) << d;
  }
}

TEST(ReferenceInvariants, GroupNormWithOneGroupIsLayerNormOverCHWWithPerChannelAffine) {
  const Fixture gn = generated("group_norm,shape=2x6x4x4,groups=1");
  Fixture ln = gn;
  ln.p = parse_descriptor("layer_norm,shape=2x6x4x4,norm_dims=3,affine=0");
  ln.part = make_partition(ln.p);
  ln.in.gamma.clear();
  ln.in.beta.clear();
  const auto yg = run(gn).y, yl = run(ln).y;
  for (size_t i = 0; i < yg.size(); ++i) {
    const int64_t c = (static_cast<int64_t>(i) / 16) % 6;
    EXPECT_NEAR(yg[i], gn.in.gamma[c] * yl[i] + gn.in.beta[c], 4e-16 * (1 + std::fabs(yg[i]))) << i;
  }
}

TEST(ReferenceInvariants, GroupNormWithGroupsEqualToChannelsIsInstanceNorm) {
  for (const char* pass : {"forward_training", "backward_training"}) {
    const Fixture gn = generated(std::string("group_norm,shape=2x6x4x4,groups=6,pass=") + pass);
    Fixture in = gn;
    in.p = parse_descriptor(std::string("instance_norm,shape=2x6x4x4,pass=") + pass);
    in.part = make_partition(in.p);
    const auto a = run(gn), b = run(in);
    EXPECT_EQ(a.y, b.y);
    EXPECT_EQ(a.dx, b.dx);
    EXPECT_EQ(a.dgamma, b.dgamma);
    EXPECT_EQ(a.mean, b.mean);
  }
}

TEST(ReferenceInvariants, NaNStaysInItsReductionSet) {
  const Fixture f = generated("batch_norm,shape=4x3x5,special=nan");
  const auto r = run(f);
  for (int64_t s = 0; s < 3; ++s)
    for (int64_t k = 0; k < f.part.set_size; ++k)
      EXPECT_EQ(std::isnan(r.y[f.part.member(s, k)]), s == 0);
  EXPECT_TRUE(std::isnan(r.running_mean[0]));
  EXPECT_FALSE(std::isnan(r.running_mean[1]));
}

// Self-validation: the 128-bit reference agrees with the 256-bit one within 1 ulp of double on
// every case of every built-in correctness suite, in f32 and f64.
TEST(ReferenceSelfValidation, Bits128AgreeWith256WithinOneUlp) {
  int problems = 0;
  double worst = 0;
  for (const auto& name : builtin_suite_names()) {
    const Suite suite = load_suite(name);
    if (suite.throughput) continue;  // benchmark shapes: megabytes per case
    for (const auto& c : suite.cases) {
      if (parse_descriptor(c.descriptor).numel() > (int64_t{1} << 16)) {  // the `large` suite: minutes at 256 bits
        std::printf("[ info     ] skipped (over 2^16 elements): %s\n", c.descriptor.c_str());
        continue;
      }
      for (DType t : {DType::f32, DType::f64}) {
        Problem p = parse_descriptor(c.descriptor);
        p.dtype = t;
        Fixture f = generated(to_descriptor(p));
        const auto lo = run(f, 128), hi = run(f, 256);
        auto check = [&](const std::vector<double>& a, const std::vector<double>& b, const char* what) {
          ASSERT_EQ(a.size(), b.size());
          for (size_t i = 0; i < a.size(); ++i) {
            const double d = ulp_distance(DType::f64, a[i], b[i]);
            worst = std::fmax(worst, d);
            EXPECT_LE(d, 1.0) << c.descriptor << " " << what << "[" << i << "]: " << a[i] << " vs " << b[i];
          }
        };
        check(lo.y, hi.y, "y");
        check(lo.mean, hi.mean, "mean");
        check(lo.variance, hi.variance, "variance");
        check(lo.inv_std, hi.inv_std, "inv_std");
        check(lo.running_mean, hi.running_mean, "running_mean");
        check(lo.running_var, hi.running_var, "running_var");
        check(lo.dx, hi.dx, "dx");
        check(lo.dgamma, hi.dgamma, "dgamma");
        check(lo.dbeta, hi.dbeta, "dbeta");
        ++problems;
      }
    }
  }
  EXPECT_GE(problems, 100);
  std::printf("[ info     ] %d problems, worst 128-vs-256-bit distance %.0f ulp of double\n", problems, worst);
}

}  // namespace
}  // namespace normcheck
