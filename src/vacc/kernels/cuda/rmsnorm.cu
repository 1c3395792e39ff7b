// RMSNorm with f32 statistics: y = x * rstd * w, rstd = 1/sqrt(mean(x^2) + eps). One warp per
// row (eight rows per block): a row of a few thousand elements is too little work for a block,
// whose barriers would then cost more than its loads. A lane reads its elements four at a time
// where the rows allow (`vec`); the second pass reads them again, from the L1/L2 caches. The
// backward writes dx and the weight gradient's partial sums in one pass over tiles of rows; the
// partials are then added in a fixed order (deterministic).
#include <type_traits>

#include "vacc/core/error.h"
#include "vacc/kernels/cuda/cuda_check.h"
#include "vacc/kernels/cuda/cuda_kernels.h"
#include "vacc/kernels/cuda/device_math.cuh"

namespace vacc::cuda {
namespace {

constexpr int kRowsPerBlock = 8;  // the forward's, a warp each
constexpr int kThreads = 32 * kRowsPerBlock;
constexpr int kTileRows = 16;  // the backward's

template <typename OutT>
__global__ void rmsnorm_forward_kernel(const float* x, const float* weight, float eps, int64_t n,
                                       int64_t c, bool vec, OutT* out, float* rstd) {
  const int64_t i = int64_t(blockIdx.x) * kRowsPerBlock + (threadIdx.x >> 5);
  const int lane = threadIdx.x & 31;
  if (i >= n) return;  // the whole warp
  const float* xi = x + i * c;
  OutT* oi = out + i * c;
  float ss = 0.0f;
  if (vec) {
    for (int64_t k = lane; k < c / 4; k += 32) {
      const Vec4 v = load4(xi, k);
      ss += v.x * v.x + v.y * v.y + v.z * v.z + v.w * v.w;
    }
  } else {
    for (int64_t j = lane; j < c; j += 32) ss += xi[j] * xi[j];
  }
  ss = warp_sum(ss);
  const float r = 1.0f / sqrtf(ss / float(c) + eps);
  if (lane == 0) rstd[i] = r;
  if (vec) {
    for (int64_t k = lane; k < c / 4; k += 32) {
      const Vec4 v = load4(xi, k), w = load4(weight, k);
      store4(oi, k, Vec4{v.x * r * w.x, v.y * r * w.y, v.z * r * w.z, v.w * r * w.w});
    }
  } else {
    for (int64_t j = lane; j < c; j += 32) store(oi, j, xi[j] * r * weight[j]);
  }
}

// dx_j = residual_j + r * (w_j g_j - x_j * r^2 * mean_k(w_k g_k x_k)), and dx_copy_j the same
// in CopyT where dx_copy is given; partials (one row of c per block) the block's share of the
// weight gradient, sum_i g_ij x_ij r_i over its rows in order.
//
// A block takes kTileRows rows. First each warp takes whole rows for their dot product (a
// row's sum is one warp's, as in the forward). Then each thread takes a group of columns
// (four where `Vec`) down the tile's rows: it writes dx and adds the weight gradient's terms
// of those columns in registers. So dout and x are read from memory once for both gradients
// (a separate column reduction read them again: a third more traffic). The tile is read twice,
// the second time from the caches. A thread reads each element of dout and residual before it
// writes the same element of dx, and the dot products of the tile's rows are done before any
// dx of the tile is written, so either may be dx itself.
template <typename CopyT, bool Vec>
__global__ void rmsnorm_backward_kernel(const float* dout, const float* x, const float* weight,
                                        const float* rstd, int64_t n, int64_t c,
                                        const float* residual, float* dx, CopyT* dx_copy,
                                        float* partials) {
  __shared__ float row_r[kTileRows], row_k[kTileRows];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int64_t first = int64_t(blockIdx.x) * kTileRows;
  const int rows = int(n - first < kTileRows ? n - first : kTileRows);
  for (int t = warp; t < rows; t += kThreads / 32) {
    const int64_t i = first + t;
    const float *xi = x + i * c, *gi = dout + i * c;
    float dot = 0.0f;
    if (Vec) {
      for (int64_t q = lane; q < c / 4; q += 32) {
        const Vec4 w = load4(weight, q), g = load4(gi, q), v = load4(xi, q);
        dot += w.x * g.x * v.x + w.y * g.y * v.y + w.z * g.z * v.z + w.w * g.w * v.w;
      }
    } else {
      for (int64_t j = lane; j < c; j += 32) dot += weight[j] * gi[j] * xi[j];
    }
    dot = warp_sum(dot);
    if (lane == 0) {
      const float r = rstd[i];
      row_r[t] = r;
      row_k[t] = dot * r * r / float(c);
    }
  }
  __syncthreads();
  float* part = partials + int64_t(blockIdx.x) * c;
  if (Vec) {
    for (int64_t q = threadIdx.x; q < c / 4; q += kThreads) {
      const Vec4 w = load4(weight, q);
      Vec4 acc{0.0f, 0.0f, 0.0f, 0.0f};
      for (int t = 0; t < rows; ++t) {
        const int64_t row = (first + t) * (c / 4);
        const float r = row_r[t], k = row_k[t];
        const Vec4 g = load4(dout, row + q), v = load4(x, row + q);
        Vec4 d{r * (w.x * g.x - v.x * k), r * (w.y * g.y - v.y * k), r * (w.z * g.z - v.z * k),
               r * (w.w * g.w - v.w * k)};
        if (residual) {
          const Vec4 old = load4(residual, row + q);
          d = Vec4{old.x + d.x, old.y + d.y, old.z + d.z, old.w + d.w};
        }
        store4(dx, row + q, d);
        if (dx_copy) store4(dx_copy, row + q, d);
        acc = Vec4{acc.x + g.x * v.x * r, acc.y + g.y * v.y * r, acc.z + g.z * v.z * r,
                   acc.w + g.w * v.w * r};
      }
      store4(part, q, acc);
    }
  } else {
    for (int64_t j = threadIdx.x; j < c; j += kThreads) {
      float acc = 0.0f;
      for (int t = 0; t < rows; ++t) {
        const int64_t e = (first + t) * c + j;
        const float r = row_r[t], g = dout[e], v = x[e];
        const float d = (residual ? residual[e] : 0.0f) + r * (weight[j] * g - v * row_k[t]);
        dx[e] = d;
        if (dx_copy) store(dx_copy, e, d);
        acc += g * v * r;
      }
      part[j] = acc;
    }
  }
}

int64_t row_tiles(int64_t n) { return (n + kTileRows - 1) / kTileRows; }

unsigned row_blocks(int64_t n) { return unsigned((n + kRowsPerBlock - 1) / kRowsPerBlock); }

}  // namespace

void rmsnorm_forward(const float* x, const float* weight, float eps, int64_t n, int64_t c,
                     void* out, DType out_dtype, float* rstd, cudaStream_t stream) {
  if (n == 0) return;
  const bool vec = c % 4 == 0 && vec4_aligned(x, sizeof(float)) &&
                   vec4_aligned(weight, sizeof(float)) && vec4_aligned(out, dtype_size(out_dtype));
  if (out_dtype == DType::F32)
    rmsnorm_forward_kernel<<<row_blocks(n), kThreads, 0, stream>>>(
        x, weight, eps, n, c, vec, static_cast<float*>(out), rstd);
  else if (out_dtype == DType::BF16)
    rmsnorm_forward_kernel<<<row_blocks(n), kThreads, 0, stream>>>(
        x, weight, eps, n, c, vec, static_cast<bf16*>(out), rstd);
  else
    fail("rmsnorm_forward: out must be f32 or bf16, got ", dtype_name(out_dtype));
  VACC_CUDA_CHECK_LAUNCH("rmsnorm_forward_kernel");
}

int64_t rmsnorm_backward_scratch_floats(int64_t n, int64_t c) {
  return block_partials_floats(row_tiles(n), c);
}

void rmsnorm_backward(const float* dout, const float* x, const float* weight, const float* rstd,
                      int64_t n, int64_t c, const float* residual, float* dx, void* dx_copy,
                      DType copy_dtype, float* dweight, float* scratch, cudaStream_t stream) {
  if (n == 0 || c == 0) return;
  const bool vec = c % 4 == 0 && vec4_aligned(dout, sizeof(float)) &&
                   vec4_aligned(x, sizeof(float)) && vec4_aligned(weight, sizeof(float)) &&
                   vec4_aligned(dx, sizeof(float)) && vec4_aligned(residual, sizeof(float)) &&
                   vec4_aligned(dx_copy, dtype_size(copy_dtype)) &&
                   vec4_aligned(scratch, sizeof(float));
  const int64_t tiles = row_tiles(n);
  auto launch = [&](auto* copy) {
    using CopyT = std::remove_pointer_t<decltype(copy)>;
    auto* const kernel =
        vec ? rmsnorm_backward_kernel<CopyT, true> : rmsnorm_backward_kernel<CopyT, false>;
    kernel<<<unsigned(tiles), kThreads, 0, stream>>>(dout, x, weight, rstd, n, c, residual, dx,
                                                     copy, scratch);
  };
  if (!dx_copy || copy_dtype == DType::F32)
    launch(static_cast<float*>(dx_copy));
  else if (copy_dtype == DType::BF16)
    launch(static_cast<bf16*>(dx_copy));
  else
    fail("rmsnorm_backward: dx_copy must be f32 or bf16, got ", dtype_name(copy_dtype));
  VACC_CUDA_CHECK_LAUNCH("rmsnorm_backward_kernel");
  // dweight += the tiles' partial sums, added in a fixed order (deterministic).
  add_block_partials(scratch, tiles, c, dweight, stream);
}

}  // namespace vacc::cuda
