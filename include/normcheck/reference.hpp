// normcheck — the high-precision reference.
//
// One implementation for all five ops and four passes, written over the Partition (partition.hpp)
// and templated on the scalar type. It is evaluated in Boost.Multiprecision binary floating point
// with `precision_bits` significand bits (128 by default, 256 for self-validation) and every
// output is rounded once, to nearest, to double.
//
// Formulas, per reduction set of m elements (x̂ = normalized input, r = inverse std):
//   mean μ = Σx/m;  biased variance v = Σ(x−μ)²/m;  r = 1/sqrt(v + eps);  x̂ = (x−μ)·r
//   rms_norm: μ is not subtracted, v is the mean square Σx²/m                (Zhang & Sennrich 2019, eq. 4)
//   y = gamma[a(i)]·x̂ + beta[a(i)]                                       (Ioffe & Szegedy 2015, Alg. 1)
//   backward, g = dy·gamma:  dx = r·(g − mean(g) − x̂·mean(g·x̂))           (Ioffe & Szegedy 2015, §3;
//                            rms_norm: dx = r·(g − x̂·mean(g·x̂))          shared/research/conventions.md §3.3–3.4)
//                            dgamma[j] = Σ_{a(i)=j} dy·x̂;  dbeta[j] = Σ_{a(i)=j} dy
//   backward_inference (use_global_stats): μ, v are the running statistics and constant:
//                            dx = gamma·r_run·dy; dgamma = Σ dy·(x−μ_run)·r_run; dbeta = Σ dy  (§3.2)
//   running statistics (batch_norm forward_training), new-weight form with f = batch_weight:
//                            rm ← (1−f)·rm + f·μ;  rv ← (1−f)·rv + f·v_b,  v_b = v·m/(m−1) if unbiased
//                            (PyTorch batch_norm_cpu_update_stats_template; Keras BatchNormalization)
// Unbiased variance of a single value (m = 1) is 0/0: the reference returns NaN and marks
// running_var undefined, so the comparison skips it and says so.
#pragma once

#include <vector>

#include "normcheck/partition.hpp"
#include "normcheck/problem.hpp"

namespace normcheck {

/// Exact values of what the backend was given, in logical order (see Tensor::to_vector()).
struct ReferenceInputs {
  /// Inputs of every call in order: training steps first, then the compared call (for
  /// forward_training the last training step is the compared call).
  std::vector<std::vector<double>> batches;
  std::vector<double> dy;                          ///< backward passes
  std::vector<double> gamma, beta;                 ///< empty when absent
  std::vector<double> running_mean, running_var;   ///< initial values (batch_norm)
  double eps = 0;                                  ///< the stats-dtype value the backend uses
  double batch_weight = 0;                         ///< new-weight factor f (RunArgs)
  /// Per training step, when the factor changes from step to step (momentum=cumulative: 1/k);
  /// empty: batch_weight for every step.
  std::vector<double> batch_weights;
  double weight_of_step(size_t k) const { return k < batch_weights.size() ? batch_weights[k] : batch_weight; }
  bool running_var_unbiased = true;
};

/// Exact per-set quantities of one batch, rounded to double. Used by the comparison to scale
/// tolerances (docs/comparison.md).
struct SetStats {
  std::vector<double> mean;      ///< μ (0 for rms_norm)
  std::vector<double> variance;  ///< biased variance (rms_norm: mean square)
  std::vector<double> inv_std;   ///< 1/sqrt(variance + eps)
  std::vector<double> mean_abs;  ///< M1 = Σ|x|/m
  std::vector<double> max_abs;   ///< M∞ = max|x|
};

struct ReferenceResult {
  // Outputs in logical order; empty when the pass does not produce them.
  std::vector<double> y, mean, variance, inv_std, running_mean, running_var;
  std::vector<double> dx, dgamma, dbeta;
  bool running_var_undefined = false;  ///< unbiased running variance with m = 1

  std::vector<SetStats> batch_stats;  ///< per call, same order as ReferenceInputs::batches
  /// Running statistics used by the compared call (forward_inference, backward_inference).
  std::vector<double> used_running_mean, used_running_var;
};

/// The slow reference: evaluates problem p on `in` in Boost.Multiprecision with precision_bits
/// (128 or 256) significand bits and rounds every output once. Throws Error for other values.
/// Kept as the independent check of the fast reference (docs/reference.md).
ReferenceResult reference_run(const Problem& p, const Partition& part, const ReferenceInputs& in,
                              int precision_bits = 128);

/// The fast exact reference (reference/fast_reference.cpp, docs/reference.md): every per-set and
/// per-gamma-entry sum exact (ExactSum), per-set scalars as exact rationals (GMP), per-element
/// outputs in double-double with a proven error bound and a correct-rounding guard that
/// re-evaluates an element in MPFR interval arithmetic at growing precision (Ziv's strategy)
/// when the bound does not decide its rounding. Every output is the correctly rounded double
/// (round to nearest, ties to even) of the exact real value; an exactly zero value is +0.
/// `threads` ≥ 1 (0: all cores); results are bit-identical for every thread count.
/// Memory: the outputs plus O(sets) (and O(gamma entries) for the backward).
/// Throws Error when a value's rounding cannot be decided (never seen; docs/reference.md).
ReferenceResult fast_reference_run(const Problem& p, const Partition& part, const ReferenceInputs& in,
                                   int threads = 1);

/// The per-element kernels of the fast reference (reference/fast_kernels.hpp): `automatic` uses
/// the FMA and AVX2 instantiation where the CPU has both (x86-64, checked at run time), `portable`
/// the one without FMA. Outputs are bit-identical either way (each kernel returns the correctly
/// rounded value or defers to the element-wise path); tests run both. Process-wide; thread-safe.
enum class KernelIsa { automatic, portable };
void set_fast_reference_kernels(KernelIsa isa);
/// True when the fast reference currently runs the FMA instantiation.
bool fast_reference_uses_fma();

/// Which reference a run uses: `fast` (default) or `slow` (reference_run at reference_bits).
enum class ReferenceKind { fast, slow };

}  // namespace normcheck
