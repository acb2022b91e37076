// normcheck — the oneDNN backend (CPU): batch, layer, group and instance normalization through
// oneDNN's primitives, on oneDNN 2.6+ (API v2) and 3.x (API v3). docs/backends/onednn.md says
// what runs where and what is normcheck's own arithmetic.
#pragma once

#include <memory>

#include "normcheck/backend.hpp"

namespace normcheck {

/// blocked = false: the primitives run on the caller's layout (NCHW or NHWC strides, no copy).
/// blocked = true ("onednn_blocked"): data is reordered to nC[d][h]w16c, the primitive runs there,
/// and the result is reordered back (batch_norm, instance_norm, group_norm).
std::unique_ptr<Backend> make_onednn_backend(bool blocked = false);

}  // namespace normcheck
