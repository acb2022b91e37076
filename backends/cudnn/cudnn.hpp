// normcheck — the cuDNN backend (NVIDIA GPUs): batch_norm through the legacy
// cudnnBatchNormalization* API (and, as `cudnn_graph`, the graph API), layer_norm, rms_norm and
// instance_norm through the graph (backend) API's NORM_FORWARD / NORM_BACKWARD operations. Host buffers are staged to the device and back by
// the backend. docs/backends/cudnn.md says what runs where; cudnn_plan.hpp holds the host-side
// translation.
#pragma once

#include <memory>

#include "cudnn_plan.hpp"
#include "normcheck/backend.hpp"

namespace normcheck {

/// Variant::cudnn: `cudnn` (legacy batch norm, BN1d PER_ACTIVATION, SPATIAL otherwise, and the
/// graph layer/RMS/instance norms); Variant::persistent: `cudnn_persistent` (batch_norm with
/// CUDNN_BATCHNORM_SPATIAL_PERSISTENT); Variant::graph: `cudnn_graph` (batch_norm through the
/// graph API's CUDNN_BATCH_NORM). Never throws: without a usable device (no driver, no GPU,
/// cudnnCreate failing) the backend answers every case UNSUPPORTED with "no CUDA device: …" and
/// its version() says why.
std::unique_ptr<Backend> make_cudnn_backend(cudnn_plan::Variant v = cudnn_plan::Variant::cudnn);

}  // namespace normcheck
