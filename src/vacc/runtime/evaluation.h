// Evaluation loss: the mean next-token cross-entropy over every counted token of a set of
// sequences, run as micro-batches of a fixed size without touching gradients.
#pragma once

#include "vacc/io/token_batch.h"
#include "vacc/model/transformer.h"

namespace vacc {

struct EvalResult {
  double loss_sum = 0;
  int64_t tokens = 0;  // counted (label != -100) tokens
  double mean() const { return tokens > 0 ? loss_sum / double(tokens) : 0.0; }
};

// Buffers for micro-batches of `micro_batch` sequences of `seq_len` tokens.
struct EvalBuffers {
  Transformer::Activations activations;
  Tensor ids, labels, positions, loss_sum;
  int64_t micro_batch = 0, seq_len = 0;

  static EvalBuffers allocate(Transformer& model, int64_t micro_batch, int64_t seq_len);
};

// Checks every id and label of `batch` against the vocabulary (vacc::Error names the position).
void check_token_batch(const TokenBatch& batch, int64_t vocab_size);

// The loss over any number of sequences; the last micro-batch is filled up with sequences
// that count no tokens.
EvalResult evaluate_loss(Transformer& model, EvalBuffers& buffers, const TokenBatch& batch);

}  // namespace vacc
