// normcheck — the host-side half of the cuDNN backend: how a RunArgs becomes cuDNN tensor
// descriptors and modes, which cases cuDNN is asked for at all (and why not), and the declared
// conventions and precision profile. Nothing here includes a cuDNN or CUDA header or needs
// libcudnn at run time, so all of it is tested on machines without a GPU (tests/test_cudnn.cpp).
// docs/backends/cudnn.md says what runs where.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "normcheck/backend.hpp"

namespace normcheck::cudnn_plan {

/// cudnnBatchNormMode_t of the legacy API (cudnn_ops.h, cuDNN 9): PER_ACTIVATION normalizes each
/// (c, h, w) over N; SPATIAL and SPATIAL_PERSISTENT each c over N×H×W (PERSISTENT "may be faster
/// … but imposes some limits on the range of values", cudnn_ops.h comment).
enum class BnMode { per_activation, spatial, spatial_persistent };
/// cudnnBackendNormMode_t of the graph API's NORM_FORWARD / NORM_BACKWARD operations.
enum class NormMode { layer_norm, instance_norm, batch_norm, group_norm, rms_norm };

/// The three backend names:
///   cudnn:            batch_norm through the legacy API (PER_ACTIVATION for BN1d on (N, C),
///                     SPATIAL otherwise); layer_norm, rms_norm, instance_norm through the graph API;
///   cudnn_persistent: batch_norm through the legacy API with SPATIAL_PERSISTENT;
///   cudnn_graph:      batch_norm through the graph API (CUDNN_BATCH_NORM).
enum class Variant { cudnn, persistent, graph };
std::string_view backend_name(Variant);

/// The cuDNN spelling: "CUDNN_BATCHNORM_SPATIAL", "CUDNN_LAYER_NORM", …
std::string_view to_string(BnMode);
std::string_view to_string(NormMode);

/// A cuDNN tensor view: dims in cuDNN order (N, C, spatial…), strides in elements, rank 4 or 5
/// (cudnnSetTensorNdDescriptor and the backend tensors want at least 4 dims; lower ranks are
/// padded with trailing size-1 dims whose stride is that of the last real dim).
struct Desc {
  int rank = 0;
  int64_t dims[kMaxRank] = {};
  int64_t strides[kMaxRank] = {};
  int64_t numel() const;
};

/// Pads a logical (N, C, spatial…) buffer description to a Desc.
Desc desc_of(const TensorArg& t);
/// The dense NCHW-ordered Desc of the given dims (padded to rank ≥ 4).
Desc packed(std::initializer_list<int64_t> dims);
/// (n, c, 1, 1) with strides (c, 1, c, c): the channels-last form cudnn-frontend gives per-channel
/// and per-row tensors of the graph norm ops (its generate_NHWC_stride_order).
Desc channels_last(int64_t n, int64_t c);

/// One legacy batch-norm call: the mode, the shared x/y/dy/dx descriptor, and the descriptor of
/// scale, bias, saved and running statistics (what cudnnDeriveBNTensorDescriptor derives: 1×C×1×1
/// for the spatial modes; 1×C×1×1 for PER_ACTIVATION on BN1d's (N, C), which has no spatial dims).
/// exponential_average_factor is RunArgs::batch_weight unchanged: cuDNN's
/// runningMean = newMean·factor + runningMean·(1 − factor) is the new-weight form.
struct BnPlan {
  BnMode mode = BnMode::spatial;
  Desc x, param;
  double exponential_average_factor = 0;
};
/// BN1d (rank 2, N×C) → PER_ACTIVATION (the same sets as SPATIAL there: each c over N);
/// rank ≥ 3 → SPATIAL; Variant::persistent → SPATIAL_PERSISTENT (rank 2 too).
/// Precondition: unsupported_reason(a, …, v) is empty.
BnPlan plan_batch_norm(const RunArgs& a, Variant v);

/// One graph-API norm operation: x (and y, dy, dx) in the view the mode normalizes, the scale/bias
/// descriptor and the saved-statistics descriptor (cudnn-frontend's layernorm/instancenorm/rmsnorm
/// nodes: scale = x dims with dim 0 set to 1 for LAYER/RMS_NORM, 1×C×1×1 for INSTANCE_NORM; stats
/// = x dims with 1 where scale is not 1).
///   layer_norm / rms_norm: the leading dims merged into one and normalized_shape into one,
///     (rows, D, 1, 1) with the size-1 dims strided D·stride(D) as in cudnn-frontend's layernorm
///     sample (dense: strides D, 1, D, D); exact because the reduction sets and the per-element gamma/beta are the
///     same. Needs both groups mergeable into a single stride each.
///   instance_norm: x as given (N, C, spatial…), stats (N, C, 1, 1).
///   batch_norm (cudnn_graph): x as given, scale and stats (1, C, 1, 1), and in forward_training
///     the running statistics in and out with the exponential-average factor (cudnn-frontend's
///     batchnorm node).
struct GraphPlan {
  NormMode mode = NormMode::layer_norm;
  Desc x, scale, stats;
  bool bias = true;      ///< rms_norm has no beta
  bool mean = true;      ///< rms_norm saves no mean
  bool running = false;  ///< batch_norm forward_training with running statistics given
};
/// Precondition: unsupported_reason(a, …) is empty and a.op runs on the graph API.
GraphPlan plan_graph(const RunArgs& a);

/// Whether consecutive logical dims [first, last) of t collapse into one with a single stride
/// (stride[d] = stride[d+1]·dims[d+1] for each d in the range, size-1 dims excepted).
bool mergeable(const TensorArg& t, int first, int last);

/// Why cuDNN is not asked to run this case, or std::nullopt. Covers everything decided on the
/// host (op, pass, dtype, layout, conventions, views); the device's own refusals
/// (CUDNN_STATUS_NOT_SUPPORTED*) come back from the call and are UNSUPPORTED as well.
std::optional<std::string> unsupported_reason(const RunArgs& a, Layout layout, Variant v);

/// What the backends `cudnn`, `cudnn_persistent` and `cudnn_graph` declare: ops, passes,
/// dtypes, layouts, notes, the running-statistics convention "cudnn" (conventions.json) and the
/// precision profile. cuDNN documents neither its summation order nor its rsqrt accuracy, so the
/// profile is normcheck's default (recursive sums in f32, ρ = 2); `normcheck diagnose` tells
/// whether the library stays inside it.
Capabilities capabilities(Variant v);

/// The reason every case is UNSUPPORTED when no device can run cuDNN: "no CUDA device: <why>".
std::string no_device_reason(const std::string& why);

}  // namespace normcheck::cudnn_plan
