// Trainer: the training-step loop of one rank of the dp x pp x tp grid. It owns the model of
// its shard (a pipeline stage's layers) and the optimizer of its ZeRO shard, runs its data-
// parallel replica's share of the *global* batch as micro-batches through the pipeline
// schedule (1F1B or GPipe; activations and their gradients sent between neighbouring
// stages), has the gradients reduced over its dp group while backward runs, clips the
// global gradient norm, updates the weights, and times each step only after the device has
// finished.
//
// The global batch is the same on every rank and on any number of ranks: replica r of dp
// takes sequences [r*B/dp, (r+1)*B/dp), and the loss is the mean over every counted token of
// the whole batch, so the losses and weights do not depend on the split.
#pragma once

#include <deque>
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
#include "vacc/kernels/graphed_regions.h"
#include "vacc/runtime/hf_checkpoint.h"
#include "vacc/plan/parallel_config.h"
#include "vacc/runtime/pipeline_schedule.h"
#include "vacc/runtime/rank_grid.h"
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
  // Replay the layers' forward and backward passes as graphs (kernels/graphed_regions.h)
  // where the backend has them and the grid allows (graphs_status() says which).
  bool graphs = false;
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
  // Per rank: the allocator's held high-water mark (in use, plus the blocks kept for CUDA
  // graphs) and the bytes in use at the end of the step.
  std::vector<double> peak_memory_bytes, memory_in_use_bytes;
};

class Trainer {
 public:
  // peak_flops: one device's measured peak for MFU (0: MFU reported as 0). comm: every rank
  // of the job; options.parallel gives the grid.
  Trainer(Backend& backend, Communicator& comm, const ModelConfig& config, TrainerOptions options,
          double peak_flops);

  Transformer& model() { return *model_; }
  ShardedParameterStore& store() { return *store_; }
  AdamW& optimizer() { return *optimizer_; }
  Communicator& communicator() { return comm_; }
  RankGrid& grid() { return *grid_; }
  // One optimizer step over the global batch (collective). With trace, the step's timeline
  // is recorded (see write_trace).
  StepMetrics step(const TokenBatch& batch, bool trace = false);
  // Writes the traced step of every rank as one Chrome trace JSON file (collective; rank 0
  // writes, via a temporary file and rename). One process per rank, named with its place in
  // the grid; thread 0 compute, thread 1 communication.
  void write_trace(const std::string& path);
  // "on (...)" or "off: <why>" for options.graphs; "" when not asked for.
  const std::string& graphs_status() const { return graphs_status_; }
  // The graphs captured and replayed so far (0 without graphs).
  int64_t graphs_captured() const { return graphs_ ? graphs_->captured() : 0; }
  int64_t graph_replays() const { return graphs_ ? graphs_->replays() : 0; }
  // Why graphs were given up after a failed capture ("" otherwise).
  std::string graphs_failure() const { return graphs_ ? graphs_->failure() : std::string(); }
  // Loss over any number of sequences (of the trainer's length) without touching gradients;
  // the sequences are split over the replicas (collective; the same result on every rank).
  EvalResult evaluate(const TokenBatch& batch);
  // Saves the model as a Hugging Face folder (collective: world rank 0 writes, pulling one
  // checkpoint tensor at a time from the stage and shards holding it; no rank ever holds
  // the whole model).
  void save(const std::string& dir, const HfSaveOptions& options);

 private:
  // Activations and inputs of one micro-batch in flight.
  struct Slot {
    Transformer::Activations act;
    Tensor ids, labels;
    std::unique_ptr<CommRequest> sent;  // the forward output on its way to the next stage
  };
  void upload_micro_batch(const TokenBatch& part, Slot& slot);
  void forward(Slot& slot, int64_t micro_batch);
  void backward(Slot& slot, int64_t micro_batch, float grad_scale);
  void wait_sends();
  void tie_embedding_across_stages();
  void connect_tensor_parallel();
  std::vector<FlatRange> copies_counted_elsewhere() const;
  std::string graphs_unavailable_reason() const;
  // Runs a layer pass of `slot` (kind 0 forward, 1 backward) as a graph when graphs are on:
  // the whole pass as one, or (layer >= 0) that layer's part of it.
  void run_layers(const Slot& slot, int kind, const std::function<void()>& issue,
                  int64_t layer = -1);

  Backend& backend_;
  Communicator& comm_;
  TrainerOptions options_;
  double peak_flops_;
  std::unique_ptr<RankGrid> grid_;
  ShardedParameterStore* store_ = nullptr;  // owned by the model
  std::unique_ptr<Transformer> model_;
  std::unique_ptr<AdamW> optimizer_;
  std::vector<PipelineAction> actions_;
  std::vector<Slot> slots_;
  Tensor positions_, loss_sum_, dx_;
  std::deque<std::pair<Tensor, std::unique_ptr<CommRequest>>> grad_sends_;
  FlatRange tied_copy_;  // the last stage's copy of a tied embedding (counted once in norms)
  TensorParallelHooks tp_hooks_;
  std::unique_ptr<Communicator> kv_replicas_;  // tp ranks sharing this rank's key/value heads
  int64_t micro_ = 0;
  int64_t steps_ = 0;
  std::unique_ptr<GraphedRegions> graphs_;  // null: every op issued eagerly
  // The backward pass as one graph per layer: the gradient reduction runs between them.
  bool graph_per_layer_ = false;
  std::string graphs_status_;
};

}  // namespace vacc
