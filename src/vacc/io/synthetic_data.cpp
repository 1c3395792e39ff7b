#include "vacc/io/synthetic_data.h"

#include <random>

#include "vacc/core/error.h"

namespace vacc {

TokenBatch SyntheticData::batch(int64_t step, int64_t batch_size) const {
  VACC_CHECK(batch_size > 0 && seq_ > 0, "synthetic data needs a positive batch and length");
  TokenBatch b;
  b.batch = batch_size;
  b.seq = seq_;
  b.ids.resize(size_t(batch_size * seq_));
  b.labels.resize(b.ids.size());
  for (int64_t i = 0; i < batch_size; ++i) {
    std::seed_seq seq{uint64_t(seed_), uint64_t(step), uint64_t(i)};
    std::mt19937_64 rng(seq);
    const int64_t period = 8 + int64_t(rng() % 25);  // a segment of 8..32 tokens
    std::vector<int32_t> segment(static_cast<size_t>(period));
    for (int32_t& t : segment) t = int32_t(rng() % uint64_t(vocab_));
    // seq + 1 tokens: inputs are the first seq, labels the last seq.
    for (int64_t t = 0; t < seq_; ++t) {
      b.ids[size_t(i * seq_ + t)] = segment[size_t(t % period)];
      b.labels[size_t(i * seq_ + t)] = segment[size_t((t + 1) % period)];
    }
  }
  return b;
}

}  // namespace vacc
