// normcheck — host tensors: a typed buffer with logical dims and strides.
#pragma once

#include <cstdint>
#include <vector>

#include "normcheck/backend.hpp"
#include "normcheck/types.hpp"

namespace normcheck {

/// Owns host memory for a tensor of `dtype` with logical `dims` laid out by `strides` (elements).
/// Element access is by logical row-major index over dims, whatever the physical layout.
class Tensor {
 public:
  Tensor() = default;
  /// Dense tensor; layout nhwc permutes dim 1 (C) to be innermost in memory.
  Tensor(DType dtype, std::vector<int64_t> dims, Layout layout = Layout::nchw);

  DType dtype() const { return dtype_; }
  const std::vector<int64_t>& dims() const { return dims_; }
  const std::vector<int64_t>& strides() const { return strides_; }
  int64_t numel() const { return numel_; }
  bool empty() const { return storage_.empty(); }

  /// Value at logical index i, converted exactly to double.
  double get(int64_t i) const;
  /// Stores v rounded to dtype (round to nearest even).
  void set(int64_t i, double v);
  /// Stores in[0 .. hi − lo) rounded to dtype at logical elements [lo, hi), as set() does each.
  void write(int64_t lo, int64_t hi, const double* in);
  /// All values in logical order, as doubles (read in ranges of 2^16 elements on `threads`
  /// threads; 0: every core).
  std::vector<double> to_vector(int threads = 1) const;
  /// The values of logical elements [lo, hi) as doubles, into out[0 .. hi − lo) (the comparison
  /// reads a backend's output range by range, without a whole-tensor copy).
  void read(int64_t lo, int64_t hi, double* out) const;
  /// Physical byte offset of logical index i.
  int64_t offset_of(int64_t i) const;
  /// Raw bytes (physical order).
  const void* data() const { return storage_.data(); }
  void* data() { return storage_.data(); }
  size_t nbytes() const { return storage_.size(); }

  /// A TensorArg pointing at this tensor (or an absent one if empty()).
  TensorArg arg();

 private:
  /// Physical offset of logical index i, in elements.
  int64_t element_offset(int64_t i) const;

  DType dtype_ = DType::f32;
  std::vector<int64_t> dims_, strides_;
  int64_t numel_ = 0;
  bool row_major_ = true;  ///< physical order = logical order: offset_of(i) = i·element size
  std::vector<unsigned char> storage_;
};

/// Rounds v to the nearest value of dtype t (f64: identity), as a double. bf16 rounds through
/// float (as every bf16 producer does), the others directly.
double round_to(DType t, double v);

}  // namespace normcheck
