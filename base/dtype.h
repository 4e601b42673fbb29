// Element types of tensors, their sizes, and scalar f16/bf16 conversions.
//
// Block-quantized types (Q8_0) store `BlockSize()` elements in `BlockBytes()`
// bytes; plain types have a block size of 1.
#pragma once

#include <cstdint>
#include <cstring>
#include <string_view>

#include "absl/status/statusor.h"

namespace tessera {

enum class DType : uint8_t {
  kF32,
  kF16,
  kBF16,
  kQ8_0,  // GGML Q8_0: blocks of 32 int8 values with one f16 scale (34 bytes).
  kI8,
  kI32,
  kI64,
  kU8,
};

// Short lowercase name ("f32", "bf16", "q8_0"...).
std::string_view DTypeName(DType dtype);
// Parses a name produced by DTypeName (case-insensitive; also "float32",
// "float16", "bfloat16").
absl::StatusOr<DType> ParseDType(std::string_view name);
// Elements per storage block (32 for Q8_0, else 1).
int64_t DTypeBlockSize(DType dtype);
// Bytes per storage block (34 for Q8_0, else the element size).
int64_t DTypeBlockBytes(DType dtype);
// Bytes needed for `n` elements; n must be a multiple of the block size.
int64_t DTypeBytes(DType dtype, int64_t n);
// True for f32/f16/bf16.
bool IsFloatingPoint(DType dtype);

// The scalar conversions below also compile as CUDA device code, so the
// deterministic device reduction (comm's NCCL backend) rounds exactly as the
// host does.
#if defined(__CUDACC__)
#define TESSERA_HOST_DEVICE __host__ __device__
#else
#define TESSERA_HOST_DEVICE
#endif

// IEEE binary16 <-> binary32, round-to-nearest-even, with subnormals, inf and
// NaN.
TESSERA_HOST_DEVICE inline float HalfToFloat(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1fu;
  uint32_t mant = h & 0x3ffu;
  uint32_t bits;
  if (exp == 0) {
    if (mant == 0) {
      bits = sign;
    } else {  // Subnormal: normalize.
      exp = 127 - 15 + 1;
      while ((mant & 0x400u) == 0) {
        mant <<= 1;
        --exp;
      }
      mant &= 0x3ffu;
      bits = sign | (exp << 23) | (mant << 13);
    }
  } else if (exp == 0x1f) {
    bits = sign | 0x7f800000u | (mant << 13);
  } else {
    bits = sign | ((exp + 127 - 15) << 23) | (mant << 13);
  }
  float f;
  std::memcpy(&f, &bits, sizeof(f));
  return f;
}

TESSERA_HOST_DEVICE inline uint16_t FloatToHalf(float f) {
  uint32_t x;
  std::memcpy(&x, &f, sizeof(x));
  const uint32_t sign = (x >> 16) & 0x8000u;
  x &= 0x7fffffffu;
  if (x >= 0x7f800000u) {  // Inf or NaN (keep a quiet NaN).
    return static_cast<uint16_t>(sign | 0x7c00u |
                                 (x > 0x7f800000u ? 0x200u : 0u));
  }
  if (x >= 0x477ff000u)
    return static_cast<uint16_t>(sign | 0x7c00u);  // Overflow.
  if (x < 0x38800000u) {  // Subnormal or zero in half precision.
    if (x < 0x33000000u) return static_cast<uint16_t>(sign);
    const uint32_t e = x >> 23;
    const uint32_t m = (x & 0x7fffffu) | 0x800000u;
    const uint32_t shift = 126 - e;  // 14..24
    uint32_t r = m >> shift;
    const uint32_t rem = m & ((1u << shift) - 1);
    const uint32_t half = 1u << (shift - 1);
    if (rem > half || (rem == half && (r & 1u))) ++r;
    return static_cast<uint16_t>(sign | r);
  }
  uint32_t r = ((x >> 13) - ((127 - 15) << 10));
  const uint32_t rem = x & 0x1fffu;
  if (rem > 0x1000u || (rem == 0x1000u && (r & 1u))) ++r;
  return static_cast<uint16_t>(sign | r);
}

// bfloat16 is the top half of a binary32.
TESSERA_HOST_DEVICE inline float BF16ToFloat(uint16_t b) {
  const uint32_t bits = static_cast<uint32_t>(b) << 16;
  float f;
  std::memcpy(&f, &bits, sizeof(f));
  return f;
}

TESSERA_HOST_DEVICE inline uint16_t FloatToBF16(float f) {
  uint32_t x;
  std::memcpy(&x, &f, sizeof(x));
  if ((x & 0x7fffffffu) > 0x7f800000u)
    return static_cast<uint16_t>((x >> 16) | 0x40u);
  const uint32_t rounding = 0x7fffu + ((x >> 16) & 1u);  // Nearest even.
  return static_cast<uint16_t>((x + rounding) >> 16);
}

}  // namespace tessera
