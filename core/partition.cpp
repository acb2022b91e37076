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
  part.affine_of.resize(numel);

  // set_of(i) for logical index i = (ni·C + ci)·S + si.
  std::vector<int64_t> set_of(numel);
  int64_t inner = 1;
  for (int d = p.rank() - p.norm_dims; d < p.rank(); ++d) inner *= p.dims[d];
  for (int64_t i = 0; i < numel; ++i) {
    const int64_t ci = (i / spatial) % c;
    const int64_t ni = i / (spatial * c);
    switch (p.op) {
      case Op::batch_norm: set_of[i] = ci; part.affine_of[i] = ci; break;
      case Op::instance_norm: set_of[i] = ni * c + ci; part.affine_of[i] = ci; break;
      case Op::group_norm:
        set_of[i] = ni * p.groups + ci / (c / p.groups);
        part.affine_of[i] = ci;
        break;
      case Op::layer_norm:
      case Op::rms_norm: set_of[i] = i / inner; part.affine_of[i] = i % inner; break;
    }
  }
  switch (p.op) {
    case Op::batch_norm: part.num_sets = c; part.num_affine = c; break;
    case Op::instance_norm: part.num_sets = n * c; part.num_affine = c; break;
    case Op::group_norm: part.num_sets = n * p.groups; part.num_affine = c; break;
    case Op::layer_norm:
    case Op::rms_norm: part.num_sets = numel / inner; part.num_affine = inner; break;
  }
  part.set_size = numel / part.num_sets;

  // Bucket members per set in increasing logical order.
  part.members.resize(numel);
  std::vector<int64_t> fill(part.num_sets, 0);
  for (int64_t i = 0; i < numel; ++i) {
    const int64_t s = set_of[i];
    part.members[s * part.set_size + fill[s]++] = i;
  }
  return part;
}

std::vector<int64_t> set_of_elements(const Partition& part) {
  std::vector<int64_t> set_of(static_cast<size_t>(part.numel));
  for (int64_t s = 0; s < part.num_sets; ++s)
    for (int64_t k = 0; k < part.set_size; ++k) set_of[static_cast<size_t>(part.set_begin(s)[k])] = s;
  return set_of;
}

}  // namespace normcheck
