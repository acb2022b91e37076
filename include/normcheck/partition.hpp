// normcheck — one computation, five names.
//
// Every normalization layer is the same computation over a partition of the elements into
// reduction sets: subtract the set's mean (not for RMSNorm), divide by sqrt(variance + eps)
// (RMSNorm: sqrt(mean square + eps)), then apply gamma/beta, which are indexed by an affine index.
//
//   op             reduction set of element (n, c, s)       affine index     mean subtracted
//   batch_norm     c                        (N·S each)      c                yes
//   instance_norm  n·C + c                  (S each)        c                yes
//   group_norm     n·G + c/(C/G)            (C/G·S each)    c                yes
//   layer_norm     row = i / inner          (inner each)    i % inner        yes
//   rms_norm       row = i / inner          (inner each)    i % inner        no
//
// where S = product of the spatial extents, i is the logical row-major index over
// (N, C, spatial...), and inner = product of the last norm_dims extents (normalized_shape).
// Sources: Ioffe & Szegedy 2015 Alg. 1; Ulyanov et al. 2016 eq. (2); Wu & He 2018 eq. (1)-(3)
// and §3.1 (per-channel gamma/beta); Ba et al. 2016 eq. (4); Zhang & Sennrich 2019 eq. (4);
// PyTorch torch.nn.{BatchNorm2d, InstanceNorm2d, GroupNorm, LayerNorm, RMSNorm}.
#pragma once

#include <cstdint>
#include <vector>

#include "normcheck/problem.hpp"

namespace normcheck {

struct Partition {
  int64_t numel = 0;       ///< elements of x
  int64_t num_sets = 0;    ///< number of reduction sets (BN: C; IN: N·C; GN: N·G; LN/RMS: rows)
  int64_t set_size = 0;    ///< elements per set (every set has the same size)
  int64_t num_affine = 0;  ///< length of gamma / beta / dgamma / dbeta
  bool subtract_mean = true;  ///< false for rms_norm
  bool has_beta = true;       ///< false for rms_norm (no bias in Zhang & Sennrich 2019)

  /// Members of every set, contiguous per set: members[s * set_size + k] is the logical index of
  /// the k-th element of set s, in increasing logical order.
  std::vector<int64_t> members;
  /// affine_of[i]: index into gamma/beta of logical element i.
  std::vector<int64_t> affine_of;

  const int64_t* set_begin(int64_t s) const { return members.data() + s * set_size; }
};

/// Builds the partition of problem p (which must be valid). O(numel) time and memory.
Partition make_partition(const Problem& p);

/// The reduction set of every element: result[i] = s for each i in set s. O(numel).
std::vector<int64_t> set_of_elements(const Partition& part);

/// Per-set mean (0 for rms_norm) and biased variance (rms_norm: mean square) of the values
/// x(i), two-pass, in Real arithmetic. A working-precision estimate for what needs no exact
/// statistics (generated gradients, a benchmark's saved statistics, the predictions of bug
/// signatures); the reference (reference.hpp) is the exact one.
template <class Real, class Value>
void set_moments(const Partition& part, const Value& x, std::vector<Real>& mean, std::vector<Real>& var) {
  mean.assign(static_cast<size_t>(part.num_sets), Real(0));
  var.assign(static_cast<size_t>(part.num_sets), Real(0));
  const Real m = static_cast<Real>(part.set_size);
  for (int64_t s = 0; s < part.num_sets; ++s) {
    const int64_t* idx = part.set_begin(s);
    Real sum = 0, ss = 0;
    if (part.subtract_mean)
      for (int64_t k = 0; k < part.set_size; ++k) sum += x(idx[k]);
    const Real mu = sum / m;
    for (int64_t k = 0; k < part.set_size; ++k) ss += (x(idx[k]) - mu) * (x(idx[k]) - mu);
    mean[static_cast<size_t>(s)] = mu;
    var[static_cast<size_t>(s)] = ss / m;
  }
}

/// Logical shape of gamma/beta: BN/IN/GN: {C}; LN/RMS: the normalized_shape.
std::vector<int64_t> affine_shape(const Problem& p);
/// Logical shape of the per-set statistics: BN: {C}; IN: {N, C}; GN: {N, G};
/// LN/RMS: the leading dims.
std::vector<int64_t> stats_shape(const Problem& p);

}  // namespace normcheck
