// The bytes-moved model of `normcheck bench` (docs/bench.md), per op and pass, against byte
// counts worked out by hand from the model's table.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "normcheck/bench.hpp"

namespace normcheck {
namespace {

struct Expected {
  const char* descriptor;
  int64_t read, written;
  const char* why;  ///< the hand count
};

class BytesMoved : public ::testing::TestWithParam<Expected> {};

TEST_P(BytesMoved, MatchesHandCount) {
  const Expected& e = GetParam();
  const Traffic t = bytes_moved(parse_descriptor(e.descriptor));
  EXPECT_EQ(t.read_bytes, e.read) << e.why;
  EXPECT_EQ(t.written_bytes, e.written) << e.why;
  EXPECT_EQ(t.total_bytes(), e.read + e.written);
  int64_t sum = 0;
  for (const auto& x : t.tensors) sum += x.bytes;
  EXPECT_EQ(sum, t.total_bytes()) << "the per-tensor list adds up to the total";
}

// n = numel; f32 data 4 bytes, f16/bf16 2, f64 8; gamma, beta and statistics in f32 (f64 for f64).
INSTANTIATE_TEST_SUITE_P(
    EveryOpAndPass, BytesMoved,
    ::testing::Values(
        Expected{"batch_norm,pass=forward_training,dtype=f32,shape=2x3x4", 144, 144,
                 "read x 96 + gamma 12 + beta 12 + running_mean/var 24; write y 96 + mean 12 + inv_std 12 + running 24"},
        Expected{"batch_norm,pass=forward_inference,dtype=f32,shape=2x3x4", 144, 96,
                 "read x 96 + gamma 12 + beta 12 + running_mean/var 24; write y 96"},
        Expected{"batch_norm,pass=backward_training,dtype=f32,shape=2x3x4", 228, 120,
                 "read x 96 + dy 96 + gamma 12 + mean 12 + inv_std 12; write dx 96 + dgamma 12 + dbeta 12"},
        Expected{"batch_norm,pass=backward_inference,dtype=f32,shape=2x3x4", 228, 120,
                 "read x 96 + dy 96 + gamma 12 + running_mean/var 24; write dx 96 + dgamma 12 + dbeta 12"},
        Expected{"layer_norm,pass=forward_training,dtype=f16,shape=4x8", 128, 96,
                 "read x 32·2 + gamma 8·4 + beta 8·4; write y 64 + mean 4·4 + inv_std 4·4"},
        Expected{"rms_norm,pass=backward_training,dtype=bf16,shape=4x8", 176, 96,
                 "read x 64 + dy 64 + gamma 32 + inv_rms 16 (no mean); write dx 64 + dgamma 32 (no dbeta)"},
        Expected{"rms_norm,pass=forward_training,dtype=f32,shape=4x8", 160, 144,
                 "read x 128 + gamma 32 (no beta); write y 128 + inv_rms 16 (no mean)"},
        Expected{"group_norm,pass=forward_training,dtype=f64,shape=2x6x5,groups=3,affine=0", 480, 576,
                 "read x 60·8; write y 480 + mean 6·8 + inv_std 6·8 (N·G = 6 sets, no gamma/beta)"},
        Expected{"instance_norm,pass=backward_training,dtype=f32,shape=2x3x5", 300, 144,
                 "read x 120 + dy 120 + gamma 12 + mean 6·4 + inv_std 24; write dx 120 + dgamma 12 + dbeta 12"},
        Expected{"layer_norm,pass=forward_training,dtype=f32,shape=2x3x4,norm_dims=2", 192, 112,
                 "read x 96 + gamma 12·4 + beta 48; write y 96 + mean 2·4 + inv_std 8"}));

TEST(BytesMoved, InPlaceMovesTheSameBytes) {
  EXPECT_EQ(bytes_moved(parse_descriptor("layer_norm,shape=4x8,inplace=1")).total_bytes(),
            bytes_moved(parse_descriptor("layer_norm,shape=4x8")).total_bytes());
}

TEST(BytesMoved, LayoutDoesNotChangeTheCount) {
  EXPECT_EQ(bytes_moved(parse_descriptor("batch_norm,shape=2x3x4x5,layout=nhwc")).total_bytes(),
            bytes_moved(parse_descriptor("batch_norm,shape=2x3x4x5")).total_bytes());
}


// A device backend's own timer and bandwidth (Backend::last_kernel_seconds, device_bandwidth):
// `normcheck bench` must record exactly the time the backend reports for each call, not the
// host clock, and take the backend's bandwidth as the roofline. The stand-in wraps the naive
// backend (a real call) and reports 1 ms per call and 1e12 B/s.
class DeviceTimedNaive final : public Backend {
 public:
  DeviceTimedNaive() {
    BackendRegistry r;
    register_builtin_backends(r);
    naive_ = r.create("naive");
  }
  std::string name() const override { return "device_timed_naive"; }
  std::string version() const override { return "test"; }
  std::string description() const override { return "naive with a device-side timer"; }
  Capabilities capabilities() const override { return naive_->capabilities(); }
  RunResult run(const RunArgs& a) override { return naive_->run(a); }
  std::optional<double> last_kernel_seconds() const override { return 1e-3; }
  std::optional<double> device_bandwidth() override { return 1e12; }

 private:
  std::unique_ptr<Backend> naive_;
};

TEST(BenchDeviceTimer, CallTimeAndRooflineComeFromTheBackend) {
  DeviceTimedNaive b;
  const std::string json = ::testing::TempDir() + "normcheck_bench_device_timer.json";
  BenchOptions opt;
  opt.json_path = json;
  opt.repetitions = 1;
  opt.min_time = 0.01;
  const std::vector<BenchCase> cases = {{parse_descriptor("layer_norm,pass=forward_training,shape=4x8"), "cases"}};
  ASSERT_EQ(run_bench(b, cases, opt), 0);
  std::ifstream in(json);
  const nlohmann::json j = nlohmann::json::parse(in);
  EXPECT_EQ(j["context"]["normcheck_roofline_source"], "device copy (backend)");
  EXPECT_EQ(std::stod(j["context"]["normcheck_roofline_bytes_per_second"].get<std::string>()), 1e12);
  ASSERT_FALSE(j["benchmarks"].empty());
  const auto& run = j["benchmarks"][0];
  EXPECT_EQ(run["time_unit"], "us");
  EXPECT_NEAR(run["real_time"].get<double>(), 1000.0, 1e-6);  // 1 ms per call, whatever the host took
  // bytes / 1e12 B/s over 1 ms per call: the roofline fraction of the backend's own figures.
  const double bytes = static_cast<double>(bytes_moved(cases[0].problem).total_bytes());
  EXPECT_NEAR(run["roofline_fraction"].get<double>(), bytes / 1e-3 / 1e12, 1e-12);
}

}  // namespace
}  // namespace normcheck
