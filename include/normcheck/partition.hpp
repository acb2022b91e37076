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

/// Reduction sets (or affine classes) described by strides over the logical row-major index of
/// x, never by per-element index arrays: set s is the union of `runs` contiguous runs of
/// `run_len` elements, the r-th starting at s·base_stride + r·run_stride; element i belongs to
/// set (i / div) % count. Every op's partition and affine index has this form:
///
///   op             sets: base_stride run_len  runs run_stride div      affine: base run_len runs run_stride div
///   batch_norm           S           S        N    C·S        S                S    S       N    C·S        S
///   instance_norm        S           S        1    -          S                S    S       N    C·S        S
///   group_norm           (C/G)·S     (C/G)·S  1    -          (C/G)·S          S    S       N    C·S        S
///   layer_norm/rms_norm  inner       inner    1    -          inner            1    1       rows inner     1
struct StridedSets {
  int64_t count = 0;        ///< number of sets
  int64_t base_stride = 0;  ///< logical index of the first element of set s = s · base_stride
  int64_t run_len = 0;      ///< elements per contiguous run
  int64_t runs = 0;         ///< runs per set
  int64_t run_stride = 0;   ///< logical distance between consecutive runs of a set
  int64_t div = 1;          ///< set of logical element i = (i / div) % count

  int64_t size() const { return run_len * runs; }
  /// Logical index of the k-th element (increasing logical order) of set s.
  int64_t member(int64_t s, int64_t k) const {
    if (runs == 1) return s * base_stride + k;  // one run: no division
    if (run_len == 1) return s * base_stride + k * run_stride;
    return s * base_stride + (k / run_len) * run_stride + k % run_len;
  }
  int64_t of(int64_t i) const { return div == 1 ? i % count : (i / div) % count; }
  /// Calls f(first, len) for the contiguous runs of set s, in increasing logical order.
  template <class F>
  void for_each_run(int64_t s, const F& f) const {
    for (int64_t r = 0; r < runs; ++r) f(s * base_stride + r * run_stride, run_len);
  }
};

struct Partition {
  int64_t numel = 0;       ///< elements of x
  int64_t num_sets = 0;    ///< number of reduction sets (BN: C; IN: N·C; GN: N·G; LN/RMS: rows)
  int64_t set_size = 0;    ///< elements per set (every set has the same size)
  int64_t num_affine = 0;  ///< length of gamma / beta / dgamma / dbeta
  bool subtract_mean = true;  ///< false for rms_norm
  bool has_beta = true;       ///< false for rms_norm (no bias in Zhang & Sennrich 2019)

  StridedSets sets;    ///< the reduction sets (count = num_sets, size() = set_size)
  StridedSets affine;  ///< the elements sharing each gamma/beta entry (count = num_affine)

  /// Logical index of the k-th element of set s, in increasing logical order. O(1).
  int64_t member(int64_t s, int64_t k) const { return sets.member(s, k); }
  /// Reduction set of logical element i. O(1).
  int64_t set_of(int64_t i) const { return sets.of(i); }
  /// Index into gamma/beta of logical element i. O(1).
  int64_t affine_of(int64_t i) const { return affine.of(i); }
};

/// Calls f(i, j) for every logical element i of reduction set s, in increasing order, with its
/// gamma/beta index j = part.affine_of(i) tracked incrementally (j steps by one every
/// affine.div elements) instead of by two integer divisions per element.
template <class F>
void for_each_in_set(const Partition& part, int64_t s, const F& f) {
  const StridedSets& aff = part.affine;
  part.sets.for_each_run(s, [&](int64_t first, int64_t len) {
    int64_t j = aff.of(first), left = aff.div - first % aff.div;
    for (int64_t i = first; i < first + len; ++i) {
      f(i, j);
      if (--left == 0) {
        left = aff.div;
        if (++j == aff.count) j = 0;
      }
    }
  });
}

/// Calls f(i, s, j) for every logical element i in [lo, hi), in increasing order, with its
/// reduction set s = part.set_of(i) and gamma/beta index j = part.affine_of(i), both tracked
/// incrementally (each steps by one every div elements, modulo its count) after one division at lo.
template <class F>
void for_each_in_range(const Partition& part, int64_t lo, int64_t hi, const F& f) {
  if (lo >= hi) return;
  const StridedSets &sets = part.sets, &aff = part.affine;
  int64_t s = sets.of(lo), s_left = sets.div - lo % sets.div;
  int64_t j = aff.of(lo), j_left = aff.div - lo % aff.div;
  for (int64_t i = lo; i < hi; ++i) {
    f(i, s, j);
    if (--s_left == 0) {
      s_left = sets.div;
      if (++s == sets.count) s = 0;
    }
    if (--j_left == 0) {
      j_left = aff.div;
      if (++j == aff.count) j = 0;
    }
  }
}

/// Builds the partition of problem p (which must be valid). O(1) time and memory.
Partition make_partition(const Problem& p);

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
    Real sum = 0, ss = 0;
    if (part.subtract_mean)
      for (int64_t k = 0; k < part.set_size; ++k) sum += x(part.member(s, k));
    const Real mu = sum / m;
    for (int64_t k = 0; k < part.set_size; ++k) {
      const Real d = x(part.member(s, k)) - mu;
      ss += d * d;
    }
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
