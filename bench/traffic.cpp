// The bytes-moved model of bench.hpp; the table is docs/bench.md "Bytes moved".
#include <numeric>

#include "normcheck/bench.hpp"
#include "normcheck/partition.hpp"

namespace normcheck {

namespace {
int64_t product(const std::vector<int64_t>& v) {
  return std::accumulate(v.begin(), v.end(), int64_t{1}, [](int64_t a, int64_t b) { return a * b; });
}
}  // namespace

Traffic bytes_moved(const Problem& p) {
  validate(p);
  const int64_t n = p.numel();
  const int64_t data = dtype_size(p.dtype);
  const int64_t stat = dtype_size(stats_dtype(p.dtype));
  const int64_t sets = product(stats_shape(p));
  const int64_t affine = p.affine ? product(affine_shape(p)) : 0;
  const bool rms = p.op == Op::rms_norm;
  const bool bn = p.op == Op::batch_norm;
  const int64_t channels = p.channels();

  Traffic t;
  auto add = [&](const char* name, int64_t elements, int64_t size, bool written) {
    if (elements == 0) return;
    t.tensors.push_back({name, elements, elements * size, written});
    (written ? t.written_bytes : t.read_bytes) += elements * size;
  };
  const bool backward = is_backward(p.pass);
  add("x", n, data, false);
  if (backward) add("dy", n, data, false);
  add("gamma", affine, stat, false);
  if (!backward && !rms) add("beta", affine, stat, false);
  switch (p.pass) {
    case Pass::forward_training:
      if (!rms) add("mean", sets, stat, true);
      add(rms ? "inv_rms" : "inv_std", sets, stat, true);
      if (bn) {
        add("running_mean", channels, stat, false);
        add("running_var", channels, stat, false);
        add("running_mean", channels, stat, true);
        add("running_var", channels, stat, true);
      }
      break;
    case Pass::forward_inference:
      add("running_mean", channels, stat, false);
      add("running_var", channels, stat, false);
      break;
    case Pass::backward_training:
      if (!rms) add("mean", sets, stat, false);
      add(rms ? "inv_rms" : "inv_std", sets, stat, false);
      break;
    case Pass::backward_inference:
      add("running_mean", channels, stat, false);
      add("running_var", channels, stat, false);
      break;
  }
  if (backward) {
    add("dx", n, data, true);
    add("dgamma", affine, stat, true);
    if (!rms) add("dbeta", affine, stat, true);
  } else {
    add("y", n, data, true);
  }
  return t;
}

}  // namespace normcheck
