// Causal attention of new tokens over a KV cache (text generation), on the CPU. Decoding is
// memory-bound (every cached key and value is read once per new token and q head), so this
// is the plain algorithm: per (new token, q head) the scores over the visible keys, an exact
// softmax (max subtracted, f32) and the weighted sum of the values. OpenMP over (token, head).
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <type_traits>
#include <vector>

#include "vacc/kernels/cpu/cpu_kernels.h"
#include "vacc/kernels/cpu/float_io.h"

namespace vacc::cpu {

void attention_decode(const float* qkv, int64_t n_new, int64_t q_heads, int64_t kv_heads,
                      int64_t head_dim, float* k_cache, float* v_cache, int64_t past_len, void* out,
                      DType out_dtype) {
  const int64_t D = head_dim, KW = kv_heads * D, W = (q_heads + 2 * kv_heads) * D;
  const int64_t group = q_heads / kv_heads, out_width = q_heads * D;
  const float scale = 1.0f / std::sqrt(float(D));

  // Append the new keys and values at positions [past_len, past_len + n_new).
  for (int64_t i = 0; i < n_new; ++i) {
    const float* row = qkv + i * W;
    std::memcpy(k_cache + (past_len + i) * KW, row + q_heads * D, size_t(KW) * 4);
    std::memcpy(v_cache + (past_len + i) * KW, row + (q_heads + kv_heads) * D, size_t(KW) * 4);
  }

  dispatch_float(out_dtype, [&](auto tag) {
    using OutT = std::remove_pointer_t<decltype(tag)>;
    OutT* o = static_cast<OutT*>(out);
#pragma omp parallel
    {
      std::vector<float> p(static_cast<size_t>(past_len + n_new));
      std::vector<float> acc(static_cast<size_t>(D));
#pragma omp for collapse(2) schedule(dynamic, 1)
      for (int64_t i = 0; i < n_new; ++i)
        for (int64_t h = 0; h < q_heads; ++h) {
          const float* q = qkv + i * W + h * D;
          const float* kb = k_cache + (h / group) * D;
          const float* vb = v_cache + (h / group) * D;
          const int64_t nkeys = past_len + i + 1;  // causal: keys [0, past_len + i]
          float m = -std::numeric_limits<float>::infinity();
          for (int64_t j = 0; j < nkeys; ++j) {
            const float* k = kb + j * KW;
            float s = 0.0f;
            for (int64_t d = 0; d < D; ++d) s += q[d] * k[d];
            s *= scale;
            p[size_t(j)] = s;
            m = std::max(m, s);
          }
          float sum = 0.0f;
          for (int64_t j = 0; j < nkeys; ++j) {
            const float e = std::exp(p[size_t(j)] - m);
            p[size_t(j)] = e;
            sum += e;
          }
          std::fill(acc.begin(), acc.end(), 0.0f);
          for (int64_t j = 0; j < nkeys; ++j) {
            const float* v = vb + j * KW;
            const float w = p[size_t(j)];
            for (int64_t d = 0; d < D; ++d) acc[size_t(d)] += w * v[d];
          }
          const float inv = 1.0f / sum;
          const int64_t orow = i * out_width + h * D;
          for (int64_t d = 0; d < D; ++d) store(o, orow + d, acc[size_t(d)] * inv);
        }
    }
  });
}

}  // namespace vacc::cpu
