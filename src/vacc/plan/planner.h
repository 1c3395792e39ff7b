// The planner: picks the split of a training job over a cluster. Like the seed's platform it
// enumerates candidates, "compiles" each (its per-rank memory, on a pool of threads), drops
// those over the usable memory, costs the survivors (again in parallel) and chooses the
// fastest (ties: the one that needs less memory), logging each phase in the seed's words.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "vacc/plan/candidate_search.h"
#include "vacc/plan/cost_model.h"
#include "vacc/plan/memory_model.h"

namespace vacc {

struct PlannerOptions {
  int64_t global_batch = 1, seq_len = 1;
  DType dtype = DType::BF16;
  double usable_memory_fraction = 0.8;  // of the device memory
  int threads = 0;                      // 0: std::thread::hardware_concurrency()
  DeviceScratch scratch{};              // what a GPU backend holds besides (gpu_device_scratch)
};

struct Candidate {
  ParallelConfig config;
  MemoryBreakdown memory;  // the peak rank's
  CostBreakdown cost;      // feasible candidates only
  double tokens_per_s = 0, tflops_per_device = 0;
  bool feasible = false;
  std::string reason;  // why chosen, why not chosen, or why rejected
};

struct PlanResult {
  std::vector<Candidate> candidates;  // feasible by step time, then the rejected by memory
  int chosen = -1;                    // index into candidates; -1: none feasible
  double usable_memory_bytes = 0;     // 0: unlimited
  double compile_ms = 0, cost_ms = 0;
  int64_t feasible_count = 0;
  // "no feasible configuration ...: the smallest (CONFIG) needs X per device, usable Y".
  std::string no_feasible_message() const;
};

using PlanLog = std::function<void(const std::string&)>;

// Throws vacc::Error when no candidate satisfies the pins (naming them).
PlanResult plan_parallelism(const ModelConfig& model, const ClusterSpec& cluster,
                            const PlanConstraints& pinned, const PlannerOptions& options,
                            const PlanLog& log);

}  // namespace vacc
