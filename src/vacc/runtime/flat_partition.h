// FlatPartition: the flat parameter layout cut into one contiguous shard per data-parallel
// rank (ZeRO). Rank r owns elements [r*S, (r+1)*S) clipped to the total, S rounded up to 16
// elements. Any range of the layout (a group, a checkpoint tensor) maps to per-rank counts,
// which is what reduce-scatter and all-gather of that range take.
#pragma once

#include <cstdint>
#include <vector>

#include "vacc/model/parameter_table.h"

namespace vacc {

class FlatPartition {
 public:
  FlatPartition(int64_t total, int ranks);

  int ranks() const { return ranks_; }
  int64_t shard_size() const { return shard_; }
  FlatRange owned(int rank) const;
  // Elements of `range` owned by each rank (they add up to range.numel()).
  std::vector<int64_t> counts(FlatRange range) const;
  // The part of `range` that `rank` owns (possibly empty).
  FlatRange owned_part(FlatRange range, int rank) const;

 private:
  int64_t total_, shard_;
  int ranks_;
};

}  // namespace vacc
