#include "normcheck/partition.hpp"

namespace normcheck {

std::vector<int64_t> affine_shape(const Problem& p) {
  if (p.op == Op::layer_norm || p.op == Op::rms_norm)
    return {p.dims.end() - p.norm_dims, p.dims.end()};
  return {p.channels()};
}

std::vector<int64_t> stats_shape(const Problem& p) {
  switch (p.op) {
    case Op::batch_norm: return {p.channels()};
    case Op::instance_norm: return {p.dims[0], p.channels()};
    case Op::group_norm: return {p.dims[0], p.groups};
    case Op::layer_norm:
    case Op::rms_norm: return {p.dims.begin(), p.dims.end() - p.norm_dims};
  }
  return {};
}

Partition make_partition(const Problem& p) {
  Partition part;
  const int64_t n = p.dims[0], c = p.channels();
  const int64_t numel = p.numel();
  const int64_t spatial = numel / (n * c);
  part.numel = numel;
  part.subtract_mean = p.op != Op::rms_norm;
  part.has_beta = p.op != Op::rms_norm;
  int64_t inner = 1;
  for (int d = p.rank() - p.norm_dims; d < p.rank(); ++d) inner *= p.dims[d];

  // Logical index i = (ni·C + ci)·S + si; see the table in partition.hpp.
  const StridedSets per_channel{c, spatial, spatial, n, c * spatial, spatial};
  switch (p.op) {
    case Op::batch_norm: part.sets = per_channel; break;
    case Op::instance_norm: part.sets = {n * c, spatial, spatial, 1, 0, spatial}; break;
    case Op::group_norm: {
      const int64_t len = c / p.groups * spatial;
      part.sets = {n * p.groups, len, len, 1, 0, len};
      break;
    }
    case Op::layer_norm:
    case Op::rms_norm: part.sets = {numel / inner, inner, inner, 1, 0, inner}; break;
  }
  if (p.op == Op::layer_norm || p.op == Op::rms_norm)
    part.affine = {inner, 1, 1, numel / inner, inner, 1};
  else
    part.affine = per_channel;
  part.num_sets = part.sets.count;
  part.set_size = part.sets.size();
  part.num_affine = part.affine.count;
  return part;
}

}  // namespace normcheck
