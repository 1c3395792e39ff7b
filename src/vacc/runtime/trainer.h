// Trainer: the training-step loop on one device. It owns the model and optimizer, runs the
// global batch as micro-batches (gradient accumulation), clips the global gradient norm,
// updates the weights, and times each step only after the device has finished.
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "vacc/io/token_batch.h"
#include "vacc/kernels/backend.h"
#include "vacc/model/transformer.h"
#include "vacc/optim/adamw.h"
#include "vacc/optim/lr_schedule.h"
#include "vacc/runtime/evaluation.h"

namespace vacc {

struct TrainerOptions {
  int64_t batch = 1;          // sequences per global batch
  int64_t seq_len = 128;
  int64_t micro_batches = 1;  // the global batch is split into this many
  DType dtype = DType::F32;   // compute dtype (BF16: mixed precision, f32 master weights)
  LrSchedule lr;
  AdamWConfig adam;
  double max_grad_norm = 1.0;  // <= 0: no clipping
  uint64_t seed = 0;
  // Fills the model's f32 master weights (e.g. from a checkpoint); unset: random
  // initialisation from `seed`.
  std::function<void(Transformer&)> load_weights;
};


// tokens counts every position of the batch (padding included); flops_per_sec and mfu count
// the model FLOPs the step needs (see ModelConfig::training_flops).
struct StepMetrics {
  int64_t step = 0;
  double loss = 0, grad_norm = 0, lr = 0;
  double step_time_s = 0, tokens_per_sec = 0, flops_per_sec = 0, mfu = 0;
  int64_t tokens = 0;
};

class Trainer {
 public:
  // peak_flops: the device's measured peak for MFU (0: MFU reported as 0).
  Trainer(Backend& backend, const ModelConfig& config, TrainerOptions options, double peak_flops);

  Transformer& model() { return *model_; }
  AdamW& optimizer() { return *optimizer_; }
  // One optimizer step over the global batch.
  StepMetrics step(const TokenBatch& batch);
  // Loss over any number of sequences (of the trainer's length) without touching gradients.
  EvalResult evaluate(const TokenBatch& batch);

 private:
  Backend& backend_;
  TrainerOptions options_;
  double peak_flops_;
  std::unique_ptr<Transformer> model_;
  std::unique_ptr<AdamW> optimizer_;
  EvalBuffers buffers_;  // activations and inputs of one micro-batch
  int64_t steps_ = 0;
};

}  // namespace vacc
