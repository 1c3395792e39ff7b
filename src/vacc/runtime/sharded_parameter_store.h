// ShardedParameterStore: the parameters, gradients and optimizer inputs of one
// data-parallel rank, with ZeRO sharding over the ranks of a Communicator.
//
//   stage 0  every rank holds everything; gradients all-reduced
//   stage 1  gradients reduce-scattered; the optimizer updates this rank's shard only
//            (its AdamW moments are shard-sized); parameters all-gathered after the step
//   stage 2  as 1, and the full gradient never exists: each group's gradient lives from
//            its first write in a micro-batch until it is reduce-scattered into the shard
//   stage 3  as 2, and only the shard of the master weights is kept: each group is
//            all-gathered just before use (the next one prefetched) and freed after
//
// Gradient reduction runs as the model reports each group's gradient ready, while backward
// goes on with the next layer (a bucket per group); finish_gradient_reduction() waits.
// The shard of rank r is FlatPartition::owned(r) of the model's flat layout.
#pragma once

#include <deque>
#include <functional>
#include <map>
#include <memory>

#include "vacc/comm/communicator.h"
#include "vacc/model/parameter_store.h"
#include "vacc/runtime/flat_partition.h"

namespace vacc {

class ShardedParameterStore final : public ParameterStore {
 public:
  ShardedParameterStore(Backend& backend, Communicator& comm, const ParameterTable& table,
                        DType compute, int zero_stage);
  ~ShardedParameterStore() override;

  Tensor master(size_t g) override;
  Tensor compute(size_t g) override;
  Tensor gradients(size_t g) override;
  void acquire(size_t g, Pass pass) override;
  void release(size_t g, Pass pass) override;
  void gradients_ready(size_t g) override;

  int zero_stage() const { return zero_; }
  const FlatPartition& partition() const { return partition_; }
  // This rank's shard of the layout (what it loads from a checkpoint and saves).
  FlatRange owned() const { return owned_; }

  // ---- the training step ----
  void zero_gradients();
  // Whether gradients_ready() of the coming micro-batch reduces (the last micro-batch of a
  // step); with ZeRO 2 and 3 every micro-batch reduces, as the full gradient is not kept.
  void set_last_micro_batch(bool last) { last_micro_batch_ = last; }
  void finish_gradient_reduction();
  // Groups whose gradient must first be combined with another stage's (a tied embedding
  // split between the first and the last pipeline stage): they accumulate locally through
  // the whole step, then finish_gradient_reduction() calls `combine` on the group's gradient
  // (every rank of the dp group, in group order) before reducing it over the dp group.
  void defer_reduction(size_t g, std::function<void(Tensor& group_gradient)> combine);
  // Runs just before a group's gradient is reduced over the dp group (once per reduction):
  // tensor parallelism sums the partial gradients of replicated key/value rows here.
  void set_pre_reduce(std::function<void(size_t group, Tensor& group_gradient)> hook) {
    pre_reduce_ = std::move(hook);
  }
  // This rank's share of the squared gradient norm of the stage, the ranges `exclude` left
  // out (disjoint; copies counted on another rank): summed over the dp group it gives the
  // stage's total.
  double gradient_square_sum(const std::vector<FlatRange>& exclude = {});
  // What this rank's optimizer updates: a range of the layout, its f32 master weights and
  // its reduced gradient.
  FlatRange optimizer_range() const { return zero_ == 0 ? FlatRange{0, total_} : owned_; }
  Tensor optimizer_parameters();
  Tensor optimizer_gradients();
  // Where the optimizer may write the updated parameters in the compute dtype as well: the
  // bf16 copy with ZeRO 0 in mixed precision (every rank updates everything); else undefined.
  Tensor optimizer_compute_copy();

  // ---- weights in and out ----
  // The master weights of owned(): fill them (initialisation, a checkpoint), then call
  // parameters_loaded() (collective).
  Tensor owned_master();
  void parameters_loaded();
  // After every optimizer step (collective with ZeRO 1 and 2: the updated shards are shared).
  // compute_copy_written: the optimizer also wrote optimizer_compute_copy(), which then is not
  // converted again.
  void parameters_updated(bool compute_copy_written = false);
  // Master weights of `range` into host (f32). Collective with ZeRO 3 (every rank calls it
  // with the same range in the same order; only the caller wanting values passes host).
  void read_range(FlatRange range, float* host);
  bool read_is_collective() const { return zero_ == 3; }

 private:
  struct Gathered {
    Tensor master, compute;
    int uses = 0;
  };
  struct Prefetch {
    std::unique_ptr<CommRequest> request;
    Tensor master;
  };
  struct PendingReduction {
    std::unique_ptr<CommRequest> request;
    Tensor source;       // the gradient being reduced (kept alive)
    Tensor reduced;      // this rank's part of the sum, to add into the shard (else the
                         // reduction wrote into the shard directly)
    FlatRange part;      // where `reduced` goes in the layout
    std::string what;    // for the trace
    int64_t started_us = 0;
  };

  FlatRange group_range(size_t g) const;
  void drop_gathered();
  void share_owned_shards();
  Tensor shard_view(Tensor& shard, FlatRange part);
  void start_gather(size_t g, Tensor& out, std::unique_ptr<CommRequest>* async);
  Gathered gather_now(size_t g);
  void prefetch_after(size_t g, Pass pass);
  void complete(PendingReduction& p);
  void poll_reductions(size_t keep_at_most);

  Backend& backend_;
  Communicator& comm_;
  const ParameterTable& table_;
  DType compute_dtype_;
  int zero_;
  int64_t total_;
  FlatPartition partition_;
  FlatRange owned_;
  bool last_micro_batch_ = true;

  Tensor full_master_, full_compute_, full_grads_;  // stages 0-2 / 0-2 / 0-1
  Tensor shard_master_;                            // stage 3
  Tensor shard_grads_;                             // stages 1-3
  std::map<size_t, Tensor> live_grads_;            // stages 2-3: this micro-batch's groups
  std::map<size_t, Gathered> gathered_;            // stage 3
  std::map<size_t, Prefetch> prefetched_;          // stage 3
  std::deque<PendingReduction> pending_;
  std::vector<bool> reduced_this_step_;  // per group: its shard part already holds a sum
  std::map<size_t, std::function<void(Tensor&)>> deferred_;
  std::function<void(size_t, Tensor&)> pre_reduce_;
  bool finishing_ = false;  // inside finish_gradient_reduction (deferred groups reduce now)
};

}  // namespace vacc
