// RMSNorm with f32 statistics: y = x * rstd * w, rstd = 1/sqrt(mean(x^2) + eps). One block per
// row; the weight gradient is a column reduction in a fixed order (deterministic).
#include "vacc/core/error.h"
#include "vacc/kernels/cuda/cuda_check.h"
#include "vacc/kernels/cuda/cuda_kernels.h"
#include "vacc/kernels/cuda/device_math.cuh"

namespace vacc::cuda {
namespace {

constexpr int kThreads = 256;

template <typename OutT>
__global__ void rmsnorm_forward_kernel(const float* x, const float* weight, float eps, int64_t c,
                                       OutT* out, float* rstd) {
  __shared__ float scratch[32];
  const int64_t i = blockIdx.x;
  const float* xi = x + i * c;
  float ss = 0.0f;
  for (int64_t j = threadIdx.x; j < c; j += blockDim.x) ss += xi[j] * xi[j];
  ss = block_sum(ss, scratch);
  const float r = 1.0f / sqrtf(ss / float(c) + eps);
  if (threadIdx.x == 0) rstd[i] = r;
  for (int64_t j = threadIdx.x; j < c; j += blockDim.x) store(out, i * c + j, xi[j] * r * weight[j]);
}

// dx_j = r * (w_j g_j - x_j * r^2 * mean_k(w_k g_k x_k)). Reads all of the row's dout before
// any thread writes dx, so dx may be dout itself.
__global__ void rmsnorm_backward_dx_kernel(const float* dout, const float* x, const float* weight,
                                           const float* rstd, int64_t c, float* dx,
                                           bool accumulate_dx) {
  __shared__ float scratch[32];
  const int64_t i = blockIdx.x;
  const float* xi = x + i * c;
  const float* gi = dout + i * c;
  float* dxi = dx + i * c;
  const float r = rstd[i];
  float dot = 0.0f;
  for (int64_t j = threadIdx.x; j < c; j += blockDim.x) dot += weight[j] * gi[j] * xi[j];
  dot = block_sum(dot, scratch);  // synchronises: every read of the row's dout is done
  const float k = dot * r * r / float(c);
  for (int64_t j = threadIdx.x; j < c; j += blockDim.x) {
    const float g = r * (weight[j] * gi[j] - xi[j] * k);
    dxi[j] = accumulate_dx ? dxi[j] + g : g;
  }
}

}  // namespace

void rmsnorm_forward(const float* x, const float* weight, float eps, int64_t n, int64_t c,
                     void* out, DType out_dtype, float* rstd, cudaStream_t stream) {
  if (n == 0) return;
  if (out_dtype == DType::F32)
    rmsnorm_forward_kernel<<<unsigned(n), kThreads, 0, stream>>>(x, weight, eps, c,
                                                                 static_cast<float*>(out), rstd);
  else if (out_dtype == DType::BF16)
    rmsnorm_forward_kernel<<<unsigned(n), kThreads, 0, stream>>>(x, weight, eps, c,
                                                                 static_cast<bf16*>(out), rstd);
  else
    fail("rmsnorm_forward: out must be f32 or bf16, got ", dtype_name(out_dtype));
  VACC_CUDA_CHECK_LAUNCH("rmsnorm_forward_kernel");
}

void rmsnorm_backward(const float* dout, const float* x, const float* weight, const float* rstd,
                      int64_t n, int64_t c, float* dx, bool accumulate_dx, float* dweight,
                      float* partials, cudaStream_t stream) {
  if (n == 0 || c == 0) return;
  // dweight_j += sum_i dout_ij x_ij rstd_i first: it reads dout, which dx may overwrite.
  column_sums(dout, x, rstd, n, c, partials, dweight, stream);
  rmsnorm_backward_dx_kernel<<<unsigned(n), kThreads, 0, stream>>>(dout, x, weight, rstd, c, dx,
                                                                   accumulate_dx);
  VACC_CUDA_CHECK_LAUNCH("rmsnorm_backward_dx_kernel");
}

}  // namespace vacc::cuda
