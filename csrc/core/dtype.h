// Host-side storage types for half precision and their float conversions. Activations are stored
// in float32/float16/bfloat16 (float64 on CPU, for gradcheck); state and arithmetic are float32
// (float64 for float64). CUDA kernels use cuda_fp16.h / cuda_bf16.h instead (csrc/cuda/).
#pragma once
#include <cstdint>
#include <cstring>

namespace spikeforge {

struct bf16_t {
  uint16_t bits;
};

inline float to_float(bf16_t v) {
  uint32_t u = static_cast<uint32_t>(v.bits) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
inline bf16_t bf16_from_float(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return bf16_t{static_cast<uint16_t>((u >> 16) | 0x40)};  // quiet NaN
  u += 0x7fffu + ((u >> 16) & 1u);                                                              // round to nearest even
  return bf16_t{static_cast<uint16_t>(u >> 16)};
}

#if defined(__FLT16_MAX__) && !defined(__CUDACC__)
// GCC >= 12 / Clang: _Float16 converts with F16C instructions when available and vectorises.
using f16_t = _Float16;
inline float to_float(f16_t v) {
  return static_cast<float>(v);
}
inline f16_t f16_from_float(float f) {
  return static_cast<f16_t>(f);
}
#else
struct f16_t {
  uint16_t bits;
};
inline float to_float(f16_t v) {  // IEEE binary16 -> binary32, exact
  const uint32_t h = v.bits, sign = (h & 0x8000u) << 16, exp = (h >> 10) & 0x1fu, man = h & 0x3ffu;
  uint32_t u;
  if (exp == 0) {
    if (man == 0) {
      u = sign;
    } else {  // subnormal: normalise
      int e = -1;
      uint32_t m = man;
      do {
        ++e;
        m <<= 1;
      } while ((m & 0x400u) == 0);
      u = sign | static_cast<uint32_t>(127 - 15 - e) << 23 | (m & 0x3ffu) << 13;
    }
  } else if (exp == 31) {
    u = sign | 0x7f800000u | man << 13;
  } else {
    u = sign | (exp + 112u) << 23 | man << 13;
  }
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
inline f16_t f16_from_float(float f) {  // round to nearest even
  uint32_t u;
  std::memcpy(&u, &f, 4);
  const uint32_t sign = (u >> 16) & 0x8000u;
  u &= 0x7fffffffu;
  if (u > 0x7f800000u) return f16_t{static_cast<uint16_t>(sign | 0x7e00u)};
  if (u >= 0x477ff000u) return f16_t{static_cast<uint16_t>(sign | 0x7c00u)};  // overflow -> inf
  if (u < 0x38800000u) {                                                      // subnormal or zero in half
    float a;
    std::memcpy(&a, &u, 4);
    const uint32_t m = static_cast<uint32_t>(a * 16777216.0f + 0.5f);  // a / 2^-24, rounded
    return f16_t{static_cast<uint16_t>(sign | m)};
  }
  u += 0x0fffu + ((u >> 13) & 1u) - (112u << 23);
  return f16_t{static_cast<uint16_t>(sign | (u >> 13))};
}
#endif

inline float to_float(float v) {
  return v;
}
inline double to_float(double v) {
  return v;
}

// Compute (state) type of an activation storage type.
template <typename S>
struct compute_of {
  using type = float;
};
template <>
struct compute_of<double> {
  using type = double;
};
template <typename S>
using compute_t = typename compute_of<S>::type;

template <typename S>
inline S from_compute(compute_t<S> v);
template <>
inline float from_compute<float>(float v) {
  return v;
}
template <>
inline double from_compute<double>(double v) {
  return v;
}
template <>
inline bf16_t from_compute<bf16_t>(float v) {
  return bf16_from_float(v);
}
template <>
inline f16_t from_compute<f16_t>(float v) {
  return f16_from_float(v);
}

}  // namespace spikeforge
