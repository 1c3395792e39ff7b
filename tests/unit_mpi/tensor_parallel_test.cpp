// Tensor parallelism of the model, run as several ranks: `mpirun -np N tensor_parallel_test`.
// Each rank of a tp group builds its shard (ModelShard::tensor_parallel) of a small model,
// with TensorParallelHooks over the group's communicator, and runs forward_backward on the
// same micro-batch as a whole model every rank also builds: the loss must agree (1e-5
// relative) and every gradient piece must equal its slice of the whole model's gradient
// (after summing replicated kv rows over their replicas) within 1e-5 of the tensor's largest
// gradient. Also forward_loss and the shard's logits; loading a whole-model Hugging Face
// folder into a shard (the slice of the whole model's initialisation), and the ranks' pieces
// assembled with place_checkpoint_piece giving back the whole tensors.
//
// f32, and bf16 compute with looser tolerances; no recomputation, selective and full.
// Cases: a Qwen2-like model (biases, tied embeddings, 2 kv heads: split at tp=2, replicated
// at tp=4), a Llama-like one (untied, no biases, kv heads that tp divides) and a multi-query
// one (1 kv head, replicated on every rank). With 4 ranks, tp=4 and two groups of tp=2.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "test_util.h"
#include "vacc/comm/communicator.h"
#include "vacc/comm/mpi_process.h"
#include "vacc/model/initialization.h"
#include "vacc/model/model_shard.h"
#include "vacc/model/parameter_table.h"
#include "vacc/model/recompute.h"
#include "vacc/model/transformer.h"
#include "vacc/runtime/hf_checkpoint.h"

namespace vacc {
namespace {

namespace fs = std::filesystem;

std::unique_ptr<Communicator> g_comm;

Communicator& world() { return *g_comm; }

constexpr uint64_t kSeed = 1234;
constexpr int64_t kBatch = 2, kSeq = 9;

ModelConfig qwen_like() {
  return test::test_model_config({.vocab = 101, .hidden = 32, .ffn = 48, .layers = 2, .heads = 8,
                                  .kv_heads = 2, .head_dim = 4, .tied = true, .bias = true});
}
ModelConfig llama_like() {
  ModelConfig c = test::test_model_config({.vocab = 97, .hidden = 24, .ffn = 32, .layers = 2,
                                           .heads = 4, .kv_heads = 4, .head_dim = 6,
                                           .tied = false, .bias = false});
  c.architecture = "LlamaForCausalLM";
  c.model_type = "llama";
  return c;
}
ModelConfig multi_query() {
  return test::test_model_config({.vocab = 64, .hidden = 16, .ffn = 24, .layers = 2, .heads = 4,
                                  .kv_heads = 1, .head_dim = 4, .tied = false, .bias = true});
}

// The hooks of a tp group: sums with all_reduce; the global log-sum-exp from every rank's
// values gathered and combined on the host (in double, the same on every rank).
TensorParallelHooks make_hooks(Communicator& tp, Backend& be) {
  TensorParallelHooks h;
  auto sum = [&tp](Tensor& t) { tp.all_reduce(t); };
  h.reduce_forward = sum;
  h.reduce_backward = sum;
  h.reduce_sum = sum;
  h.combine_logsumexp = [&tp, &be](Tensor& lse) {
    const int64_t n = lse.numel(), ranks = tp.size();
    Tensor all = be.empty({n * ranks}, DType::F32, MemoryCategory::Buffers, "gathered lse");
    const std::vector<int64_t> counts(size_t(ranks), n);
    tp.all_gather(lse, all, counts);
    std::vector<float> host(static_cast<size_t>(n * ranks)), out(static_cast<size_t>(n));
    be.download(all, host.data());
    for (int64_t i = 0; i < n; ++i) {
      double mx = -INFINITY;
      for (int64_t r = 0; r < ranks; ++r) mx = std::max(mx, double(host[size_t(r * n + i)]));
      double s = 0.0;
      for (int64_t r = 0; r < ranks; ++r) s += std::exp(double(host[size_t(r * n + i)]) - mx);
      out[size_t(i)] = float(mx + std::log(s));
    }
    be.upload(out.data(), lse);
  };
  return h;
}

// One micro-batch, the same on every rank: ids, positions, labels (some ignored).
struct MicroBatch {
  Tensor ids, positions, labels;
};
MicroBatch micro_batch(Backend& be, int64_t vocab) {
  std::mt19937_64 rng(99);
  std::uniform_int_distribution<int32_t> token(0, int32_t(vocab - 1));
  std::vector<int32_t> ids, pos, labels;
  for (int64_t b = 0; b < kBatch; ++b)
    for (int64_t t = 0; t < kSeq; ++t) {
      ids.push_back(token(rng));
      pos.push_back(int32_t(t));
      labels.push_back(t % 4 == 3 ? -100 : token(rng));
    }
  return {test::ids_to_device(be, ids), test::ids_to_device(be, pos),
          test::ids_to_device(be, labels)};
}

std::vector<float> piece_values(Backend& be, const Tensor& flat, const ParameterTable& table,
                                const CheckpointTensor& ct) {
  std::vector<float> v(size_t(ct.numel()));
  be.download(flat.view(table.entry(ct.entry).offset + ct.offset, ct.shape), v.data());
  return v;
}

// name -> the whole tensor's values.
std::map<std::string, std::vector<float>> whole_tensors(Backend& be, const ParameterTable& table,
                                                        const Tensor& flat) {
  std::map<std::string, std::vector<float>> out;
  for (const CheckpointTensor& ct : table.checkpoint_tensors())
    out[ct.name] = piece_values(be, flat, table, ct);
  return out;
}

float loss_of(Backend& be, const Tensor& loss) {
  float v = 0;
  be.download(loss, &v);
  return v;
}

// This rank's tp group: groups of tp_size consecutive ranks (collective over the world).
std::unique_ptr<Communicator> tp_group(int tp_size) {
  return world().split(world().rank() / tp_size, world().rank());
}

// Tolerances: f32 agrees to 1e-5 (loss relative; gradients and logits of the tensor's
// largest); bf16 matrix products round their operands, and a different summation order flips
// some roundings, so bf16 gets 1e-3 on the loss and 3e-2 on gradients and logits.
struct Tolerance {
  double loss, grad;
};
Tolerance tolerance(DType compute) {
  return compute == DType::F32 ? Tolerance{1e-5, 1e-5} : Tolerance{1e-3, 3e-2};
}

void run_case(const ModelConfig& c, int tp_size, DType compute = DType::F32,
              Recompute recompute = Recompute::None) {
  SCOPED_TRACE(c.architecture + " tp=" + std::to_string(tp_size) + " kv_heads=" +
               std::to_string(c.num_kv_heads) + " " + dtype_name(compute) + " recompute=" +
               recompute_name(recompute));
  const Tolerance tol = tolerance(compute);
  const std::unique_ptr<Communicator> group = tp_group(tp_size);
  Communicator& tp = *group;
  ASSERT_EQ(tp.size(), tp_size);
  auto be = make_cpu_backend(DeviceAllocator::kUnlimited, 1);
  const MicroBatch mb = micro_batch(*be, c.vocab_size);
  const float grad_scale = 0.25f;

  // The whole model.
  Transformer whole(*be, c, ModelShard::whole(c), compute, kSeq);
  initialize_parameters(*be, c, whole.table(), kSeed, whole.parameters());
  whole.parameters_changed();
  whole.zero_gradients();
  auto whole_act = whole.allocate_activations(kBatch, kSeq);
  Tensor whole_loss = be->zeros({1}, DType::F32, MemoryCategory::Buffers, "loss");
  whole.forward_backward(mb.ids, mb.positions, mb.labels, grad_scale, whole_act, whole_loss);
  const auto whole_grads = whole_tensors(*be, whole.table(), whole.gradients());

  // This rank's tp shard.
  const ModelShard shard =
      ModelShard::tensor_parallel(c, 0, c.num_layers, true, true, tp.rank(), tp_size);
  Transformer model(*be, c, shard, compute, kSeq);
  model.set_recompute(recompute);
  initialize_parameters(*be, c, model.table(), kSeed, model.parameters());
  model.parameters_changed();
  model.zero_gradients();
  const TensorParallelHooks hooks = make_hooks(tp, *be);
  model.set_tensor_parallel_hooks(&hooks);
  auto act = model.allocate_activations(kBatch, kSeq);
  Tensor loss = be->zeros({1}, DType::F32, MemoryCategory::Buffers, "loss");
  model.forward_backward(mb.ids, mb.positions, mb.labels, grad_scale, act, loss);

  const double want_loss = loss_of(*be, whole_loss), got_loss = loss_of(*be, loss);
  EXPECT_NEAR(got_loss, want_loss, tol.loss * std::abs(want_loss)) << "loss";

  // Replicated kv heads: their k/v gradient rows are partial on each replica.
  std::unique_ptr<Communicator> kv = tp.split(int(shard.kv_head_begin), tp.rank());
  ASSERT_EQ(kv->size(), shard.kv_replicas);
  EXPECT_EQ(shard.kv_replica_group()[size_t(kv->rank())], tp.rank());
  EXPECT_EQ(model.table().kv_replica_ranges().empty(), shard.kv_replicas == 1);
  for (const FlatRange& r : model.table().kv_replica_ranges()) {
    Tensor g = model.gradients().view(r.begin, {r.numel()});
    kv->all_reduce(g);
  }

  for (const CheckpointTensor& ct : model.table().checkpoint_tensors()) {
    const std::vector<float>& full = whole_grads.at(ct.name);
    std::vector<float> want(size_t(ct.numel()));
    extract_checkpoint_piece(ct, full.data(), want.data());
    float max_abs = 0;
    for (float v : full) max_abs = std::max(max_abs, std::abs(v));
    ASSERT_GT(max_abs, 0.0f) << ct.name;
    test::expect_close(piece_values(*be, model.gradients(), model.table(), ct), want, 0.0,
                       tol.grad * max_abs, "gradient of " + ct.name + " on tp rank " +
                                           std::to_string(tp.rank()));
  }

  // Evaluation: forward_loss, and the shard's columns of the logits.
  Tensor eval_loss = be->zeros({1}, DType::F32, MemoryCategory::Buffers, "eval loss");
  model.forward_loss(mb.ids, mb.positions, mb.labels, act, eval_loss);
  EXPECT_NEAR(loss_of(*be, eval_loss), want_loss, tol.loss * std::abs(want_loss))
      << "forward_loss";
  const std::vector<float> whole_logits = test::to_host(*be, whole.logits(mb.ids, mb.positions, whole_act));
  const Tensor logits = model.logits(mb.ids, mb.positions, act);
  ASSERT_EQ(logits.shape(), (Shape{kBatch * kSeq, shard.vocab_size}));
  const std::vector<float> got_logits = test::to_host(*be, logits);
  std::vector<float> want_logits;
  float max_logit = 0;
  for (int64_t i = 0; i < kBatch * kSeq; ++i)
    for (int64_t j = shard.vocab_begin; j < shard.vocab_end(); ++j) {
      want_logits.push_back(whole_logits[size_t(i * c.vocab_size + j)]);
      max_logit = std::max(max_logit, std::abs(want_logits.back()));
    }
  test::expect_close(got_logits, want_logits, 0.0, tol.grad * max_logit, "logits");
}

#define REQUIRE_RANKS()                                                               \
  do {                                                                                \
    if (world().size() < 2) GTEST_SKIP() << "needs 2 or 4 ranks (mpirun -np 2 or 4)"; \
  } while (0)

TEST(TensorParallel, QwenLikeTiedWithBiasesAndReplicatedOrSplitKvHeads) {
  REQUIRE_RANKS();
  for (int tp : {2, 4})
    if (world().size() % tp == 0) run_case(qwen_like(), tp);
}

TEST(TensorParallel, LlamaLikeUntiedWithSplitKvHeads) {
  REQUIRE_RANKS();
  for (int tp : {2, 4})
    if (world().size() % tp == 0) run_case(llama_like(), tp);
}

TEST(TensorParallel, MultiQueryKvHeadReplicatedOnEveryRank) {
  REQUIRE_RANKS();
  for (int tp : {2, 4})
    if (world().size() % tp == 0) run_case(multi_query(), tp);
}

// Recomputation reruns the layers' forward with its all-reduces before backward; bf16 compute.
TEST(TensorParallel, RecomputationAndBf16) {
  REQUIRE_RANKS();
  const int tp = world().size() % 4 == 0 ? 4 : 2;
  for (Recompute mode : {Recompute::Selective, Recompute::Full})
    run_case(qwen_like(), tp, DType::F32, mode);
  run_case(qwen_like(), tp, DType::BF16);
  run_case(llama_like(), tp, DType::BF16, Recompute::Full);
}

// Without hooks a vocabulary-parallel shard refuses to run, naming what it needs.
TEST(TensorParallel, VocabularyShardWithoutHooksIsAClearError) {
  const ModelConfig c = qwen_like();
  auto be = make_cpu_backend(DeviceAllocator::kUnlimited, 1);
  Transformer model(*be, c, ModelShard::tensor_parallel(c, 0, 2, true, true, 0, 2), DType::F32,
                    kSeq);
  auto act = model.allocate_activations(kBatch, kSeq);
  const MicroBatch mb = micro_batch(*be, c.vocab_size);
  Tensor loss = be->zeros({1}, DType::F32, MemoryCategory::Buffers, "loss");
  test::expect_error([&] { model.forward_loss(mb.ids, mb.positions, mb.labels, act, loss); },
                     "needs tensor-parallel hooks");
}

// A label past the whole vocabulary is on no rank's shard: every rank of the group stops with
// the label, its row and the vocabulary (rather than a loss missing that row's logit).
TEST(TensorParallel, LabelOutsideTheVocabularyIsAClearError) {
  REQUIRE_RANKS();
  const ModelConfig c = qwen_like();
  const std::unique_ptr<Communicator> tp = tp_group(2);
  auto be = make_cpu_backend(DeviceAllocator::kUnlimited, 1);
  Transformer model(*be, c, ModelShard::tensor_parallel(c, 0, c.num_layers, true, true, tp->rank(), 2),
                    DType::F32, kSeq);
  initialize_parameters(*be, c, model.table(), kSeed, model.parameters());
  model.parameters_changed();
  const TensorParallelHooks hooks = make_hooks(*tp, *be);
  model.set_tensor_parallel_hooks(&hooks);
  auto act = model.allocate_activations(kBatch, kSeq);
  const MicroBatch mb = micro_batch(*be, c.vocab_size);
  std::vector<int32_t> labels(size_t(kBatch * kSeq), 1);
  labels[5] = int32_t(c.vocab_size);
  const Tensor bad = test::ids_to_device(*be, labels);
  Tensor loss = be->zeros({1}, DType::F32, MemoryCategory::Buffers, "loss");
  test::expect_error([&] { model.forward_loss(mb.ids, mb.positions, bad, act, loss); },
                     "label " + std::to_string(c.vocab_size) + " of row 5 is outside the vocabulary");
}

// A whole-model folder saved by rank 0 loads into every tp shard as the slices of the whole
// model's initialisation; the ranks' pieces, gathered and placed, give back the whole tensors.
TEST(TensorParallel, LoadingAndAssemblingCheckpointPieces) {
  REQUIRE_RANKS();
  for (const ModelConfig& c : {qwen_like(), llama_like()}) {
    for (int tp_size : {2, 4}) {
      if (world().size() % tp_size != 0) continue;
      SCOPED_TRACE(c.architecture + " tp=" + std::to_string(tp_size));
      const std::unique_ptr<Communicator> group = tp_group(tp_size);
      Communicator& tp = *group;
      auto be = make_cpu_backend(DeviceAllocator::kUnlimited, 1);

      const ParameterTable whole_table(c, ModelShard::whole(c));
      Tensor whole = be->zeros({whole_table.total_numel()}, DType::F32, MemoryCategory::Parameters,
                               "whole");
      initialize_parameters(*be, c, whole_table, kSeed, whole);
      const auto want = whole_tensors(*be, whole_table, whole);

      // Rank 0 writes the folder (in several files); every rank reads its slices.
      int64_t pid = ::getpid();
      world().broadcast_host(&pid, sizeof pid, 0);
      const fs::path dir = fs::temp_directory_path() / ("vacc_tp_test_" + std::to_string(pid));
      if (world().rank() == 0) {
        fs::remove_all(dir);
        save_hf_checkpoint(dir.string(), *be, c, whole_table, whole, DType::F32, 20'000, "");
      }
      world().barrier();
      const ModelShard shard =
          ModelShard::tensor_parallel(c, 0, c.num_layers, true, true, tp.rank(), tp_size);
      const ParameterTable table(c, shard);
      Tensor loaded = be->zeros({table.total_numel()}, DType::F32, MemoryCategory::Parameters, "l");
      load_hf_checkpoint(dir.string(), *be, c, table, loaded, false);
      Tensor init = be->zeros({table.total_numel()}, DType::F32, MemoryCategory::Parameters, "i");
      initialize_parameters(*be, c, table, kSeed, init);
      EXPECT_EQ(test::to_host(*be, loaded), test::to_host(*be, init));
      world().barrier();
      if (world().rank() == 0) fs::remove_all(dir);

      // Every rank gathers the group's flat parameters and assembles the whole tensors.
      std::vector<int64_t> counts;
      std::vector<ParameterTable> tables;
      for (int r = 0; r < tp_size; ++r) {
        tables.emplace_back(c, ModelShard::tensor_parallel(c, 0, c.num_layers, true, true, r, tp_size));
        counts.push_back(tables.back().total_numel());
      }
      int64_t total = 0;
      for (int64_t n : counts) total += n;
      Tensor gathered = be->empty({total}, DType::F32, MemoryCategory::Buffers, "gathered");
      tp.all_gather(loaded, gathered, counts);
      const std::vector<float> host = test::to_host(*be, gathered);
      std::map<std::string, std::vector<float>> assembled;
      for (const auto& [name, v] : want) assembled[name].assign(v.size(), NAN);
      int64_t base = 0;
      for (int r = 0; r < tp_size; ++r) {
        for (const CheckpointTensor& ct : tables[size_t(r)].checkpoint_tensors()) {
          const float* piece = host.data() + base + tables[size_t(r)].entry(ct.entry).offset + ct.offset;
          place_checkpoint_piece(ct, piece, assembled.at(ct.name).data());
        }
        base += counts[size_t(r)];
      }
      for (const auto& [name, v] : want)
        EXPECT_EQ(std::memcmp(assembled.at(name).data(), v.data(), v.size() * 4), 0)
            << name << " assembled from the tp ranks' pieces";
    }
  }
}

class RankFailurePrinter : public ::testing::EmptyTestEventListener {
 public:
  explicit RankFailurePrinter(int rank) : rank_(rank) {}
  void OnTestPartResult(const ::testing::TestPartResult& result) override {
    if (!result.failed()) return;
    std::fprintf(stdout, "[rank %d] %s:%d: Failure\n%s\n", rank_,
                 result.file_name() ? result.file_name() : "?", result.line_number(),
                 result.message());
    std::fflush(stdout);
  }

 private:
  int rank_;
};

// A test that failed on this rank may leave the others waiting in a collective: end the job.
class AbortOnFailure : public ::testing::EmptyTestEventListener {
 public:
  void OnTestEnd(const ::testing::TestInfo& info) override {
    if (info.result()->Failed())
      mpi_abort("rank " + std::to_string(world().rank()) + " (host " + world().host() +
                    "): test " + info.test_suite_name() + "." + info.name() +
                    " failed; ending the job",
                1);
  }
};

}  // namespace
}  // namespace vacc

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  try {
    vacc::g_comm = vacc::make_communicator();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "tensor_parallel_test: %s\n", e.what());
    return 1;
  }
  auto& listeners = ::testing::UnitTest::GetInstance()->listeners();
  if (vacc::g_comm->rank() != 0) {
    delete listeners.Release(listeners.default_result_printer());
    listeners.Append(new vacc::RankFailurePrinter(vacc::g_comm->rank()));
  }
  if (vacc::g_comm->size() > 1) listeners.Append(new vacc::AbortOnFailure);
  int result = RUN_ALL_TESTS();
  vacc::g_comm->barrier();
  vacc::g_comm.reset();
  return result;
}
