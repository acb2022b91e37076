// The naive backend over every suite, planted bugs (mutants) caught, and runner outcomes.
#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <map>
#include <thread>

#include "mutants.hpp"
#include "naive/naive.hpp"
#include "normcheck/data.hpp"
#include "normcheck/runner.hpp"

namespace normcheck {
namespace {

std::vector<CaseResult> run_suite(Backend& b, const std::string& suite, std::optional<DType> dtype = {}) {
  std::vector<CaseResult> out;
  for (const auto& c : load_suite(suite).cases) {
    Problem p = parse_descriptor(c.descriptor);
    if (dtype) p.dtype = *dtype;
    out.push_back(run_case(b, p, {}));
  }
  return out;
}

// The nine correct variants (naive, f64, pairwise, Kahan, Welford, blocked 8 and 64, rsqrt plus
// Newton, folded affine; tests/mutants.hpp) never FAIL or WARN on
// any correctness suite in any dtype: the budget holds for every correct algorithm, each judged
// under the precision profile it declares.
class CorrectVariantOnSuite : public ::testing::TestWithParam<std::tuple<std::string, std::string, DType>> {};

TEST_P(CorrectVariantOnSuite, NeverFails) {
  const auto& [variant, suite, dtype] = GetParam();
  BackendRegistry reg;
  register_builtin_backends(reg);
  testing::register_correct_variants(reg);
  auto b = reg.create(variant);
  double worst = 0;
  for (const auto& r : run_suite(*b, suite, dtype)) {
    EXPECT_EQ(r.verdict, Verdict::pass) << r.descriptor << ": " << to_string(r.verdict) << " " << r.reason;
    for (const auto& t : r.tensors)
      if (!r.weak_check) worst = std::fmax(worst, t.worst_ratio);
  }
  std::printf("[ info     ] %s on %s in %s: worst ratio %.3g (weak checks excluded)\n", variant.c_str(),
              suite.c_str(), std::string(to_string(dtype)).c_str(), worst);
}

INSTANTIATE_TEST_SUITE_P(Suites, CorrectVariantOnSuite,
                         ::testing::Combine(::testing::ValuesIn(testing::correct_variant_names()),
                                            ::testing::Values("smoke", "edge", "adversarial"),
                                            ::testing::Values(DType::f32, DType::f64, DType::f16, DType::bf16)),
                         [](const auto& tp) {
                           return std::get<0>(tp.param) + "_" + std::get<1>(tp.param) + "_" +
                                  std::string(to_string(std::get<2>(tp.param)));
                         });

// Every planted bug FAILs somewhere on the correctness suites, and every FAIL names it.
struct Diagnosed {
  const char* mutant;
  DType dtype;
  const char* cause;  ///< a phrase every FAIL's suspected cause must contain
};

class MutantIsDiagnosed : public ::testing::TestWithParam<Diagnosed> {};

TEST_P(MutantIsDiagnosed, EveryFailureNamesThePlantedBug) {
  const Diagnosed& d = GetParam();
  BackendRegistry reg;
  testing::register_mutant_backends(reg);
  auto b = reg.create(d.mutant);
  int fails = 0;
  double smallest = HUGE_VAL;
  for (const char* suite : {"smoke", "edge", "adversarial"})
    for (const auto& r : run_suite(*b, suite, d.dtype)) {
      if (r.verdict != Verdict::fail) continue;
      ++fails;
      EXPECT_NE(r.suspected_cause.find(d.cause), std::string::npos)
          << r.descriptor << "\n  suspected: " << r.suspected_cause;
      double worst = 0;
      for (const auto& t : r.tensors) worst = std::fmax(worst, t.worst_ratio);
      smallest = std::fmin(smallest, worst);
    }
  EXPECT_GT(fails, 0) << d.mutant << " is never caught";
  std::printf("[ info     ] %s (%s): %d FAILs, smallest failing ratio %.3g\n", d.mutant,
              std::string(to_string(d.dtype)).c_str(), fails, smallest);
}

INSTANTIATE_TEST_SUITE_P(
    Mutants, MutantIsDiagnosed,
    ::testing::Values(Diagnosed{"mutant_unbiased_variance", DType::f32, "unbiased variance used in the normalization"},
                      Diagnosed{"mutant_eps_outside_sqrt", DType::f32, "eps added outside the square root"},
                      Diagnosed{"mutant_swapped_momentum", DType::f32, "momentum applied to the wrong term"},
                      Diagnosed{"mutant_storage_accumulation", DType::f16, "sums accumulated in 16 bits"},
                      Diagnosed{"mutant_storage_accumulation", DType::bf16, "sums accumulated in 16 bits"},
                      Diagnosed{"mutant_one_pass_variance", DType::f32, "one-pass variance"},
                      Diagnosed{"mutant_biased_running_var", DType::f32, "wrong Bessel correction in running_var"},
                      Diagnosed{"mutant_dgamma_missing_mean", DType::f32, "dgamma misses the −mean term"},
                      Diagnosed{"mutant_ignore_strides", DType::f32, "strides ignored"},
                      Diagnosed{"mutant_gn_affine_per_group", DType::f32, "per group instead of per channel"}),
    [](const auto& tp) { return std::string(tp.param.mutant) + "_" + std::string(to_string(tp.param.dtype)); });

// CaseResult::backend_seconds is the time inside the backend's calls: a backend that sleeps
// 30 ms per call shows at least 30 ms per call there, and the case's wall time includes it.
TEST(CaseTiming, BackendSecondsCountTheTimeInsideTheBackendsCalls) {
  class Sleepy final : public Backend {
   public:
    std::string name() const override { return "sleepy"; }
    std::string version() const override { return inner_->version(); }
    std::string description() const override { return "naive, 30 ms asleep per call"; }
    Capabilities capabilities() const override { return inner_->capabilities(); }
    std::optional<std::string> unsupported_reason(const RunArgs& a, Layout l) const override {
      return inner_->unsupported_reason(a, l);
    }
    RunResult run(const RunArgs& a) override {
      std::this_thread::sleep_for(std::chrono::milliseconds(30));
      return inner_->run(a);
    }

   private:
    std::unique_ptr<Backend> inner_ = make_naive_backend();
  } sleepy;
  const Problem p = parse_descriptor("batch_norm,pass=forward_inference,shape=2x3x4x4,steps=2");  // 3 calls
  const CaseResult r = run_case(sleepy, p, {});
  EXPECT_EQ(r.verdict, Verdict::pass) << r.reason;
  EXPECT_GE(r.backend_seconds, 3 * 0.030);
  EXPECT_LE(r.backend_seconds, r.seconds);
}

TEST(NaiveF64, PassesSharplyEvenOnTheHugeMeanCase) {
  // In f64, κ ≈ 1e6 costs only u·κ ≈ 1e-10: the check must not be weak.
  auto b = make_naive_backend();
  const auto r = run_case(*b, parse_descriptor("layer_norm,dtype=f64,shape=8x64,data=normal:10000:0.01"), {});
  EXPECT_EQ(r.verdict, Verdict::pass);
  EXPECT_EQ(r.reason, "");
  EXPECT_FALSE(r.weak_check);
}

TEST(NaiveF32, HugeMeanCaseIsReportedAsAWeakCheck) {
  auto b = make_naive_backend();
  const auto r = run_case(*b, parse_descriptor("layer_norm,shape=8x64,data=normal:10000:0.01"), {});
  EXPECT_EQ(r.verdict, Verdict::pass);
  EXPECT_TRUE(r.weak_check);
  EXPECT_NE(r.reason.find("weak check"), std::string::npos) << r.reason;
  EXPECT_GT(r.condition_number, 1e5);
}

TEST(Threads, RunCaseGivesTheSameVerdictFiguresForEveryThreadCount) {
  // Reference, budgets and comparison are threaded (RunOptions::threads); every figure of the
  // comparison must be the same double for 1, 2 and 3 threads.
  auto b = make_naive_backend();
  for (const char* d : {"group_norm,pass=backward_training,shape=4x12x9x7,groups=3", "layer_norm,shape=300x64",
                        "batch_norm,shape=8x5x6x6,steps=3", "instance_norm,pass=backward_training,shape=3x4x50x50"}) {
    const Problem p = parse_descriptor(d);
    RunOptions one;
    one.threads = 1;
    const auto a = run_case(*b, p, one);
    for (int threads : {2, 3}) {
      RunOptions many;
      many.threads = threads;
      const auto c = run_case(*b, p, many);
      EXPECT_EQ(a.verdict, c.verdict) << d;
      ASSERT_EQ(a.tensors.size(), c.tensors.size()) << d;
      for (size_t i = 0; i < a.tensors.size(); ++i) {
        const auto &x = a.tensors[i], &y = c.tensors[i];
        EXPECT_EQ(x.worst_ratio, y.worst_ratio) << d << " " << x.name << " threads " << threads;
        EXPECT_EQ(x.worst_ratio_prob, y.worst_ratio_prob) << d << " " << x.name;
        EXPECT_EQ(x.worst.index, y.worst.index) << d << " " << x.name;
        EXPECT_EQ(x.worst.tol, y.worst.tol) << d << " " << x.name;
        EXPECT_EQ(x.max_abs_err, y.max_abs_err) << d << " " << x.name;
      }
    }
  }
}

TEST(Threads, NaiveBackendOutputsAreTheSameBitsForEveryThreadCount) {
  // The naive backend runs its reduction sets and gamma entries on set_threads(n) threads; each
  // set's arithmetic is sequential, so every output must be the same bits for 1, 2 and 5 threads,
  // the LayerNorm column sums (walked k-major over blocks of columns) included.
  for (const char* d : {"layer_norm,pass=backward_training,shape=37x600", "batch_norm,shape=8x5x6x6,steps=2",
                        "group_norm,pass=backward_training,shape=4x12x9x7,groups=3",
                        "rms_norm,pass=backward_training,shape=9x300,dtype=bf16"}) {
    const Problem p = parse_descriptor(d);
    std::map<std::string, std::vector<double>> first;
    for (int threads : {1, 2, 5}) {
      auto b = make_naive_backend();
      EXPECT_EQ(b->set_threads(threads), threads);
      EXPECT_EQ(b->threads(), threads);
      CaseCapture cap;
      RunOptions opt;
      opt.capture = &cap;
      EXPECT_EQ(run_case(*b, p, opt).verdict, Verdict::pass) << d;
      ASSERT_FALSE(cap.got.empty()) << d;
      if (threads == 1) first = cap.got;
      for (const auto& [name, v] : cap.got) {
        ASSERT_EQ(v.size(), first[name].size()) << d << " " << name;
        for (size_t i = 0; i < v.size(); ++i)
          ASSERT_EQ(std::memcmp(&v[i], &first[name][i], sizeof(double)), 0) << d << " " << name << "[" << i << "]";
      }
    }
  }
}

TEST(Layouts, TensorOffsetsByHand) {
  // Element (n=1, c=2, h=1, w=0) of a 2x3x2x2 f32 tensor: logical index ((1·3+2)·2+1)·2+0 = 22;
  // NCHW offset 22·4 bytes, NHWC ((1·2+1)·2+0)·3+2 = 20 elements = 80 bytes.
  const Tensor nchw(DType::f32, {2, 3, 2, 2}, Layout::nchw), nhwc(DType::f32, {2, 3, 2, 2}, Layout::nhwc);
  EXPECT_EQ(nchw.offset_of(22), 88);
  EXPECT_EQ(nhwc.offset_of(22), 80);
  EXPECT_EQ(nhwc.offset_of(1), 12);  // (0,0,0,1): w·C = 3 elements
  // NHWC with one channel is row-major: offsets equal logical indices (f64: 8 bytes each).
  const Tensor one(DType::f64, {2, 1, 2, 2}, Layout::nhwc);
  for (int64_t i = 0; i < 8; ++i) EXPECT_EQ(one.offset_of(i), 8 * i);
}

TEST(Layouts, NchwAndNhwcGiveTheSameValues) {
  auto b = make_naive_backend();
  for (const char* d : {"batch_norm,shape=2x5x3x4", "group_norm,shape=2x6x3x4,groups=2,pass=backward_training"}) {
    Problem p = parse_descriptor(d);
    const auto a = run_case(*b, p, {});
    p.layout = Layout::nhwc;
    const auto c = run_case(*b, p, {});
    ASSERT_EQ(a.tensors.size(), c.tensors.size());
    for (size_t i = 0; i < a.tensors.size(); ++i) {
      // Same inputs, same summation order per set: bit-identical.
      EXPECT_EQ(a.tensors[i].max_abs_err, c.tensors[i].max_abs_err) << d << " " << a.tensors[i].name;
      EXPECT_EQ(a.tensors[i].worst.index, c.tensors[i].worst.index) << d << " " << a.tensors[i].name;
      EXPECT_EQ(a.tensors[i].worst.got, c.tensors[i].worst.got) << d << " " << a.tensors[i].name;
    }
  }
}

struct MutantCase {
  const char* backend;
  const char* descriptor;
  const char* failing_tensor;
};

class MutantIsCaught : public ::testing::TestWithParam<MutantCase> {};

TEST_P(MutantIsCaught, OnTheTargetedEdgeCase) {
  BackendRegistry reg;
  testing::register_mutant_backends(reg);
  auto b = reg.create(GetParam().backend);
  const auto r = run_case(*b, parse_descriptor(GetParam().descriptor), {});
  EXPECT_EQ(r.verdict, Verdict::fail) << r.descriptor;
  bool found = false;
  for (const auto& t : r.tensors)
    if (t.name == GetParam().failing_tensor) {
      found = true;
      EXPECT_FALSE(t.pass);
      EXPECT_GT(t.worst_ratio, 10.0) << "caught only narrowly";
    }
  EXPECT_TRUE(found) << GetParam().failing_tensor;
}

INSTANTIATE_TEST_SUITE_P(
    Mutants, MutantIsCaught,
    ::testing::Values(
        MutantCase{"mutant_unbiased_variance", "batch_norm,pass=forward_training,dtype=f32,shape=2x3", "y"},
        MutantCase{"mutant_unbiased_variance", "batch_norm,pass=forward_training,dtype=f32,shape=2x3", "inv_std"},
        MutantCase{"mutant_unbiased_variance", "group_norm,pass=forward_training,dtype=f32,shape=2x6x2,groups=3", "y"},
        MutantCase{"mutant_eps_outside_sqrt",
                   "layer_norm,pass=forward_training,dtype=f32,shape=4x64,data=normal:0:0.003", "y"},
        MutantCase{"mutant_storage_accumulation", "layer_norm,pass=forward_training,dtype=f16,shape=3x5x7", "y"},
        MutantCase{"mutant_storage_accumulation", "batch_norm,pass=forward_training,dtype=bf16,shape=3x5x7x3", "mean"},
        MutantCase{"mutant_swapped_momentum", "batch_norm,pass=forward_training,dtype=f32,shape=4x3x5x5,steps=3",
                   "running_mean"},
        MutantCase{"mutant_swapped_momentum",
                   "batch_norm,pass=forward_inference,dtype=f32,shape=4x3x5x5,convention=keras,steps=3", "y"}),
    [](const auto& tp) {
      return std::string(tp.param.backend) + "_" + std::to_string(tp.index) + "_" + tp.param.failing_tensor;
    });

TEST(Mutants, EveryMutantFailsSomeEdgeCaseAndPassesSomeOther) {
  BackendRegistry reg;
  testing::register_mutant_backends(reg);
  for (const auto& e : reg.entries()) {
    auto b = e.factory();
    int fail = 0, pass = 0;
    for (DType t : {DType::f32, DType::bf16})
      for (const auto& r : run_suite(*b, "edge", t)) {
        fail += r.verdict == Verdict::fail;
        pass += r.verdict == Verdict::pass;
      }
    EXPECT_GT(fail, 0) << e.name;
    EXPECT_GT(pass, 0) << e.name << " fails everything: the check would not be specific";
  }
}

TEST(Comparison, CatchesOneWrongElementAndNamesIt) {
  auto b = testing::perturb_y(make_naive_backend(), 5, 1e-4f);
  const auto r = run_case(*b, parse_descriptor("layer_norm,shape=4x8"), {});
  ASSERT_EQ(r.verdict, Verdict::fail);
  ASSERT_EQ(r.tensors[0].name, "y");
  EXPECT_EQ(r.tensors[0].over_tolerance, 1);
  EXPECT_EQ(r.tensors[0].worst.index, 5);
  EXPECT_EQ(r.tensors[0].worst.coords, (std::vector<int64_t>{0, 5}));
}

TEST(Comparison, TheSameWrapperWithNothingChangedPasses) {
  auto b = testing::perturb_y(make_naive_backend(), 5, 0.f);
  EXPECT_EQ(run_case(*b, parse_descriptor("layer_norm,shape=4x8"), {}).verdict, Verdict::pass);
}

class Limited final : public Backend {
 public:
  explicit Limited(bool fail) : fail_(fail) {}
  std::string name() const override { return "limited"; }
  std::string version() const override { return "test"; }
  std::string description() const override { return "batch_norm f32 only"; }
  Capabilities capabilities() const override {
    return {{Op::batch_norm}, {Pass::forward_training}, {DType::f32}, {Layout::nchw}, {}, "", {}};
  }
  RunResult run(const RunArgs&) override {
    RunResult r;
    if (fail_) {
      r.ok = false;
      r.message = "status 7: out of workspace";
    }
    return r;
  }

 private:
  bool fail_;
};

TEST(Runner, UnsupportedIsAnAnswerWithAReason) {
  Limited b(false);
  const auto r = run_case(b, parse_descriptor("layer_norm,shape=4x8"), {});
  EXPECT_EQ(r.verdict, Verdict::unsupported);
  EXPECT_EQ(r.reason, "op layer_norm not supported by limited");
  EXPECT_EQ(run_case(b, parse_descriptor("batch_norm,shape=4x8,dtype=f64"), {}).reason,
            "dtype f64 not supported by limited");
}

TEST(Runner, BackendErrorsAreReportedNotThrown) {
  Limited b(true);
  const auto r = run_case(b, parse_descriptor("batch_norm,shape=4x8"), {});
  EXPECT_EQ(r.verdict, Verdict::error);
  EXPECT_NE(r.reason.find("status 7: out of workspace"), std::string::npos) << r.reason;
}

TEST(Runner, MissingRequiredOutputFails) {
  Limited b(false);  // returns ok but writes nothing
  const auto r = run_case(b, parse_descriptor("batch_norm,shape=4x8"), {});
  EXPECT_EQ(r.verdict, Verdict::fail);
  EXPECT_NE(r.reason.find("did not produce y, running_mean, running_var"), std::string::npos) << r.reason;
}

}  // namespace
}  // namespace normcheck

namespace normcheck {
namespace {

TEST(Runner, UndefinedRunningVarIsNotedNotHidden) {
  auto b = make_naive_backend();
  const auto r = run_case(*b, parse_descriptor("batch_norm,shape=1x4x1x1"), {});
  EXPECT_EQ(r.verdict, Verdict::pass);
  EXPECT_NE(r.reason.find("running_var not compared"), std::string::npos) << r.reason;
  bool seen = false;
  for (const auto& t : r.tensors)
    if (t.name == "running_var") {
      seen = true;
      EXPECT_EQ(t.undefined, 4);
    }
  EXPECT_TRUE(seen);
  // Under Keras (biased running_var) the same input is fully defined and compared.
  const auto k = run_case(*b, parse_descriptor("batch_norm,shape=1x4x1x1,convention=keras"), {});
  EXPECT_EQ(k.verdict, Verdict::pass);
  EXPECT_EQ(k.reason, "");
}

}  // namespace
}  // namespace normcheck
