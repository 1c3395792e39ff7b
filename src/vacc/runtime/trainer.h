// Trainer: the training-step loop of one data-parallel rank. It owns the model and the
// optimizer of its shard, runs its share of the *global* batch as micro-batches (gradient
// accumulation), has the gradients reduced across ranks while backward runs (ZeRO stages
// through a ShardedParameterStore), clips the global gradient norm, updates the weights,
// and times each step only after the device has finished.
//
// The global batch is the same on every rank and on any number of ranks: rank r of dp takes
// sequences [r*B/dp, (r+1)*B/dp), and the loss is the mean over every counted token of the
// whole batch, so the losses and weights do not depend on the device count.
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "vacc/comm/communicator.h"
#include "vacc/io/token_batch.h"
#include "vacc/kernels/backend.h"
#include "vacc/model/transformer.h"
#include "vacc/optim/adamw.h"
#include "vacc/optim/lr_schedule.h"
#include "vacc/runtime/evaluation.h"
#include "vacc/runtime/hf_checkpoint.h"
#include "vacc/runtime/parallel_config.h"
#include "vacc/runtime/sharded_parameter_store.h"

namespace vacc {

struct TrainerOptions {
  int64_t batch = 1;          // sequences per global batch
  int64_t seq_len = 128;
  ParallelConfig parallel;    // dp must equal the communicator's size
  DType dtype = DType::F32;   // compute dtype (BF16: mixed precision, f32 master weights)
  LrSchedule lr;
  AdamWConfig adam;
  double max_grad_norm = 1.0;  // <= 0: no clipping
  uint64_t seed = 0;
  // Fills `dst` with the f32 master weights of elements `range` of the table's layout (this
  // rank's shard; e.g. from a checkpoint); unset: random initialisation from `seed`.
  std::function<void(Backend&, const ParameterTable&, FlatRange range, Tensor& dst)> load_weights;
};

// tokens counts every position of the global batch (padding included); flops_per_sec and
// mfu count the model FLOPs the step needs (see ModelConfig::training_flops), per device.
struct StepMetrics {
  int64_t step = 0;
  double loss = 0, grad_norm = 0, lr = 0;
  double step_time_s = 0, tokens_per_sec = 0, flops_per_sec = 0, mfu = 0;
  int64_t tokens = 0;
  int devices = 1;
  // Per rank: the allocator's high-water mark and the bytes in use at the end of the step.
  std::vector<double> peak_memory_bytes, memory_in_use_bytes;
};

class Trainer {
 public:
  // peak_flops: one device's measured peak for MFU (0: MFU reported as 0).
  Trainer(Backend& backend, Communicator& comm, const ModelConfig& config, TrainerOptions options,
          double peak_flops);

  Transformer& model() { return *model_; }
  ShardedParameterStore& store() { return *store_; }
  AdamW& optimizer() { return *optimizer_; }
  Communicator& communicator() { return comm_; }
  // One optimizer step over the global batch (collective).
  StepMetrics step(const TokenBatch& batch);
  // Loss over any number of sequences (of the trainer's length) without touching gradients;
  // the sequences are split over the ranks (collective; the same result on every rank).
  EvalResult evaluate(const TokenBatch& batch);
  // The master weights of the whole model, flat (collective with ZeRO 3).
  std::vector<float> gather_parameters();
  // Saves the model as a Hugging Face folder (collective: rank 0 writes; with ZeRO 3 every
  // rank contributes its shard tensor by tensor, never gathering the whole model).
  void save(const std::string& dir, const HfSaveOptions& options);

 private:
  Backend& backend_;
  Communicator& comm_;
  TrainerOptions options_;
  double peak_flops_;
  ShardedParameterStore* store_ = nullptr;  // owned by the model
  std::unique_ptr<Transformer> model_;
  std::unique_ptr<AdamW> optimizer_;
  EvalBuffers buffers_;  // activations and inputs of one micro-batch
  int64_t steps_ = 0;
};

}  // namespace vacc
