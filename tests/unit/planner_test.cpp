// The candidate search and the planner on a small model over 8 H100s.
#include <gtest/gtest.h>

#include "vacc/core/error.h"
#include "vacc/plan/planner.h"

namespace vacc {
namespace {

ModelConfig small() {
  ModelConfig c;
  c.vocab_size = 32000;
  c.hidden_size = 1024;
  c.intermediate_size = 4096;
  c.num_layers = 8;
  c.num_heads = 16;
  c.num_kv_heads = 4;
  c.head_dim = 64;
  return c;
}

ClusterSpec h100s(int n) {
  ClusterSpec k;
  k.devices = n;
  k.devices_per_node = 8;
  k.profile = find_profile("H100-SXM");
  k.memory_bytes_per_device = k.profile.memory_bytes;
  return k;
}

TEST(Planner, CandidatesHonourTheRules) {
  const auto all = enumerate_candidates(small(), 8, 16, {});
  ASSERT_FALSE(all.empty());
  for (const ParallelConfig& c : all) {
    EXPECT_EQ(c.devices(), 8);
    EXPECT_EQ(16 % (c.dp * c.micro_batches), 0);
    EXPECT_EQ(16 % c.tp, 0);
    if (c.dp == 1) {
      EXPECT_EQ(c.zero, 0);
    }
  }
  const auto pinned = enumerate_candidates(small(), 8, 16, PlanConstraints::parse("pp=2,zero=1"));
  ASSERT_FALSE(pinned.empty());
  for (const ParallelConfig& c : pinned) {
    EXPECT_EQ(c.pp, 2);
    EXPECT_EQ(c.zero, 1);
  }
  EXPECT_TRUE(enumerate_candidates(small(), 8, 16, PlanConstraints::parse("tp=3")).empty());
  EXPECT_THROW(PlanConstraints::parse("tq=2"), Error);
}

TEST(Planner, ChoosesTheFastestFeasible) {
  PlannerOptions o;
  o.global_batch = 16;
  o.seq_len = 1024;
  o.threads = 2;
  std::vector<std::string> lines;
  const PlanResult r = plan_parallelism(small(), h100s(8), {}, o,
                                        [&](const std::string& l) { lines.push_back(l); });
  ASSERT_EQ(r.chosen, 0);
  const Candidate& best = r.candidates[0];
  EXPECT_TRUE(best.feasible);
  for (const Candidate& c : r.candidates)
    if (c.feasible) {
      EXPECT_GE(c.cost.step_s, best.cost.step_s);
    }
  ASSERT_GE(lines.size(), 7u);
  EXPECT_EQ(lines[1], "Parallel Graph Compile start...");
  EXPECT_EQ(lines[5], "Configuration for parallelism is selected.");
  EXPECT_EQ(lines[6], best.config.describe(16));
}

TEST(Planner, TooLittleMemoryNamesTheSmallestRequirement) {
  ClusterSpec k = h100s(8);
  k.memory_bytes_per_device = 1e6;
  PlannerOptions o;
  o.global_batch = 16;
  o.seq_len = 1024;
  const PlanResult r = plan_parallelism(small(), k, {}, o, [](const std::string&) {});
  EXPECT_EQ(r.chosen, -1);
  EXPECT_NE(r.no_feasible_message().find("smallest requirement"), std::string::npos);
}

}  // namespace
}  // namespace vacc
