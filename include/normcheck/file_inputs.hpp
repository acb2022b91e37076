// normcheck — your own tensors: inputs read from .npy files instead of generated
// (`--input NAME=FILE.npy`; docs/descriptor.md "Your own tensors").
//
// A supplied file is named in the descriptor by the SHA-256 of its bytes (data=file:H,
// dy=file:H, gamma=file:H, …), so reports and reproducers name exactly the data, and a run whose
// file differs from the descriptor's digest is refused.
//
// dtype convention (NumPy has no bfloat16):
//   x, dy for dtype=f32: '<f4';  f64: '<f8';  f16: '<f2' (or '<u2' holding the binary16 bits);
//   bf16: '<u2' holding the bfloat16 bit pattern (the upper 16 bits of the binary32 value, as
//   torch's tensor.view(torch.int16) or ml_dtypes' bfloat16.view('<u2') give).
//   gamma, beta, running_mean, running_var are in the statistics dtype: '<f8' for f64 data,
//   '<f4' otherwise.
// '>' (big-endian) files are byte-swapped; C and Fortran order are both read.
// Shapes: x and dy have the descriptor's logical shape N × C × spatial… whatever layout= says
// (layout= only sets how normcheck lays them out for the backend); gamma and beta the affine shape
// (C, or normalized_shape for layer_norm/rms_norm); running_mean and running_var (C).
#pragma once

#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "normcheck/generate.hpp"
#include "normcheck/npy.hpp"
#include "normcheck/problem.hpp"

namespace normcheck {

/// SHA-256 (FIPS 180-4, computed by OpenSSL's EVP interface) of bytes, 64 lower-case hex digits.
std::string sha256_hex(const unsigned char* bytes, size_t size);

struct SuppliedTensor {
  std::string path;    ///< where it was read from (for the reproducer's --input)
  std::string sha256;  ///< of the whole file
  NpyArray array;
};

/// The files given with --input, by role.
struct SuppliedInputs {
  std::vector<SuppliedTensor> x;             ///< in call order
  std::map<std::string, SuppliedTensor> other;  ///< dy, gamma, beta, running_mean, running_var
  bool empty() const { return x.empty() && other.empty(); }
};

/// Reads one file and hashes it. Throws Error (unreadable or malformed file).
SuppliedTensor load_supplied(const std::string& path);

/// Adds `--input NAME=FILE`: NAME is x (repeated: one per call, in call order), x0, x1, … (call
/// k explicitly; not mixed with plain x), dy, gamma, beta, running_mean or running_var.
/// Throws Error for an unknown name, a name given twice, or an unreadable/malformed file.
void add_input(SuppliedInputs& in, std::string_view spec);
/// The same, with the name and an already loaded tensor.
void add_input(SuppliedInputs& in, const std::string& name, SuppliedTensor t);

/// Records the supplied files' digests in p, and checks every supplied file against p's dtype and
/// shape. A digest p already names must equal the file's (a reproducer run with a different file
/// is refused); a digest p names with no file given is an error. Throws Error (one line).
void bind_inputs(Problem& p, const SuppliedInputs& in);

/// The run_case hook: replaces the generated tensors by the supplied ones (exact values,
/// laid out in p's layout). Throws Error when p names files that `in` does not hold (or holds
/// with another digest); does nothing when p names none.
void apply_inputs(const Problem& p, const SuppliedInputs* in, GeneratedInputs& g);

/// " --input x=PATH …" for the files p names, for a reproducer ("" when none).
std::string input_options(const Problem& p, const SuppliedInputs* in);

}  // namespace normcheck
