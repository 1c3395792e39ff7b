// ParallelConfig: how a job is split over the devices of the accelerator. For now data
// parallelism with ZeRO sharding and micro-batches (gradient accumulation); pipeline and
// tensor parallelism come with their own issue. `--parallel dp=4,zero=2,microbatches=2`.
#pragma once

#include <cstdint>
#include <string>

namespace vacc {

struct ParallelConfig {
  int dp = 1;                 // data-parallel ranks
  int zero = 0;               // 0: replicas; 1: optimizer state sharded; 2: + gradients;
                              // 3: + parameters (gathered layer by layer)
  int64_t micro_batches = 1;  // per data-parallel rank, per step (gradient accumulation)

  // "dp=2,zero=1,microbatches=4" (any subset; keys dp, zero, microbatches). Errors name the
  // key and the allowed values; pp/tp/recompute are refused as not yet supported.
  static ParallelConfig parse(const std::string& text, ParallelConfig defaults);
  // Checks it against the devices and the batch: dp must equal the device count, and the
  // global batch must divide into dp x micro_batches micro-batches.
  void validate(int devices, int64_t global_batch) const;
  int64_t micro_batch_size(int64_t global_batch) const { return global_batch / dp / micro_batches; }
  // The seed's words: "num_stages : 1, num_micro_batches : 4, batch_per_device : 2, No TP,
  // recomputation : false, distribute_param : true" plus dp and the ZeRO stage.
  std::string describe(int64_t global_batch) const;
};

}  // namespace vacc
