// normcheck — why a case failed: bug signatures (tolerance-model.md §3.4, docs/comparison.md
// "Diagnosis").
//
// Two kinds of evidence name a suspected cause:
//   - exact signatures: the output a specific bug would produce, computed from the exact inputs
//     (unbiased variance in the normalization, eps outside the sqrt, eps omitted, flipped momentum,
//     running_var with the wrong Bessel correction, dgamma without its −mean term, gamma/beta per
//     group, strides ignored). A bug matches when every compared tensor the bug changes lies within
//     2× its budget of the bug's prediction, and the tensors it leaves alone passed.
//   - error envelopes: a per-set least-squares fit of the forward error,
//     got_i − y_i ≈ α_s·γ_i + δr_s·γ_i·x̂_i, gives the mean error (−α_s/r_s) and the relative
//     inv_std error δr_s of each reduction set. Inv_std errors above the stable-algorithm budget
//     but within the one-pass envelope (h+4)·u·κ² say "one-pass variance"; mean errors within the
//     budget of a 16-bit accumulator say "16-bit accumulation".
// Anything else is "unexplained", with the fitted errors.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "normcheck/compare.hpp"
#include "normcheck/partition.hpp"
#include "normcheck/problem.hpp"
#include "normcheck/reference.hpp"

namespace normcheck {

/// What the runner knows about one compared case.
struct CaseEvidence {
  const Problem& problem;
  const Partition& part;
  const ReferenceInputs& in;
  const ReferenceResult& ref;
  const Tolerances& tol;                             ///< worst-case budgets (for the backend's profile)
  std::map<std::string, std::vector<double>> got;    ///< compared outputs by tensor name, logical order
  const std::vector<TensorComparison>& tensors;
  double u = 0;                                      ///< unit roundoff of the budget's arithmetic
  double depth = 0;                                  ///< h of one reduction set under the profile
  const Tolerances* tol_prob = nullptr;              ///< probabilistic budgets (the factor rule), if known
};

/// One line naming the suspected cause of a failing case, with the evidence (fitted errors,
/// ratio of the signature's prediction to the budget), or "unexplained: …" with the fitted
/// errors. Never throws for valid evidence.
std::string suspected_cause(const CaseEvidence& e);

}  // namespace normcheck
