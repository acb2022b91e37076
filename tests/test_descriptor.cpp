// Descriptor round trip and error messages.
#include <gtest/gtest.h>

#include "normcheck/data.hpp"
#include "normcheck/problem.hpp"

namespace normcheck {
namespace {

TEST(Descriptor, EverySuiteDescriptorIsCanonicalAndRoundTrips) {
  int n = 0;
  for (const auto& name : builtin_suite_names()) {
    for (const auto& c : load_suite(name).cases) {
      const Problem p = parse_descriptor(c.descriptor);
      EXPECT_EQ(to_descriptor(p), c.descriptor) << name << " line " << c.line;
      ++n;
    }
  }
  EXPECT_GE(n, 50);  // smoke + edge
}

TEST(Descriptor, ParsesEveryFieldAndPrintsCanonicalOrder) {
  const Problem p = parse_descriptor(
      "batch_norm,seed=7,data=uniform:-2:3,special=nan,steps=3,momentum=0.5,convention=keras,"
      "affine=0,eps=0.001,layout=nhwc,shape=2x3x4x5x6,dtype=f64,pass=forward_training");
  EXPECT_EQ(p.op, Op::batch_norm);
  EXPECT_EQ(p.pass, Pass::forward_training);
  EXPECT_EQ(p.dtype, DType::f64);
  EXPECT_EQ(p.layout, Layout::nhwc);
  EXPECT_EQ(p.dims, (std::vector<int64_t>{2, 3, 4, 5, 6}));
  EXPECT_EQ(p.eps, 0.001);
  EXPECT_FALSE(p.affine);
  EXPECT_EQ(p.convention, "keras");
  EXPECT_EQ(p.momentum, 0.5);
  EXPECT_EQ(p.steps, 3);
  EXPECT_EQ(p.data.kind, Distribution::Kind::uniform);
  EXPECT_EQ(p.data.a, -2);
  EXPECT_EQ(p.data.b, 3);
  EXPECT_EQ(p.special, Special::nan);
  EXPECT_EQ(p.seed, 7u);
  EXPECT_EQ(to_descriptor(p),
            "batch_norm,pass=forward_training,dtype=f64,shape=2x3x4x5x6,layout=nhwc,eps=0.001,"
            "affine=0,convention=keras,momentum=0.5,steps=3,data=uniform:-2:3,special=nan,seed=7");
}

TEST(Descriptor, DefaultsAreFilledAndOmitted) {
  const Problem p = parse_descriptor("layer_norm,shape=4x8");
  EXPECT_EQ(p.pass, Pass::forward_training);
  EXPECT_EQ(p.dtype, DType::f32);
  EXPECT_EQ(p.eps, 1e-5);
  EXPECT_EQ(p.norm_dims, 1);
  EXPECT_EQ(to_descriptor(p), "layer_norm,pass=forward_training,dtype=f32,shape=4x8");
  // Keras's default momentum is 0.99 and is omitted when equal to it.
  const Problem k = parse_descriptor("batch_norm,shape=4x8,convention=keras");
  EXPECT_EQ(k.momentum, 0.99);
  EXPECT_EQ(to_descriptor(k), "batch_norm,pass=forward_training,dtype=f32,shape=4x8,convention=keras");
}

TEST(Descriptor, NumbersPrintShortestWithUnpaddedExponent) {
  EXPECT_EQ(format_number(1e-5), "1e-5");
  EXPECT_EQ(format_number(1e-12), "1e-12");
  EXPECT_EQ(format_number(0.1), "0.1");
  EXPECT_EQ(format_number(10000), "10000");
  EXPECT_EQ(format_number(1e300), "1e300");
  EXPECT_EQ(format_number(-2.5), "-2.5");
}

struct BadCase {
  const char* text;
  const char* message_part;
};

class MalformedDescriptor : public ::testing::TestWithParam<BadCase> {};

TEST_P(MalformedDescriptor, ThrowsOneLineErrorNamingTheProblem) {
  try {
    parse_descriptor(GetParam().text);
    FAIL() << "accepted " << GetParam().text;
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find(GetParam().message_part), std::string::npos) << msg;
    EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
  }
}

INSTANTIATE_TEST_SUITE_P(
    Cases, MalformedDescriptor,
    ::testing::Values(
        BadCase{"", "empty"}, BadCase{"batchnorm,shape=2x3", "unknown op 'batchnorm'"},
        BadCase{"batch_norm", "shape=NxCx... is required"},
        BadCase{"batch_norm,shape=2x0", "≥ 1"}, BadCase{"batch_norm,shape=2", "2 to 5 dims"},
        BadCase{"batch_norm,shape=2x3x4x5x6x7", "2 to 5 dims"},
        BadCase{"batch_norm,shape=2xa", "shape=a is not an integer"},
        BadCase{"batch_norm,shape=2x3,eps=abc", "eps=abc is not a number"},
        BadCase{"batch_norm,shape=2x3,eps=-1", "eps must be"},
        BadCase{"layer_norm,shape=2x3,dy=common:1:2", "dy applies to backward passes only"},
        BadCase{"layer_norm,pass=backward_training,shape=2x3,dy=common:1", "dy=common:1 must be normal or common:A:B"},
        BadCase{"batch_norm,shape=2x3,convention=keras,momentum=cumulative", "convention keras has no cumulative"},
        BadCase{"batch_norm,shape=2x3,special=spike", "known: none, nan, inf, const_set, spikes, cancel"},
        BadCase{"batch_norm,shape=2x3,colour=red", "unknown key 'colour'"},
        BadCase{"batch_norm,shape=2x3,shape=2x3", "shape given twice"},
        BadCase{"batch_norm,shape=2x3,pass=sideways", "unknown pass 'sideways'"},
        BadCase{"batch_norm,shape=2x3,dtype=f128", "unknown dtype 'f128'"},
        BadCase{"group_norm,shape=2x6x4", "groups=0 must be"},
        BadCase{"group_norm,shape=2x6x4,groups=4", "divide C = 6"},
        BadCase{"layer_norm,shape=2x6x4,groups=2", "groups applies to group_norm only"},
        BadCase{"layer_norm,shape=2x6x4,norm_dims=3", "norm_dims=3 must be between 1 and rank-1 = 2"},
        BadCase{"batch_norm,shape=2x6x4,norm_dims=1", "norm_dims applies to layer_norm"},
        BadCase{"layer_norm,shape=2x6,pass=forward_inference", "only batch_norm keeps"},
        BadCase{"layer_norm,shape=2x6,momentum=0.1", "momentum applies to batch_norm only"},
        BadCase{"batch_norm,shape=2x6,convention=caffe2", "unknown convention 'caffe2'"},
        BadCase{"batch_norm,shape=2x6,momentum=1.5", "momentum must be in [0, 1]"},
        BadCase{"batch_norm,shape=2x6,steps=0", "steps must be ≥ 1"},
        BadCase{"batch_norm,shape=2x6,pass=backward_training,steps=2", "forward passes only"},
        BadCase{"batch_norm,shape=2x6,data=cauchy:0:1", "must be normal:MEAN:STD"},
        BadCase{"batch_norm,shape=2x6,data=uniform:3:1", "LOW ≤ HIGH"},
        BadCase{"batch_norm,shape=2x6,special=zero", "special=zero unknown"},
        BadCase{"batch_norm,shape=2x6,affine=yes", "affine=yes must be 0 or 1"},
        BadCase{"batch_norm, shape=2x6", "white space"},
        BadCase{"batch_norm,shape", "is not key=value"}),
    [](const auto& tp) { return "case" + std::to_string(tp.index); });

TEST(Suite, RejectsAMalformedLineWithItsLineNumber) {
  try {
    parse_suite("mine", "# title: t\nbatch_norm,shape=2x3\n\nbatch_norm,shape=2x3,eps=x  # bad\n");
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("suite mine line 4"), std::string::npos) << e.what();
  }
}

TEST(Suite, ReadsNotesAndTitle) {
  const Suite s = parse_suite("mine", "# title: my cases\n\nbatch_norm,shape=2x3   # why it matters\n");
  EXPECT_EQ(s.title, "my cases");
  ASSERT_EQ(s.cases.size(), 1u);
  EXPECT_EQ(s.cases[0].descriptor, "batch_norm,shape=2x3");
  EXPECT_EQ(s.cases[0].note, "why it matters");
  EXPECT_EQ(s.cases[0].line, 3);
}

TEST(Suite, UnknownNameIsAnError) { EXPECT_THROW(load_suite("no_such_suite"), Error); }

}  // namespace
}  // namespace normcheck
