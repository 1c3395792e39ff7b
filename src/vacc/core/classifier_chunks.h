// How the fused classifier + cross-entropy splits its rows into chunks of logits, on every
// backend (kernels/cpu, kernels/cuda) and in the memory model (plan), which must agree.
#pragma once

#include <algorithm>
#include <cstdint>

namespace vacc {

// The rows of each chunk when `rows` counted rows over a vocabulary of `vocab` go through chunks
// of at most `chunk_bytes` of logits of `logit_bytes` each (4: f32; 2: the GPU's bf16 logits in
// mixed precision): chunks of equal size, the last no larger.
inline int64_t classifier_chunk_rows(int64_t rows, int64_t vocab, int64_t chunk_bytes,
                                     int64_t logit_bytes) {
  if (rows <= 0) return 0;
  const int64_t max_rows = std::max<int64_t>(1, chunk_bytes / (vocab * logit_bytes));
  const int64_t chunks = (rows + max_rows - 1) / max_rows;
  return (rows + chunks - 1) / chunks;
}

}  // namespace vacc
