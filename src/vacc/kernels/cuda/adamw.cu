// AdamW (Loshchilov & Hutter): decoupled weight decay, bias-corrected moments, as PyTorch's
// torch.optim.AdamW computes it (and as kernels/cpu/adamw.cpp does, operation for operation).
#include <cmath>

#include "vacc/kernels/cuda/cuda_check.h"
#include "vacc/kernels/cuda/cuda_kernels.h"
#include "vacc/kernels/cuda/device_math.cuh"

namespace vacc::cuda {
namespace {

constexpr int kThreads = 256;

__global__ void adamw_kernel(float* param, const float* grad, float* m, float* v, int64_t n,
                             float beta1, float beta2, float eps, float grad_scale,
                             float step_size, float decay, float bc2_sqrt) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    const float g = grad[i] * grad_scale;
    const float mi = beta1 * m[i] + (1.0f - beta1) * g;
    const float vi = beta2 * v[i] + (1.0f - beta2) * g * g;
    m[i] = mi;
    v[i] = vi;
    const float p = param[i] * decay;
    param[i] = p - step_size * mi / (sqrtf(vi) / bc2_sqrt + eps);
  }
}

}  // namespace

void adamw_step(float* param, const float* grad, float* m, float* v, int64_t n, float lr,
                float beta1, float beta2, float eps, float weight_decay, int64_t step,
                float grad_scale, cudaStream_t stream) {
  if (n == 0) return;
  // The step's constants on the host, exactly as the CPU kernel computes them.
  const float bc1 = 1.0f - std::pow(beta1, float(step));
  const float bc2_sqrt = std::sqrt(1.0f - std::pow(beta2, float(step)));
  const float step_size = lr / bc1;
  const float decay = 1.0f - lr * weight_decay;
  adamw_kernel<<<grid_for(n, kThreads), kThreads, 0, stream>>>(
      param, grad, m, v, n, beta1, beta2, eps, grad_scale, step_size, decay, bc2_sqrt);
  VACC_CUDA_CHECK_LAUNCH("adamw_kernel");
}

}  // namespace vacc::cuda
