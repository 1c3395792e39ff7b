// Hugging Face checkpoint folders: save/load round trips (f32 bitwise, bf16 rounded, f16
// written by hand), sharding, loading a pipeline stage's slice, the streaming initialiser,
// saves that fail midway, and one test per kind of bad folder (each a vacc::Error naming
// the file and the tensor).
#include "vacc/runtime/hf_checkpoint.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <vector>

#include "test_util.h"
#include "vacc/core/error.h"
#include "vacc/core/progress_bar.h"
#include "vacc/io/safetensors.h"
#include "vacc/model/initialization.h"
#include "vacc/model/model_presets.h"

namespace vacc {
namespace {

namespace fs = std::filesystem;

ModelConfig small_qwen() {
  ModelConfig c;
  c.architecture = "Qwen2ForCausalLM";
  c.model_type = "qwen2";
  c.vocab_size = 67;
  c.hidden_size = 32;
  c.intermediate_size = 48;
  c.num_layers = 3;
  c.num_heads = 4;
  c.num_kv_heads = 2;
  c.head_dim = 8;
  c.max_position_embeddings = 64;
  c.rope_theta = 1e6;
  c.tie_word_embeddings = true;
  c.attention_bias = true;
  c.bos_token_id = 1;
  c.eos_token_id = 2;
  return c;
}

ModelConfig small_llama() {
  ModelConfig c;
  c.architecture = "LlamaForCausalLM";
  c.model_type = "llama";
  c.vocab_size = 50;
  c.hidden_size = 24;
  c.intermediate_size = 40;
  c.num_layers = 2;
  c.num_heads = 3;
  c.num_kv_heads = 3;
  c.head_dim = 8;
  c.max_position_embeddings = 64;
  c.tie_word_embeddings = false;
  c.attention_bias = false;
  return c;
}

// An owned copy of a safetensors file's tensors, for rewriting it with a change.
struct OwnedTensor {
  std::string name, dtype;
  Shape shape;
  std::vector<unsigned char> bytes;
};

std::vector<OwnedTensor> read_all(const std::string& path) {
  const SafetensorsFile f = SafetensorsFile::open(path);
  std::vector<OwnedTensor> out;
  for (const SafetensorsEntry& e : f.tensors()) {
    const auto* p = static_cast<const unsigned char*>(f.data(e));
    out.push_back({e.name, e.dtype, e.shape, std::vector<unsigned char>(p, p + e.nbytes())});
  }
  return out;
}

void write_all(const std::string& path, const std::vector<OwnedTensor>& tensors) {
  std::vector<SafetensorsTensorData> data;
  for (const OwnedTensor& t : tensors) data.push_back({t.name, t.dtype, t.shape, t.bytes.data()});
  write_safetensors(path, data, {{"format", "pt"}});
}

std::string read_bytes(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// Every file of a folder (name -> contents).
std::map<std::string, std::string> snapshot(const fs::path& dir) {
  std::map<std::string, std::string> out;
  for (const fs::directory_entry& e : fs::directory_iterator(dir))
    out[e.path().filename().string()] = e.is_regular_file() ? read_bytes(e.path()) : "<dir>";
  return out;
}

nlohmann::json read_json(const fs::path& p) {
  std::ifstream in(p);
  return nlohmann::json::parse(in);
}

uint16_t float_to_half(float f) {  // exact for the normal values the tests use
  uint32_t u;
  std::memcpy(&u, &f, 4);
  const uint32_t sign = (u >> 16) & 0x8000u;
  if ((u & 0x7fffffffu) == 0) return uint16_t(sign);
  const int32_t exp = int32_t((u >> 23) & 0xff) - 127 + 15;
  const uint32_t mant = (u >> 13) & 0x3ffu;
  return uint16_t(sign | (uint32_t(exp) << 10) | mant);
}

class HfCheckpointTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("vacc_hf_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    backend_ = make_cpu_backend();
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::string path(const std::string& name) const { return (dir_ / name).string(); }

  // Random values in every parameter (norms and biases too, so a mix-up shows).
  Tensor random_params(const ParameterTable& table, uint64_t seed) {
    Tensor flat = backend_->zeros({table.total_numel()}, DType::F32, MemoryCategory::Parameters,
                                  "test parameters");
    std::vector<float> v = test::random_vector(size_t(table.total_numel()), seed);
    backend_->upload(v.data(), flat);
    return flat;
  }

  Tensor zeros(const ParameterTable& table) {
    return backend_->zeros({table.total_numel()}, DType::F32, MemoryCategory::Parameters,
                           "loaded parameters");
  }

  // name -> values of every checkpoint tensor of the table.
  std::map<std::string, std::vector<float>> values(const ParameterTable& table,
                                                   const Tensor& flat) {
    std::map<std::string, std::vector<float>> out;
    for (const CheckpointTensor& ct : table.checkpoint_tensors()) {
      std::vector<float> v(size_t(shape_numel(ct.shape)));
      backend_->download(flat.view(table.entry(ct.entry).offset + ct.offset, ct.shape), v.data());
      out[ct.name] = std::move(v);
    }
    return out;
  }

  static void expect_bitwise_equal(const std::map<std::string, std::vector<float>>& got,
                                   const std::map<std::string, std::vector<float>>& want) {
    ASSERT_EQ(got.size(), want.size());
    for (const auto& [name, w] : want) {
      ASSERT_TRUE(got.count(name)) << name;
      const std::vector<float>& g = got.at(name);
      ASSERT_EQ(g.size(), w.size()) << name;
      EXPECT_EQ(std::memcmp(g.data(), w.data(), w.size() * 4), 0) << name << " differs";
    }
  }

  // Loads the folder into a fresh whole-model table and returns its values.
  std::map<std::string, std::vector<float>> load_values(const std::string& dir,
                                                        const ModelConfig& c) {
    ParameterTable table(c, ModelShard::whole(c));
    Tensor flat = zeros(table);
    load_hf_checkpoint(dir, *backend_, c, table, flat, false);
    return values(table, flat);
  }

  // Expects `f` to throw a vacc::Error whose message holds every one of `parts`.
  static void expect_error(const std::function<void()>& f, const std::vector<std::string>& parts) {
    try {
      f();
      ADD_FAILURE() << "no error";
    } catch (const Error& e) {
      const std::string msg = e.what();
      for (const std::string& p : parts)
        EXPECT_NE(msg.find(p), std::string::npos) << "message lacks \"" << p << "\": " << msg;
    }
  }

  // A saved f32 checkpoint of small_qwen() in `dir` (3 shards when sharded) and its values.
  std::map<std::string, std::vector<float>> save_qwen(const std::string& dir, bool sharded) {
    const ModelConfig c = small_qwen();
    ParameterTable table(c, ModelShard::whole(c));
    Tensor flat = random_params(table, 7);
    save_hf_checkpoint(dir, *backend_, c, table, flat, DType::F32,
                       sharded ? three_shard_limit(c) : kDefaultMaxShardBytes, "");
    return values(table, flat);
  }

  // A max_shard_bytes that splits the f32 checkpoint into exactly three shards.
  static size_t three_shard_limit(const ModelConfig& c) {
    std::vector<uint64_t> bytes;
    uint64_t total = 0;
    for (const HfTensorInfo& t : hf_checkpoint_tensors(c)) {
      bytes.push_back(uint64_t(shape_numel(t.shape)) * 4);
      total += bytes.back();
    }
    for (uint64_t limit = total / 3; limit <= total; limit += 4)
      if (assign_shards(bytes, limit).back() == 2) return size_t(limit);
    ADD_FAILURE() << "no limit gives three shards";
    return 0;
  }

  fs::path dir_;
  std::unique_ptr<Backend> backend_;
};

TEST(HfCheckpointOrder, StateDictOrderAndTiedHead) {
  const std::vector<HfTensorInfo> t = hf_checkpoint_tensors(small_qwen());
  std::vector<std::string> names;
  for (const HfTensorInfo& x : t) names.push_back(x.name);
  const std::vector<std::string> first = {"model.embed_tokens.weight",
                                          "model.layers.0.self_attn.q_proj.weight",
                                          "model.layers.0.self_attn.q_proj.bias",
                                          "model.layers.0.self_attn.k_proj.weight",
                                          "model.layers.0.self_attn.k_proj.bias",
                                          "model.layers.0.self_attn.v_proj.weight",
                                          "model.layers.0.self_attn.v_proj.bias",
                                          "model.layers.0.self_attn.o_proj.weight",
                                          "model.layers.0.mlp.gate_proj.weight",
                                          "model.layers.0.mlp.up_proj.weight",
                                          "model.layers.0.mlp.down_proj.weight",
                                          "model.layers.0.input_layernorm.weight",
                                          "model.layers.0.post_attention_layernorm.weight",
                                          "model.layers.1.self_attn.q_proj.weight"};
  ASSERT_GE(names.size(), first.size());
  EXPECT_EQ(std::vector<std::string>(names.begin(), names.begin() + long(first.size())), first);
  EXPECT_EQ(names.back(), "model.norm.weight");  // tied: no lm_head
  EXPECT_EQ(names.size(), 1 + 3 * 12 + 1u);
  EXPECT_EQ(t[1].shape, (Shape{32, 32}));
  EXPECT_EQ(t[3].shape, (Shape{16, 32}));
  const std::vector<HfTensorInfo> l = hf_checkpoint_tensors(small_llama());
  EXPECT_EQ(l.back().name, "lm_head.weight");
  EXPECT_EQ(l.back().shape, (Shape{50, 24}));
  EXPECT_EQ(l.size(), 1 + 2 * 9 + 2u);
}

TEST(HfCheckpointOrder, AssignShards) {
  EXPECT_EQ(assign_shards({4, 4, 4}, 8), (std::vector<int>{0, 0, 1}));
  EXPECT_EQ(assign_shards({4, 10, 4}, 8), (std::vector<int>{0, 1, 2}));
  EXPECT_EQ(assign_shards({10, 4}, 8), (std::vector<int>{0, 1}));
  EXPECT_EQ(assign_shards({3, 5, 8, 1}, 8), (std::vector<int>{0, 0, 1, 2}));
  EXPECT_EQ(assign_shards({}, 8), (std::vector<int>{}));
}

TEST(HfCheckpointProgressBar, Render) {
  EXPECT_EQ(ProgressBar::render(2, 3, "shards", 10), "[=====>    ] 2/3 shards");
  EXPECT_EQ(ProgressBar::render(0, 3, "shards", 10), "[          ] 0/3 shards");
  EXPECT_EQ(ProgressBar::render(3, 3, "shards", 10), "[==========] 3/3 shards");
  EXPECT_EQ(ProgressBar::render(5, 3, "", 4), "[====] 3/3");
}

TEST(HfCheckpointPresets, RealShapes) {
  const ModelConfig& q05 = find_model_preset("qwen2.5-0.5b").config;
  EXPECT_EQ(q05.total_parameters(), 494032768);  // Qwen2.5-0.5B's published count
  EXPECT_EQ(find_model_preset("qwen2.5-1.5b").config.total_parameters(), 1543714304);
  EXPECT_EQ(find_model_preset("qwen2.5-7b").config.total_parameters(), 7615616512);
  EXPECT_EQ(find_model_preset("llama3-8b").config.total_parameters(), 8030261248);
  const ModelConfig& tiny = find_model_preset("tiny").config;
  EXPECT_EQ(tiny.vocab_size, 151936);
  EXPECT_NEAR(double(tiny.total_parameters()), 10e6, 1e6);
  try {
    find_model_preset("gpt5");
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("qwen2.5-0.5b"), std::string::npos) << e.what();
  }
}

TEST_F(HfCheckpointTest, F32RoundTripIsBitwiseTied) {
  const auto want = save_qwen(path("m"), false);
  EXPECT_TRUE(fs::exists(dir_ / "m" / "config.json"));
  EXPECT_TRUE(fs::exists(dir_ / "m" / "generation_config.json"));
  EXPECT_FALSE(fs::exists(dir_ / "m" / "model.safetensors.index.json"));
  EXPECT_FALSE(fs::exists(dir_ / "m" / ".vacc-save.tmp"));

  const SafetensorsFile f = SafetensorsFile::open(path("m/model.safetensors"));
  EXPECT_EQ(f.metadata().at("format"), "pt");
  std::vector<std::string> in_file;
  for (const SafetensorsEntry& e : f.tensors()) {
    in_file.push_back(e.name);
    EXPECT_EQ(e.dtype, "F32");
  }
  std::vector<std::string> expected;
  for (const HfTensorInfo& t : hf_checkpoint_tensors(small_qwen())) expected.push_back(t.name);
  EXPECT_EQ(in_file, expected);  // state_dict order, no lm_head
  EXPECT_EQ(f.find("lm_head.weight"), nullptr);

  expect_bitwise_equal(load_values(path("m"), small_qwen()), want);

  const nlohmann::json config = read_json(dir_ / "m" / "config.json");
  EXPECT_EQ(config["torch_dtype"], "float32");
  EXPECT_EQ(config["architectures"][0], "Qwen2ForCausalLM");
  EXPECT_EQ(config["tie_word_embeddings"], true);
  EXPECT_TRUE(config.contains("transformers_version"));
  const nlohmann::json generation = read_json(dir_ / "m" / "generation_config.json");
  EXPECT_EQ(generation["bos_token_id"], 1);
  EXPECT_EQ(generation["eos_token_id"], 2);
  const ModelConfig back = load_hf_config(path("m"));
  EXPECT_EQ(back.num_layers, 3);
  EXPECT_EQ(back.num_kv_heads, 2);
  EXPECT_TRUE(back.tie_word_embeddings);
}

TEST_F(HfCheckpointTest, F32RoundTripIsBitwiseUntied) {
  const ModelConfig c = small_llama();
  ParameterTable table(c, ModelShard::whole(c));
  Tensor flat = random_params(table, 3);
  save_hf_checkpoint(path("m"), *backend_, c, table, flat, DType::F32, kDefaultMaxShardBytes, "");
  const SafetensorsFile f = SafetensorsFile::open(path("m/model.safetensors"));
  ASSERT_NE(f.find("lm_head.weight"), nullptr);
  EXPECT_EQ(f.find("model.layers.0.self_attn.q_proj.bias"), nullptr);
  expect_bitwise_equal(load_values(path("m"), c), values(table, flat));
  EXPECT_EQ(read_json(dir_ / "m" / "config.json")["model_type"], "llama");
}

TEST_F(HfCheckpointTest, ThreeShardsLoadLikeOneFile) {
  const auto want = save_qwen(path("one"), false);
  save_qwen(path("three"), true);
  const nlohmann::json index = read_json(dir_ / "three" / "model.safetensors.index.json");
  std::set<std::string> files;
  for (const auto& [name, file] : index["weight_map"].items())
    files.insert(file.get<std::string>());
  EXPECT_EQ(files, (std::set<std::string>{"model-00001-of-00003.safetensors",
                                          "model-00002-of-00003.safetensors",
                                          "model-00003-of-00003.safetensors"}));
  EXPECT_EQ(index["weight_map"].size(), hf_checkpoint_tensors(small_qwen()).size());
  uint64_t total = 0;
  for (const HfTensorInfo& t : hf_checkpoint_tensors(small_qwen()))
    total += uint64_t(shape_numel(t.shape)) * 4;
  EXPECT_EQ(index["metadata"]["total_size"].get<uint64_t>(), total);
  EXPECT_FALSE(fs::exists(dir_ / "three" / "model.safetensors"));

  const auto one = load_values(path("one"), small_qwen());
  const auto three = load_values(path("three"), small_qwen());
  expect_bitwise_equal(three, one);
  expect_bitwise_equal(three, want);
}

TEST_F(HfCheckpointTest, ResavingWithAnotherLayoutRemovesStaleFiles) {
  const ModelConfig c = small_qwen();
  save_qwen(path("m"), false);
  save_qwen(path("m"), true);  // single file -> three shards
  EXPECT_FALSE(fs::exists(dir_ / "m" / "model.safetensors"));
  EXPECT_TRUE(fs::exists(dir_ / "m" / "model-00003-of-00003.safetensors"));
  const auto want = save_qwen(path("m"), false);  // and back
  EXPECT_TRUE(fs::exists(dir_ / "m" / "model.safetensors"));
  EXPECT_FALSE(fs::exists(dir_ / "m" / "model.safetensors.index.json"));
  EXPECT_FALSE(fs::exists(dir_ / "m" / "model-00001-of-00003.safetensors"));
  expect_bitwise_equal(load_values(path("m"), c), want);
}

TEST_F(HfCheckpointTest, Bf16CheckpointLoadsRounded) {
  const ModelConfig c = small_qwen();
  ParameterTable table(c, ModelShard::whole(c));
  Tensor flat = random_params(table, 11);
  save_hf_checkpoint(path("m"), *backend_, c, table, flat, DType::BF16, three_shard_limit(c) / 2,
                     "");
  EXPECT_EQ(read_json(dir_ / "m" / "config.json")["torch_dtype"], "bfloat16");
  const SafetensorsFile f = SafetensorsFile::open(path("m/model-00001-of-00003.safetensors"));
  for (const SafetensorsEntry& e : f.tensors()) EXPECT_EQ(e.dtype, "BF16") << e.name;
  auto want = values(table, flat);
  for (auto& [name, v] : want) v = test::round_bf16(v);
  expect_bitwise_equal(load_values(path("m"), c), want);
}

TEST_F(HfCheckpointTest, F16CheckpointWrittenByHandLoads) {
  const ModelConfig c = small_qwen();
  fs::create_directories(dir_ / "m");
  save_qwen(path("m"), false);  // for config.json
  std::map<std::string, std::vector<float>> want;
  std::vector<std::vector<uint16_t>> halves;
  std::vector<SafetensorsTensorData> data;
  int k = 0;
  for (const HfTensorInfo& t : hf_checkpoint_tensors(c)) {
    std::vector<float>& w = want[t.name];
    std::vector<uint16_t>& h = halves.emplace_back();
    for (int64_t i = 0; i < shape_numel(t.shape); ++i) {
      const float v = float((i * 7 + k) % 2001 - 1000) / 1024.0f;  // exact in f16
      w.push_back(v);
      h.push_back(float_to_half(v));
    }
    ++k;
  }
  size_t i = 0;
  for (const HfTensorInfo& t : hf_checkpoint_tensors(c))
    data.push_back({t.name, "F16", t.shape, halves[i++].data()});
  write_safetensors(path("m/model.safetensors"), data, {{"format", "pt"}});
  expect_bitwise_equal(load_values(path("m"), c), want);
}

TEST_F(HfCheckpointTest, PipelineStageLoadsOnlyItsSlice) {
  const ModelConfig c = small_qwen();
  const auto whole = save_qwen(path("m"), true);
  ModelShard middle = ModelShard::whole(c);
  middle.layer_begin = 1;
  middle.layer_end = 2;
  middle.has_embedding = middle.has_head = false;
  ModelShard last = ModelShard::whole(c);
  last.layer_begin = 2;
  last.has_embedding = false;  // tied head without the embedding: reads embed_tokens
  for (const ModelShard& shard : {middle, last}) {
    ParameterTable table(c, shard);
    Tensor flat = zeros(table);
    load_hf_checkpoint(path("m"), *backend_, c, table, flat, false);
    for (const auto& [name, v] : values(table, flat)) {
      ASSERT_TRUE(whole.count(name)) << name;
      EXPECT_EQ(std::memcmp(v.data(), whole.at(name).data(), v.size() * 4), 0) << name;
    }
  }
}

TEST_F(HfCheckpointTest, StreamingInitialisationMatchesWholeModel) {
  for (const ModelConfig& c : {small_qwen(), small_llama()}) {
    for (DType dtype : {DType::F32, DType::BF16}) {
      SCOPED_TRACE(c.architecture + " " + dtype_name(dtype));
      ParameterTable table(c, ModelShard::whole(c));
      Tensor flat = zeros(table);
      initialize_parameters(*backend_, c, table, 99, flat);
      const size_t limit = three_shard_limit(c);
      fs::remove_all(dir_ / "a");
      fs::remove_all(dir_ / "b");
      save_hf_checkpoint(path("a"), *backend_, c, table, flat, dtype, limit, "");
      HfSaveOptions options;
      options.dtype = dtype;
      options.max_shard_bytes = limit;
      write_initialized_hf_checkpoint(path("b"), c, 99, options);
      const auto a = snapshot(dir_ / "a"), b = snapshot(dir_ / "b");
      EXPECT_GE(a.size(), 5u);  // config, generation config, index, shards
      EXPECT_TRUE(a == b) << "the streamed folder differs from the whole-model save";
      EXPECT_GT(initialized_checkpoint_peak_memory(c, options), 0u);
    }
  }
}

TEST_F(HfCheckpointTest, TokenizerFilesAreCopiedAndDroppedWhenNotGiven) {
  const ModelConfig c = small_qwen();
  fs::create_directories(dir_ / "tok");
  std::ofstream(dir_ / "tok" / "tokenizer.json") << R"({"model": {"vocab": {"a": 0}}})";
  std::ofstream(dir_ / "tok" / "tokenizer_config.json") << R"({"eos_token": "a"})";
  std::ofstream(dir_ / "tok" / "merges.txt") << "#version: 0.2\n";
  std::ofstream(dir_ / "tok" / "unrelated.txt") << "x";
  ParameterTable table(c, ModelShard::whole(c));
  Tensor flat = random_params(table, 1);
  save_hf_checkpoint(path("m"), *backend_, c, table, flat, DType::F32, kDefaultMaxShardBytes,
                     path("tok"));
  EXPECT_EQ(read_bytes(dir_ / "m" / "tokenizer.json"), read_bytes(dir_ / "tok" / "tokenizer.json"));
  EXPECT_TRUE(fs::exists(dir_ / "m" / "tokenizer_config.json"));
  EXPECT_TRUE(fs::exists(dir_ / "m" / "merges.txt"));
  EXPECT_FALSE(fs::exists(dir_ / "m" / "unrelated.txt"));
  // Saving into the folder with its own tokenizer keeps it.
  save_hf_checkpoint(path("m"), *backend_, c, table, flat, DType::F32, kDefaultMaxShardBytes,
                     path("m"));
  EXPECT_TRUE(fs::exists(dir_ / "m" / "tokenizer.json"));
  save_hf_checkpoint(path("m"), *backend_, c, table, flat, DType::F32, kDefaultMaxShardBytes, "");
  EXPECT_FALSE(fs::exists(dir_ / "m" / "tokenizer.json"));
  EXPECT_FALSE(fs::exists(dir_ / "m" / "merges.txt"));

  expect_error(
      [&] {
        save_hf_checkpoint(path("m"), *backend_, c, table, flat, DType::F32, kDefaultMaxShardBytes,
                           path("nowhere"));
      },
      {"nowhere", "tokenizer.json"});
}

TEST_F(HfCheckpointTest, ConfigOnlyWritesNoWeights) {
  save_qwen(path("m"), true);
  HfSaveOptions options;
  options.dtype = DType::BF16;
  write_hf_config_only(path("m"), small_llama(), options);
  std::set<std::string> files;
  for (const auto& [name, bytes] : snapshot(dir_ / "m")) files.insert(name);
  EXPECT_EQ(files, (std::set<std::string>{"config.json", "generation_config.json"}));
  EXPECT_EQ(load_hf_config(path("m")).architecture, "LlamaForCausalLM");
}

TEST_F(HfCheckpointTest, FailedSaveLeavesTheFolderAsItWas) {
  const ModelConfig c = small_qwen();
  save_qwen(path("m"), true);
  const auto before = snapshot(dir_ / "m");
  int calls = 0;
  HfSaveOptions options;  // one file this time: the old shards must survive the failure
  expect_error(
      [&] {
        write_hf_checkpoint(
            path("m"), c,
            [&](const HfTensorInfo& t, float* out) {
              if (++calls == 20) fail("disk full while writing ", t.name);
              std::fill(out, out + shape_numel(t.shape), 0.5f);
            },
            options);
      },
      {"disk full"});
  EXPECT_TRUE(snapshot(dir_ / "m") == before) << "a failed save changed the folder";

  // A new folder that fails is not left behind.
  expect_error(
      [&] {
        write_hf_checkpoint(
            path("new"), c, [&](const HfTensorInfo&, float*) { fail("broken"); }, options);
      },
      {"broken"});
  EXPECT_FALSE(fs::exists(dir_ / "new"));

  // A file in the way.
  std::ofstream(dir_ / "file") << "x";
  expect_error([&] { write_hf_config_only(path("file"), c, options); }, {path("file"), "folder"});
}

// ---- bad folders: each error names the file and the tensor ----

TEST_F(HfCheckpointTest, MissingTensor) {
  save_qwen(path("m"), false);
  const std::string file = path("m/model.safetensors");
  auto tensors = read_all(file);
  std::erase_if(tensors,
                [](const OwnedTensor& t) { return t.name == "model.layers.1.mlp.up_proj.weight"; });
  write_all(file, tensors);
  expect_error([&] { load_values(path("m"), small_qwen()); },
               {file, "missing tensor", "model.layers.1.mlp.up_proj.weight"});
}

TEST_F(HfCheckpointTest, WrongShape) {
  save_qwen(path("m"), false);
  const std::string file = path("m/model.safetensors");
  auto tensors = read_all(file);
  for (OwnedTensor& t : tensors)
    if (t.name == "model.layers.2.mlp.down_proj.weight") t.shape = {48, 32};  // transposed
  write_all(file, tensors);
  expect_error([&] { load_values(path("m"), small_qwen()); },
               {file, "model.layers.2.mlp.down_proj.weight", "[48, 32]", "[32, 48]"});
}

TEST_F(HfCheckpointTest, TruncatedShard) {
  save_qwen(path("m"), true);
  const fs::path shard = dir_ / "m" / "model-00002-of-00003.safetensors";
  fs::resize_file(shard, fs::file_size(shard) - 100);
  expect_error([&] { load_values(path("m"), small_qwen()); },
               {shard.string(), "tensor \"model.layers.", "truncated"});
}

TEST_F(HfCheckpointTest, IndexNamesAMissingFile) {
  save_qwen(path("m"), true);
  fs::remove(dir_ / "m" / "model-00003-of-00003.safetensors");
  expect_error([&] { load_values(path("m"), small_qwen()); },
               {path("m/model.safetensors.index.json"), "model-00003-of-00003.safetensors",
                "does not exist", "tensor \"model."});
}

TEST_F(HfCheckpointTest, IndexMapsATensorToTheWrongFile) {
  save_qwen(path("m"), true);
  const fs::path index_path = dir_ / "m" / "model.safetensors.index.json";
  nlohmann::json index = read_json(index_path);
  index["weight_map"]["model.embed_tokens.weight"] = "model-00003-of-00003.safetensors";
  std::ofstream(index_path) << index.dump();
  expect_error([&] { load_values(path("m"), small_qwen()); },
               {path("m/model-00003-of-00003.safetensors"), "model.embed_tokens.weight"});
}

TEST_F(HfCheckpointTest, UnknownArchitecture) {
  save_qwen(path("m"), false);
  const fs::path config_path = dir_ / "m" / "config.json";
  nlohmann::json config = read_json(config_path);
  config["architectures"] = {"GPT2LMHeadModel"};
  config["model_type"] = "gpt2";
  std::ofstream(config_path) << config.dump();
  expect_error([&] { load_hf_config(path("m")); }, {config_path.string(), "GPT2LMHeadModel"});
}

TEST_F(HfCheckpointTest, LayerBeyondTheConfigIsAnError) {
  save_qwen(path("m"), false);
  const std::string file = path("m/model.safetensors");
  auto tensors = read_all(file);
  OwnedTensor extra = tensors.back();  // model.norm.weight: (C)
  extra.name = "model.layers.3.input_layernorm.weight";
  tensors.push_back(extra);
  write_all(file, tensors);
  expect_error([&] { load_values(path("m"), small_qwen()); },
               {file, "model.layers.3.input_layernorm.weight", "not part of the model"});
}

TEST_F(HfCheckpointTest, IntegerTensorIsAnError) {
  save_qwen(path("m"), false);
  const std::string file = path("m/model.safetensors");
  auto tensors = read_all(file);
  for (OwnedTensor& t : tensors)
    if (t.name == "model.norm.weight") t.dtype = "I32";
  write_all(file, tensors);
  expect_error([&] { load_values(path("m"), small_qwen()); }, {file, "model.norm.weight", "I32"});
}

TEST_F(HfCheckpointTest, UnknownDtype) {
  save_qwen(path("m"), false);
  const std::string file = path("m/model.safetensors");
  auto tensors = read_all(file);
  for (OwnedTensor& t : tensors)
    if (t.name == "model.layers.0.mlp.gate_proj.weight") t.dtype = "I32";
  write_all(file, tensors);
  // Rename the dtype in the header to one safetensors does not define (same length).
  std::string bytes = read_bytes(file);
  const size_t at = bytes.find("\"I32\"");
  ASSERT_NE(at, std::string::npos);
  bytes.replace(at, 5, "\"Q32\"");
  std::ofstream(file, std::ios::binary) << bytes;
  expect_error([&] { load_values(path("m"), small_qwen()); },
               {file, "model.layers.0.mlp.gate_proj.weight", "unknown dtype", "Q32"});
}

TEST_F(HfCheckpointTest, TiedLmHeadInTheFileIsIgnored) {
  const auto want = save_qwen(path("m"), false);
  const std::string file = path("m/model.safetensors");
  auto tensors = read_all(file);
  OwnedTensor head = tensors.front();  // embed_tokens' shape
  head.name = "lm_head.weight";
  std::fill(head.bytes.begin(), head.bytes.end(), 0);
  tensors.push_back(head);
  write_all(file, tensors);
  expect_bitwise_equal(load_values(path("m"), small_qwen()), want);
}

TEST_F(HfCheckpointTest, FolderWithoutWeights) {
  fs::create_directories(dir_ / "empty");
  expect_error([&] { load_values(path("empty"), small_qwen()); },
               {path("empty"), "model.safetensors"});
  expect_error([&] { load_values(path("absent"), small_qwen()); }, {path("absent")});
}

}  // namespace
}  // namespace vacc
