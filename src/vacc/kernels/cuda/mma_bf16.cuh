// One warp-wide tensor-core product, D (16x8, f32) = A (16x16, bf16, row-major) B (16x8, bf16,
// column-major) + C (16x8, f32): PTX `mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32`
// (sm_80 and later). Every lane of the warp calls it with its fragments, laid out as the PTX ISA
// states ("Matrix Fragments for mma.m16n8k16 with floating point type"); with
// g = lane >> 2 (groupID) and t = lane % 4 (threadID_in_group):
//   A: a[0] = (row g,   cols 2t, 2t+1)    a[1] = (row g+8, cols 2t, 2t+1)
//      a[2] = (row g,   cols 2t+8, 2t+9)  a[3] = (row g+8, cols 2t+8, 2t+9)
//   B: b[0] = (rows 2t, 2t+1, col g)      b[1] = (rows 2t+8, 2t+9, col g)
//   C, D: c[0], c[1] = (row g, cols 2t, 2t+1)   c[2], c[3] = (row g+8, cols 2t, 2t+1)
// Each 32-bit register holds two bf16, the lower-numbered element in the low half.
//
// Without an sm_80 device target (the CPU simulator, where __CUDA_ARCH__ is undefined) the
// product is emulated with warp shuffles that gather exactly those fragments, so the simulator
// checks the kernels' fragment bookkeeping against the documented layout.
#pragma once

#include <cstdint>

#include "vacc/kernels/cuda/device_math.cuh"

namespace vacc::cuda {

// Two bf16 (rounded to nearest even, as to_bf16) in one register: lo in bits 0-15, hi in bits
// 16-31. On the GPU one `cvt.rn.bf16x2.f32` for the pair (to_bf16 takes about six integer
// instructions per element, which the attention's probabilities cannot afford); its only
// difference from to_bf16 is a NaN's payload (the canonical NaN).
__device__ __forceinline__ uint32_t pack_bf16x2(float lo, float hi) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  uint32_t r;
  asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));  // first source: high half
  return r;
#else
  return uint32_t(to_bf16(lo).bits) | (uint32_t(to_bf16(hi).bits) << 16);
#endif
}
__device__ __forceinline__ float bf16_lo(uint32_t r) { return __uint_as_float(r << 16); }
__device__ __forceinline__ float bf16_hi(uint32_t r) { return __uint_as_float(r & 0xffff0000u); }

// d = a b + c for the warp's fragments (d may alias c).
__device__ __forceinline__ void mma_m16n8k16_bf16(float d[4], const uint32_t a[4],
                                                  const uint32_t b[2], const float c[4]) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
      "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%10, %11, %12, %13};\n"
      : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]), "f"(c[0]), "f"(c[1]),
        "f"(c[2]), "f"(c[3]));
#else
  // Lane (g, t) produces rows g and g+8 at columns 2t and 2t+1. Row g of A is spread over the
  // four lanes 4g + s (s = 0..3: columns 2s, 2s+1 in a[0]/a[1], 2s+8, 2s+9 in a[2]/a[3]); column
  // n of B over the lanes 4n + s (rows 2s, 2s+1 in b[0], 2s+8, 2s+9 in b[1]).
  const unsigned full = 0xffffffffu;
  const int lane = int(threadIdx.x & 31), g = lane >> 2, t = lane & 3;
  float acc[4] = {0.0f, 0.0f, 0.0f, 0.0f};
  for (int s = 0; s < 4; ++s) {
    uint32_t ra[4], rb0[2], rb1[2];
    for (int i = 0; i < 4; ++i) ra[i] = __shfl_sync(full, a[i], 4 * g + s);
    for (int i = 0; i < 2; ++i) {
      rb0[i] = __shfl_sync(full, b[i], 4 * (2 * t) + s);      // column 2t
      rb1[i] = __shfl_sync(full, b[i], 4 * (2 * t + 1) + s);  // column 2t+1
    }
    // k = 2s, 2s+1 (register 0 of A, 0 of B) and 2s+8, 2s+9 (register 2 of A, 1 of B).
    for (int half = 0; half < 2; ++half) {
      const uint32_t top = ra[2 * half], bottom = ra[2 * half + 1];
      const uint32_t n0 = rb0[half], n1 = rb1[half];
      acc[0] += bf16_lo(top) * bf16_lo(n0) + bf16_hi(top) * bf16_hi(n0);
      acc[1] += bf16_lo(top) * bf16_lo(n1) + bf16_hi(top) * bf16_hi(n1);
      acc[2] += bf16_lo(bottom) * bf16_lo(n0) + bf16_hi(bottom) * bf16_hi(n0);
      acc[3] += bf16_lo(bottom) * bf16_lo(n1) + bf16_hi(bottom) * bf16_hi(n1);
    }
  }
  for (int i = 0; i < 4; ++i) d[i] = c[i] + acc[i];
#endif
}

// The row address lane `src` holds (the emulations of ldmatrix below).
__device__ __forceinline__ const uint16_t* row_of_lane(const uint16_t* row, int src) {
  const auto bits = static_cast<unsigned long long>(reinterpret_cast<uintptr_t>(row));
  return reinterpret_cast<const uint16_t*>(uintptr_t(__shfl_sync(0xffffffffu, bits, src)));
}

// ldmatrix: four 8x8 matrices of b16 from shared memory into the fragment layout above. Lanes
// 8i..8i+7 give the addresses of matrix i's rows 0..7 (16 bytes each, 16-byte aligned); lane
// (g, t) receives in r[i] matrix i's row g, columns 2t and 2t+1 -- or, `_trans`, its rows 2t and
// 2t+1 at column g, i.e. the transpose's fragment (PTX ISA, "Warp-level matrix load
// instruction: ldmatrix"). Without an sm_80 target, emulated with shuffles of the lanes' row
// addresses, so the simulator checks which lane gives which row.
__device__ __forceinline__ void ldmatrix_x4(uint32_t r[4], const uint16_t* row) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  const unsigned address = static_cast<unsigned>(__cvta_generic_to_shared(row));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(address));
#else
  const int lane = int(threadIdx.x & 31), g = lane >> 2, t = lane & 3;
  for (int i = 0; i < 4; ++i) {
    const uint16_t* src = row_of_lane(row, 8 * i + g);
    r[i] = uint32_t(src[2 * t]) | (uint32_t(src[2 * t + 1]) << 16);
  }
#endif
}
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t r[4], const uint16_t* row) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  const unsigned address = static_cast<unsigned>(__cvta_generic_to_shared(row));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(address));
#else
  const int lane = int(threadIdx.x & 31), g = lane >> 2, t = lane & 3;
  for (int i = 0; i < 4; ++i) {
    const uint16_t* even = row_of_lane(row, 8 * i + 2 * t);
    const uint16_t* odd = row_of_lane(row, 8 * i + 2 * t + 1);
    r[i] = uint32_t(even[g]) | (uint32_t(odd[g]) << 16);
  }
#endif
}

}  // namespace vacc::cuda
