// Pipeline schedules: the order in which one stage runs the forward and backward passes of
// the micro-batches of a step (the split into stages is plan/stage_split.h).
//
//   GPipe  every forward, then every backward: M micro-batches of activations in flight.
//   1F1B   stage s runs min(pp - s - 1, M) forwards to fill the pipeline, then alternates
//          one forward and one backward, then drains: at most pp - s in flight (Narayanan
//          et al., PipeDream-Flush), the same bubble as GPipe with far less memory.
#pragma once

#include <cstdint>
#include <vector>

#include "vacc/plan/parallel_config.h"

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

}  // namespace vacc
