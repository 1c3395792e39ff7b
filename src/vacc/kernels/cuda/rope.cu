// Rotary position embedding, rotate-half form (Hugging Face's Llama/Qwen2): with x = (x1, x2)
// the two halves of a head, y1 = x1 cos - x2 sin, y2 = x2 cos + x1 sin; inverse negates sin.
// Block i rotates token i's heads; each thread owns (head, j) pairs, four at a time where the
// rows allow. The backward after a biased product (rope_backward_with_bias) takes tiles of rows
// instead, so that a thread also sums its columns for the bias gradient.
#include <type_traits>

#include "vacc/core/error.h"
#include "vacc/kernels/cuda/cuda_check.h"
#include "vacc/kernels/cuda/cuda_kernels.h"
#include "vacc/kernels/cuda/device_math.cuh"

namespace vacc::cuda {
namespace {

constexpr int kThreads = 128;

// Whether token i's position is in the tables; if not, the first such token is reported in the
// device-error slot by the calling thread when `report` (its row is left as it is).
__device__ __forceinline__ bool position_in_table(int64_t pos, int64_t i, int64_t max_positions,
                                                  DeviceError* error, bool report) {
  if (pos >= 0 && pos < max_positions) return true;
  if (report && atomicCAS(&error->code, kNoError, kRopePositionOutOfRange) == kNoError) {
    error->a = pos;
    error->b = i;
    error->c = max_positions;
  }
  return false;
}

// x's element type holds y as rounded(y) (the copy takes what x holds, not y itself).
__device__ __forceinline__ float rounded(float*, float y) { return y; }
__device__ __forceinline__ float rounded(bf16*, float y) { return bf16_rounded(y); }

// Four: four pairs (j .. j + 3 of one head) a thread at a time, with 16-byte f32 and 8-byte
// bf16 loads and stores, where the rows, the tables and half are multiples of 4 elements; else
// one pair (one element of each half) at a time, which moved the H100's bf16 rows at about 60%
// of its bandwidth.
template <typename T, typename CopyT, bool Four>
__global__ void rope_kernel(T* x, int64_t row_width, const int32_t* positions, const float* cos,
                            const float* sin, int64_t max_positions, int64_t num_heads,
                            int64_t half, float sign, CopyT* copy, DeviceError* error) {
  const int64_t i = blockIdx.x;
  const int64_t pos = positions[i];
  if (!position_in_table(pos, i, max_positions, error, threadIdx.x == 0)) return;
  const float* c = cos + pos * half;
  const float* s = sin + pos * half;
  T* row = x + i * row_width;
  CopyT* copy_row = copy ? copy + i * row_width : nullptr;
  if constexpr (Four) {
    const int quads = int(half / 4), groups = int(num_heads) * quads;
    for (int p = threadIdx.x; p < groups; p += blockDim.x) {
      const int h = p / quads, j = 4 * (p % quads);
      const int64_t g1 = (int64_t(h) * 2 * half + j) / 4, g2 = g1 + half / 4;  // in fours
      const Vec4 a = load4(row, g1), b = load4(row, g2), cj = load4(c, j / 4),
                 sj4 = load4(s, j / 4);
      const Vec4 sj{sign * sj4.x, sign * sj4.y, sign * sj4.z, sign * sj4.w};
      const Vec4 y1{a.x * cj.x - b.x * sj.x, a.y * cj.y - b.y * sj.y, a.z * cj.z - b.z * sj.z,
                    a.w * cj.w - b.w * sj.w};
      const Vec4 y2{b.x * cj.x + a.x * sj.x, b.y * cj.y + a.y * sj.y, b.z * cj.z + a.z * sj.z,
                    b.w * cj.w + a.w * sj.w};
      store4(row, g1, y1);
      store4(row, g2, y2);
      if (copy_row) {  // the rounded value x now holds
        store4(copy_row, g1, Vec4{rounded(row, y1.x), rounded(row, y1.y), rounded(row, y1.z),
                                  rounded(row, y1.w)});
        store4(copy_row, g2, Vec4{rounded(row, y2.x), rounded(row, y2.y), rounded(row, y2.z),
                                  rounded(row, y2.w)});
      }
    }
    if (copy_row)
      for (int64_t q = 2 * int64_t(groups) + threadIdx.x; q < row_width / 4; q += blockDim.x)
        store4(copy_row, q, load4(row, q));
  } else {
    // 32-bit indices within the row (heads x half is small): a 64-bit division per element
    // costs many times a 32-bit one.
    const int pairs = int(num_heads * half), hf = int(half);
    for (int p = threadIdx.x; p < pairs; p += blockDim.x) {
      const int h = p / hf, j = p % hf;
      const int64_t i1 = int64_t(h) * 2 * half + j, i2 = i1 + half;
      const float a = load(row, i1), b = load(row, i2), sj = sign * s[j];
      store(row, i1, a * c[j] - b * sj);
      store(row, i2, b * c[j] + a * sj);
      if (copy_row) {  // the rounded value x now holds
        store(copy_row, i1, load(row, i1));
        store(copy_row, i2, load(row, i2));
      }
    }
    if (copy_row)
      for (int64_t j = 2 * int64_t(pairs) + threadIdx.x; j < row_width; j += blockDim.x)
        store(copy_row, j, load(row, j));
  }
}

constexpr int kTileRows = 16;  // rope_backward_with_bias: rows per block
int64_t row_tiles(int64_t n) { return (n + kTileRows - 1) / kTileRows; }

// RoPE's inverse rotation with the bias gradient's partial sums: a block takes kTileRows rows
// and each thread a group of columns (four where `Four`, as rope_kernel) down them, so that it
// can add the rotated values of its columns in registers; partials (one row of row_width per
// block) receive them. The rotated rows go to copy where given (dx is then only read), else back
// into dx. A row whose position is outside the tables is reported and left out.
template <typename CopyT, bool Four>
__global__ void rope_backward_bias_kernel(float* dx, int64_t n, int64_t row_width,
                                          const int32_t* positions, const float* cos,
                                          const float* sin, int64_t max_positions,
                                          int64_t num_heads, int64_t half, CopyT* copy,
                                          float* partials, DeviceError* error) {
  __shared__ int64_t tile_pos[kTileRows];
  const int64_t first = int64_t(blockIdx.x) * kTileRows;
  const int rows = int(n - first < kTileRows ? n - first : kTileRows);
  if (int(threadIdx.x) < rows) {
    const int64_t i = first + threadIdx.x, pos = positions[i];
    tile_pos[threadIdx.x] = position_in_table(pos, i, max_positions, error, true) ? pos : -1;
  }
  __syncthreads();
  float* part = partials + int64_t(blockIdx.x) * row_width;
  constexpr int kWidth = Four ? 4 : 1;  // columns per group
  const int per_half = int(half) / kWidth, groups = int(num_heads) * per_half;
  for (int p = threadIdx.x; p < groups; p += blockDim.x) {
    const int h = p / per_half, j = kWidth * (p % per_half);
    const int64_t i1 = int64_t(h) * 2 * half + j, i2 = i1 + half;  // the group's first columns
    float acc1[kWidth] = {}, acc2[kWidth] = {};
    for (int t = 0; t < rows; ++t) {
      const int64_t pos = tile_pos[t];
      if (pos < 0) continue;
      const int64_t at = (first + t) * row_width;
      const float *c = cos + pos * half + j, *s = sin + pos * half + j;
      float a[kWidth], b[kWidth], cj[kWidth], sj[kWidth], y1[kWidth], y2[kWidth];
      if constexpr (Four) {
        const Vec4 va = load4(dx + at + i1, 0), vb = load4(dx + at + i2, 0), vc = load4(c, 0),
                   vs = load4(s, 0);
        a[0] = va.x, a[1] = va.y, a[2] = va.z, a[3] = va.w;
        b[0] = vb.x, b[1] = vb.y, b[2] = vb.z, b[3] = vb.w;
        cj[0] = vc.x, cj[1] = vc.y, cj[2] = vc.z, cj[3] = vc.w;
        sj[0] = vs.x, sj[1] = vs.y, sj[2] = vs.z, sj[3] = vs.w;
      } else {
        a[0] = dx[at + i1], b[0] = dx[at + i2], cj[0] = c[0], sj[0] = s[0];
      }
#pragma unroll
      for (int k = 0; k < kWidth; ++k) {  // the inverse rotation: sin negated, as rope_kernel
        const float sk = -1.0f * sj[k];
        y1[k] = a[k] * cj[k] - b[k] * sk;
        y2[k] = b[k] * cj[k] + a[k] * sk;
        acc1[k] += y1[k];
        acc2[k] += y2[k];
      }
      if constexpr (Four) {
        const Vec4 v1{y1[0], y1[1], y1[2], y1[3]}, v2{y2[0], y2[1], y2[2], y2[3]};
        if (copy) {
          store4(copy + at + i1, 0, v1);
          store4(copy + at + i2, 0, v2);
        } else {
          store4(dx + at + i1, 0, v1);
          store4(dx + at + i2, 0, v2);
        }
      } else if (copy) {
        store(copy, at + i1, y1[0]);
        store(copy, at + i2, y2[0]);
      } else {
        dx[at + i1] = y1[0];
        dx[at + i2] = y2[0];
      }
    }
#pragma unroll
    for (int k = 0; k < kWidth; ++k) {
      part[i1 + k] = acc1[k];
      part[i2 + k] = acc2[k];
    }
  }
  // The columns after the rotated heads (v): copied where there is a copy, summed.
  const int64_t rotated = 2 * num_heads * half;
  for (int64_t q = rotated + kWidth * int64_t(threadIdx.x); q < row_width;
       q += kWidth * int64_t(blockDim.x)) {
    float acc[kWidth] = {};
    for (int t = 0; t < rows; ++t) {
      if (tile_pos[t] < 0) continue;
      const int64_t at = (first + t) * row_width + q;
      if constexpr (Four) {
        const Vec4 v = load4(dx + at, 0);
        if (copy) store4(copy + at, 0, v);
        acc[0] += v.x, acc[1] += v.y, acc[2] += v.z, acc[3] += v.w;
      } else {
        const float v = dx[at];
        if (copy) store(copy, at, v);
        acc[0] += v;
      }
    }
#pragma unroll
    for (int k = 0; k < kWidth; ++k) part[q + k] = acc[k];
  }
}

}  // namespace

int64_t rope_backward_with_bias_scratch_floats(int64_t n, int64_t row_width) {
  return block_partials_floats(row_tiles(n), row_width);
}

void rope_backward_with_bias(float* dx, int64_t n, int64_t row_width, const int32_t* positions,
                             const float* cos, const float* sin, int64_t max_positions,
                             int64_t num_heads, int64_t head_dim, void* copy, DType copy_dtype,
                             float* dbias, float* scratch, DeviceError* error,
                             cudaStream_t stream) {
  if (n == 0 || row_width == 0) return;
  const int64_t half = head_dim / 2, tiles = row_tiles(n);
  const bool four = half % 4 == 0 && row_width % 4 == 0 && vec4_aligned(dx, sizeof(float)) &&
                    vec4_aligned(cos, sizeof(float)) && vec4_aligned(sin, sizeof(float)) &&
                    (!copy || vec4_aligned(copy, dtype_size(copy_dtype)));
  auto launch = [&](auto* cs) {
    using CopyT = std::remove_pointer_t<decltype(cs)>;
    auto* const kernel = four ? rope_backward_bias_kernel<CopyT, true>
                              : rope_backward_bias_kernel<CopyT, false>;
    kernel<<<unsigned(tiles), kThreads, 0, stream>>>(dx, n, row_width, positions, cos, sin,
                                                     max_positions, num_heads, half, cs, scratch,
                                                     error);
  };
  if (!copy || copy_dtype == DType::F32)
    launch(static_cast<float*>(copy));
  else if (copy_dtype == DType::BF16)
    launch(static_cast<bf16*>(copy));
  else
    fail("rope_backward_with_bias: copy must be f32 or bf16, got ", dtype_name(copy_dtype));
  VACC_CUDA_CHECK_LAUNCH("rope_backward_bias_kernel");
  // dbias += the tiles' partial sums, added in a fixed order (deterministic).
  add_block_partials(scratch, tiles, row_width, dbias, stream);
}

void rope(void* x, DType x_dtype, int64_t n, int64_t row_width, const int32_t* positions,
          const float* cos, const float* sin, int64_t max_positions, int64_t num_heads,
          int64_t head_dim, bool inverse, void* copy, DType copy_dtype, DeviceError* error,
          cudaStream_t stream) {
  if (n == 0 || (num_heads == 0 && !copy)) return;
  const int64_t half = head_dim / 2;
  const bool vec = half % 4 == 0 && row_width % 4 == 0 &&
                   vec4_aligned(x, dtype_size(x_dtype)) && vec4_aligned(cos, sizeof(float)) &&
                   vec4_aligned(sin, sizeof(float)) &&
                   (!copy || vec4_aligned(copy, dtype_size(copy_dtype)));
  auto launch = [&](auto* xs, auto* cs) {
    using T = std::remove_pointer_t<decltype(xs)>;
    using CopyT = std::remove_pointer_t<decltype(cs)>;
    auto* const kernel = vec ? rope_kernel<T, CopyT, true> : rope_kernel<T, CopyT, false>;
    kernel<<<unsigned(n), kThreads, 0, stream>>>(xs, row_width, positions, cos, sin,
                                                 max_positions, num_heads, half,
                                                 inverse ? -1.0f : 1.0f, cs, error);
  };
  auto with_copy = [&](auto* xs) {
    if (!copy || copy_dtype == DType::F32)
      launch(xs, static_cast<float*>(copy));
    else if (copy_dtype == DType::BF16)
      launch(xs, static_cast<bf16*>(copy));
    else
      fail("rope: copy must be f32 or bf16, got ", dtype_name(copy_dtype));
  };
  if (x_dtype == DType::F32)
    with_copy(static_cast<float*>(x));
  else if (x_dtype == DType::BF16)
    with_copy(static_cast<bf16*>(x));
  else
    fail("rope: x must be f32 or bf16, got ", dtype_name(x_dtype));
  VACC_CUDA_CHECK_LAUNCH("rope_kernel");
}

}  // namespace vacc::cuda
