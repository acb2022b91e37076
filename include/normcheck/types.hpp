// normcheck — the vocabulary shared by every part: ops, passes, dtypes, layouts.
//
// Each enum has a canonical lower-case spelling (to_string / parse_*) used in descriptors,
// reports and the CLI. parse_* functions throw normcheck::Error (see error.hpp) on unknown names.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "normcheck/error.hpp"

namespace normcheck {

/// The five normalization layers. They differ only in their reduction sets (partition.hpp).
enum class Op : int32_t {
  batch_norm = 0,     ///< Ioffe & Szegedy 2015, Alg. 1: per channel over N × spatial.
  layer_norm = 1,     ///< Ba, Kiros & Hinton 2016, eq. (4): per leading index over normalized_shape.
  instance_norm = 2,  ///< Ulyanov, Vedaldi & Lempitsky 2016, eq. (2): per (n, c) over spatial.
  group_norm = 3,     ///< Wu & He 2018, eq. (1)-(3): per (n, group) over C/groups × spatial.
  rms_norm = 4,       ///< Zhang & Sennrich 2019, eq. (4): like layer_norm, no mean subtraction.
};

/// What a case runs.
enum class Pass : int32_t {
  forward_training = 0,    ///< y and saved statistics from batch statistics; running stats updated.
  forward_inference = 1,   ///< y from running statistics (batch_norm only).
  backward_training = 2,   ///< dx, dgamma, dbeta through batch statistics.
  backward_inference = 3,  ///< dx, dgamma, dbeta with running statistics held constant
                           ///< (oneDNN use_global_stats; batch_norm only).
};

/// Element type of the data tensors (x, y, dy, dx). For f16/bf16 data, statistics and gamma/beta
/// are f32 (stats_dtype) and the comparison assumes f32 accumulation (docs/comparison.md).
enum class DType : int32_t { f32 = 0, f64 = 1, f16 = 2, bf16 = 3 };

/// Physical order of the data tensors. Logical order is always N, C, spatial...
/// nhwc means channels-last for any spatial rank (NC → NC, NCW → NWC, NCDHW → NDHWC).
enum class Layout : int32_t { nchw = 0, nhwc = 1 };

std::string_view to_string(Op);
std::string_view to_string(Pass);
std::string_view to_string(DType);
std::string_view to_string(Layout);

Op parse_op(std::string_view);
Pass parse_pass(std::string_view);
DType parse_dtype(std::string_view);
Layout parse_layout(std::string_view);

/// Size of one element in bytes.
int dtype_size(DType);
/// Unit roundoff u = 2^-p of the type (f32: 2^-24, f64: 2^-53, f16: 2^-11, bf16: 2^-8).
double unit_roundoff(DType);
/// Type of saved statistics, gamma/beta and their gradients for data of type t:
/// f64 for f64 data, f32 otherwise (what PyTorch, cuDNN and oneDNN do for f16/bf16 data).
DType stats_dtype(DType t);

/// True for passes that read or write running statistics.
bool uses_running_stats(Pass);
bool is_backward(Pass);

/// All values, for listings and for iterating in tests.
inline constexpr Op kAllOps[] = {Op::batch_norm, Op::layer_norm, Op::instance_norm, Op::group_norm,
                                 Op::rms_norm};
inline constexpr Pass kAllPasses[] = {Pass::forward_training, Pass::forward_inference,
                                      Pass::backward_training, Pass::backward_inference};

}  // namespace normcheck
