// Memory model: what one rank of a plan holds at its peak, by the categories of the
// DeviceAllocator (parameters, gradients, optimizer state, activations, buffers), computed
// from the model config and the plan alone. It mirrors what the runtime allocates (the
// parameter table's exact layout; the activations each layer keeps under the recomputation
// mode; the micro-batches a pipeline schedule holds in flight; ZeRO's shards, gathered
// groups and gradient buckets), and is checked against the allocator's high-water mark.
#pragma once

#include <cstdint>
#include <string>

#include <vector>

#include "vacc/core/dtype.h"
#include "vacc/model/model_config.h"
#include "vacc/model/model_shard.h"
#include "vacc/plan/parallel_config.h"

namespace vacc {

struct MemoryBreakdown {
  double parameters = 0, gradients = 0, optimizer_state = 0, activations = 0, buffers = 0;
  double total() const { return parameters + gradients + optimizer_state + activations + buffers; }
  std::string str() const;
};

// What a GPU's backend allocates for itself besides the model's and the runtime's tensors
// (core/gpu_scratch.h): counted as buffers. Nothing on CPU devices, whose scratch is host
// memory outside the allocator.
struct DeviceScratch {
  bool gpu = false;
  double fixed_bytes = 0;              // held for the backend's life (cuBLASLt's workspace)
  int64_t classifier_chunk_bytes = 0;  // the classifier's largest logits chunk (f32 or bf16)
  // The trainer replays the layers' passes as CUDA graphs (--cuda-graphs, on the splits
  // ParallelConfig::layer_graphs_possible allows): the scratch their captures allocated stays
  // kept for the graphs (counted against the budget, not in use) while the classifier's is in
  // use, so the two add up instead of taking turns.
  bool graphs = false;
};
// The scratch of a GPU with this memory budget (bytes; 0: unknown, the smallest chunk).
DeviceScratch gpu_device_scratch(double budget_bytes);

struct MemoryQuery {
  int64_t global_batch = 1, seq_len = 1;
  DType dtype = DType::F32;
  DeviceScratch scratch{};
};

// A pipeline stage's parameters under a (pp, tp) split (tensor-parallel rank 0; the ranks of
// a stage differ by at most a vocabulary row): the parameter table's sizes. They depend on
// pp, tp and the sequence length (the stage split) only, so the planner computes them once
// per (pp, tp) rather than for every candidate.
struct StageParameters {
  ModelShard shard;
  int64_t numel = 0;          // the stage's parameters
  int64_t embed = 0, head = 0, largest_layer = 0;  // the groups' sizes
};
std::vector<StageParameters> stage_parameters(const ModelConfig& config, int pp, int tp,
                                              int64_t seq_len);

// The rank at (stage, dp_rank) — tensor-parallel ranks of a stage hold alike. `stages`:
// stage_parameters(config, plan.pp, plan.tp, query.seq_len), computed here when empty.
MemoryBreakdown predict_rank_memory(const ModelConfig& config, const ParallelConfig& plan,
                                    const MemoryQuery& query, int stage, int dp_rank,
                                    const std::vector<StageParameters>& stages = {});
// The largest of every rank's prediction.
MemoryBreakdown predict_peak_memory(const ModelConfig& config, const ParallelConfig& plan,
                                    const MemoryQuery& query,
                                    const std::vector<StageParameters>& stages = {});

}  // namespace vacc
