// Planted-bug backends (mutants): the naive backend with one formula changed each.
// Registered only in test builds, never in the shipped `normcheck` binary.
#pragma once

#include "normcheck/backend.hpp"

namespace normcheck::testing {

/// mutant_unbiased_variance: normalizes with v·m/(m−1) (a textbook slip; PyTorch's
///   running_var convention leaking into the normalization).
/// mutant_eps_outside_sqrt: r = 1/(sqrt(v) + eps).
/// mutant_storage_accumulation: forward sums rounded to the data dtype after every addition
///   (an f16/bf16 accumulator; identical to naive for f32 and f64 data).
/// mutant_swapped_momentum: running ← f·running + (1−f)·batch (Keras momentum read as PyTorch's).
void register_mutant_backends(BackendRegistry& r);

/// Test-only hook: wraps `inner` and, after every call that writes y, adds `delta` to the f32
/// element at physical position `index` of y. Proves that a wrong value from any backend (oneDNN
/// included) is caught and located.
std::unique_ptr<Backend> perturb_y(std::unique_ptr<Backend> inner, int64_t index, float delta);

}  // namespace normcheck::testing
