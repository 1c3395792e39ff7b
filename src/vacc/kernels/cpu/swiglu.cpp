// SwiGLU: out = silu(gate) * up with gate and up the two halves of one fused (N, 2F) product.
#include <cmath>

#include "vacc/kernels/cpu/cpu_kernels.h"
#include "vacc/kernels/cpu/fast_exp.h"
#include "vacc/kernels/cpu/float_io.h"

namespace vacc::cpu {

void swiglu_forward(const float* gate_up, int64_t n, int64_t f, void* out, DType out_dtype) {
  dispatch_float(out_dtype, [&](auto tag) {
    auto* y = static_cast<std::remove_pointer_t<decltype(tag)>*>(out);
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; ++i) {
      const float* g = gate_up + i * 2 * f;
      const float* u = g + f;
      for (int64_t j = 0; j < f; ++j) {
        float sig = fast_sigmoid(g[j]);
        store(y, i * f + j, g[j] * sig * u[j]);
      }
    }
  });
}

void swiglu_backward(const float* dout, const float* gate_up, int64_t n, int64_t f,
                     void* dgate_up, DType dgate_up_dtype) {
  // d silu(g)/dg = sig(g) (1 + g (1 - sig(g))).
  dispatch_float(dgate_up_dtype, [&](auto tag) {
    auto* d = static_cast<std::remove_pointer_t<decltype(tag)>*>(dgate_up);
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; ++i) {
      const float* g = gate_up + i * 2 * f;
      const float* u = g + f;
      const float* dy = dout + i * f;
      for (int64_t j = 0; j < f; ++j) {
        float sig = fast_sigmoid(g[j]);
        float silu = g[j] * sig;
        store(d, i * 2 * f + j, dy[j] * u[j] * sig * (1.0f + g[j] * (1.0f - sig)));
        store(d, i * 2 * f + f + j, dy[j] * silu);
      }
    }
  });
}

}  // namespace vacc::cpu
