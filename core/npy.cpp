#include "normcheck/npy.hpp"

#include <fstream>

#include "normcheck/error.hpp"
#include "normcheck/lowp.hpp"

namespace normcheck {

void write_npy(const std::string& path, DType dtype, const std::vector<int64_t>& dims,
               const std::vector<double>& values) {
  // NumPy has no bfloat16: bf16 arrays are written as float32, which holds them exactly.
  if (dtype == DType::bf16) dtype = DType::f32;
  std::string shape = "(";
  for (size_t i = 0; i < dims.size(); ++i) shape += std::to_string(dims[i]) + (dims.size() == 1 || i + 1 < dims.size() ? "," : "");
  shape += ")";
  std::string header = "{'descr': '" + std::string(dtype == DType::f16 ? "<f2" : dtype == DType::f32 ? "<f4" : "<f8") +
                       "', 'fortran_order': False, 'shape': " + shape + ", }";
  // magic (6) + version (2) + header length (2) + header, padded with spaces to a multiple of 64
  // and terminated by '\n' (numpy.lib.format, version 1.0).
  const size_t unpadded = 10 + header.size() + 1;
  header.append((64 - unpadded % 64) % 64, ' ');
  header += '\n';
  std::ofstream f(path, std::ios::binary);
  if (!f) throw Error("cannot write " + path);
  const unsigned char preamble[8] = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0};
  f.write(reinterpret_cast<const char*>(preamble), 8);
  const uint16_t len = static_cast<uint16_t>(header.size());
  const unsigned char len_le[2] = {static_cast<unsigned char>(len & 0xff), static_cast<unsigned char>(len >> 8)};
  f.write(reinterpret_cast<const char*>(len_le), 2);
  f.write(header.data(), static_cast<std::streamsize>(header.size()));
  for (double v : values) {  // x86-64 and aarch64 are little-endian, as '<' declares
    if (dtype == DType::f16) {
      const f16 h = static_cast<f16>(v);
      f.write(reinterpret_cast<const char*>(&h), 2);
    } else if (dtype == DType::f32) {
      const float x = static_cast<float>(v);
      f.write(reinterpret_cast<const char*>(&x), 4);
    } else {
      f.write(reinterpret_cast<const char*>(&v), 8);
    }
  }
  if (!f) throw Error("error writing " + path);
}

}  // namespace normcheck
