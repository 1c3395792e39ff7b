// AdamW (Loshchilov & Hutter): decoupled weight decay, bias-corrected moments, as PyTorch's
// torch.optim.AdamW computes it (and as kernels/cpu/adamw.cpp does, operation for operation).
#include <cmath>
#include <type_traits>

#include "vacc/core/error.h"
#include "vacc/kernels/cuda/cuda_check.h"
#include "vacc/kernels/cuda/cuda_kernels.h"
#include "vacc/kernels/cuda/device_math.cuh"

namespace vacc::cuda {
namespace {

constexpr int kThreads = 256;

// The step's constants, computed on the host exactly as the CPU kernel computes them.
struct StepConstants {
  float beta1, beta2, eps, grad_scale, step_size, decay, bc2_sqrt;
};
StepConstants step_constants(float lr, float beta1, float beta2, float eps, float weight_decay,
                             int64_t step, float grad_scale) {
  const float bc1 = 1.0f - std::pow(beta1, float(step));
  const float bc2_sqrt = std::sqrt(1.0f - std::pow(beta2, float(step)));
  return {beta1, beta2, eps, grad_scale, lr / bc1, 1.0f - lr * weight_decay, bc2_sqrt};
}

// One element, operation for operation as kernels/cpu/adamw.cpp; decay is 1 - lr * wd (or 1).
__device__ __forceinline__ void update(float& param, float grad, float& m, float& v,
                                       const StepConstants& k, float decay) {
  const float g = grad * k.grad_scale;
  const float mi = k.beta1 * m + (1.0f - k.beta1) * g;
  const float vi = k.beta2 * v + (1.0f - k.beta2) * g * g;
  m = mi;
  v = vi;
  const float p = param * decay;
  param = p - k.step_size * mi / (sqrtf(vi) / k.bc2_sqrt + k.eps);
}

__global__ void adamw_kernel(float* param, const float* grad, float* m, float* v, int64_t n,
                             StepConstants k) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x)
    update(param[i], grad[i], m[i], v[i], k, k.decay);
}

// One block per work item (a piece of one segment). Vec: every item's start and count are
// multiples of 4 and the buffers 16-byte aligned (8-byte for a bf16 copy), so the item is read
// and written as float4. copy (null: none) receives the updated parameters in CopyT.
template <bool Vec, typename CopyT>
__global__ void adamw_items_kernel(float* param, const float* grad, float* m, float* v,
                                   const AdamWItem* items, StepConstants k, CopyT* copy) {
  const AdamWItem it = items[blockIdx.x];
  const float decay = it.decay ? k.decay : 1.0f;
  if (Vec) {
    float4* p4 = reinterpret_cast<float4*>(param + it.start);
    const float4* g4 = reinterpret_cast<const float4*>(grad + it.start);
    float4* m4 = reinterpret_cast<float4*>(m + it.start);
    float4* v4 = reinterpret_cast<float4*>(v + it.start);
    for (int64_t j = threadIdx.x; j < it.count / 4; j += blockDim.x) {
      float4 pj = p4[j], mj = m4[j], vj = v4[j];
      const float4 gj = g4[j];
      update(pj.x, gj.x, mj.x, vj.x, k, decay);
      update(pj.y, gj.y, mj.y, vj.y, k, decay);
      update(pj.z, gj.z, mj.z, vj.z, k, decay);
      update(pj.w, gj.w, mj.w, vj.w, k, decay);
      p4[j] = pj;
      m4[j] = mj;
      v4[j] = vj;
      if (copy) store4(copy + it.start, j, Vec4{pj.x, pj.y, pj.z, pj.w});
    }
  } else {
    for (int64_t j = threadIdx.x; j < it.count; j += blockDim.x) {
      const int64_t i = it.start + j;
      update(param[i], grad[i], m[i], v[i], k, decay);
      if (copy) store(copy, i, param[i]);
    }
  }
}

}  // namespace

void adamw_step(float* param, const float* grad, float* m, float* v, int64_t n, float lr,
                float beta1, float beta2, float eps, float weight_decay, int64_t step,
                float grad_scale, cudaStream_t stream) {
  if (n == 0) return;
  const StepConstants k = step_constants(lr, beta1, beta2, eps, weight_decay, step, grad_scale);
  adamw_kernel<<<grid_for(n, kThreads), kThreads, 0, stream>>>(param, grad, m, v, n, k);
  VACC_CUDA_CHECK_LAUNCH("adamw_kernel");
}

void adamw_step_items(float* param, const float* grad, float* m, float* v,
                      const AdamWItem* items, int64_t num_items, bool vec, float lr, float beta1,
                      float beta2, float eps, float weight_decay, int64_t step, float grad_scale,
                      void* param_copy, DType copy_dtype, cudaStream_t stream) {
  if (num_items == 0) return;
  const StepConstants k = step_constants(lr, beta1, beta2, eps, weight_decay, step, grad_scale);
  auto launch = [&](auto* copy) {
    using CopyT = std::remove_pointer_t<decltype(copy)>;
    auto* kernel = vec ? adamw_items_kernel<true, CopyT> : adamw_items_kernel<false, CopyT>;
    kernel<<<unsigned(num_items), kThreads, 0, stream>>>(param, grad, m, v, items, k, copy);
  };
  if (!param_copy || copy_dtype == DType::F32)
    launch(static_cast<float*>(param_copy));
  else if (copy_dtype == DType::BF16)
    launch(static_cast<bf16*>(param_copy));
  else
    fail("adamw_step_segments: param_copy must be f32 or bf16, got ", dtype_name(copy_dtype));
  VACC_CUDA_CHECK_LAUNCH("adamw_items_kernel");
}

}  // namespace vacc::cuda
