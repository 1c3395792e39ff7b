// RMSNorm with f32 statistics: y = x * rstd * w, rstd = 1/sqrt(mean(x^2) + eps). One warp per
// row (eight rows per block): a row of a few thousand elements is too little work for a block,
// whose barriers would then cost more than its loads. A lane reads its elements four at a time
// where the rows allow (`vec`); the second pass reads them again, from the L1/L2 caches. The
// weight gradient is a column reduction in a fixed order (deterministic).
#include "vacc/core/error.h"
#include "vacc/kernels/cuda/cuda_check.h"
#include "vacc/kernels/cuda/cuda_kernels.h"
#include "vacc/kernels/cuda/device_math.cuh"

namespace vacc::cuda {
namespace {

constexpr int kRowsPerBlock = 8;
constexpr int kThreads = 32 * kRowsPerBlock;

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
// in CopyT where dx_copy is given. A lane reads each of its elements of dout and residual before
// it writes the same element of dx, so either may be dx itself.
template <typename CopyT>
__global__ void rmsnorm_backward_dx_kernel(const float* dout, const float* x, const float* weight,
                                           const float* rstd, int64_t n, int64_t c, bool vec,
                                           const float* residual, float* dx, CopyT* dx_copy) {
  const int64_t i = int64_t(blockIdx.x) * kRowsPerBlock + (threadIdx.x >> 5);
  const int lane = threadIdx.x & 31;
  if (i >= n) return;  // the whole warp
  const float* xi = x + i * c;
  const float* gi = dout + i * c;
  const float* ri = residual ? residual + i * c : nullptr;
  float* dxi = dx + i * c;
  CopyT* ci = dx_copy ? dx_copy + i * c : nullptr;
  const float r = rstd[i];
  float dot = 0.0f;
  if (vec) {
    for (int64_t k = lane; k < c / 4; k += 32) {
      const Vec4 w = load4(weight, k), g = load4(gi, k), v = load4(xi, k);
      dot += w.x * g.x * v.x + w.y * g.y * v.y + w.z * g.z * v.z + w.w * g.w * v.w;
    }
  } else {
    for (int64_t j = lane; j < c; j += 32) dot += weight[j] * gi[j] * xi[j];
  }
  dot = warp_sum(dot);
  const float k = dot * r * r / float(c);
  if (vec) {
    for (int64_t q = lane; q < c / 4; q += 32) {
      const Vec4 w = load4(weight, q), g = load4(gi, q), v = load4(xi, q);
      Vec4 d{r * (w.x * g.x - v.x * k), r * (w.y * g.y - v.y * k), r * (w.z * g.z - v.z * k),
             r * (w.w * g.w - v.w * k)};
      if (ri) {
        const Vec4 old = load4(ri, q);
        d = Vec4{old.x + d.x, old.y + d.y, old.z + d.z, old.w + d.w};
      }
      store4(dxi, q, d);
      if (ci) store4(ci, q, d);
    }
  } else {
    for (int64_t j = lane; j < c; j += 32) {
      const float d = (ri ? ri[j] : 0.0f) + r * (weight[j] * gi[j] - xi[j] * k);
      dxi[j] = d;
      if (ci) store(ci, j, d);
    }
  }
}

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

void rmsnorm_backward(const float* dout, const float* x, const float* weight, const float* rstd,
                      int64_t n, int64_t c, const float* residual, float* dx, void* dx_copy,
                      DType copy_dtype, float* dweight, float* partials, cudaStream_t stream) {
  if (n == 0 || c == 0) return;
  // dweight_j += sum_i dout_ij x_ij rstd_i first: it reads dout, which dx may overwrite.
  column_sums(dout, x, rstd, n, c, partials, dweight, stream);
  const bool vec = c % 4 == 0 && vec4_aligned(dout, sizeof(float)) &&
                   vec4_aligned(x, sizeof(float)) && vec4_aligned(weight, sizeof(float)) &&
                   vec4_aligned(dx, sizeof(float)) && vec4_aligned(residual, sizeof(float)) &&
                   vec4_aligned(dx_copy, dtype_size(copy_dtype));
  auto launch = [&](auto* copy) {
    rmsnorm_backward_dx_kernel<<<row_blocks(n), kThreads, 0, stream>>>(
        dout, x, weight, rstd, n, c, vec, residual, dx, copy);
  };
  if (!dx_copy || copy_dtype == DType::F32)
    launch(static_cast<float*>(dx_copy));
  else if (copy_dtype == DType::BF16)
    launch(static_cast<bf16*>(dx_copy));
  else
    fail("rmsnorm_backward: dx_copy must be f32 or bf16, got ", dtype_name(copy_dtype));
  VACC_CUDA_CHECK_LAUNCH("rmsnorm_backward_dx_kernel");
}

}  // namespace vacc::cuda
