// A vectorisable exp for element-wise kernels (softmax, SiLU): plain arithmetic that gcc turns
// into SIMD loops, unlike the libm call.
#pragma once

#include <cstdint>
#include <cstring>

namespace vacc::cpu {

inline uint32_t float_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}
inline float bits_float(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// exp(x), about 1 ulp, for x clamped to [-87, 88] (exp(-87) ~ 1.6e-38 is zero to every sum
// it joins; exp(88) ~ 1.65e38 is the largest power that stays finite). Cody-Waite range
// reduction x = n ln2 + r, |r| <= ln2/2, and the Cephes degree-6 polynomial.
inline float fast_exp(float x) {
  x = x < -87.0f ? -87.0f : (x > 88.0f ? 88.0f : x);
  // Round x / ln2 to the nearest integer with the 1.5 * 2^23 trick: the float t then holds n in
  // its low mantissa bits (t's bit pattern is 0x4B400000 + n).
  const float shifter = 12582912.0f;
  float t = x * 1.44269504088896341f + shifter;
  float n = t - shifter;
  float r = x - n * 0.693359375f;  // ln2 high part (exact in float)
  r = r - n * -2.12194440e-4f;     // ln2 low part
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  // 2^n as bits: (n + 127) << 23, n in [-126, 127].
  uint32_t scale = (float_bits(t) - 0x4B400000u + 127u) << 23;
  return p * bits_float(scale);
}

// 1 / (1 + exp(-x)).
inline float fast_sigmoid(float x) { return 1.0f / (1.0f + fast_exp(-x)); }

}  // namespace vacc::cpu
