// The search space of the planner: every ParallelConfig that can run a model on a number of
// devices with a global batch, honouring the dimensions a user pinned.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "vacc/model/model_config.h"
#include "vacc/plan/parallel_config.h"

namespace vacc {

// A partial ParallelConfig: what --parallel pinned; the rest (nullopt) is the planner's.
struct PlanConstraints {
  std::optional<int> dp, pp, tp, zero;
  std::optional<int64_t> micro_batches;
  std::optional<Recompute> recompute;
  std::optional<PipelineScheduleKind> schedule;

  // The --parallel syntax ("pp=2,zero=1"); errors as ParallelConfig::parse's.
  static PlanConstraints parse(const std::string& text);
  bool empty() const;
  // Every dimension but the schedule pinned (the split is the user's, whole).
  bool whole() const;
  std::string str() const;  // "pp=2, zero=1" or "none"
  // The pins with the rest at their defaults: dp filling the devices pp x tp leave (an error
  // when pp x tp does not divide them), ZeRO 0, one micro-batch, no recomputation, 1F1B.
  // Pinned whole, exactly the pinned split; otherwise the split whose validation explains
  // why pins cannot hold.
  ParallelConfig completed(int devices) const;
};

// Candidates: dp x pp x tp == devices; tp divides the heads and the FFN and divides or is a
// multiple of the kv heads; pp <= layers; micro-batches divide batch / dp; recomputation
// none, selective, full; ZeRO 0-3 (only 0 when dp == 1); schedule 1F1B (unless pinned).
// Pinned dimensions are taken as given (a pin that cannot hold leaves the list empty).
std::vector<ParallelConfig> enumerate_candidates(const ModelConfig& model, int devices,
                                                 int64_t global_batch,
                                                 const PlanConstraints& pinned);

}  // namespace vacc
