// normcheck — the naive backend: textbook two-pass normalization.
//
// Reductions are recursive sums in T (float for f32, f16 and bf16 data; double for f64), the
// mean is subtracted before squaring (two-pass variance, Chan, Golub & LeVeque 1983 §2),
// r = 1/sqrt(v + eps), and backward uses the saved mean and inv_std as PyTorch's
// native_batch_norm_backward does. It accepts any strides, so NCHW and NHWC go through the same
// code.
//
// The same kernel, with options, gives the test build its correct variants (other summation
// orders and variance algorithms, each declaring its precision profile) and its planted-bug
// mutants (NaiveFlaws), so the checks are exercised by kernels that differ in one thing only.
#pragma once

#include <memory>
#include <string>

#include "normcheck/backend.hpp"

namespace normcheck {

/// Planted bugs for the test-only mutant backends (tests/mutants.cpp). The built-in `naive`
/// backend has none; each flag changes one formula so tests can prove the checks fail.
struct NaiveFlaws {
  bool unbiased_normalization = false;  ///< normalizes with v·m/(m−1) instead of v
  bool eps_outside_sqrt = false;        ///< r = 1/(sqrt(v) + eps)
  bool swapped_momentum = false;        ///< running ← f·running + (1−f)·batch
  bool storage_accumulation = false;    ///< forward sums rounded to the data dtype after every add
                                        ///< (an f16/bf16 accumulator)
  bool one_pass_variance = false;       ///< v = Σx²/m − (Σx/m)², clamped at 0, in the compute dtype
  bool biased_running_var = false;      ///< running_var updated with the biased variance whatever
                                        ///< the convention asks (Bessel correction missing)
  bool dgamma_missing_mean = false;     ///< dgamma = Σ dy·x·r (the −mean term of x̂ dropped)
  bool ignore_strides = false;          ///< reads and writes x, y, dy, dx as dense NCHW whatever
                                        ///< their strides (an NHWC channel-stride bug)
  bool gn_affine_per_group = false;     ///< group_norm: gamma/beta indexed by group, not channel
  // Bugs without a signature in core/diagnosis.cpp (their FAILs must read "unexplained"):
  bool gamma_after_beta = false;        ///< y = gamma·(x̂ + beta) instead of gamma·x̂ + beta
  bool mean_subtracted_twice = false;   ///< y from (x − 2·mean)·r
  bool dx_r_squared = false;            ///< dx scaled by r² instead of r
  bool variance_m_plus_1 = false;       ///< variance = Σ(x − mean)²/(m + 1)
  bool beta_by_set = false;             ///< beta indexed by the reduction set, not the affine entry
};

/// Correct algorithms other than the default, for the test build's correct variants.
struct NaiveVariant {
  Summation summation = Summation::recursive;  ///< recursive, pairwise or compensated (Kahan)
  bool welford = false;     ///< one-pass Welford mean/M2 updates instead of two passes
  bool compute_f64 = false; ///< arithmetic in double whatever the data dtype (statistics stored in
                            ///< the statistics dtype)
  int64_t block = 0;        ///< summation blocked: P partial accumulators, then a pairwise tree
  /// r from a 12-bit estimate of 1/sqrt plus Newton steps r·(1.5 − 0.5·a·r²) (one in f32, three in
  /// f64), as GPU kernels do with rsqrt; declares rsqrt_error = 6.
  bool rsqrt_newton = false;
  bool folded_affine = false;  ///< y = x·scale + shift with scale = gamma·r, shift = beta − mean·scale
};

std::unique_ptr<Backend> make_naive_backend(NaiveFlaws flaws = {}, std::string name = "naive",
                                            NaiveVariant variant = {});

}  // namespace normcheck
