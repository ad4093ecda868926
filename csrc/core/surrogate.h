// The surrogate derivatives g'(x), x = H - V_th (docs/neurons.md). One functor each, usable on host and
// device; every kernel uses these, and spikeforge/surrogate.py states the same formulas in PyTorch.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <type_traits>

#include "macros.h"
#include "status.h"

namespace spikeforge {

enum class Surrogate : int {
  sigmoid = 0,
  atan = 1,
  rect = 2,
  triangle = 3,  // also "piecewise_quadratic"
  piecewise_exp = 4,
  erf = 5,
  super_spike = 6,
  soft_sign = 7,
  // snnTorch 1.0's snntorch.surrogate functions (their names there in brackets)
  fast_sigmoid = 8,        // [fast_sigmoid(slope)]      1 / (alpha |x| + 1)^2
  snn_triangular = 9,      // [triangular(threshold)]    alpha for x < 0, -alpha for x >= 0 (as written there)
  straight_through = 10,   // [straight_through_estimator] 1
  spike_rate_escape = 11,  // [spike_rate_escape(beta, slope)] alpha exp(-beta |x - 1|), alpha = slope
  heaviside = 12,          // [heaviside()] the gradient passes where x > 0
  disabled = 13,           // [surrogate_disable=True] no gradient through the spike
};
constexpr int kNumSurrogates = 14;

// 2^n for the n that the 1.5 * 2^23 shifter rounded to (shifted = v + 1.5 * 2^23, n = shifted - 1.5 * 2^23),
// through the exponent bits. n is read from the shifter's low mantissa bits (bits(shifted) - bits(1.5 * 2^23)
// = n for |n| < 2^22) in unsigned arithmetic: no float-to-int conversion and no signed shift, so a NaN input
// gives garbage bits, which the callers multiply by a NaN (= NaN), instead of undefined behaviour (UBSan
// flagged the int(NaN) of an earlier version). The callers keep n + 127 in [1, 254].
inline float pow2_of_shifter(float shifted) {
  uint32_t shifted_bits;
  std::memcpy(&shifted_bits, &shifted, sizeof shifted_bits);
  const uint32_t scale_bits = (shifted_bits - 0x4B400000u + 127u) << 23;
  float scale;
  std::memcpy(&scale, &scale_bits, sizeof scale);
  return scale;
}

// exp for float that the host compiler can vectorise (no libm call in the loop):
// exp(x) = 2^n * p(r), n = round(x / ln2), r = x - n ln2 (Cody-Waite), p of degree 6.
// Max relative error ~2 ulp on [-87, 88]; inputs outside are clamped to that range.
SF_HD float vexp(float x) {
#if defined(__CUDA_ARCH__)
  return expf(x);
#else
  // Written so that GCC vectorises it as one straight line (measured 1.7x faster on Zen 3 in the
  // sigmoid surrogate's loop than the first version): the clamp is the min/max idiom, which keeps NaN
  // ((NaN < -87) is false, so max returns x), and there is no NaN-dependent select afterwards. With
  // one (a select mapping NaN to a safe value before an int conversion), GCC if-converted by
  // evaluating the polynomial and the caller's division on each branch and blending.
  x = std::min(std::max(x, -87.0f), 88.0f);
  // round to nearest by the 1.5 * 2^23 shifter (std::nearbyint is a libm call that blocks vectorisation)
  const float shifted = x * 1.44269504088896341f + 12582912.0f;
  const float n = shifted - 12582912.0f;
  float r = x - n * 0.693145751953125f;   // ln2 high part (exact in float)
  r = r - n * 1.428606765330187045e-06f;  // ln2 low part
  float p = 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  return p * pow2_of_shifter(shifted);  // for x in [-87, 88], n + 127 is in [1, 254]
#endif
}
SF_HD double vexp(double x) {
  return exp(x);
}

// 2^y for y <= 0 in float, vectorisable as vexp is: y is clamped to y >= -125, n = round(y), and 2^(y - n)
// (y - n in [-0.5, 0.5]) is a degree-6 polynomial fitted for relative error (1.6e-8 in exact arithmetic, about
// 1 ulp in float). exp(z) as vexp2_neg(z log2(e)) skips vexp's Cody-Waite reduction (two multiply-adds): where
// z = -a |x| with a loop-invariant a, the factor a log2(e) is formed once per loop and the argument costs one
// multiply, as -a x did. (The rounding of y adds a relative error of |y| 2^-24, that of -a x's rounding in
// vexp.) The bound lo is -125, given as a value the compiler cannot fold (exp2_floor_of(a) of the loop-invariant
// a): against a constant, GCC if-converted the clamp into compares and blends of whole results (it folds the
// clamped input's polynomial); against an unknown one it is one max instruction. vexp's clamps to both
// bounds had cost 9 of the sigmoid pass's ~30 vector instructions per 8 values, one bound as a constant 3.
SF_HD float vexp2_neg(float y, float lo) {
#if defined(__CUDA_ARCH__)
  (void)lo;
  return exp2f(y);
#else
  y = std::max(y, lo);                    // keeps NaN ((NaN < lo) is false); y > 0 is the caller's error
  const float shifted = y + 12582912.0f;  // round to nearest by the 1.5 * 2^23 shifter
  const float n = shifted - 12582912.0f;
  const float f = y - n;  // exact
  float p = 1.5347280714e-4f;
  p = p * f + 1.3399943709e-3f;
  p = p * f + 9.6184834838e-3f;
  p = p * f + 5.5503286421e-2f;
  p = p * f + 2.4022646248e-1f;
  p = p * f + 6.9314718246e-1f;
  p = p * f + 1.0f;
  return p * pow2_of_shifter(shifted);  // n + 127 in [2, 127]
#endif
}
SF_HD double vexp2_neg(double y, double) {
  return exp2(y);
}
// vexp2_neg's lower bound -125 from a finite a (0 a is 0): see there.
template <typename T>
SF_HD T exp2_floor_of(T a) {
  return T(-125) + T(0) * a;
}

// |x| as one bit operation (x < 0 ? -x : x, which keeps the sign of -0, costs a compare and a blend)
template <typename T>
SF_HD T sf_abs(T x) {
#if defined(__CUDA_ARCH__)
  return fabs(x);
#else
  return std::fabs(x);
#endif
}
// |m| with the sign of s, as bit operations
template <typename T>
SF_HD T sf_copysign(T m, T s) {
#if defined(__CUDA_ARCH__)
  return copysign(m, s);
#else
  return std::copysign(m, s);
#endif
}

// Each functor: static grad(x, alpha, beta) -> g'(x); beta is the second parameter (spike_rate_escape only).
template <Surrogate S>
struct SurrogateFn;

template <>
struct SurrogateFn<Surrogate::sigmoid> {
  template <typename T>
  SF_HD static T grad(T x, T a, [[maybe_unused]] T b) {
    // a s (1 - s) with s = 1 / (1 + exp(-a x)), written as a e / (1 + e)^2 with e = exp(-a |x|) <= 1: the
    // same function (it is even in x), without the cancellation of 1 - s (in float, a s (1 - s) is off by
    // up to 100% for |a x| in 10..17 and 0 beyond, where this keeps a relative error near 1e-6) and with one
    // clamp. With vexp2_neg this pass took 22% less time per element than with vexp and a s (1 - s) (Zen 3,
    // data in L1), the neurons' CPU backward about 10% less (CHANGELOG).
    const T e = vexp2_neg(-sf_abs((a * T(1.4426950408889634)) * x), exp2_floor_of(a));  // y = -|a log2(e) x|
    const T d = T(1) + e;
    return a * e / (d * d);
  }
};
template <>
struct SurrogateFn<Surrogate::atan> {
  template <typename T>
  SF_HD static T grad(T x, T a, [[maybe_unused]] T b) {
    const T u = T(1.5707963267948966) * a * x;  // pi/2 * alpha * x
    return a / (T(2) * (T(1) + u * u));
  }
};
template <>
struct SurrogateFn<Surrogate::rect> {
  template <typename T>
  SF_HD static T grad(T x, T a, [[maybe_unused]] T b) {
    return sf_abs(x) < T(0.5) / a ? a : T(0);
  }
};
template <>
struct SurrogateFn<Surrogate::triangle> {
  template <typename T>
  SF_HD static T grad(T x, T a, [[maybe_unused]] T b) {
    const T g = a - a * a * sf_abs(x);
    return g > T(0) ? g : T(0);
  }
};
template <>
struct SurrogateFn<Surrogate::piecewise_exp> {
  template <typename T>
  SF_HD static T grad(T x, T a, [[maybe_unused]] T b) {
    return T(0.5) * a * vexp(-a * sf_abs(x));
  }
};
template <>
struct SurrogateFn<Surrogate::erf> {
  template <typename T>
  SF_HD static T grad(T x, T a, [[maybe_unused]] T b) {
    const T u = a * x;
    return a * T(0.56418958354775628) * vexp(-u * u);  // 1/sqrt(pi)
  }
};
template <>
struct SurrogateFn<Surrogate::super_spike> {
  template <typename T>
  SF_HD static T grad(T x, T a, [[maybe_unused]] T b) {
    const T d = a * sf_abs(x) + T(1);
    return a / (d * d);
  }
};
template <>
struct SurrogateFn<Surrogate::soft_sign> {
  template <typename T>
  SF_HD static T grad(T x, T a, [[maybe_unused]] T b) {
    const T d = T(1) / a + sf_abs(x);
    return T(1) / (T(2) * a * d * d);
  }
};
template <>
struct SurrogateFn<Surrogate::fast_sigmoid> {
  template <typename T>
  SF_HD static T grad(T x, T a, [[maybe_unused]] T b) {
    const T d = a * sf_abs(x) + T(1);
    return T(1) / (d * d);
  }
};
template <>
struct SurrogateFn<Surrogate::snn_triangular> {
  template <typename T>
  SF_HD static T grad(T x, T a, [[maybe_unused]] T b) {
    return x >= T(0) ? -a : a;
  }
};
template <>
struct SurrogateFn<Surrogate::straight_through> {
  template <typename T>
  SF_HD static T grad([[maybe_unused]] T x, [[maybe_unused]] T a, [[maybe_unused]] T b) {
    return T(1);
  }
};
template <>
struct SurrogateFn<Surrogate::spike_rate_escape> {
  template <typename T>
  SF_HD static T grad(T x, T a, T b) {
    return a * vexp(-b * sf_abs(x - T(1)));
  }
};
template <>
struct SurrogateFn<Surrogate::heaviside> {
  template <typename T>
  SF_HD static T grad(T x, [[maybe_unused]] T a, [[maybe_unused]] T b) {
    return x > T(0) ? T(1) : T(0);
  }
};

template <>
struct SurrogateFn<Surrogate::disabled> {
  template <typename T>
  SF_HD static T grad([[maybe_unused]] T x, [[maybe_unused]] T a, [[maybe_unused]] T b) {
    return T(0);
  }
};

// The sigmoid surrogate at x0 and at x1 = c - x0 from one exp (the two-sided ternary spike: x0 = H - v_th,
// x1 = -H - v_th, c = -2 v_th; its second exp was 15% of the ternary neuron's CPU forward + backward).
// With e0 = exp(-a x0), exp(-a x1) = K / e0 for K = exp(-a c), so g'(x1) = a K e0 / (e0 + K)^2. From
// u = exp(-a |x0|) <= 1 (SurrogateFn<sigmoid>'s e): e0 = u where x0 >= 0, giving a K u / (u + K)^2, and
// e0 = 1 / u elsewhere, giving a K u / (1 + K u)^2; nothing overflows while K is finite (at most e^40 here).
// g'(x0) is SurrogateFn<sigmoid>'s own expression, bit for bit. Float only; sigmoid_pair_ok() says for which
// a c the caller may take this path (K finite and representable with room to spare).
SF_HD bool sigmoid_pair_ok(float a, float c) {
  const float e = -a * c;
  return e >= -40.0f && e <= 40.0f;  // false for NaN
}
SF_HD void sigmoid_grad_pair(float x0, float a, float k, float& g0, float& g1) {
  const float u = vexp2_neg(-sf_abs((a * 1.4426950408889634f) * x0), exp2_floor_of(a));
  const float d0 = 1.0f + u;
  g0 = a * u / (d0 * d0);
  const float d1 = x0 >= 0.0f ? u + k : k * u + 1.0f;
  g1 = a * (k * u) / (d1 * d1);
}

// Calls f(std::integral_constant<Surrogate, K>{}) for the run-time surrogate s: one switch per launch,
// so kernels are compiled once per surrogate and their inner loops carry no branch on it.
template <Surrogate S>
using SurrogateTag = std::integral_constant<Surrogate, S>;

// The neuron kernels take every surrogate; the PSN and attention kernels the first
// kNumSpikingJellySurrogates (their Python entry points check this first), which keeps their compile
// time from growing with the neuron zoo's surrogates.
constexpr int kNumSpikingJellySurrogates = 8;

template <int kCount = kNumSurrogates, typename F>
decltype(auto) dispatch_surrogate(Surrogate s, F&& f) {
  if (static_cast<int>(s) < 0 || static_cast<int>(s) >= kCount) {
    throw ArgumentError("surrogate id " + std::to_string(static_cast<int>(s)) + " is not supported here");
  }
  switch (s) {
    case Surrogate::sigmoid:
      return f(SurrogateTag<Surrogate::sigmoid>{});
    case Surrogate::atan:
      return f(SurrogateTag<Surrogate::atan>{});
    case Surrogate::rect:
      return f(SurrogateTag<Surrogate::rect>{});
    case Surrogate::triangle:
      return f(SurrogateTag<Surrogate::triangle>{});
    case Surrogate::piecewise_exp:
      return f(SurrogateTag<Surrogate::piecewise_exp>{});
    case Surrogate::erf:
      return f(SurrogateTag<Surrogate::erf>{});
    case Surrogate::super_spike:
      return f(SurrogateTag<Surrogate::super_spike>{});
    case Surrogate::soft_sign:
      return f(SurrogateTag<Surrogate::soft_sign>{});
    default:
      break;
  }
  if constexpr (kCount > kNumSpikingJellySurrogates) {
    switch (s) {
      case Surrogate::fast_sigmoid:
        return f(SurrogateTag<Surrogate::fast_sigmoid>{});
      case Surrogate::snn_triangular:
        return f(SurrogateTag<Surrogate::snn_triangular>{});
      case Surrogate::straight_through:
        return f(SurrogateTag<Surrogate::straight_through>{});
      case Surrogate::spike_rate_escape:
        return f(SurrogateTag<Surrogate::spike_rate_escape>{});
      case Surrogate::heaviside:
        return f(SurrogateTag<Surrogate::heaviside>{});
      case Surrogate::disabled:
        return f(SurrogateTag<Surrogate::disabled>{});
      default:
        break;
    }
  }
  throw ArgumentError("unknown surrogate id " + std::to_string(static_cast<int>(s)));
}

}  // namespace spikeforge
