// normcheck — the naive backend: textbook two-pass normalization.
//
// Reductions are recursive sums in T (float for f32, f16 and bf16 data; double for f64), the
// mean is subtracted
// before squaring (two-pass variance, Chan, Golub & LeVeque 1983 §2), r = 1/sqrt(v + eps), and
// backward uses the saved mean and inv_std as PyTorch's native_batch_norm_backward does.
// It accepts any strides, so NCHW and NHWC go through the same code.
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
};

std::unique_ptr<Backend> make_naive_backend(NaiveFlaws flaws = {}, std::string name = "naive");

}  // namespace normcheck
