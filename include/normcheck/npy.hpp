// normcheck — NumPy .npy writer (format version 1.0, little-endian, C order).
// Format: numpy.lib.format (https://numpy.org/doc/stable/reference/generated/numpy.lib.format.html).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "normcheck/types.hpp"

namespace normcheck {

/// Writes values (logical row-major order) as an array of shape dims and type dtype
/// ('<f2', '<f4' or '<f8'; bf16 is written as '<f4', which holds it exactly; values are
/// rounded to dtype). Throws Error when the file cannot be written.
void write_npy(const std::string& path, DType dtype, const std::vector<int64_t>& dims,
               const std::vector<double>& values);

}  // namespace normcheck
