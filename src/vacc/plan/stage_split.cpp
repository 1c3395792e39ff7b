#include "vacc/plan/stage_split.h"

#include <algorithm>
#include <limits>

#include "vacc/core/error.h"

namespace vacc {

std::vector<std::pair<int64_t, int64_t>> split_layers(const ModelConfig& c, int stages,
                                                      int64_t seq_len) {
  const int64_t L = c.num_layers;
  VACC_CHECK(stages >= 1 && stages <= L, stages, " pipeline stages for ", L,
             " layers: every stage needs at least one layer");
  const double C = double(c.hidden_size), D = double(c.head_dim);
  const double q = double(c.num_heads) * D, kv = double(c.num_kv_heads) * D;
  const double layer_params = C * (q + 2 * kv) + q * C + 3.0 * C * double(c.intermediate_size);
  const double layer = 6.0 * layer_params + 12.0 * double(seq_len) * C;
  const double head = 6.0 * double(c.vocab_size) * C;
  // best[s][l]: the smallest possible most-expensive stage when the first l layers form s
  // stages; the last stage (with the head) is added at the end.
  const double inf = std::numeric_limits<double>::infinity();
  std::vector<std::vector<double>> best(size_t(stages) + 1, std::vector<double>(size_t(L) + 1, inf));
  std::vector<std::vector<int64_t>> cut(best.size(), std::vector<int64_t>(size_t(L) + 1, 0));
  best[0][0] = 0;
  for (int s = 1; s <= stages; ++s)
    for (int64_t l = s; l <= L; ++l)
      for (int64_t k = s - 1; k < l; ++k) {
        const double stage_cost = double(l - k) * layer + (s == stages && l == L ? head : 0.0);
        const double worst = std::max(best[size_t(s) - 1][size_t(k)], stage_cost);
        if (worst < best[size_t(s)][size_t(l)]) {
          best[size_t(s)][size_t(l)] = worst;
          cut[size_t(s)][size_t(l)] = k;
        }
      }
  std::vector<std::pair<int64_t, int64_t>> ranges(static_cast<size_t>(stages));
  int64_t end = L;
  for (int s = stages; s >= 1; --s) {
    const int64_t begin = cut[size_t(s)][size_t(end)];
    ranges[size_t(s) - 1] = {begin, end};
    end = begin;
  }
  return ranges;
}

}  // namespace vacc
