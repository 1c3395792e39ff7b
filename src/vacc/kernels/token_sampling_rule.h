// The rule of Backend::sample_rows, shared by its CPU and CUDA kernels so that both draw the
// same token wherever their weights agree (they may differ by an ulp of exp):
//  1. m = the row's largest logit (none finite: -1, no draw).
//  2. w_i = exp((x_i - m) / T) in float (0 below exp(-87) and for a NaN): the softmax's
//     numerators, the most likely token's 1.
//  3. Each weight as an integer mass q_i = floor(w_i * 2^s), s = mass_shift(cols): integer
//     sums are exact in any order, so a GPU's reduction order cannot change a draw, and a whole
//     row's sum fits 64 bits. A weight below 2^-s of the most likely token's (2.8e-14 for
//     Qwen's 151936 tokens) has no mass and is never drawn.
//  4. The nucleus: tokens by falling weight (ties by index) until their mass reaches
//     nucleus_target(total, top_p); every token for top_p >= 1.
//  5. r = draw_point(bits, M) for the row's 64 random bits and the nucleus's mass M: the token
//     is the first of the nucleus, in index order, whose running mass exceeds r.
// Steps 4 and 5 find the boundary weight by a radix select on the weights' bits (positive
// floats order as their bit patterns do) and never sort.
#pragma once

#include <cmath>
#include <cstdint>

#if defined(__CUDACC__)
#define VACC_HOST_DEVICE __host__ __device__
#else
#define VACC_HOST_DEVICE
#endif

namespace vacc::sampling {

// An integer mass (unsigned long long: what CUDA's 64-bit atomics take).
using Mass = unsigned long long;

// The exponent s of step 3: 63 - bit_width(cols), so that cols * 2^s < 2^63.
VACC_HOST_DEVICE inline int mass_shift(int64_t cols) {
  int width = 0;
  for (uint64_t c = uint64_t(cols); c != 0; c >>= 1) ++width;
  return 63 - width;
}

// 2^s, s = mass_shift(cols): what mass_of scales a weight by.
VACC_HOST_DEVICE inline double mass_scale(int64_t cols) {
  return double(uint64_t(1) << mass_shift(cols));
}

// The integer mass of a weight in [0, 1] (exact: scaling a float by 2^s is exact in double).
VACC_HOST_DEVICE inline Mass mass_of(float weight, double scale) {
  return Mass(double(weight) * scale);
}

// The nucleus's least mass: ceil(top_p * total), at least 1 and at most the total.
VACC_HOST_DEVICE inline Mass nucleus_target(Mass total, float top_p) {
  if (!(top_p < 1.0f)) return total;
  const Mass target = Mass(ceil(double(top_p) * double(total)));
  return target < 1 ? 1 : (target > total ? total : target);
}

// Step 4's radix select, one 8-bit digit of the boundary weight's bits: hist[d] holds the
// mass of the tokens still in question whose digit is d, `above` the mass of those heavier
// than all of them. Returns the digit where the running mass from the heaviest reaches
// target, and adds the heavier digits' mass to `above`.
VACC_HOST_DEVICE inline int choose_digit(const Mass* hist, Mass& above, Mass target) {
  for (int d = 255; d > 0; --d) {
    if (above + hist[d] >= target) return d;
    above += hist[d];
  }
  return 0;
}

// floor(bits * mass / 2^64): a uniform point in [0, mass) from 64 random bits.
VACC_HOST_DEVICE inline Mass draw_point(Mass bits, Mass mass) {
#if defined(__CUDA_ARCH__)
  return __umul64hi(bits, mass);
#else
  return Mass((unsigned __int128)bits * mass >> 64);
#endif
}

// Step 2's exponent for logit x, given the largest m and 1 / T (the weight is 0 below -87).
VACC_HOST_DEVICE inline float exp_argument(float x, float max_logit, float inverse_temperature) {
  return (x - max_logit) * inverse_temperature;
}
inline constexpr float kLowestExponent = -87.0f;

// Whether token i (weight bits `key`) is in the nucleus bounded by the weight bits `boundary`,
// whose tied tokens count up to index last_tie.
VACC_HOST_DEVICE inline bool in_nucleus(uint32_t key, int64_t i, uint32_t boundary,
                                        int64_t last_tie) {
  return key > boundary || (key == boundary && i <= last_tie);
}

}  // namespace vacc::sampling
