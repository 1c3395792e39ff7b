// The training loop: determinism, micro-batching, learning, and clear errors.
#include <cmath>

#include "test_util.h"
#include "vacc/comm/single_rank_communicator.h"
#include "vacc/io/synthetic_data.h"
#include "vacc/runtime/trainer.h"

namespace vacc::test {
namespace {

SingleRankCommunicator one_rank;

ModelConfig small_config() {
  return test_model_config({.vocab = 97, .hidden = 48, .ffn = 80, .layers = 2, .heads = 6,
                            .kv_heads = 2, .head_dim = 8, .tied = true, .bias = true});
}

// Losses of `steps` steps; with same_batch, every step trains on the first batch.
std::vector<double> run(const ModelConfig& c, TrainerOptions opt, int steps,
                        bool same_batch = false) {
  auto be = make_cpu_backend();
  Trainer trainer(*be, one_rank, c, opt, 0.0);
  SyntheticData data(c.vocab_size, opt.seq_len, opt.seed);
  std::vector<double> losses;
  for (int s = 1; s <= steps; ++s)
    losses.push_back(trainer.step(data.batch(same_batch ? 1 : s, opt.batch)).loss);
  return losses;
}

TrainerOptions options(DType dtype = DType::F32) {
  TrainerOptions opt;
  opt.batch = 4;
  opt.seq_len = 24;
  opt.dtype = dtype;
  opt.lr.peak_lr = 3e-3;
  opt.adam.weight_decay = 0.01f;
  opt.seed = 7;
  return opt;
}

TEST(Trainer, SameSeedGivesIdenticalLosses) {
  for (DType dt : {DType::F32, DType::BF16}) {
    auto a = run(small_config(), options(dt), 4), b = run(small_config(), options(dt), 4);
    EXPECT_EQ(a, b) << dtype_name(dt);
  }
}

TEST(Trainer, DifferentSeedGivesDifferentLosses) {
  TrainerOptions other = options();
  other.seed = 8;
  EXPECT_NE(run(small_config(), options(), 2), run(small_config(), other, 2));
}

TEST(Trainer, MicroBatchesGiveTheSameLosses) {
  auto whole = run(small_config(), options(), 5);
  for (int64_t m : {2, 4}) {
    TrainerOptions opt = options();
    opt.parallel.micro_batches = m;
    expect_close(run(small_config(), opt, 5), whole, 1e-5, 0.0,
                 "losses with " + std::to_string(m) + " micro-batches");
  }
}

TEST(Trainer, LossFallsWhenFittingOneBatch) {
  for (DType dt : {DType::F32, DType::BF16}) {
    auto losses = run(small_config(), options(dt), 30, true);
    EXPECT_NEAR(losses.front(), std::log(97.0), 0.3) << "a fresh model is near uniform";
    EXPECT_LT(losses.back(), losses.front() - 0.5) << dtype_name(dt);
  }
}

TEST(Trainer, EvaluateMatchesTheTrainingLossAndChangesNothing) {
  auto be = make_cpu_backend();
  TrainerOptions opt = options();
  opt.parallel.micro_batches = 2;
  Trainer a(*be, one_rank, small_config(), opt, 0.0), b(*be, one_rank, small_config(), opt, 0.0);
  SyntheticData data(97, opt.seq_len, 3);
  TokenBatch batch = data.batch(1, opt.batch);
  EvalResult before = a.evaluate(batch);
  EXPECT_EQ(before.tokens, batch.counted_tokens());
  EXPECT_NEAR(before.mean(), b.step(batch).loss, 1e-6);
  EXPECT_EQ(a.evaluate(batch).loss_sum, before.loss_sum) << "evaluation must not train";
  // An odd number of sequences: the last micro-batch is partly padding that counts nothing.
  TokenBatch five = data.batch(2, 5);
  EvalResult sum = a.evaluate(five.slice(0, 4));
  EvalResult last = a.evaluate(five.slice(4, 5));
  EvalResult all = a.evaluate(five);
  EXPECT_EQ(all.tokens, sum.tokens + last.tokens);
  EXPECT_NEAR(all.loss_sum, sum.loss_sum + last.loss_sum, 1e-4 * all.loss_sum);
}

TEST(Trainer, RejectsABatchThatDoesNotDivide) {
  TrainerOptions opt = options();
  opt.parallel.micro_batches = 3;
  auto be = make_cpu_backend();
  EXPECT_THROW(Trainer(*be, one_rank, small_config(), opt, 0.0), Error);
}

TEST(Trainer, RejectsTokensOutsideTheVocabulary) {
  auto be = make_cpu_backend();
  TrainerOptions opt = options();
  Trainer trainer(*be, one_rank, small_config(), opt, 0.0);
  TokenBatch b = SyntheticData(97, opt.seq_len, 1).batch(1, opt.batch);
  b.ids[5] = 97;
  try {
    trainer.step(b);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("97"), std::string::npos) << e.what();
  }
}

TEST(Trainer, MemoryBudgetOverrunNamesTheCategory) {
  auto be = make_cpu_backend(256 * 1024);
  try {
    Trainer trainer(*be, one_rank, small_config(), options(), 0.0);
    FAIL() << "expected an out-of-memory error";
  } catch (const Error& e) {
    std::string msg = e.what();
    EXPECT_NE(msg.find("budget"), std::string::npos) << msg;
    EXPECT_NE(msg.find("parameters"), std::string::npos) << msg;
  }
}

}  // namespace
}  // namespace vacc::test
