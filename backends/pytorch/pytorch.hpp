// normcheck — the PyTorch (ATen) backend (CPU): batch, layer, group and instance normalization
// through ATen's own operators, called as torch.nn's modules and autograd call them, on libtorch
// 1.13 (Debian bookworm's libtorch-dev). docs/backends/pytorch.md says which ATen function runs
// each pass, what ATen computes itself, and where the precision profiles were read.
#pragma once

#include <memory>

#include "normcheck/backend.hpp"

namespace normcheck {

/// The "pytorch" backend. Running statistics are updated by ATen itself (native_batch_norm's
/// in-place update: momentum as new weight, unbiased running_var; convention "pytorch").
/// The backend lives in the module libnormcheck_pytorch.so, loaded on the first call
/// (backends/pytorch/loader.cpp). When it cannot be loaded, the backend answers every case
/// UNSUPPORTED with the loader's error (never throws).
std::unique_ptr<Backend> make_pytorch_backend();

}  // namespace normcheck
