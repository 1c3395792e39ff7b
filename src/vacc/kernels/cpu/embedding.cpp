// Token embedding lookup and its scatter-add backward, over a vocabulary shard.
#include <algorithm>
#include <cstring>
#include <vector>

#include "vacc/kernels/cpu/cpu_kernels.h"

namespace vacc::cpu {

void embedding_forward(const int32_t* ids, const float* table, int64_t vocab_start,
                       int64_t vocab_size, int64_t n, int64_t c, float* out) {
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) {
    int64_t row = int64_t(ids[i]) - vocab_start;
    if (row >= 0 && row < vocab_size)
      std::memcpy(out + i * c, table + row * c, size_t(c) * sizeof(float));
    else
      std::memset(out + i * c, 0, size_t(c) * sizeof(float));
  }
}

void embedding_backward(const int32_t* ids, const float* dout, int64_t vocab_start,
                        int64_t vocab_size, int64_t n, int64_t c, float* dtable) {
  // Tokens repeat, so threads split the embedding columns rather than the tokens: no two
  // threads ever write the same element, and the sum order per element is fixed (token order).
#pragma omp parallel for schedule(static)
  for (int64_t c0 = 0; c0 < c; c0 += 16) {
    int64_t c1 = std::min(c, c0 + 16);
    for (int64_t i = 0; i < n; ++i) {
      int64_t row = int64_t(ids[i]) - vocab_start;
      if (row < 0 || row >= vocab_size) continue;
      float* dst = dtable + row * c;
      const float* src = dout + i * c;
      for (int64_t j = c0; j < c1; ++j) dst[j] += src[j];
    }
  }
}

}  // namespace vacc::cpu
