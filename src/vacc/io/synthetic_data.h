// Synthetic training data: each sequence repeats a random segment of random tokens, so a
// model can learn to copy and the loss falls. Sequence i of step s is a pure function of
// (seed, s, i): the data is the same whatever the device count or micro-batching.
#pragma once

#include <cstdint>

#include "vacc/io/token_batch.h"

namespace vacc {

class SyntheticData {
 public:
  SyntheticData(int64_t vocab_size, int64_t seq_len, uint64_t seed)
      : vocab_(vocab_size), seq_(seq_len), seed_(seed) {}

  // The global batch of 1-based step `step`.
  TokenBatch batch(int64_t step, int64_t batch_size) const;

 private:
  int64_t vocab_, seq_;
  uint64_t seed_;
};

}  // namespace vacc
