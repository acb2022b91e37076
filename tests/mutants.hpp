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
/// Five bugs with no signature in core/diagnosis.cpp, whose FAILs must read "unexplained":
/// mutant_gamma_after_beta (y = gamma·(x̂ + beta)), mutant_mean_subtracted_twice ((x − 2·mean)·r),
/// mutant_dx_r_squared (dx·r), mutant_variance_m_plus_1 (Σ(x − mean)²/(m + 1)),
/// mutant_beta_by_set (beta indexed by reduction set).
void register_mutant_backends(BackendRegistry& r);

/// Correct variants: other correct algorithms, each declaring its precision profile. Over every
/// suite they must never FAIL (tests/test_backends.cpp).
///   variant_f64 (arithmetic in f64), variant_pairwise, variant_kahan (compensated),
///   variant_welford (one-pass updating, declares recursive depth), variant_blocked8 and
///   variant_blocked64 (P blocked accumulators, declare blocked), variant_rsqrt_newton (12-bit rsqrt
///   estimate plus Newton, declares ρ = 6), variant_folded_affine (y = x·scale + shift).
void register_correct_variants(BackendRegistry& r);
/// "naive" and the variants above.
const std::vector<std::string>& correct_variant_names();

/// Test-only hook: wraps `inner` and, after every call that writes y, adds `delta` to the f32
/// element at physical position `index` of y. Proves that a wrong value from any backend (oneDNN
/// included) is caught and located.
std::unique_ptr<Backend> perturb_y(std::unique_ptr<Backend> inner, int64_t index, float delta);

/// mutant_nondeterministic (registered with the mutants): `inner`, except that every second call
/// moves the last element of y (dx in a backward pass) one ulp up: within every tolerance, so
/// only `--repeat` tells it from a deterministic backend.
std::unique_ptr<Backend> nondeterministic(std::unique_ptr<Backend> inner);
/// Registers mutant_nondeterministic (apart from register_mutant_backends: it passes every
/// suite, and every one of those must fail one).
void register_nondeterministic_backend(BackendRegistry& r);

}  // namespace normcheck::testing
