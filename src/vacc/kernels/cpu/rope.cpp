// Rotary position embedding, rotate-half form (Hugging Face's Llama/Qwen2): with x = (x1, x2)
// the two halves of a head, y1 = x1 cos - x2 sin, y2 = x2 cos + x1 sin. The inverse rotation
// (sin negated) is its backward, since the rotation is orthogonal.
#include "vacc/core/error.h"
#include "vacc/kernels/cpu/cpu_kernels.h"

namespace vacc::cpu {

void rope(float* x, int64_t n, int64_t row_width, const int32_t* positions, const float* cos,
          const float* sin, int64_t max_positions, int64_t num_heads, int64_t head_dim,
          bool inverse) {
  const int64_t half = head_dim / 2;
  const float sign = inverse ? -1.0f : 1.0f;
  for (int64_t i = 0; i < n; ++i)
    VACC_CHECK(positions[i] >= 0 && positions[i] < max_positions, "rope: position ",
               positions[i], " of token ", i, " is outside the table of ", max_positions,
               " positions");
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) {
    const float* c = cos + int64_t(positions[i]) * half;
    const float* s = sin + int64_t(positions[i]) * half;
    for (int64_t h = 0; h < num_heads; ++h) {
      float* x1 = x + i * row_width + h * head_dim;
      float* x2 = x1 + half;
      for (int64_t j = 0; j < half; ++j) {
        float a = x1[j], b = x2[j], sj = sign * s[j];
        x1[j] = a * c[j] - b * sj;
        x2[j] = b * c[j] + a * sj;
      }
    }
  }
}

}  // namespace vacc::cpu
