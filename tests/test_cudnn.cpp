// The cuDNN backend (built when CMake finds CUDA and cuDNN, NORMCHECK_HAVE_CUDNN). The host side
// runs everywhere: descriptor → cuDNN translation (dims and strides for NCHW, NHWC, BN1d; modes),
// which cases are refused and why, the declared convention and precision profile, and the
// answer without a device (every case UNSUPPORTED "no CUDA device", the run exit 5). The tests
// that need a GPU skip with the reason when there is none. Expected dims/strides are written out
// by hand from the layouts (docs/descriptor.md), not computed by the code under test.
#include <gtest/gtest.h>

#include <fmt/format.h>

#include <cmath>
#include <string>
#include <vector>

#include "cudnn/cudnn.hpp"
#include "cudnn/cudnn_plan.hpp"
#include "normcheck/data.hpp"
#include "normcheck/runner.hpp"
#include "normcheck/tensor.hpp"
#include "shell.hpp"

namespace normcheck {
namespace {

namespace cp = cudnn_plan;

/// The RunArgs of a descriptor with x laid out as the runner lays it out.
struct Case {
  Problem p;
  Tensor x;
  RunArgs a;
  explicit Case(const std::string& descriptor) : p(parse_descriptor(descriptor)), x(p.dtype, p.dims, p.layout) {
    a = make_run_args(p);
    a.x = x.arg();
  }
};

std::vector<int64_t> dims(const cp::Desc& d) { return {d.dims, d.dims + d.rank}; }
std::vector<int64_t> strides(const cp::Desc& d) { return {d.strides, d.strides + d.rank}; }
using V = std::vector<int64_t>;

TEST(CudnnPlan, BatchNorm2dNchwIsSpatialOnTheCallersStrides) {
  Case c("batch_norm,pass=forward_training,shape=2x3x4x5");
  const cp::BnPlan p = cp::plan_batch_norm(c.a, cp::Variant::cudnn);
  EXPECT_EQ(p.mode, cp::BnMode::spatial);
  EXPECT_EQ(dims(p.x), (V{2, 3, 4, 5}));
  EXPECT_EQ(strides(p.x), (V{60, 20, 5, 1}));
  EXPECT_EQ(dims(p.param), (V{1, 3, 1, 1}));
  EXPECT_EQ(strides(p.param), (V{3, 1, 1, 1}));
  EXPECT_EQ(cp::to_string(p.mode), "CUDNN_BATCHNORM_SPATIAL");
}

TEST(CudnnPlan, BatchNorm2dNhwcKeepsChannelsLastStrides) {
  Case c("batch_norm,pass=forward_training,shape=2x3x4x5,layout=nhwc");
  const cp::BnPlan p = cp::plan_batch_norm(c.a, cp::Variant::cudnn);
  EXPECT_EQ(dims(p.x), (V{2, 3, 4, 5}));
  EXPECT_EQ(strides(p.x), (V{60, 1, 15, 3}));  // N: H·W·C, C: 1, H: W·C, W: C
}

TEST(CudnnPlan, BatchNorm1dOnNxCIsPerActivationPaddedToFourDims) {
  Case c("batch_norm,pass=forward_training,shape=8x16");
  const cp::BnPlan p = cp::plan_batch_norm(c.a, cp::Variant::cudnn);
  EXPECT_EQ(p.mode, cp::BnMode::per_activation);
  EXPECT_EQ(dims(p.x), (V{8, 16, 1, 1}));
  EXPECT_EQ(strides(p.x), (V{16, 1, 1, 1}));
  EXPECT_EQ(dims(p.param), (V{1, 16, 1, 1}));  // 1×C×H×W with H = W = 1: one value per channel
}

TEST(CudnnPlan, BatchNorm1dWithLengthIsSpatialAndNwcStridesArePadded) {
  Case c("batch_norm,pass=forward_training,shape=2x3x7,layout=nhwc");
  const cp::BnPlan p = cp::plan_batch_norm(c.a, cp::Variant::cudnn);
  EXPECT_EQ(p.mode, cp::BnMode::spatial);  // per channel over N×L, not per (c, l)
  EXPECT_EQ(dims(p.x), (V{2, 3, 7, 1}));
  EXPECT_EQ(strides(p.x), (V{21, 1, 3, 3}));
}

TEST(CudnnPlan, BatchNorm3dIsAFiveDimDescriptor) {
  Case c("batch_norm,pass=forward_training,shape=2x3x4x5x6");
  const cp::BnPlan p = cp::plan_batch_norm(c.a, cp::Variant::cudnn);
  EXPECT_EQ(dims(p.x), (V{2, 3, 4, 5, 6}));
  EXPECT_EQ(strides(p.x), (V{360, 120, 30, 6, 1}));
  EXPECT_EQ(dims(p.param), (V{1, 3, 1, 1}));
}

TEST(CudnnPlan, PersistentBackendUsesSpatialPersistentForEveryRank) {
  for (const char* d : {"batch_norm,shape=8x16", "batch_norm,shape=2x3x4x5,layout=nhwc"}) {
    Case c(d);
    EXPECT_EQ(cp::plan_batch_norm(c.a, cp::Variant::persistent).mode, cp::BnMode::spatial_persistent) << d;
  }
  EXPECT_EQ(cp::to_string(cp::BnMode::spatial_persistent), "CUDNN_BATCHNORM_SPATIAL_PERSISTENT");
}

// cuDNN: runningMean = newMean·factor + runningMean·(1 − factor), the new-weight form RunArgs
// already carries: PyTorch's momentum 0.1 is 0.1; tf.keras 2's momentum 0.99 (old-weight) is 0.01.
TEST(CudnnPlan, ExponentialAverageFactorIsTheNewWeight) {
  Case torch("batch_norm,pass=forward_training,shape=4x3x5x5,convention=pytorch");
  EXPECT_EQ(cp::plan_batch_norm(torch.a, cp::Variant::cudnn).exponential_average_factor, static_cast<double>(0.1f));
  Case tf("batch_norm,pass=forward_training,shape=4x3x5x5,convention=tf_keras2");
  EXPECT_NEAR(cp::plan_batch_norm(tf.a, cp::Variant::cudnn).exponential_average_factor, 0.01, 1e-7);
  EXPECT_FALSE(cp::unsupported_reason(tf.a, tf.p.layout, cp::Variant::cudnn).has_value());  // unbiased, like cuDNN
}

TEST(CudnnPlan, LayerNormMergesLeadingDimsAndNormalizedShape) {
  Case one("layer_norm,pass=forward_training,shape=2x3x4");
  cp::GraphPlan g = cp::plan_graph(one.a);
  EXPECT_EQ(g.mode, cp::NormMode::layer_norm);
  EXPECT_EQ(dims(g.x), (V{6, 4, 1, 1}));
  EXPECT_EQ(strides(g.x), (V{4, 1, 4, 4}));  // cudnn-frontend's layernorm sample: {hidden, 1, hidden, hidden}
  EXPECT_EQ(dims(g.scale), (V{1, 4, 1, 1}));
  EXPECT_EQ(strides(g.scale), (V{4, 1, 4, 4}));
  EXPECT_EQ(dims(g.stats), (V{6, 1, 1, 1}));
  EXPECT_EQ(strides(g.stats), (V{1, 1, 1, 1}));
  EXPECT_TRUE(g.bias && g.mean);
  Case two("layer_norm,pass=backward_training,shape=2x3x4,norm_dims=2");
  g = cp::plan_graph(two.a);
  EXPECT_EQ(dims(g.x), (V{2, 12, 1, 1}));
  EXPECT_EQ(strides(g.x), (V{12, 1, 12, 12}));
  EXPECT_EQ(dims(g.scale), (V{1, 12, 1, 1}));
  EXPECT_EQ(dims(g.stats), (V{2, 1, 1, 1}));
}

TEST(CudnnPlan, RmsNormHasNoBiasAndNoMean) {
  Case c("rms_norm,pass=forward_training,shape=5x8");
  const cp::GraphPlan g = cp::plan_graph(c.a);
  EXPECT_EQ(g.mode, cp::NormMode::rms_norm);
  EXPECT_FALSE(g.bias);
  EXPECT_FALSE(g.mean);
  EXPECT_EQ(dims(g.x), (V{5, 8, 1, 1}));
}

TEST(CudnnPlan, InstanceNormKeepsNAndCWithPerChannelScale) {
  Case c("instance_norm,pass=forward_training,shape=2x3x4x5,layout=nhwc");
  const cp::GraphPlan g = cp::plan_graph(c.a);
  EXPECT_EQ(g.mode, cp::NormMode::instance_norm);
  EXPECT_EQ(dims(g.x), (V{2, 3, 4, 5}));
  EXPECT_EQ(strides(g.x), (V{60, 1, 15, 3}));
  EXPECT_EQ(dims(g.scale), (V{1, 3, 1, 1}));
  EXPECT_EQ(dims(g.stats), (V{2, 3, 1, 1}));
  EXPECT_EQ(strides(g.stats), (V{3, 1, 3, 3}));
  EXPECT_EQ(strides(g.scale), (V{3, 1, 3, 3}));
}

TEST(CudnnPlan, MergeableFollowsStrides) {
  Case nchw("layer_norm,shape=2x3x4x5");
  EXPECT_TRUE(cp::mergeable(nchw.a.x, 0, 4));
  Case nhwc("layer_norm,shape=2x3x4x5,layout=nhwc");  // strides 60, 1, 15, 3
  EXPECT_FALSE(cp::mergeable(nhwc.a.x, 0, 3));        // N·C·H do not merge
  EXPECT_TRUE(cp::mergeable(nhwc.a.x, 2, 4));         // H·W do (15 = 3·5)
}

void expect_reason(const std::string& descriptor, cp::Variant v, const std::string& part) {
  Case c(descriptor);
  const auto why = cp::unsupported_reason(c.a, c.p.layout, v);
  ASSERT_TRUE(why.has_value()) << descriptor;
  EXPECT_NE(why->find(part), std::string::npos) << descriptor << ": " << *why;
}

TEST(CudnnPlan, RefusedCasesSayWhy) {
  using cp::Variant;
  expect_reason("group_norm,shape=2x4x3x3,groups=2", Variant::cudnn, "group count");
  expect_reason("batch_norm,pass=backward_inference,shape=2x3x4x4", Variant::cudnn, "no global-statistics backward");
  expect_reason("batch_norm,pass=backward_inference,shape=2x3x4x4", Variant::graph, "no global-statistics backward");
  expect_reason("layer_norm,shape=4x8", Variant::persistent, "batch_norm mode");
  expect_reason("layer_norm,shape=4x8", Variant::graph, "cudnn_graph runs batch_norm");
  expect_reason("batch_norm,pass=forward_inference,shape=2x3x4x4", Variant::graph, "pointwise graph");
  expect_reason("batch_norm,pass=forward_training,shape=4x3x5x5,convention=keras", Variant::cudnn, "unbiased");
  expect_reason("batch_norm,pass=forward_training,shape=4x3x5x5,convention=keras", Variant::graph, "unbiased");
  expect_reason("layer_norm,shape=2x3x4,layout=nhwc", Variant::cudnn, "merge into one stride");
}

TEST(CudnnPlan, SupportedCasesHaveNoReason) {
  for (const char* d : {"batch_norm,pass=forward_training,shape=2x3x4x5,dtype=f16,layout=nhwc",
                        "batch_norm,pass=forward_inference,shape=8x16,dtype=bf16",
                        "batch_norm,pass=backward_training,shape=2x3x4x5,dtype=f64",
                        "layer_norm,pass=backward_training,shape=2x3x4,norm_dims=2",
                        "instance_norm,pass=forward_training,shape=2x3x4x5,layout=nhwc",
                        "rms_norm,pass=backward_training,shape=4x8,dtype=bf16"}) {
    Case c(d);
    EXPECT_EQ(cp::unsupported_reason(c.a, c.p.layout, cp::Variant::cudnn), std::nullopt) << d;
  }
  for (const char* d : {"batch_norm,pass=forward_training,shape=2x3x4x5,dtype=bf16,layout=nhwc",
                        "batch_norm,pass=backward_training,shape=8x16"}) {
    Case c(d);
    EXPECT_EQ(cp::unsupported_reason(c.a, c.p.layout, cp::Variant::graph), std::nullopt) << d;
    EXPECT_EQ(cp::unsupported_reason(c.a, c.p.layout, cp::Variant::persistent), std::nullopt) << d;
  }
}

// cudnn_graph: per-channel scale and statistics 1×C×1×1, x on the caller's strides, and the
// running statistics in and out only in forward_training when they are given.
TEST(CudnnPlan, GraphBatchNormIsPerChannelWithRunningStatistics) {
  Case c("batch_norm,pass=forward_training,shape=2x3x4x5,layout=nhwc");
  float rm[3], rv[3];
  c.a.running_mean.data = rm;
  c.a.running_var.data = rv;
  cp::GraphPlan g = cp::plan_graph(c.a);
  EXPECT_EQ(g.mode, cp::NormMode::batch_norm);
  EXPECT_EQ(cp::to_string(g.mode), "CUDNN_BATCH_NORM");
  EXPECT_EQ(strides(g.x), (V{60, 1, 15, 3}));
  EXPECT_EQ(dims(g.scale), (V{1, 3, 1, 1}));
  EXPECT_EQ(dims(g.stats), (V{1, 3, 1, 1}));
  EXPECT_EQ(strides(g.stats), (V{3, 1, 3, 3}));  // cudnn-frontend's batchnorm node: NHWC stride order
  EXPECT_TRUE(g.running && g.mean && g.bias);
  Case b("batch_norm,pass=backward_training,shape=2x3x4x5");
  EXPECT_FALSE(cp::plan_graph(b.a).running);
}

TEST(CudnnPlan, DeclaresTheCudnnConventionAndTheDefaultPrecisionProfile) {
  for (cp::Variant v : {cp::Variant::cudnn, cp::Variant::persistent, cp::Variant::graph}) {
    const Capabilities c = cp::capabilities(v);
    EXPECT_EQ(c.convention, "cudnn");
    EXPECT_EQ(c.precision.summation, Summation::recursive);
    EXPECT_EQ(c.precision.rsqrt_error, 2);
    EXPECT_FALSE(c.precision.accumulation.has_value());
    EXPECT_FALSE(c.precision.params_in_data_dtype);
  }
  // The convention the backend names: new-weight momentum, unbiased running variance.
  const Convention& conv = find_convention("cudnn");
  EXPECT_EQ(conv.momentum_meaning, "new_weight");
  EXPECT_TRUE(conv.running_var_unbiased);
  EXPECT_EQ(cp::capabilities(cp::Variant::persistent).ops, (std::vector<Op>{Op::batch_norm}));
  EXPECT_EQ(cp::capabilities(cp::Variant::graph).ops, (std::vector<Op>{Op::batch_norm}));
  EXPECT_EQ(cp::capabilities(cp::Variant::cudnn).ops,
            (std::vector<Op>{Op::batch_norm, Op::layer_norm, Op::instance_norm, Op::rms_norm}));
}

// --- the backend itself, through the registry ---------------------------------------------

std::unique_ptr<Backend> create(const std::string& name) {
  BackendRegistry r;
  register_builtin_backends(r);
  return r.create(name);
}

bool has_device(const Backend& b) { return b.version().find("cannot run") == std::string::npos; }

TEST(CudnnBackend, BothNamesAreRegisteredAndShowTheLibraryVersion) {
  for (const char* name : {"cudnn", "cudnn_persistent", "cudnn_graph"}) {
    auto b = create(name);
    EXPECT_EQ(b->name(), name);
    EXPECT_NE(b->version().find("cuDNN 9."), std::string::npos) << b->version();
    EXPECT_NE(b->version().find("CUDA runtime"), std::string::npos) << b->version();
  }
}

TEST(CudnnBackend, WithoutADeviceEveryCaseIsUnsupportedNeverAnError) {
  auto b = create("cudnn");
  if (has_device(*b)) GTEST_SKIP() << "a CUDA device is present (" << b->version() << "); this checks the answer without one";
  EXPECT_NE(b->version().find("no CUDA device"), std::string::npos) << b->version();
  int n = 0;
  for (const char* suite : {"smoke", "edge"})
    for (const SuiteCase& sc : load_suite(suite).cases) {
      const CaseResult r = run_case(*b, parse_descriptor(sc.descriptor), RunOptions{});
      EXPECT_EQ(r.verdict, Verdict::unsupported) << r.descriptor;
      EXPECT_EQ(r.reason.rfind("no CUDA device: ", 0), 0u) << r.descriptor << ": " << r.reason;
      ++n;
    }
  EXPECT_GT(n, 10);
  // run() called anyway answers the same, as an unsupported result.
  Case c("batch_norm,shape=2x3x4x5");
  const RunResult rr = b->run(c.a);
  EXPECT_FALSE(rr.ok);
  EXPECT_TRUE(rr.unsupported);
  EXPECT_EQ(rr.fault, RunResult::Fault::none);
  EXPECT_EQ(rr.message.rfind("no CUDA device: ", 0), 0u) << rr.message;
}

// A run that verified nothing is not green: exit 5 (docs/cli.md), every case counted unsupported.
TEST(CudnnBackend, WholeSuiteWithoutADeviceIsExitFiveNothingVerified) {
  auto b = create("cudnn");
  if (has_device(*b)) GTEST_SKIP() << "a CUDA device is present; the suite runs for real in tools/device-check.sh";
  const size_t n = load_suite("smoke").cases.size();
  const auto o = testing::sh(std::string(NORMCHECK_BIN) + " --backend cudnn --suite smoke");
  EXPECT_EQ(o.exit_code, 5) << o.output;
  EXPECT_NE(o.output.find(fmt::format("NOTHING VERIFIED: 0 of {} cases passed, 0 failed, 0 errors, {} unsupported", n, n)),
            std::string::npos)
      << o.output;
  EXPECT_NE(o.output.find("no CUDA device"), std::string::npos) << o.output;
}

TEST(CudnnBackend, ListShowsVersionsOrWhyItCannotRun) {
  const auto o = testing::sh(std::string(NORMCHECK_BIN) + " list");
  EXPECT_EQ(o.exit_code, 0) << o.output;
  EXPECT_NE(o.output.find("cudnn_persistent"), std::string::npos) << o.output;
  EXPECT_NE(o.output.find("cudnn_graph"), std::string::npos) << o.output;
  const bool device = has_device(*create("cudnn"));
  EXPECT_NE(o.output.find(device ? "compute capability" : "cannot run: no CUDA device"), std::string::npos) << o.output;
}

// --- on a GPU only --------------------------------------------------------------------------

TEST(CudnnDevice, SmokeCasesPassOnTheDevice) {
  auto b = create("cudnn");
  if (!has_device(*b)) GTEST_SKIP() << "needs a CUDA device: " << b->version();
  for (const char* name : {"cudnn_persistent", "cudnn_graph"}) {
    auto bn = create(name);
    for (const char* d : {"batch_norm,pass=forward_training,shape=4x3x5x5", "batch_norm,pass=backward_training,shape=4x3x5x5"}) {
      const CaseResult r = run_case(*bn, parse_descriptor(d), RunOptions{});
      EXPECT_EQ(r.verdict, Verdict::pass) << name << " " << d << ": " << r.reason;
    }
  }
  for (const char* d : {"batch_norm,pass=forward_training,shape=4x3x5x5", "batch_norm,pass=backward_training,shape=8x16",
                        "layer_norm,pass=forward_training,shape=4x64", "rms_norm,pass=backward_training,shape=4x64",
                        "instance_norm,pass=forward_training,shape=2x3x6x6"}) {
    const CaseResult r = run_case(*b, parse_descriptor(d), RunOptions{});
    EXPECT_EQ(r.verdict, Verdict::pass) << d << ": " << r.reason;
  }
}

}  // namespace
}  // namespace normcheck
