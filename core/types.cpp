#include "normcheck/types.hpp"

#include <array>
#include <string>
#include <utility>

namespace normcheck {
namespace {

template <class E, size_t N>
std::string_view name_of(const std::array<std::pair<E, std::string_view>, N>& table, E v) {
  for (const auto& [e, s] : table)
    if (e == v) return s;
  return "?";
}

template <class E, size_t N>
E parse_name(const std::array<std::pair<E, std::string_view>, N>& table, std::string_view text,
             std::string_view what) {
  std::string known;
  for (const auto& [e, s] : table) {
    if (s == text) return e;
    known += known.empty() ? "" : ", ";
    known += s;
  }
  throw Error("unknown " + std::string(what) + " '" + std::string(text) + "'; known: " + known);
}

constexpr std::array<std::pair<Op, std::string_view>, 5> kOps{{{Op::batch_norm, "batch_norm"},
                                                                {Op::layer_norm, "layer_norm"},
                                                                {Op::instance_norm, "instance_norm"},
                                                                {Op::group_norm, "group_norm"},
                                                                {Op::rms_norm, "rms_norm"}}};
constexpr std::array<std::pair<Pass, std::string_view>, 4> kPasses{
    {{Pass::forward_training, "forward_training"},
     {Pass::forward_inference, "forward_inference"},
     {Pass::backward_training, "backward_training"},
     {Pass::backward_inference, "backward_inference"}}};
constexpr std::array<std::pair<DType, std::string_view>, 4> kDTypes{
    {{DType::f32, "f32"}, {DType::f64, "f64"}, {DType::f16, "f16"}, {DType::bf16, "bf16"}}};
constexpr std::array<std::pair<Layout, std::string_view>, 2> kLayouts{
    {{Layout::nchw, "nchw"}, {Layout::nhwc, "nhwc"}}};

}  // namespace

std::string_view to_string(Op v) { return name_of(kOps, v); }
std::string_view to_string(Pass v) { return name_of(kPasses, v); }
std::string_view to_string(DType v) { return name_of(kDTypes, v); }
std::string_view to_string(Layout v) { return name_of(kLayouts, v); }

Op parse_op(std::string_view s) { return parse_name(kOps, s, "op"); }
Pass parse_pass(std::string_view s) { return parse_name(kPasses, s, "pass"); }
DType parse_dtype(std::string_view s) { return parse_name(kDTypes, s, "dtype"); }
Layout parse_layout(std::string_view s) { return parse_name(kLayouts, s, "layout"); }

int dtype_size(DType t) {
  switch (t) {
    case DType::f32: return 4;
    case DType::f64: return 8;
    case DType::f16:
    case DType::bf16: return 2;
  }
  return 0;
}

double unit_roundoff(DType t) {
  switch (t) {
    case DType::f32: return 0x1p-24;
    case DType::f64: return 0x1p-53;
    case DType::f16: return 0x1p-11;
    case DType::bf16: return 0x1p-8;
  }
  return 0;
}

DType stats_dtype(DType t) { return t == DType::f64 ? DType::f64 : DType::f32; }

bool uses_running_stats(Pass p) {
  return p == Pass::forward_inference || p == Pass::backward_inference;
}
bool is_backward(Pass p) { return p == Pass::backward_training || p == Pass::backward_inference; }

}  // namespace normcheck
