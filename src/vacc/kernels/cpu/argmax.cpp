// The index of each row's largest value: greedy decoding's next token (Backend::argmax_rows).
#include <cmath>
#include <cstdint>

#include "vacc/kernels/cpu/cpu_kernels.h"

namespace vacc::cpu {

void argmax_rows(const float* x, int64_t rows, int64_t cols, int32_t* out) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* row = x + r * cols;
    int64_t best = -1;
    for (int64_t i = 0; i < cols; ++i)  // NaN compares false: it never wins
      if (best < 0 ? row[i] == row[i] : row[i] > row[best]) best = i;
    out[r] = best >= 0 && std::isfinite(row[best]) ? int32_t(best) : -1;
  }
}

}  // namespace vacc::cpu
