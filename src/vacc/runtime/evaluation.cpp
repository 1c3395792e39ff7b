#include "vacc/runtime/evaluation.h"

#include <algorithm>

#include "vacc/core/error.h"

namespace vacc {

EvalBuffers EvalBuffers::allocate(Transformer& model, int64_t micro_batch, int64_t seq_len) {
  Backend& be = model.backend();
  EvalBuffers b;
  b.micro_batch = micro_batch;
  b.seq_len = seq_len;
  b.activations = model.allocate_activations(micro_batch, seq_len);
  const int64_t n = micro_batch * seq_len;
  b.ids = be.empty({n}, DType::I32, MemoryCategory::Buffers, "token ids");
  b.labels = be.empty({n}, DType::I32, MemoryCategory::Buffers, "labels");
  b.positions = be.empty({n}, DType::I32, MemoryCategory::Buffers, "positions");
  std::vector<int32_t> pos(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) pos[size_t(i)] = int32_t(i % seq_len);
  be.upload(pos.data(), b.positions);
  b.loss_sum = be.zeros({1}, DType::F32, MemoryCategory::Buffers, "loss sum");
  return b;
}

void check_token_batch(const TokenBatch& batch, int64_t vocab) {
  for (size_t i = 0; i < batch.ids.size(); ++i) {
    VACC_CHECK(batch.ids[i] >= 0 && batch.ids[i] < vocab, "token id ", batch.ids[i],
               " at position ", i, " of the batch is outside the vocabulary of ", vocab);
    VACC_CHECK(batch.labels[i] == kIgnoreLabel || (batch.labels[i] >= 0 && batch.labels[i] < vocab),
               "label ", batch.labels[i], " at position ", i,
               " of the batch is outside the vocabulary of ", vocab);
  }
}

EvalResult evaluate_loss(Transformer& model, EvalBuffers& b, const TokenBatch& batch) {
  VACC_CHECK(batch.seq == b.seq_len, "evaluation sequences of ", batch.seq,
             " tokens do not match the evaluator's ", b.seq_len);
  check_token_batch(batch, model.config().vocab_size);
  Backend& be = model.backend();
  be.fill(b.loss_sum, 0.0f);
  for (int64_t first = 0; first < batch.batch; first += b.micro_batch) {
    TokenBatch part = batch.slice(first, std::min(batch.batch, first + b.micro_batch));
    part.ids.resize(size_t(b.micro_batch * b.seq_len), 0);
    part.labels.resize(size_t(b.micro_batch * b.seq_len), kIgnoreLabel);
    be.upload(part.ids.data(), b.ids);
    be.upload(part.labels.data(), b.labels);
    model.forward_loss(b.ids, b.positions, b.labels, b.activations, b.loss_sum);
  }
  float loss_sum = 0.0f;
  be.download(b.loss_sum, &loss_sum);
  return EvalResult{double(loss_sum), batch.counted_tokens()};
}

}  // namespace vacc
