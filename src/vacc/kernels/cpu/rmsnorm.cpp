// RMSNorm with f32 statistics: y = x * rstd * w, rstd = 1/sqrt(mean(x^2) + eps).
#include <cmath>
#include <vector>

#include <omp.h>

#include "vacc/kernels/cpu/cpu_kernels.h"
#include "vacc/kernels/cpu/float_io.h"

namespace vacc::cpu {

void rmsnorm_forward(const float* x, const float* weight, float eps, int64_t n, int64_t c,
                     void* out, DType out_dtype, float* rstd) {
  dispatch_float(out_dtype, [&](auto tag) {
    auto* y = static_cast<std::remove_pointer_t<decltype(tag)>*>(out);
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; ++i) {
      const float* xi = x + i * c;
      float ss = 0.0f;
      for (int64_t j = 0; j < c; ++j) ss += xi[j] * xi[j];
      float r = 1.0f / std::sqrt(ss / float(c) + eps);
      rstd[i] = r;
      for (int64_t j = 0; j < c; ++j) store(y, i * c + j, xi[j] * r * weight[j]);
    }
  });
}

void rmsnorm_backward(const float* dout, const float* x, const float* weight, const float* rstd,
                      int64_t n, int64_t c, const float* residual, float* dx, void* dx_copy,
                      DType copy_dtype, float* dweight) {
  // dx_j = residual_j + r * (w_j g_j - x_j * r^2 * mean_k(w_k g_k x_k)); dw_j += sum_i g_ij x_ij
  // r_i. Each thread sums dweight for its rows privately; the partial sums are added in thread
  // order. Element j of dout and residual is read before element j of dx is written (aliases).
  int threads = omp_get_max_threads();
  std::vector<float> partial(size_t(threads) * size_t(c), 0.0f);
  dispatch_optional(dx_copy, copy_dtype, [&](auto copy) {
    using CopyPtr = decltype(copy);
#pragma omp parallel
    {
      float* my_dw = partial.data() + size_t(omp_get_thread_num()) * size_t(c);
#pragma omp for schedule(static)
      for (int64_t i = 0; i < n; ++i) {
        const float* xi = x + i * c;
        const float* gi = dout + i * c;
        float* dxi = dx + i * c;
        float r = rstd[i];
        float dot = 0.0f;
        for (int64_t j = 0; j < c; ++j) dot += weight[j] * gi[j] * xi[j];
        float k = dot * r * r / float(c);
        for (int64_t j = 0; j < c; ++j) my_dw[j] += gi[j] * xi[j] * r;
        if (residual) {
          const float* ri = residual + i * c;
          for (int64_t j = 0; j < c; ++j) dxi[j] = ri[j] + r * (weight[j] * gi[j] - xi[j] * k);
        } else {
          for (int64_t j = 0; j < c; ++j) dxi[j] = r * (weight[j] * gi[j] - xi[j] * k);
        }
        if constexpr (kHas<CopyPtr>)
          for (int64_t j = 0; j < c; ++j) store(copy, i * c + j, dxi[j]);
      }
    }
  });
  for (int t = 0; t < threads; ++t)
    for (int64_t j = 0; j < c; ++j) dweight[j] += partial[size_t(t) * size_t(c) + size_t(j)];
}

}  // namespace vacc::cpu
