// Element-wise kernels and reductions over flat arrays.
#include <algorithm>
#include <cmath>

#include "vacc/kernels/cpu/cpu_kernels.h"
#include "vacc/kernels/cpu/float_io.h"

namespace vacc::cpu {

void convert(const void* src, DType src_dtype, void* dst, DType dst_dtype, int64_t n) {
  dispatch_float(src_dtype, [&](auto src_tag) {
    using S = std::remove_pointer_t<decltype(src_tag)>;
    dispatch_float(dst_dtype, [&](auto dst_tag) {
      using D = std::remove_pointer_t<decltype(dst_tag)>;
      const S* s = static_cast<const S*>(src);
      D* d = static_cast<D*>(dst);
#pragma omp parallel for schedule(static) if (n > 65536)
      for (int64_t i = 0; i < n; ++i) store(d, i, load(s, i));
    });
  });
}

void fill(void* dst, DType dtype, float value, int64_t n) {
  if (dtype == DType::I32) {
    int32_t* d = static_cast<int32_t*>(dst);
    for (int64_t i = 0; i < n; ++i) d[i] = int32_t(value);
    return;
  }
  dispatch_float(dtype, [&](auto tag) {
    auto* d = static_cast<std::remove_pointer_t<decltype(tag)>*>(dst);
#pragma omp parallel for schedule(static) if (n > 65536)
    for (int64_t i = 0; i < n; ++i) store(d, i, value);
  });
}

void add(const float* a, const float* b, float* out, int64_t n) {
#pragma omp parallel for schedule(static) if (n > 65536)
  for (int64_t i = 0; i < n; ++i) out[i] = a[i] + b[i];
}

void scale(float* x, float s, int64_t n) {
#pragma omp parallel for schedule(static) if (n > 65536)
  for (int64_t i = 0; i < n; ++i) x[i] *= s;
}

double sum_of_squares(const float* x, int64_t n) {
  // Blocks of 4096 summed in 16 f32 lanes (vectorised), the block sums added in double.
  constexpr int64_t kBlock = 4096;
  double total = 0.0;
#pragma omp parallel for schedule(static) reduction(+ : total) if (n > 65536)
  for (int64_t b = 0; b < n; b += kBlock) {
    const int64_t end = std::min(n, b + kBlock);
    float lanes[16] = {};
    int64_t i = b;
    for (; i + 16 <= end; i += 16)
      for (int k = 0; k < 16; ++k) lanes[k] += x[i + k] * x[i + k];
    double block = 0.0;
    for (; i < end; ++i) block += double(x[i]) * double(x[i]);
    for (float l : lanes) block += double(l);
    total += block;
  }
  return total;
}

void bias_backward(const float* dy, float* dbias, int64_t M, int64_t N) {
  // Columns are independent: each thread owns a block of columns and walks the rows.
#pragma omp parallel for schedule(static)
  for (int64_t j0 = 0; j0 < N; j0 += 64) {
    int64_t j1 = std::min(N, j0 + 64);
    float acc[64] = {};
    for (int64_t i = 0; i < M; ++i)
      for (int64_t j = j0; j < j1; ++j) acc[j - j0] += dy[i * N + j];
    for (int64_t j = j0; j < j1; ++j) dbias[j] += acc[j - j0];
  }
}

}  // namespace vacc::cpu
