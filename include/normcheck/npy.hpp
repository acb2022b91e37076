// normcheck — NumPy .npy files: a writer (format version 1.0, little-endian, C order) and a
// reader (versions 1.0, 2.0 and 3.0; '<'/'>'/'|' byte orders; C and Fortran order).
// Format: numpy.lib.format (https://numpy.org/doc/stable/reference/generated/numpy.lib.format.html).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "normcheck/types.hpp"

namespace normcheck {

/// Writes values (logical row-major order) as an array of shape dims and type dtype
/// ('<f2', '<f4' or '<f8'; bf16 is written as '<f4', which holds it exactly; values are
/// rounded to dtype). Throws Error when the file cannot be written.
void write_npy(const std::string& path, DType dtype, const std::vector<int64_t>& dims,
               const std::vector<double>& values);

/// One array read from a .npy file: its header and its raw element bytes, in file order.
struct NpyArray {
  char kind = 'f';                 ///< descr's type character: 'f' float, 'u' unsigned, 'i' signed, 'b' bool
  int itemsize = 0;                ///< bytes per element (1, 2, 4 or 8)
  bool big_endian = false;         ///< descr's '>' (elements are byte-swapped when read)
  bool fortran_order = false;      ///< first index varies fastest in the data
  std::vector<int64_t> shape;      ///< () for a 0-d array (one element)
  std::vector<unsigned char> data; ///< numel() × itemsize bytes, exactly
  int64_t numel() const;
  /// The dtype as NumPy writes it: "<f4", ">u2", ...
  std::string descr() const;
  /// Element at file position k (0 ≤ k < numel()), as an unsigned integer of itemsize bytes in
  /// host order (byte-swapped when big_endian).
  uint64_t raw(int64_t k) const;
  /// File position of the element at logical row-major index i (the same for C order).
  int64_t file_position(int64_t i) const;
};

/// Parses a whole .npy file held in memory. Checks the magic, the version, that the header is a
/// dict of exactly 'descr', 'fortran_order' and 'shape' with a simple (non-structured) descr,
/// that extents are ≥ 0 and their product times itemsize neither overflows nor differs from the
/// bytes that follow. Throws Error with a one-line message naming what is wrong.
NpyArray parse_npy(const unsigned char* bytes, size_t size);

/// Reads the file and parses it. Throws Error ("cannot read PATH: …" or "PATH: …").
NpyArray read_npy(const std::string& path);

/// The whole file's bytes. Throws Error when it cannot be read.
std::vector<unsigned char> read_file_bytes(const std::string& path);

}  // namespace normcheck
