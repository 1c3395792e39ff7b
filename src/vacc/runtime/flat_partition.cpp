#include "vacc/runtime/flat_partition.h"

#include <algorithm>

#include "vacc/core/error.h"

namespace vacc {

FlatPartition::FlatPartition(int64_t total, int ranks) : total_(total), ranks_(ranks) {
  VACC_CHECK(ranks > 0 && total >= 0, "a partition of ", total, " elements over ", ranks,
             " ranks");
  shard_ = ((total + ranks - 1) / ranks + 15) / 16 * 16;
}

FlatRange FlatPartition::owned(int rank) const {
  VACC_CHECK(rank >= 0 && rank < ranks_, "rank ", rank, " out of ", ranks_);
  const int64_t begin = std::min(total_, int64_t(rank) * shard_);
  return {begin, std::min(total_, begin + shard_)};
}

FlatRange FlatPartition::owned_part(FlatRange range, int rank) const {
  const FlatRange o = owned(rank);
  const int64_t b = std::max(o.begin, range.begin), e = std::min(o.end, range.end);
  return b < e ? FlatRange{b, e} : FlatRange{b, b};
}

std::vector<int64_t> FlatPartition::counts(FlatRange range) const {
  std::vector<int64_t> c(static_cast<size_t>(ranks_));
  for (int r = 0; r < ranks_; ++r) c[size_t(r)] = owned_part(range, r).numel();
  return c;
}

}  // namespace vacc
