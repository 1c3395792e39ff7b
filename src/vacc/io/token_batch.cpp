#include "vacc/io/token_batch.h"

#include "vacc/core/error.h"

namespace vacc {

int64_t TokenBatch::counted_tokens() const {
  int64_t n = 0;
  for (int32_t l : labels) n += l != kIgnoreLabel;
  return n;
}

TokenBatch TokenBatch::slice(int64_t begin, int64_t end) const {
  VACC_CHECK(begin >= 0 && begin <= end && end <= batch, "batch slice [", begin, ", ", end,
             ") outside a batch of ", batch);
  TokenBatch out;
  out.batch = end - begin;
  out.seq = seq;
  out.ids.assign(ids.begin() + begin * seq, ids.begin() + end * seq);
  out.labels.assign(labels.begin() + begin * seq, labels.begin() + end * seq);
  return out;
}

}  // namespace vacc
