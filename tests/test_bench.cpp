// The bytes-moved model of `normcheck bench` (docs/bench.md), per op and pass, against byte
// counts worked out by hand from the model's table.
#include <gtest/gtest.h>

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

}  // namespace
}  // namespace normcheck
