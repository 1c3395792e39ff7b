// Rotary position embedding, rotate-half form (Hugging Face's Llama/Qwen2): with x = (x1, x2)
// the two halves of a head, y1 = x1 cos - x2 sin, y2 = x2 cos + x1 sin. The inverse rotation
// (sin negated) is its backward, since the rotation is orthogonal.
#include <type_traits>

#include "vacc/core/error.h"
#include "vacc/kernels/cpu/cpu_kernels.h"
#include "vacc/kernels/cpu/float_io.h"

namespace vacc::cpu {

void rope(void* x, DType x_dtype, int64_t n, int64_t row_width, const int32_t* positions,
          const float* cos, const float* sin, int64_t max_positions, int64_t num_heads,
          int64_t head_dim, bool inverse, void* copy, DType copy_dtype) {
  const int64_t half = head_dim / 2;
  const float sign = inverse ? -1.0f : 1.0f;
  for (int64_t i = 0; i < n; ++i)
    VACC_CHECK(positions[i] >= 0 && positions[i] < max_positions, "rope: position ",
               positions[i], " of token ", i, " is outside the table of ", max_positions,
               " positions");
  dispatch_float(x_dtype, [&](auto xtag) {
    auto* xs = static_cast<std::remove_pointer_t<decltype(xtag)>*>(x);
    dispatch_optional(copy, copy_dtype, [&](auto cs) {
#pragma omp parallel for schedule(static)
      for (int64_t i = 0; i < n; ++i) {
        const float* c = cos + int64_t(positions[i]) * half;
        const float* s = sin + int64_t(positions[i]) * half;
        const int64_t row = i * row_width;
        for (int64_t h = 0; h < num_heads; ++h) {
          const int64_t i1 = row + h * head_dim, i2 = i1 + half;
          for (int64_t j = 0; j < half; ++j) {
            const float a = load(xs, i1 + j), b = load(xs, i2 + j), sj = sign * s[j];
            store(xs, i1 + j, a * c[j] - b * sj);
            store(xs, i2 + j, b * c[j] + a * sj);
          }
        }
        // The copy: the whole row as x now holds it (rounded values included).
        if constexpr (kHas<decltype(cs)>)
          for (int64_t j = 0; j < row_width; ++j) store(cs, row + j, load(xs, row + j));
      }
    });
  });
}

}  // namespace vacc::cpu
