// ModelConfig from config.json: the three architectures, defaults, and errors naming the field.
#include <nlohmann/json.hpp>

#include "test_util.h"
#include "vacc/model/model_config.h"

namespace vacc::test {
namespace {

nlohmann::json qwen2_05b() {
  return {{"architectures", {"Qwen2ForCausalLM"}}, {"model_type", "qwen2"},
          {"vocab_size", 151936}, {"hidden_size", 896}, {"intermediate_size", 4864},
          {"num_hidden_layers", 24}, {"num_attention_heads", 14}, {"num_key_value_heads", 2},
          {"rope_theta", 1000000.0}, {"rms_norm_eps", 1e-6}, {"tie_word_embeddings", true}};
}

TEST(ModelConfig, ReadsQwen2) {
  ModelConfig c = ModelConfig::from_json(qwen2_05b(), "config.json");
  EXPECT_EQ(c.head_dim, 64);
  EXPECT_TRUE(c.attention_bias);
  EXPECT_TRUE(c.tie_word_embeddings);
  // Qwen2.5-0.5B has 494,032,768 parameters.
  EXPECT_EQ(c.total_parameters(), 494032768);
}

TEST(ModelConfig, TrainingFlopsChargeTheHeadForCountedTokensOnly) {
  ModelConfig c = ModelConfig::from_json(qwen2_05b(), "c");
  const double per_token = c.training_flops_per_token(1024);
  // 6N + 12 L h s with N the matrix-product parameters (embedding counted once).
  EXPECT_DOUBLE_EQ(per_token, 6.0 * double(c.matmul_parameters()) + 12.0 * 24 * 896 * 1024);
  EXPECT_DOUBLE_EQ(c.training_flops(100, 100, 1024), 100 * per_token);
  EXPECT_DOUBLE_EQ(c.training_flops(100, 40, 1024),
                   100 * per_token - 60 * 6.0 * double(c.vocab_size) * double(c.hidden_size));
}

TEST(ModelConfig, LlamaHasNoBiasUnlessAsked) {
  nlohmann::json j = qwen2_05b();
  j["architectures"] = {"LlamaForCausalLM"};
  j["model_type"] = "llama";
  EXPECT_FALSE(ModelConfig::from_json(j, "c").attention_bias);
  j["attention_bias"] = true;
  EXPECT_TRUE(ModelConfig::from_json(j, "c").attention_bias);
}

TEST(ModelConfig, RoundTripsThroughJson) {
  ModelConfig c = ModelConfig::from_json(qwen2_05b(), "c");
  ModelConfig d = ModelConfig::from_json(c.to_json(), "c2");
  EXPECT_EQ(d.total_parameters(), c.total_parameters());
  EXPECT_EQ(d.rope_theta, c.rope_theta);
  EXPECT_EQ(d.num_kv_heads, c.num_kv_heads);
}

TEST(ModelConfig, ErrorsNameTheFileAndField) {
  auto expect_error = [](nlohmann::json j, const std::string& fragment) {
    try {
      ModelConfig::from_json(j, "my/config.json");
      ADD_FAILURE() << "expected an error mentioning " << fragment;
    } catch (const Error& e) {
      std::string msg = e.what();
      EXPECT_NE(msg.find("my/config.json"), std::string::npos) << msg;
      EXPECT_NE(msg.find(fragment), std::string::npos) << msg;
    }
  };
  nlohmann::json j = qwen2_05b();
  j.erase("hidden_size");
  expect_error(j, "hidden_size");
  j = qwen2_05b();
  j["num_key_value_heads"] = 3;
  expect_error(j, "num_key_value_heads");
  j = qwen2_05b();
  j["architectures"] = {"GPT2LMHeadModel"};
  j["model_type"] = "gpt2";
  expect_error(j, "GPT2LMHeadModel");
  j = qwen2_05b();
  j["vocab_size"] = "many";
  expect_error(j, "vocab_size");
}

}  // namespace
}  // namespace vacc::test
