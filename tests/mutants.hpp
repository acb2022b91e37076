// Planted-bug backends (mutants): the naive backend with one formula changed each.
// Registered only in test builds, never in the shipped `normcheck` binary.
#pragma once

#include <string>
#include <vector>

#include "normcheck/backend.hpp"

namespace normcheck::testing {

/// mutant_unbiased_variance: normalizes with v·m/(m−1) (a textbook slip; PyTorch's
///   running_var convention leaking into the normalization).
/// mutant_eps_outside_sqrt: r = 1/(sqrt(v) + eps).
/// mutant_storage_accumulation: forward sums rounded to the data dtype after every addition
///   (an f16/bf16 accumulator; identical to naive for f32 and f64 data).
/// mutant_swapped_momentum: running ← f·running + (1−f)·batch (Keras momentum read as PyTorch's).
/// mutant_one_pass_variance: v = Σx²/m − mean² in f32 (clamped at 0): error grows like κ².
/// mutant_biased_running_var: running_var updated with the biased variance (Bessel missing).
/// mutant_dgamma_missing_mean: dgamma = Σ dy·x·r instead of Σ dy·(x − mean)·r.
/// mutant_ignore_strides: x, y, dy, dx addressed as dense NCHW (an NHWC channel-stride bug).
/// mutant_gn_affine_per_group: group_norm gamma/beta indexed by group (ONNX GroupNorm-18).
void register_mutant_backends(BackendRegistry& r);

/// Correct variants: other correct algorithms, each declaring its precision profile. Over every
/// suite they must never FAIL (tests/test_backends.cpp).
///   variant_f64 (arithmetic in f64), variant_pairwise, variant_kahan (compensated),
///   variant_welford (one-pass updating, declares recursive depth).
void register_correct_variants(BackendRegistry& r);
/// "naive" and the variants above.
const std::vector<std::string>& correct_variant_names();

/// Test-only hook: wraps `inner` and, after every call that writes y, adds `delta` to the f32
/// element at physical position `index` of y. Proves that a wrong value from any backend (oneDNN
/// included) is caught and located.
std::unique_ptr<Backend> perturb_y(std::unique_ptr<Backend> inner, int64_t index, float delta);

}  // namespace normcheck::testing
