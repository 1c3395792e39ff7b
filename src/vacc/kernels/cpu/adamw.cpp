// AdamW (Loshchilov & Hutter): decoupled weight decay, bias-corrected moments, as PyTorch's
// torch.optim.AdamW computes it.
#include <cmath>

#include "vacc/kernels/cpu/cpu_kernels.h"

namespace vacc::cpu {

void adamw_step(float* param, const float* grad, float* m, float* v, int64_t n, float lr,
                float beta1, float beta2, float eps, float weight_decay, int64_t step,
                float grad_scale) {
  const float bc1 = 1.0f - std::pow(beta1, float(step));
  const float bc2_sqrt = std::sqrt(1.0f - std::pow(beta2, float(step)));
  const float step_size = lr / bc1;
  const float decay = 1.0f - lr * weight_decay;
#pragma omp parallel for schedule(static) if (n > 16384)
  for (int64_t i = 0; i < n; ++i) {
    float g = grad[i] * grad_scale;
    float mi = beta1 * m[i] + (1.0f - beta1) * g;
    float vi = beta2 * v[i] + (1.0f - beta2) * g * g;
    m[i] = mi;
    v[i] = vi;
    float p = param[i] * decay;
    param[i] = p - step_size * mi / (std::sqrt(vi) / bc2_sqrt + eps);
  }
}

}  // namespace vacc::cpu
