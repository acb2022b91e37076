// normcheck — reproducible input generation.
//
// Values are drawn in logical order from normcheck's own generators (splitmix64 seeding a
// xoshiro256** stream per tensor role; Box–Muller for normals), not from <random> distributions,
// whose output differs between standard libraries. A (descriptor, seed) pair therefore gives
// the same inputs on every platform and in every layout. Each value is rounded once to the
// tensor's dtype; the reference reads the rounded values.
#pragma once

#include <vector>

#include "normcheck/partition.hpp"
#include "normcheck/problem.hpp"
#include "normcheck/tensor.hpp"

namespace normcheck {

struct GeneratedInputs {
  /// x of every call: training steps, then the compared call (for forward_training the last
  /// training step is the compared call). Data dtype and layout of the problem.
  std::vector<Tensor> batches;
  Tensor dy;                          ///< backward passes: N(0, 1)
  Tensor gamma, beta;                 ///< affine: gamma ±U[0.5, 2], beta U[−1, 1]; stats dtype
  Tensor running_mean, running_var;   ///< batch_norm: initial running statistics
};

/// Number of backend calls a problem makes (training steps plus the compared call).
int num_calls(const Problem& p);

GeneratedInputs generate_inputs(const Problem& p, const Partition& part);

}  // namespace normcheck
