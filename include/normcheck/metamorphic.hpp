// normcheck — metamorphic relations: properties of a correct kernel that compare the backend with
// itself, so they need no expected value (docs/metamorphic.md). Each relation runs a case twice,
// the second time transformed, and requires the two outputs to agree within the sum of their
// budgets (the budgets' scale comes from exact per-set statistics; tolerance-model.md §2) plus
// the exact effect of any rounding the transformation itself introduced.
//
//   layout        NCHW and NHWC give the same values (ranks ≥ 3)
//   inplace       in place and out of place give the same values
//   permutation   permuting the batch (N) permutes y / dx and leaves dgamma, dbeta alone
//   shift         y(x + c) = y(x) for the mean-subtracting ops (c a power of two near 2^(p−4)·σ)
//   affine        batch_norm inference is a per-channel a·x + b (a least-squares fit leaves
//                 residuals within the budget)
#pragma once

#include <string>
#include <vector>

#include "normcheck/backend.hpp"
#include "normcheck/problem.hpp"

namespace normcheck {

struct RelationResult {
  std::string relation;    ///< layout, inplace, permutation, shift, affine
  std::string descriptor;  ///< the case (its canonical descriptor)
  bool holds = true;
  double worst_ratio = 0;  ///< max |difference| / allowance over the compared elements
  std::string detail;      ///< which tensor and element, or why the relation was skipped
  bool skipped = false;    ///< unsupported by the backend, or the case does not apply
  /// "CRASH", "TIMEOUT", "OVERRUN" or "ERROR" when a run of the backend the relation needs failed
  /// so (holds is then false and detail says which run); "" otherwise. A failed run is an error of
  /// the backend, never a skipped check.
  std::string fault;
};

/// Every relation that applies to problem p. Never throws for backend failures (the relation is
/// reported as skipped with the reason).
std::vector<RelationResult> check_relations(Backend& b, const Problem& p);

}  // namespace normcheck
