// Device-side helpers shared by the .cu files: f32/bf16 loads and stores (bf16 rounding is
// bit-identical to vacc::float_to_bf16 on the host), warp and block reductions, launch sizes.
#pragma once

#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>

#include "vacc/core/dtype.h"

namespace vacc::cuda {

constexpr float kNegInf = -INFINITY;
constexpr float kLog2e = 1.4426950408889634f;

// 2^x by the special-function unit in one instruction (`ex2.approx.ftz`: relative error about
// 2^-22, results below 2^-126 flushed to zero, 2^-inf = 0), where expf takes several: the
// attention kernels' softmax, whose probabilities are rounded to bf16 afterwards anyway.
// exp(x) = fast_exp2(x * kLog2e), with the multiplication folded into an FMA where it can be.
__device__ __forceinline__ float fast_exp2(float x) {
#ifdef __CUDA_ARCH__
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
#else
  return exp2f(x);
#endif
}

__device__ __forceinline__ float load(const float* p, int64_t i) { return p[i]; }
__device__ __forceinline__ float load(const bf16* p, int64_t i) {
  return __uint_as_float(uint32_t(p[i].bits) << 16);
}
__device__ __forceinline__ bf16 to_bf16(float f) {
  uint32_t u = __float_as_uint(f);
  if ((u & 0x7f800000u) == 0x7f800000u && (u & 0x7fffffu)) return bf16{uint16_t((u >> 16) | 0x40u)};
  u += 0x7fffu + ((u >> 16) & 1u);
  return bf16{uint16_t(u >> 16)};
}
// f rounded to bf16 and widened back: the value a bf16 matrix operand made from f holds.
__device__ __forceinline__ float bf16_rounded(float f) {
  return __uint_as_float(uint32_t(to_bf16(f).bits) << 16);
}
__device__ __forceinline__ void store(float* p, int64_t i, float v) { p[i] = v; }
__device__ __forceinline__ void store(bf16* p, int64_t i, float v) { p[i] = to_bf16(v); }

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}
__device__ __forceinline__ double warp_sum(double v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ __forceinline__ unsigned long long warp_sum(unsigned long long v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
// Each lane's sum of the values of lanes 0..lane (every lane of the warp calls it).
template <typename T>
__device__ __forceinline__ T warp_inclusive_scan(T v) {
  const int lane = threadIdx.x & 31;
#pragma unroll
  for (int o = 1; o < 32; o <<= 1) {
    const T from = __shfl_up_sync(0xffffffffu, v, o);
    if (lane >= o) v += from;
  }
  return v;
}

// Sum / max over the whole block (blockDim.x a multiple of 32, at most 1024), returned to every
// thread. Every thread of the block must call it (it synchronises twice); `scratch` is shared
// memory of 32 elements that the caller does not use across the call.
template <typename T>
__device__ __forceinline__ T block_sum(T v, T* scratch) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  v = warp_sum(v);
  __syncthreads();  // scratch may still be read by a previous reduction
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  T total = T(0);
  for (int w = 0; w < warps; ++w) total += scratch[w];  // same order in every thread
  return total;
}
// Each thread's sum of the values of threads 0..threadIdx.x, in thread order, and in `total` the
// whole block's (blockDim.x a multiple of 32). Every thread of the block must call it; it
// synchronises once, after writing `warp_totals` (shared memory of blockDim.x / 32 elements),
// which the caller must not write again before a __syncthreads.
template <typename T>
__device__ __forceinline__ T block_inclusive_scan(T v, T* warp_totals, T& total) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  v = warp_inclusive_scan(v);
  if (lane == 31) warp_totals[warp] = v;
  __syncthreads();
  T before = T(0);
  total = T(0);
  for (int w = 0; w < warps; ++w) {
    before += w < warp ? warp_totals[w] : T(0);
    total += warp_totals[w];
  }
  return before + v;
}
__device__ __forceinline__ float block_max(float v, float* scratch) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  v = warp_max(v);
  __syncthreads();
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  float m = kNegInf;
  for (int w = 0; w < warps; ++w) m = fmaxf(m, scratch[w]);
  return m;
}

// Four consecutive elements, for the vectorised (16-byte f32, 8-byte bf16) paths of the
// element-wise kernels: element k of group i is element 4i + k, converted exactly as load/store.
struct Vec4 {
  float x, y, z, w;
};
__device__ __forceinline__ Vec4 load4(const float* p, int64_t i) {
  const float4 q = reinterpret_cast<const float4*>(p)[i];
  return {q.x, q.y, q.z, q.w};
}
__device__ __forceinline__ Vec4 load4(const bf16* p, int64_t i) {
  const uint2 q = reinterpret_cast<const uint2*>(p)[i];
  return {__uint_as_float(q.x << 16), __uint_as_float(q.x & 0xffff0000u),
          __uint_as_float(q.y << 16), __uint_as_float(q.y & 0xffff0000u)};
}
__device__ __forceinline__ void store4(float* p, int64_t i, Vec4 v) {
  reinterpret_cast<float4*>(p)[i] = float4{v.x, v.y, v.z, v.w};
}
__device__ __forceinline__ void store4(bf16* p, int64_t i, Vec4 v) {
  reinterpret_cast<uint2*>(p)[i] =
      uint2{uint32_t(to_bf16(v.x).bits) | uint32_t(to_bf16(v.y).bits) << 16,
            uint32_t(to_bf16(v.z).bits) | uint32_t(to_bf16(v.w).bits) << 16};
}
// Whether a host pointer to elements of `elem_size` bytes can be read four at a time.
inline bool vec4_aligned(const void* p, size_t elem_size) {
  return reinterpret_cast<uintptr_t>(p) % (4 * elem_size) == 0;
}

inline unsigned grid_for(int64_t n, int threads, int64_t max_blocks = int64_t(1) << 20) {
  int64_t blocks = (n + threads - 1) / threads;
  if (blocks < 1) blocks = 1;
  return unsigned(blocks < max_blocks ? blocks : max_blocks);
}

}  // namespace vacc::cuda
