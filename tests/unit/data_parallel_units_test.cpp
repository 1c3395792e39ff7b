// The pieces of data parallelism that need no second rank: the flat partition, --parallel,
// and the sharded store on one rank (every ZeRO stage must train exactly like the default).
#include <gtest/gtest.h>

#include <numeric>

#include "test_util.h"
#include "vacc/comm/single_rank_communicator.h"
#include "vacc/io/synthetic_data.h"
#include "vacc/runtime/flat_partition.h"
#include "vacc/plan/parallel_config.h"
#include "vacc/runtime/trainer.h"

namespace vacc::test {
namespace {

TEST(FlatPartition, ShardsCoverTheLayoutOnceAndAlignTo16) {
  for (int ranks : {1, 2, 3, 8}) {
    FlatPartition p(1000, ranks);
    EXPECT_EQ(p.shard_size() % 16, 0);
    int64_t covered = 0;
    for (int r = 0; r < ranks; ++r) {
      EXPECT_EQ(p.owned(r).begin, std::min<int64_t>(1000, r * p.shard_size()));
      covered += p.owned(r).numel();
    }
    EXPECT_EQ(covered, 1000);
    const auto counts = p.counts({100, 900});
    EXPECT_EQ(std::accumulate(counts.begin(), counts.end(), int64_t(0)), 800);
  }
  FlatPartition p(100, 8);  // more ranks than 16-element shards: the last ones own nothing
  EXPECT_EQ(p.owned(7).numel(), 0);
  EXPECT_EQ(p.counts({0, 100})[7], 0);
}

TEST(ParallelConfig, ParsesAndExplains) {
  ParallelConfig d;
  d.dp = 4;
  const ParallelConfig c = ParallelConfig::parse("zero=3,microbatches=2", d);
  EXPECT_EQ(c.dp, 4);
  EXPECT_EQ(c.zero, 3);
  EXPECT_EQ(c.micro_batches, 2);
  EXPECT_NO_THROW(c.validate(4, 16));
  EXPECT_NE(c.describe(16).find("batch_per_device : 2"), std::string::npos);
  EXPECT_NE(c.describe(16).find("distribute_param : true"), std::string::npos);
  expect_error([&] { c.validate(4, 12); }, "multiple of 8");
  expect_error([&] { c.validate(2, 16); }, "dp=4");
  expect_error([] { ParallelConfig::parse("zero=4", {}); }, "zero");
  expect_error([] { ParallelConfig::parse("recompute=most", {}); }, "selective");
  EXPECT_EQ(ParallelConfig::parse("pp=2,tp=2,schedule=gpipe", {}).devices(), 4);
  expect_error([] { ParallelConfig::parse("dp", {}); }, "KEY=VALUE");
  expect_error([] { ParallelConfig::parse("speed=11", {}); }, "unknown key");
}

// On one rank every ZeRO stage goes through its own code path (gathers, buckets, shards) and
// must give bit-identical losses to stage 0.
TEST(ShardedParameterStore, EveryStageTrainsAlikeOnOneRank) {
  SingleRankCommunicator comm;
  const ModelConfig c = test_model_config({.vocab = 97, .hidden = 48, .ffn = 80, .layers = 2,
                                           .heads = 6, .kv_heads = 2, .head_dim = 8,
                                           .tied = true, .bias = true});
  std::vector<std::vector<double>> losses;
  for (int zero = 0; zero <= 3; ++zero) {
    auto be = make_cpu_backend();
    TrainerOptions opt;
    opt.batch = 4;
    opt.seq_len = 16;
    opt.parallel.zero = zero;
    opt.parallel.micro_batches = 2;
    opt.lr.peak_lr = 3e-3;
    opt.seed = 5;
    Trainer trainer(*be, comm, c, opt, 0.0);
    SyntheticData data(c.vocab_size, opt.seq_len, 5);
    std::vector<double> l;
    for (int s = 1; s <= 4; ++s) l.push_back(trainer.step(data.batch(s, opt.batch)).loss);
    l.push_back(trainer.evaluate(data.batch(9, 3)).mean());
    losses.push_back(l);
  }
  for (int zero = 1; zero <= 3; ++zero) EXPECT_EQ(losses[size_t(zero)], losses[0]) << "ZeRO " << zero;
}

}  // namespace
}  // namespace vacc::test
