// TokenBatch: a global batch of token sequences on the host, with next-token labels.
#pragma once

#include <cstdint>
#include <vector>

namespace vacc {

inline constexpr int32_t kIgnoreLabel = -100;

struct TokenBatch {
  int64_t batch = 0, seq = 0;
  std::vector<int32_t> ids;     // (batch * seq)
  std::vector<int32_t> labels;  // (batch * seq); kIgnoreLabel where no loss is taken

  int64_t counted_tokens() const;
  // Sequences [begin, end) as a batch of their own (a micro-batch).
  TokenBatch slice(int64_t begin, int64_t end) const;
};

}  // namespace vacc
