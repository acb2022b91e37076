// The fast exact reference against the independent slow one (Boost.Multiprecision), bit for bit,
// on every case of every correctness suite in every dtype, and against hand derivations on data
// built to break it: exact zeros by cancellation, rounding ties, f64 data spanning 1e±300,
// subnormals, sets of 1 and of 2^26 elements, thread counts.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>

#include "normcheck/data.hpp"
#include "normcheck/generate.hpp"
#include "normcheck/reference.hpp"
#include "normcheck/runner.hpp"

namespace normcheck {
namespace {

struct Case {
  Problem p;
  Partition part;
  ReferenceInputs in;
};

Case generated(const Problem& p) {
  Case c{p, make_partition(p), {}};
  c.in = reference_inputs(p, generate_inputs(p, c.part));
  return c;
}
Case generated(const std::string& desc) { return generated(parse_descriptor(desc)); }

bool same(double a, double b) { return (std::isnan(a) && std::isnan(b)) || a == b; }

struct Tally {
  long elements = 0, mismatches = 0, slow_inexact_zeros = 0;
};

/// Compares every output of the two references; a mismatch is allowed only where the exact value
/// is 0 and the slow reference, which rounds a 128/256-bit evaluation, returns a value below
/// 2^-90 of the set's scale (it cannot produce an exact 0 by cancellation; issue 11).
void compare_all(const std::string& what, const ReferenceResult& fast, const ReferenceResult& slow, double scale,
                 Tally& t) {
  auto check = [&](const std::vector<double>& a, const std::vector<double>& b, const char* name) {
    ASSERT_EQ(a.size(), b.size()) << what << " " << name;
    for (size_t i = 0; i < a.size(); ++i) {
      ++t.elements;
      if (same(a[i], b[i])) continue;
      if (a[i] == 0 && std::fabs(b[i]) <= 0x1p-90 * scale) {
        ++t.slow_inexact_zeros;
        continue;
      }
      ++t.mismatches;
      ADD_FAILURE() << what << " " << name << "[" << i << "]: fast " << a[i] << " slow " << b[i];
      if (t.mismatches > 20) FAIL() << "too many mismatches";
    }
  };
  check(fast.y, slow.y, "y");
  check(fast.mean, slow.mean, "mean");
  check(fast.variance, slow.variance, "variance");
  check(fast.inv_std, slow.inv_std, "inv_std");
  check(fast.running_mean, slow.running_mean, "running_mean");
  check(fast.running_var, slow.running_var, "running_var");
  check(fast.used_running_mean, slow.used_running_mean, "used_running_mean");
  check(fast.used_running_var, slow.used_running_var, "used_running_var");
  check(fast.dx, slow.dx, "dx");
  check(fast.dgamma, slow.dgamma, "dgamma");
  check(fast.dbeta, slow.dbeta, "dbeta");
  ASSERT_EQ(fast.batch_stats.size(), slow.batch_stats.size());
  for (size_t k = 0; k < fast.batch_stats.size(); ++k) {
    check(fast.batch_stats[k].mean, slow.batch_stats[k].mean, "stats.mean");
    check(fast.batch_stats[k].variance, slow.batch_stats[k].variance, "stats.variance");
    check(fast.batch_stats[k].inv_std, slow.batch_stats[k].inv_std, "stats.inv_std");
    check(fast.batch_stats[k].mean_abs, slow.batch_stats[k].mean_abs, "stats.mean_abs");
    check(fast.batch_stats[k].max_abs, slow.batch_stats[k].max_abs, "stats.max_abs");
  }
  EXPECT_EQ(fast.running_var_undefined, slow.running_var_undefined) << what;
}

/// The magnitude the outputs are made of: max |x|, |dy|, |gamma|, |beta|, 1.
double scale_of(const ReferenceInputs& in) {
  double s = 1;
  for (const auto* v : {&in.dy, &in.gamma, &in.beta})
    for (double d : *v) s = std::fmax(s, std::fabs(d));
  for (const auto& b : in.batches)
    for (double d : b) s = std::fmax(s, std::fabs(d));
  return s * s;
}

TEST(FastReference, EqualsSlowOnEverySuiteCaseInEveryDtype) {
  Tally t;
  int cases = 0;
  for (const auto& name : builtin_suite_names()) {
    const Suite suite = load_suite(name);
    if (suite.throughput) continue;
    for (const auto& sc : suite.cases) {
      for (DType dt : {DType::f32, DType::f64, DType::f16, DType::bf16}) {
        Problem p = parse_descriptor(sc.descriptor);
        p.dtype = dt;
        if (p.numel() > (int64_t{1} << 22)) {  // model_scale: minutes in the slow reference
          if (dt == DType::f32) std::printf("[ info     ] skipped (over 2^22 elements): %s\n", sc.descriptor.c_str());
          break;
        }
        const bool big = p.numel() > (int64_t{1} << 16);
        if (big && dt != p.dtype) continue;
        const Case c = generated(p);
        const ReferenceResult fast = fast_reference_run(c.p, c.part, c.in, 2);
        const ReferenceResult slow = reference_run(c.p, c.part, c.in, big ? 128 : 256);
        compare_all(to_descriptor(c.p), fast, slow, scale_of(c.in), t);
        ++cases;
        if (big) break;  // the large suite's cases take seconds in the slow reference: their own dtype only
      }
    }
  }
  std::printf("[ info     ] %d cases, %ld output elements, %ld mismatches, %ld exact zeros the slow reference "
              "missed\n",
              cases, t.elements, t.mismatches, t.slow_inexact_zeros);
  EXPECT_GE(cases, 400);
  EXPECT_EQ(t.mismatches, 0);
}

// The FMA (AVX2) and the portable kernels (fast_kernels.hpp) differ in every rounding of their
// low parts, yet each returns either the correctly rounded value or "undecided": their outputs
// must agree bit for bit. With the test above (automatic kernels == slow reference) this makes
// the portable kernels equal the slow reference on the same cases.
TEST(FastReference, PortableAndFmaKernelsAgreeBitForBit) {
  if (!fast_reference_uses_fma()) {
    std::printf("[ info     ] this CPU has no AVX2+FMA: only the portable kernels run here, nothing to compare\n");
    GTEST_SKIP() << "no AVX2+FMA on this CPU: the FMA kernels cannot run";
  }
  Tally t;
  int cases = 0;
  for (const auto& name : builtin_suite_names()) {
    const Suite suite = load_suite(name);
    if (suite.throughput) continue;
    for (const auto& sc : suite.cases)
      for (DType dt : {DType::f32, DType::f64, DType::bf16}) {
        Problem p = parse_descriptor(sc.descriptor);
        p.dtype = dt;
        if (p.numel() > (int64_t{1} << 18)) break;
        const Case c = generated(p);
        const ReferenceResult fma = fast_reference_run(c.p, c.part, c.in, 1);
        set_fast_reference_kernels(KernelIsa::portable);
        const bool portable = !fast_reference_uses_fma();
        const ReferenceResult plain = fast_reference_run(c.p, c.part, c.in, 1);
        set_fast_reference_kernels(KernelIsa::automatic);
        ASSERT_TRUE(portable);
        compare_all(to_descriptor(c.p), fma, plain, 0, t);
        ++cases;
      }
  }
  std::printf("[ info     ] %d cases, %ld output elements, %ld mismatches\n", cases, t.elements, t.mismatches);
  EXPECT_GE(cases, 400);
  EXPECT_EQ(t.mismatches, 0);
}

TEST(FastReference, ThreadCountDoesNotChangeABit) {
  for (const char* d : {"layer_norm,pass=backward_training,shape=64x300", "group_norm,pass=backward_training,shape=4x12x9x7,groups=3",
                        "batch_norm,pass=forward_training,shape=8x5x6x6,steps=3"}) {
    const Case c = generated(d);
    const auto one = fast_reference_run(c.p, c.part, c.in, 1);
    for (int threads : {2, 3, 7}) {
      const auto many = fast_reference_run(c.p, c.part, c.in, threads);
      Tally t;
      compare_all(d, one, many, 1, t);
      EXPECT_EQ(t.slow_inexact_zeros, 0) << d;
    }
  }
}

// The issue-11 case: dy constant per channel (dy = 1e7, its 1e-3 noise rounded away in f32), so
// dx = r·(g − mean(g) − x̂·mean(g·x̂)) = r·(g − g − x̂·g·Σx̂/m) = 0 and dgamma = g·Σx̂ = 0 exactly.
TEST(FastReference, ExactZerosByCancellationAreZero) {
  const Case c = generated("batch_norm,pass=backward_training,dtype=f32,shape=1x1x64x32,data=uniform:0:1,dy=common:10000000:0");
  for (double v : c.in.dy) ASSERT_EQ(v, c.in.dy[0]);  // the premise: dy is constant
  const auto r = fast_reference_run(c.p, c.part, c.in, 1);
  for (double v : r.dx) EXPECT_EQ(v, 0.0);
  ASSERT_EQ(r.dgamma.size(), 1u);
  EXPECT_EQ(r.dgamma[0], 0.0);
  EXPECT_EQ(r.dbeta[0], 1e7 * 64 * 32);  // Σdy, exact
}

/// Builds a case from explicit values (no generation).
Case explicit_case(const std::string& desc, std::vector<double> x, std::vector<double> dy = {},
                   std::vector<double> gamma = {}, std::vector<double> beta = {}, double eps = 0) {
  Case c{parse_descriptor(desc), {}, {}};
  c.part = make_partition(c.p);
  c.in.batches = {std::move(x)};
  c.in.dy = std::move(dy);
  c.in.gamma = std::move(gamma);
  c.in.beta = std::move(beta);
  c.in.eps = eps;
  if (c.p.op == Op::batch_norm) {
    c.in.running_mean.assign(static_cast<size_t>(c.p.channels()), 0.0);
    c.in.running_var.assign(static_cast<size_t>(c.p.channels()), 1.0);
    c.in.batch_weight = 0.1;
  }
  return c;
}

// Ties: x = {0, 1, 2, 3}, eps = 0: μ = 3/2, v = 5/4, r = 2/√5 (irrational) — no tie; but with
// x = {−1, 1} (v = 1, r = 1) and γ = 2^-53 ... y = β + γ·x̂ lands exactly on a midpoint:
// β = 1, γ = 2^-53, x̂ = 1 → y = 1 + 2^-53, the midpoint between 1 and 1 + 2^-52: ties to even → 1.
// x̂ = −1 → y = 1 − 2^-53 is a double (the spacing below 1 is 2^-53): exactly 1 − 2^-53.
TEST(FastReference, RoundingTiesGoToEven) {
  Case c = explicit_case("layer_norm,shape=1x2", {-1, 1}, {}, {0x1p-53, 0x1p-53}, {1, 1}, 0);
  auto r = fast_reference_run(c.p, c.part, c.in, 1);
  EXPECT_EQ(r.y[1], 1.0);
  EXPECT_EQ(r.y[0], 1 - 0x1p-53);
  // β = 1 + 2^-52 (odd last bit): the midpoint 1 + 2^-52 + 2^-53 rounds up to 1 + 2^-51.
  c.in.beta = {1 + 0x1p-52, 1 + 0x1p-52};
  r = fast_reference_run(c.p, c.part, c.in, 1);
  EXPECT_EQ(r.y[1], 1 + 0x1p-51);
  // A midpoint reached through a rational, non-dyadic r: x = {0, 3}·2^k gives μ = 3/2, v = 9/4,
  // r = 2/3, x̂ = ±1 exactly; with γ = 2^-53, β = 1 the same tie: 1.
  c = explicit_case("layer_norm,shape=1x2", {0, 3}, {}, {0x1p-53, 0x1p-53}, {1, 1}, 0);
  r = fast_reference_run(c.p, c.part, c.in, 1);
  EXPECT_EQ(r.y[1], 1.0);
  EXPECT_EQ(r.inv_std[0], 2.0 / 3.0);  // 2/3 correctly rounded (RN of the exact quotient)
}

// f64 data spanning 1e±300 and subnormals: a set {a, −a} has μ = 0, v = a², r = 1/|a| and
// x̂ = ±1 exactly, whatever the magnitude of a (a² overflows or underflows double).
TEST(FastReference, ExtremeMagnitudesAreExact) {
  for (double a : {1e300, 1e-300, 0x1p-1070, 1.5e308, 3e-320}) {
    Case c = explicit_case("batch_norm,shape=2x1,dtype=f64,affine=0", {-a, a});
    const auto r = fast_reference_run(c.p, c.part, c.in, 1);
    EXPECT_EQ(r.y[0], -1.0) << a;
    EXPECT_EQ(r.y[1], 1.0) << a;
    EXPECT_EQ(r.mean[0], 0.0) << a;
    const long double expect_var = static_cast<long double>(a) * a;  // in range of long double
    EXPECT_EQ(r.variance[0], static_cast<double>(expect_var)) << a;
  }
}

// A set of one element: μ = x, v = 0, x̂ = 0·r → y = β exactly (eps > 0); dx = 0 exactly.
TEST(FastReference, SetsOfOneElement) {
  Case c = explicit_case("instance_norm,pass=backward_training,shape=1x3x1", {0.1, -7, 1e30}, {1, 2, 3},
                         {2, 3, 4}, {0.5, 0.25, -1}, 1e-5);
  const auto r = fast_reference_run(c.p, c.part, c.in, 1);
  for (double v : r.dx) EXPECT_EQ(v, 0.0);
  for (double v : r.dgamma) EXPECT_EQ(v, 0.0);
  EXPECT_EQ(r.dbeta, (std::vector<double>{1, 2, 3}));
}

// 2^26 elements in one set: x_k = k (exact in f32 up to 2^24, so take k mod 2^20): the sums are
// exact integers, μ = (2^20 − 1)/2, and y at the ends is ±(2^20 − 1)/2·r, r = 1/√v,
// v = (2^40 − 1)/12 (the variance of a uniform integer ramp of period 2^20).
TEST(FastReference, SetOfTwoToThe26Elements) {
  const int64_t n = int64_t{1} << 26, period = int64_t{1} << 20;
  std::vector<double> x(static_cast<size_t>(n));
  for (int64_t k = 0; k < n; ++k) x[static_cast<size_t>(k)] = static_cast<double>(k % period);
  Case c = explicit_case("layer_norm,shape=1x67108864,affine=0", std::move(x));
  const auto r = fast_reference_run(c.p, c.part, c.in, 2);
  const long double v = (std::ldexp(1.0L, 40) - 1) / 12;
  EXPECT_EQ(r.mean[0], (period - 1) / 2.0);
  EXPECT_EQ(r.variance[0], static_cast<double>(v));
  const long double y0 = -((period - 1) / 2.0L) / std::sqrt(v);
  EXPECT_NEAR(r.y[0], static_cast<double>(y0), 1e-15);
  EXPECT_EQ(r.y[0], -r.y[static_cast<size_t>(period - 1)]);
}

}  // namespace
}  // namespace normcheck
