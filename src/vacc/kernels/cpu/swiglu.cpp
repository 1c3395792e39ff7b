// SwiGLU: out = silu(gate) * up with gate and up the two halves of one fused (N, 2F) product.
#include <cmath>

#include "vacc/kernels/cpu/cpu_kernels.h"
#include "vacc/kernels/cpu/fast_exp.h"
#include "vacc/kernels/cpu/float_io.h"

namespace vacc::cpu {

void swiglu_forward(const void* gate_up, DType in_dtype, int64_t n, int64_t f, void* out,
                    DType out_dtype) {
  dispatch_float(in_dtype, [&](auto in_tag) {
    const auto* gu = static_cast<const std::remove_pointer_t<decltype(in_tag)>*>(gate_up);
    dispatch_float(out_dtype, [&](auto tag) {
      auto* y = static_cast<std::remove_pointer_t<decltype(tag)>*>(out);
#pragma omp parallel for schedule(static)
      for (int64_t i = 0; i < n; ++i) {
        const int64_t row = i * 2 * f;
        for (int64_t j = 0; j < f; ++j) {
          const float g = load(gu, row + j), u = load(gu, row + f + j);
          store(y, i * f + j, g * fast_sigmoid(g) * u);
        }
      }
    });
  });
}

void swiglu_backward(const void* dout, const void* gate_up, DType in_dtype, int64_t n, int64_t f,
                     void* dgate_up, DType dgate_up_dtype) {
  // d silu(g)/dg = sig(g) (1 + g (1 - sig(g))).
  dispatch_float(in_dtype, [&](auto in_tag) {
    using In = std::remove_pointer_t<decltype(in_tag)>;
    const auto* gu = static_cast<const In*>(gate_up);
    const auto* dy = static_cast<const In*>(dout);
    dispatch_float(dgate_up_dtype, [&](auto tag) {
      auto* d = static_cast<std::remove_pointer_t<decltype(tag)>*>(dgate_up);
#pragma omp parallel for schedule(static)
      for (int64_t i = 0; i < n; ++i) {
        const int64_t row = i * 2 * f;
        for (int64_t j = 0; j < f; ++j) {
          const float g = load(gu, row + j), u = load(gu, row + f + j), dyj = load(dy, i * f + j);
          const float sig = fast_sigmoid(g);
          store(d, row + j, dyj * u * sig * (1.0f + g * (1.0f - sig)));
          store(d, row + f + j, dyj * (g * sig));
        }
      }
    });
  });
}

}  // namespace vacc::cpu
