// AdamW (Loshchilov & Hutter): decoupled weight decay, bias-corrected moments, as PyTorch's
// torch.optim.AdamW computes it.
#include <algorithm>
#include <cmath>

#include "vacc/kernels/cpu/cpu_kernels.h"
#include "vacc/kernels/cpu/float_io.h"

namespace vacc::cpu {
namespace {

// The update in chunks, so that the copy reads the updated values from the cache and the
// update's own loop stays free of the conversion. A function of its own, taking everything by
// value: inside a lambda the constants are read through its captures, which the stores to m and
// v might alias, and the loop neither vectorises nor keeps them in registers (5x slower).
template <typename Out>
void update(float* param, const float* grad, float* m, float* v, int64_t n, float beta1,
            float beta2, float eps, float grad_scale, float step_size, float decay,
            float bc2_sqrt, Out out) {
  constexpr int64_t kChunk = 4096;
  const int64_t chunks = (n + kChunk - 1) / kChunk;
#pragma omp parallel for schedule(static) if (n > 16384)
  for (int64_t ch = 0; ch < chunks; ++ch) {
    const int64_t lo = ch * kChunk, hi = std::min(n, lo + kChunk);
    for (int64_t i = lo; i < hi; ++i) {
      float g = grad[i] * grad_scale;
      float mi = beta1 * m[i] + (1.0f - beta1) * g;
      float vi = beta2 * v[i] + (1.0f - beta2) * g * g;
      m[i] = mi;
      v[i] = vi;
      float p = param[i] * decay;
      param[i] = p - step_size * mi / (std::sqrt(vi) / bc2_sqrt + eps);
    }
    if constexpr (kHas<Out>)
      for (int64_t i = lo; i < hi; ++i) store(out, i, param[i]);
  }
}

}  // namespace

void adamw_step(float* param, const float* grad, float* m, float* v, int64_t n, float lr,
                float beta1, float beta2, float eps, float weight_decay, int64_t step,
                float grad_scale, void* copy, DType copy_dtype) {
  const float bc1 = 1.0f - std::pow(beta1, float(step));
  const float bc2_sqrt = std::sqrt(1.0f - std::pow(beta2, float(step)));
  const float step_size = lr / bc1;
  const float decay = 1.0f - lr * weight_decay;
  dispatch_optional(copy, copy_dtype, [&](auto out) {
    update(param, grad, m, v, n, beta1, beta2, eps, grad_scale, step_size, decay, bc2_sqrt, out);
  });
}

}  // namespace vacc::cpu
