// The model-level layout of tensor parallelism, on one process: ModelShard::tensor_parallel's
// split (heads, replicated kv heads, FFN, vocabulary) and its errors; the ParameterTable of a
// tp shard (pieces of the checkpoint tensors with their row / column ranges); the
// initialisation of a shard equal to its slice of the whole model's (every element, every
// rank, also through a FlatRange); place_checkpoint_piece assembling the whole tensors from
// the ranks' pieces; load_hf_checkpoint reading a shard's slices out of a whole-model folder.
// The tp forward/backward itself runs under mpirun (tests/unit_mpi/tensor_parallel_test.cpp).
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <limits>
#include <map>
#include <string>
#include <vector>

#include "test_util.h"
#include "vacc/model/initialization.h"
#include "vacc/model/model_shard.h"
#include "vacc/model/parameter_table.h"
#include "vacc/runtime/hf_checkpoint.h"

namespace vacc::test {
namespace {

namespace fs = std::filesystem;

// Qwen2-like: biases, tied embeddings, 8 q heads over 2 kv heads (tp=4 replicates them).
ModelConfig qwen_like() {
  return test_model_config({.vocab = 101, .hidden = 32, .ffn = 48, .layers = 2, .heads = 8,
                            .kv_heads = 2, .head_dim = 4, .tied = true, .bias = true});
}
// Llama-like: untied, no biases, kv heads that tp divides.
ModelConfig llama_like() {
  return test_model_config({.vocab = 97, .hidden = 24, .ffn = 32, .layers = 2, .heads = 4,
                            .kv_heads = 4, .head_dim = 6, .tied = false, .bias = false});
}

std::vector<float> host_values(Backend& be, const Tensor& flat, const ParameterTable& table,
                               const CheckpointTensor& ct) {
  std::vector<float> v(size_t(ct.numel()));
  be.download(flat.view(table.entry(ct.entry).offset + ct.offset, ct.shape), v.data());
  return v;
}

Tensor initialized(Backend& be, const ModelConfig& c, const ParameterTable& table, uint64_t seed) {
  Tensor flat = be.zeros({table.total_numel()}, DType::F32, MemoryCategory::Parameters, "test");
  initialize_parameters(be, c, table, seed, flat);
  return flat;
}

// Norms and biases are constants under initialize_parameters: random values make a slice
// mix-up show.
void randomize_all(Backend& be, const ParameterTable& table, Tensor& flat, uint64_t seed) {
  std::vector<float> v = random_vector(size_t(table.total_numel()), seed);
  be.upload(v.data(), flat);
}

TEST(TensorParallelShard, SplitsHeadsFfnAndVocabulary) {
  const ModelConfig c = qwen_like();
  // tp=2: the 2 kv heads split.
  for (int r = 0; r < 2; ++r) {
    const ModelShard s = ModelShard::tensor_parallel(c, 0, 2, true, true, r, 2);
    EXPECT_EQ(s.q_heads, 4);
    EXPECT_EQ(s.q_head_begin, 4 * r);
    EXPECT_EQ(s.kv_heads, 1);
    EXPECT_EQ(s.kv_head_begin, r);
    EXPECT_EQ(s.kv_replicas, 1);
    EXPECT_EQ(s.kv_replica_group(), std::vector<int>{r});
    EXPECT_EQ(s.ffn_size, 24);
    EXPECT_EQ(s.ffn_begin, 24 * r);
    EXPECT_EQ(s.vocab_begin, 51 * r);
    EXPECT_EQ(s.vocab_size, r == 0 ? 51 : 50);
    EXPECT_TRUE(s.vocab_parallel(c));
  }
  // tp=4: 2 q heads per rank, the kv heads replicated on pairs of ranks.
  int64_t vocab_next = 0;
  for (int r = 0; r < 4; ++r) {
    const ModelShard s = ModelShard::tensor_parallel(c, 1, 2, false, true, r, 4);
    EXPECT_EQ(s.layer_begin, 1);
    EXPECT_FALSE(s.has_embedding);
    EXPECT_EQ(s.q_heads, 2);
    EXPECT_EQ(s.q_head_begin, 2 * r);
    EXPECT_EQ(s.kv_heads, 1);
    EXPECT_EQ(s.kv_head_begin, r / 2);
    EXPECT_EQ(s.kv_replicas, 2);
    EXPECT_EQ(s.kv_replica_group(), (std::vector<int>{r / 2 * 2, r / 2 * 2 + 1}));
    // The q heads' kv head (h / (heads / kv_heads)) is the one the rank holds.
    for (int64_t h = s.q_head_begin; h < s.q_head_begin + s.q_heads; ++h)
      EXPECT_EQ(h / (c.num_heads / c.num_kv_heads), s.kv_head_begin);
    EXPECT_EQ(s.ffn_size, 12);
    EXPECT_EQ(s.vocab_begin, vocab_next);
    EXPECT_EQ(s.vocab_size, r < 3 ? 26 : 23);  // ceil(101 / 4) = 26
    vocab_next = s.vocab_end();
  }
  EXPECT_EQ(vocab_next, c.vocab_size);
  // tp=1 is the whole model's split.
  const ModelShard one = ModelShard::tensor_parallel(c, 0, 2, true, true, 0, 1);
  EXPECT_FALSE(one.vocab_parallel(c));
  EXPECT_EQ(ParameterTable(c, one).total_numel(), ParameterTable(c, ModelShard::whole(c)).total_numel());
}

TEST(TensorParallelShard, ImpossibleSplitsAreClearErrors) {
  ModelConfig c = test_model_config({.vocab = 100, .hidden = 28, .ffn = 64, .layers = 2,
                                     .heads = 14, .kv_heads = 2, .head_dim = 2, .tied = true,
                                     .bias = true});
  expect_error([&] { ModelShard::tensor_parallel(c, 0, 2, true, true, 0, 4); },
               "tp=4 does not divide the 14 attention heads");
  ModelConfig kv = test_model_config({.vocab = 100, .hidden = 24, .ffn = 48, .layers = 1,
                                      .heads = 12, .kv_heads = 4, .head_dim = 2, .tied = true,
                                      .bias = false});
  expect_error([&] { ModelShard::tensor_parallel(kv, 0, 1, true, true, 0, 6); },
               "tp=6 neither divides the 4 key/value heads");
  ModelConfig ffn = qwen_like();
  ffn.intermediate_size = 50;
  expect_error([&] { ModelShard::tensor_parallel(ffn, 0, 2, true, true, 0, 4); },
               "tp=4 does not divide the 50 FFN columns");
  ModelConfig vocab = qwen_like();
  vocab.vocab_size = 9;  // ranges of 3: the fourth rank would hold nothing
  expect_error([&] { ModelShard::tensor_parallel(vocab, 0, 2, true, true, 0, 4); },
               "leaves a rank without any of the 9 vocabulary rows");
  expect_error([&] { ModelShard::tensor_parallel(qwen_like(), 0, 2, true, true, 4, 4); },
               "rank 4 of tp=4");
  expect_error([&] { ModelShard::tensor_parallel(qwen_like(), 0, 3, true, true, 0, 2); },
               "layers [0, 3)");
}

TEST(TensorParallelShard, TablePiecesDescribeTheirSlices) {
  const ModelConfig c = qwen_like();
  const ModelShard s = ModelShard::tensor_parallel(c, 0, 2, true, true, 3, 4);
  const ParameterTable t(c, s);
  std::map<std::string, const CheckpointTensor*> by_name;
  for (const CheckpointTensor& ct : t.checkpoint_tensors()) by_name[ct.name] = &ct;
  auto expect_piece = [&](const std::string& name, Shape shape, Shape full, int64_t row,
                          int64_t col, int replicas) {
    ASSERT_TRUE(by_name.count(name)) << name;
    const CheckpointTensor& ct = *by_name.at(name);
    EXPECT_EQ(ct.shape, shape) << name;
    EXPECT_EQ(ct.full_shape, full) << name;
    EXPECT_EQ(ct.row_begin, row) << name;
    EXPECT_EQ(ct.col_begin, col) << name;
    EXPECT_EQ(ct.replicas, replicas) << name;
  };
  const std::string p = "model.layers.1.";
  expect_piece("model.embed_tokens.weight", {23, 32}, {101, 32}, 78, 0, 1);
  expect_piece(p + "input_layernorm.weight", {32}, {32}, 0, 0, 4);
  expect_piece(p + "self_attn.q_proj.weight", {8, 32}, {32, 32}, 24, 0, 1);
  expect_piece(p + "self_attn.k_proj.weight", {4, 32}, {8, 32}, 4, 0, 2);
  expect_piece(p + "self_attn.v_proj.weight", {4, 32}, {8, 32}, 4, 0, 2);
  expect_piece(p + "self_attn.q_proj.bias", {8}, {32}, 24, 0, 1);
  expect_piece(p + "self_attn.k_proj.bias", {4}, {8}, 4, 0, 2);
  expect_piece(p + "self_attn.o_proj.weight", {32, 8}, {32, 32}, 0, 24, 1);
  expect_piece(p + "mlp.gate_proj.weight", {12, 32}, {48, 32}, 36, 0, 1);
  expect_piece(p + "mlp.up_proj.weight", {12, 32}, {48, 32}, 36, 0, 1);
  expect_piece(p + "mlp.down_proj.weight", {32, 12}, {32, 48}, 0, 36, 1);
  expect_piece("model.norm.weight", {32}, {32}, 0, 0, 4);
  EXPECT_FALSE(by_name.count("lm_head.weight"));  // tied
  // The fused entries: qkv (8 + 2 * 4 rows), gate_up (2 * 12 rows).
  EXPECT_EQ(t.entry(t.layer(1).qkv_weight).shape, (Shape{16, 32}));
  EXPECT_EQ(t.entry(t.layer(1).gate_up).shape, (Shape{24, 32}));
  EXPECT_EQ(t.entry(t.embed_tokens()).shape, (Shape{23, 32}));
  // Replicated kv: per layer the k and v rows of the qkv weight and bias.
  ASSERT_EQ(t.kv_replica_ranges().size(), 4u);
  const ParameterEntry& qkv = t.entry(t.layer(0).qkv_weight);
  EXPECT_EQ(t.kv_replica_ranges()[0].begin, qkv.offset + 8 * 32);
  EXPECT_EQ(t.kv_replica_ranges()[0].end, qkv.offset + 16 * 32);
  const ParameterEntry& bias = t.entry(t.layer(0).qkv_bias);
  EXPECT_EQ(t.kv_replica_ranges()[1].begin, bias.offset + 8);
  EXPECT_EQ(t.kv_replica_ranges()[1].end, bias.offset + 16);
  // Replicas 2 and 3 (rank 3's vocabulary, and so its embedding, is smaller): the same
  // offsets within the layer groups.
  const ParameterTable t2(c, ModelShard::tensor_parallel(c, 0, 2, true, true, 2, 4));
  ASSERT_NE(t2.total_numel(), t.total_numel());
  ASSERT_EQ(t2.kv_replica_ranges().size(), t.kv_replica_ranges().size());
  for (size_t i = 0; i < t.kv_replica_ranges().size(); ++i) {
    const FlatRange a = t.kv_replica_ranges()[i], b = t2.kv_replica_ranges()[i];
    const ParameterGroup& ga = t.groups()[t.layer_group(int64_t(i / 2))];
    const ParameterGroup& gb = t2.groups()[t2.layer_group(int64_t(i / 2))];
    EXPECT_TRUE(ga.offset <= a.begin && a.end <= ga.end()) << i;
    EXPECT_EQ(a.begin - ga.offset, b.begin - gb.offset) << i;
    EXPECT_EQ(a.numel(), b.numel()) << i;
  }
  // Split kv heads: nothing to reduce; the whole model: pieces are whole tensors.
  EXPECT_TRUE(ParameterTable(c, ModelShard::tensor_parallel(c, 0, 2, true, true, 0, 2))
                  .kv_replica_ranges()
                  .empty());
  const ParameterTable whole(c, ModelShard::whole(c));
  for (const CheckpointTensor& ct : whole.checkpoint_tensors()) {
    EXPECT_TRUE(ct.is_whole()) << ct.name;
    EXPECT_EQ(ct.replicas, 1) << ct.name;
  }
  // An untied head on a last stage holds its vocabulary rows of lm_head.
  const ModelConfig l = llama_like();
  const ParameterTable head(l, ModelShard::tensor_parallel(l, 2, 2, false, true, 1, 2));
  ASSERT_EQ(head.checkpoint_tensors().size(), 2u);
  EXPECT_EQ(head.checkpoint_tensors()[1].name, "lm_head.weight");
  EXPECT_EQ(head.checkpoint_tensors()[1].shape, (Shape{48, 24}));
  EXPECT_EQ(head.checkpoint_tensors()[1].row_begin, 49);
}

// Every tp rank's initialised pieces, placed into whole tensors, give the whole model's
// initialisation bitwise, and cover every element; a FlatRange initialisation of a shard is
// its slice of the shard's.
TEST(TensorParallelShard, InitialisationIsTheWholeModelsSliceAndPiecesAssemble) {
  auto be = make_cpu_backend();
  for (const ModelConfig& c : {qwen_like(), llama_like()}) {
    const ParameterTable whole_table(c, ModelShard::whole(c));
    const Tensor whole = initialized(*be, c, whole_table, 7);
    std::map<std::string, std::vector<float>> want;
    for (const CheckpointTensor& ct : whole_table.checkpoint_tensors())
      want[ct.name] = host_values(*be, whole, whole_table, ct);
    for (int tp : {2, 4}) {
      SCOPED_TRACE(c.architecture + " tp=" + std::to_string(tp) + " bias=" +
                   std::to_string(c.attention_bias));
      std::map<std::string, std::vector<float>> assembled;
      for (const auto& [name, v] : want)
        assembled[name].assign(v.size(), std::numeric_limits<float>::quiet_NaN());
      for (int r = 0; r < tp; ++r) {
        const ParameterTable t(c, ModelShard::tensor_parallel(c, 0, c.num_layers, true, true, r, tp));
        const Tensor flat = initialized(*be, c, t, 7);
        for (const CheckpointTensor& ct : t.checkpoint_tensors()) {
          const std::vector<float> piece = host_values(*be, flat, t, ct);
          ASSERT_EQ(shape_numel(ct.full_shape), int64_t(want.at(ct.name).size())) << ct.name;
          // The piece is its slice of the whole tensor...
          std::vector<float> slice(piece.size());
          extract_checkpoint_piece(ct, want.at(ct.name).data(), slice.data());
          EXPECT_EQ(std::memcmp(piece.data(), slice.data(), piece.size() * 4), 0)
              << ct.name << " rank " << r;
          // ...and goes back into its place.
          place_checkpoint_piece(ct, piece.data(), assembled.at(ct.name).data());
        }
        // A ZeRO-style range over the tp shard's layout draws the same values.
        const int64_t mid = t.total_numel() / 3 + 5;
        for (FlatRange range : {FlatRange{0, mid}, FlatRange{mid, t.total_numel()}}) {
          Tensor part = be->zeros({range.numel()}, DType::F32, MemoryCategory::Parameters, "part");
          initialize_parameters(*be, c, t, 7, part, range);
          EXPECT_EQ(to_host(*be, part), to_host(*be, flat.view(range.begin, {range.numel()})));
        }
      }
      for (const auto& [name, v] : want)
        EXPECT_EQ(std::memcmp(assembled.at(name).data(), v.data(), v.size() * 4), 0)
            << name << " assembled from the tp pieces";
    }
  }
}

class TensorParallelLoadTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("vacc_tp_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  fs::path dir_;
};

// A whole-model folder (random values everywhere, f32 and bf16, in several files) loads into
// every tp shard as the shard's slices, whole or in FlatRange parts.
TEST_F(TensorParallelLoadTest, ShardsReadTheirSlicesOfAWholeModelFolder) {
  auto be = make_cpu_backend();
  for (const ModelConfig& c : {qwen_like(), llama_like()}) {
    const ParameterTable whole_table(c, ModelShard::whole(c));
    Tensor whole = be->zeros({whole_table.total_numel()}, DType::F32, MemoryCategory::Parameters,
                             "whole");
    randomize_all(*be, whole_table, whole, 3);
    for (DType dtype : {DType::F32, DType::BF16}) {
      SCOPED_TRACE(c.architecture + " " + dtype_name(dtype));
      const std::string folder = (dir_ / (c.architecture + dtype_name(dtype))).string();
      save_hf_checkpoint(folder, *be, c, whole_table, whole, dtype, 20'000, "");  // several files
      // The whole model's view of the file's values (bf16 rounded).
      Tensor reloaded = be->zeros({whole_table.total_numel()}, DType::F32,
                                  MemoryCategory::Parameters, "reloaded");
      load_hf_checkpoint(folder, *be, c, whole_table, reloaded, false);
      std::map<std::string, std::vector<float>> want;
      for (const CheckpointTensor& ct : whole_table.checkpoint_tensors())
        want[ct.name] = host_values(*be, reloaded, whole_table, ct);
      for (int tp : {2, 4}) {
        for (int r = 0; r < tp; ++r) {
          const ParameterTable t(c, ModelShard::tensor_parallel(c, 0, c.num_layers, true, true, r, tp));
          Tensor flat = be->zeros({t.total_numel()}, DType::F32, MemoryCategory::Parameters, "tp");
          load_hf_checkpoint(folder, *be, c, t, flat, false);
          for (const CheckpointTensor& ct : t.checkpoint_tensors()) {
            std::vector<float> slice(size_t(ct.numel()));
            extract_checkpoint_piece(ct, want.at(ct.name).data(), slice.data());
            EXPECT_EQ(host_values(*be, flat, t, ct), slice) << ct.name << " tp=" << tp << " rank " << r;
          }
          // In two FlatRange parts, cutting through rows of column slices.
          const int64_t mid = t.total_numel() / 2 + 3;
          for (FlatRange range : {FlatRange{0, mid}, FlatRange{mid, t.total_numel()}}) {
            Tensor part = be->zeros({range.numel()}, DType::F32, MemoryCategory::Parameters, "p");
            load_hf_checkpoint(folder, *be, c, t, part, false, range);
            EXPECT_EQ(to_host(*be, part), to_host(*be, flat.view(range.begin, {range.numel()})))
                << "range [" << range.begin << ", " << range.end << ") tp=" << tp << " rank " << r;
          }
        }
      }
    }
  }
}

TEST_F(TensorParallelLoadTest, AFileTensorOfTheWrongShapeNamesFileAndTensor) {
  auto be = make_cpu_backend();
  const ModelConfig c = llama_like();
  ModelConfig other = c;
  other.intermediate_size = 40;
  const ParameterTable other_table(other, ModelShard::whole(other));
  Tensor flat = be->zeros({other_table.total_numel()}, DType::F32, MemoryCategory::Parameters, "w");
  const std::string folder = (dir_ / "m").string();
  save_hf_checkpoint(folder, *be, other, other_table, flat, DType::F32, kDefaultMaxShardBytes, "");
  const ParameterTable t(c, ModelShard::tensor_parallel(c, 0, 2, true, true, 1, 2));
  Tensor shard = be->zeros({t.total_numel()}, DType::F32, MemoryCategory::Parameters, "tp");
  expect_error([&] { load_hf_checkpoint(folder, *be, c, t, shard, false); },
               "model.safetensors: tensor \"model.layers.0.mlp.gate_proj.weight\" has shape "
               "[40, 24] but the model (config.json) needs [32, 24]");
}

}  // namespace
}  // namespace vacc::test
