// Pipeline schedules: the order in which one stage runs the forward and backward passes of
// the micro-batches of a step, and how the layers are split into stages.
//
//   GPipe  every forward, then every backward: M micro-batches of activations in flight.
//   1F1B   stage s runs min(pp - s - 1, M) forwards to fill the pipeline, then alternates
//          one forward and one backward, then drains: at most pp - s in flight (Narayanan
//          et al., PipeDream-Flush), the same bubble as GPipe with far less memory.
#pragma once

#include <cstdint>
#include <utility>
#include <vector>

#include "vacc/model/model_config.h"
#include "vacc/runtime/parallel_config.h"

namespace vacc {

struct PipelineAction {
  enum class Kind { Forward, Backward } kind;
  int64_t micro_batch = 0;
};

// Stage `stage` of `stages`, over micro_batches micro-batches.
std::vector<PipelineAction> pipeline_actions(PipelineScheduleKind kind, int stage, int stages,
                                             int64_t micro_batches);
// The most micro-batches whose activations the stage holds at once.
int64_t pipeline_in_flight(PipelineScheduleKind kind, int stage, int stages, int64_t micro_batches);

// Contiguous layer ranges [begin, end) for `stages` stages, every stage at least one layer,
// minimising the most expensive stage. A layer costs its training FLOPs per token
// (6 x its matrix parameters + 12 x seq x hidden for attention); the last stage also pays
// for the output projection (6 x vocab x hidden), which on small models is worth several
// layers.
std::vector<std::pair<int64_t, int64_t>> split_layers(const ModelConfig& config, int stages,
                                                      int64_t seq_len);

}  // namespace vacc
