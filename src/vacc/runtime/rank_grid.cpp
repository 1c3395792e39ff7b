#include "vacc/runtime/rank_grid.h"

#include "vacc/comm/single_rank_communicator.h"
#include "vacc/core/error.h"

namespace vacc {
namespace {

// A group of one rank needs no MPI; split() on a single-rank world would do the same.
std::unique_ptr<Communicator> group(Communicator& world, int size, int color, int key) {
  if (world.size() == 1) return std::make_unique<SingleRankCommunicator>();
  std::unique_ptr<Communicator> c = world.split(color, key);
  if (c) VACC_CHECK(c->size() == size || color < 0, "a rank group of ", c->size(), " ranks where ",
                    size, " were expected");
  return c;
}

}  // namespace

RankGrid::RankGrid(Communicator& world, const ParallelConfig& config)
    : world_(world), config_(config) {
  VACC_CHECK(world.size() == config.devices(), "the rank grid dp=", config.dp, " pp=", config.pp,
             " tp=", config.tp, " needs ", config.devices(), " ranks; the job has ", world.size());
  const int r = world.rank();
  tp_rank_ = r % config.tp;
  dp_rank_ = (r / config.tp) % config.dp;
  pp_rank_ = r / (config.tp * config.dp);
  // Every rank takes part in every split, in the same order.
  dp_ = group(world, config.dp, pp_rank_ * config.tp + tp_rank_, dp_rank_);
  tp_ = group(world, config.tp, pp_rank_ * config.dp + dp_rank_, tp_rank_);
  const bool on_ends = config.pp > 1 && (first_stage() || last_stage());
  std::unique_ptr<Communicator> ends =
      world.size() == 1 ? nullptr
                        : world.split(on_ends ? dp_rank_ * config.tp + tp_rank_ : -1, pp_rank_);
  if (on_ends) embedding_ = std::move(ends);
}

}  // namespace vacc
