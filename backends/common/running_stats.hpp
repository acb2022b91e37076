// normcheck — the running-statistics update every backend without its own applies.
#pragma once

#include <cstdint>

namespace normcheck {

/// One batch_norm running-statistics step in new-weight form (RunArgs::batch_weight f):
///   running_mean ← (1 − f)·running_mean + f·mean
///   running_var  ← (1 − f)·running_var  + f·v_b,   v_b = variance·m/(m−1) if unbiased else variance
/// where variance is the biased batch variance over m elements per channel. With m = 1 and an
/// unbiased update, v_b is 0/0 = NaN, as in PyTorch's native_batch_norm (conventions.md §2.1).
/// Sources: PyTorch batch_norm_cpu_update_stats_template; Keras BatchNormalization (f = 1 − momentum).
template <class T>
void update_running_stats(T& running_mean, T& running_var, T mean, T variance, T f, int64_t m,
                          bool unbiased) {
  const T vb = unbiased ? variance * T(m) / T(m - 1) : variance;
  running_mean = (T(1) - f) * running_mean + f * mean;
  running_var = (T(1) - f) * running_var + f * vb;
}

}  // namespace normcheck
