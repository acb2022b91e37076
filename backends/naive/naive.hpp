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
};

/// Correct algorithms other than the default, for the test build's correct variants.
struct NaiveVariant {
  Summation summation = Summation::recursive;  ///< recursive, pairwise or compensated (Kahan)
  bool welford = false;     ///< one-pass Welford mean/M2 updates instead of two passes
  bool compute_f64 = false; ///< arithmetic in double whatever the data dtype (statistics stored in
                            ///< the statistics dtype)
};

std::unique_ptr<Backend> make_naive_backend(NaiveFlaws flaws = {}, std::string name = "naive",
                                            NaiveVariant variant = {});

}  // namespace normcheck
