// normcheck — 16-bit floating-point storage types: f16 (IEEE 754 binary16) and bf16 (bfloat16:
// the upper half of a binary32). Arithmetic happens in float; these types only store.
#pragma once

#include <cstdint>
#include <cstring>

namespace normcheck {

/// IEEE binary16 via the compiler's _Float16 (GCC ≥ 12 and Clang on x86-64 and AArch64).
/// Conversions round to nearest even; overflow gives ±Inf.
__extension__ typedef _Float16 f16;

/// bfloat16: 8 exponent bits, 7 fraction bits. Conversion from float rounds to nearest even
/// (NaN stays NaN); conversion to float is exact.
struct bf16 {
  uint16_t bits = 0;
  bf16() = default;
  bf16(float f) {  // NOLINT(google-explicit-constructor): a storage type, like _Float16
    uint32_t u;
    std::memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) {
      bits = static_cast<uint16_t>((u >> 16) | 0x40u);  // quiet NaN
      return;
    }
    u += 0x7fffu + ((u >> 16) & 1u);
    bits = static_cast<uint16_t>(u >> 16);
  }
  operator float() const {  // NOLINT(google-explicit-constructor)
    const uint32_t u = static_cast<uint32_t>(bits) << 16;
    float f;
    std::memcpy(&f, &u, 4);
    return f;
  }
};

}  // namespace normcheck
