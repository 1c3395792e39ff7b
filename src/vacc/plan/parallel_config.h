// ParallelConfig: how a job is split over the devices of the accelerator — the rank grid
// dp x pp x tp, the ZeRO stage within each data-parallel group, micro-batches (gradient
// accumulation, and what a pipeline schedules), activation recomputation and the pipeline
// schedule. `--parallel dp=2,pp=2,tp=2,microbatches=8,recompute=full,zero=1`.
#pragma once

#include <cstdint>
#include <string>

#include "vacc/model/recompute.h"

namespace vacc {

struct ModelConfig;

enum class PipelineScheduleKind { OneFOneB, GPipe };
// "1f1b" or "gpipe", as --parallel's schedule= spells it.
const char* schedule_name(PipelineScheduleKind schedule);

struct ParallelConfig {
  int dp = 1;                 // data-parallel replicas
  int pp = 1;                 // pipeline stages
  int tp = 1;                 // tensor-parallel ranks per stage
  int zero = 0;               // 0: replicas; 1: optimizer state sharded; 2: + gradients;
                              // 3: + parameters (gathered layer by layer)
  int64_t micro_batches = 1;  // per data-parallel replica, per step
  Recompute recompute = Recompute::None;  // activation recomputation per layer
  PipelineScheduleKind schedule = PipelineScheduleKind::OneFOneB;

  int devices() const { return dp * pp * tp; }
  // Whether the layers' passes can be replayed as CUDA graphs (--cuda-graphs): not with tensor
  // parallelism, which sums partial results inside the layers over the host-driven NCCL, nor
  // with ZeRO 2 or 3, which allocate a layer's gradient or gather its weights as the passes
  // run, at addresses that change (runtime/trainer.cpp; the memory model counts what the
  // graphs keep only where they run).
  bool layer_graphs_possible() const { return tp == 1 && zero < 2; }

  // "dp=2,pp=2,tp=2,zero=1,microbatches=8,recompute=full,schedule=gpipe" (any subset; the
  // rest from `defaults`). Errors name the key and the allowed values.
  static ParallelConfig parse(const std::string& text, ParallelConfig defaults);
  // Checks it against the devices, the batch and (when given) the model: dp*pp*tp must equal
  // the device count, the global batch must divide into dp x micro_batches, a stage needs a
  // layer, tp must divide the heads and the FFN.
  void validate(int devices, int64_t global_batch, const ModelConfig* model = nullptr) const;
  int64_t micro_batch_size(int64_t global_batch) const { return global_batch / dp / micro_batches; }
  // The seed's words: "num_stages : 2, num_micro_batches : 8, batch_per_device : 1, No TP,
  // recomputation : false, distribute_param : true" plus dp, ZeRO and the schedule.
  std::string describe(int64_t global_batch) const;
  // Every key, in the form parse() reads: "dp=2,pp=1,tp=1,zero=1,microbatches=4,
  // recompute=none,schedule=1f1b" (what pins exactly this split for `vacc train --parallel`).
  std::string to_string() const;

 private:
  bool devices_count_ok(int devices) const;
};

}  // namespace vacc
