// RankGrid: this rank's place in the dp x pp x tp grid and the communicators of its groups.
// Ranks are numbered tp fastest, then dp, then pp (Megatron's order: a tensor-parallel group
// is consecutive ranks, so it lands on one host):
//   rank = (pp_rank * dp + dp_rank) * tp + tp_rank
#pragma once

#include <memory>

#include "vacc/comm/communicator.h"
#include "vacc/plan/parallel_config.h"

namespace vacc {

class RankGrid {
 public:
  // Collective over `world` (every rank builds its grid in the same order).
  RankGrid(Communicator& world, const ParallelConfig& config);

  const ParallelConfig& config() const { return config_; }
  int dp_rank() const { return dp_rank_; }
  int pp_rank() const { return pp_rank_; }
  int tp_rank() const { return tp_rank_; }
  bool first_stage() const { return pp_rank_ == 0; }
  bool last_stage() const { return pp_rank_ == config_.pp - 1; }
  // The world rank of the stage `stage` with this rank's dp and tp ranks.
  int stage_rank(int stage) const { return (stage * config_.dp + dp_rank_) * config_.tp + tp_rank_; }

  Communicator& world() { return world_; }
  Communicator& dp() { return *dp_; }  // same stage and tp rank
  Communicator& tp() { return *tp_; }  // same stage and dp rank
  // The first and last stage with this rank's dp and tp ranks (tied embeddings); null when
  // pp == 1 or this rank is on neither.
  Communicator* embedding() { return embedding_.get(); }

 private:
  Communicator& world_;
  ParallelConfig config_;
  int dp_rank_ = 0, pp_rank_ = 0, tp_rank_ = 0;
  std::unique_ptr<Communicator> dp_, tp_, embedding_;
};

}  // namespace vacc
