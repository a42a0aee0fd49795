// Element types of weights and activations, and the exact scalar conversions between
// them. Plain C++ with no dependencies, so CUDA sources and launchers may include it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>

namespace janus {

/// kF64 is for accumulators (MoE partial sums on the CPU), never for checkpoints.
enum class DType : uint8_t { kF32 = 0, kBF16 = 1, kF16 = 2, kF64 = 3 };

inline size_t dtype_size(DType t) { return t == DType::kF64 ? 8 : t == DType::kF32 ? 4 : 2; }

/// "F32", "BF16", "F16", "F64": the spelling safetensors uses.
const char* dtype_name(DType t);

/// Parses a safetensors dtype name; false for anything Janus cannot compute with.
bool parse_dtype(const char* name, DType* out);

inline float bf16_to_f32(uint16_t h) {
  uint32_t bits = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

/// Round to nearest even, NaN stays NaN: the same rounding torch uses for .to(bfloat16).
inline uint16_t f32_to_bf16(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  if ((bits & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((bits >> 16) | 0x40);
  uint32_t rounding = 0x7fffu + ((bits >> 16) & 1u);
  return static_cast<uint16_t>((bits + rounding) >> 16);
}

/// IEEE binary16 to float, subnormals and infinities included.
inline float f16_to_f32(uint16_t h) {
  uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1fu;
  uint32_t mant = h & 0x3ffu;
  uint32_t bits;
  if (exp == 0) {
    if (mant == 0) {
      bits = sign;
    } else {  // subnormal: normalise
      int e = -1;
      do {
        ++e;
        mant <<= 1;
      } while ((mant & 0x400u) == 0);
      bits = sign | static_cast<uint32_t>(127 - 15 - e) << 23 | (mant & 0x3ffu) << 13;
    }
  } else if (exp == 0x1f) {
    bits = sign | 0x7f800000u | mant << 13;
  } else {
    bits = sign | (exp + 127 - 15) << 23 | mant << 13;
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

/// Float to IEEE binary16, round to nearest even, overflow to infinity.
uint16_t f32_to_f16(float f);

/// Reads element `i` of a buffer of type `t` as float.
inline float load_as_f32(const void* data, DType t, size_t i) {
  switch (t) {
    case DType::kF32: {
      float v;
      std::memcpy(&v, static_cast<const char*>(data) + i * 4, 4);
      return v;
    }
    case DType::kBF16: {
      uint16_t v;
      std::memcpy(&v, static_cast<const char*>(data) + i * 2, 2);
      return bf16_to_f32(v);
    }
    case DType::kF16: {
      uint16_t v;
      std::memcpy(&v, static_cast<const char*>(data) + i * 2, 2);
      return f16_to_f32(v);
    }
    case DType::kF64: {
      double v;
      std::memcpy(&v, static_cast<const char*>(data) + i * 8, 8);
      return static_cast<float>(v);
    }
  }
  return 0.f;
}

/// Converts `n` elements of type `t` to float.
void convert_to_f32(const void* src, DType t, float* dst, size_t n);

/// Converts `n` floats to type `t` (rounding as above).
void convert_from_f32(const float* src, DType t, void* dst, size_t n);

/// The index of the first NaN or infinity among `n` elements of type `t`, or -1 when all
/// are finite. Reads exponent bits only, so it runs at memory speed on any dtype.
int64_t first_non_finite(const void* data, DType t, size_t n);

}  // namespace janus
