#include "vacc/model/model_config.h"

#include <fstream>
#include <nlohmann/json.hpp>

#include "vacc/core/error.h"
#include "vacc/core/json_file.h"

namespace vacc {
namespace {

template <typename T>
T field(const nlohmann::json& j, const char* key, const std::string& source) {
  VACC_CHECK(j.contains(key) && !j[key].is_null(), source, ": missing field \"", key, "\"");
  try {
    return j[key].get<T>();
  } catch (const nlohmann::json::exception& e) {
    fail(source, ": field \"", key, "\" has the wrong type (", j[key].dump(), ")");
  }
}

template <typename T>
T field_or(const nlohmann::json& j, const char* key, T fallback, const std::string& source) {
  if (!j.contains(key) || j[key].is_null()) return fallback;
  return field<T>(j, key, source);
}

int64_t first_token_id(const nlohmann::json& j, const char* key) {
  if (!j.contains(key) || j[key].is_null()) return -1;
  if (j[key].is_array()) return j[key].empty() ? -1 : j[key][0].get<int64_t>();
  return j[key].get<int64_t>();
}

}  // namespace

int64_t ModelConfig::layer_parameters() const {
  int64_t C = hidden_size;
  int64_t attn = C * q_width() + 2 * C * kv_width() + q_width() * C;
  if (attention_bias) attn += q_width() + 2 * kv_width();
  return attn + 3 * C * intermediate_size + 2 * C;
}

int64_t ModelConfig::total_parameters() const {
  int64_t embed = vocab_size * hidden_size;
  return num_layers * layer_parameters() + hidden_size + embed * (tie_word_embeddings ? 1 : 2);
}

int64_t ModelConfig::matmul_parameters() const {
  return num_layers * layer_parameters() + vocab_size * hidden_size;
}

double ModelConfig::training_flops_per_token(int64_t seq_len) const {
  return 6.0 * double(matmul_parameters()) +
         12.0 * double(num_layers) * double(hidden_size) * double(seq_len);
}

double ModelConfig::training_flops(int64_t tokens, int64_t counted_tokens, int64_t seq_len) const {
  const double head = 6.0 * double(vocab_size) * double(hidden_size);
  return double(tokens) * (training_flops_per_token(seq_len) - head) + double(counted_tokens) * head;
}

void ModelConfig::validate(const std::string& source) const {
  auto positive = [&](int64_t v, const char* name) {
    VACC_CHECK(v > 0, source, ": \"", name, "\" must be positive (got ", v, ")");
  };
  positive(vocab_size, "vocab_size");
  positive(hidden_size, "hidden_size");
  positive(intermediate_size, "intermediate_size");
  positive(num_layers, "num_hidden_layers");
  positive(num_heads, "num_attention_heads");
  positive(num_kv_heads, "num_key_value_heads");
  positive(head_dim, "head_dim");
  VACC_CHECK(num_heads % num_kv_heads == 0, source, ": num_attention_heads (", num_heads,
             ") must be a multiple of num_key_value_heads (", num_kv_heads, ")");
  VACC_CHECK(head_dim % 2 == 0, source, ": head_dim (", head_dim, ") must be even for RoPE");
  VACC_CHECK(rope_theta > 0, source, ": rope_theta must be positive");
  VACC_CHECK(rms_norm_eps > 0, source, ": rms_norm_eps must be positive");
  VACC_CHECK(vocab_size < (int64_t(1) << 31), source, ": vocab_size ", vocab_size,
             " does not fit 32-bit token ids");
}

ModelConfig ModelConfig::from_json(const nlohmann::json& j, const std::string& source) {
  VACC_CHECK(j.is_object(), source, ": expected a JSON object");
  ModelConfig c;
  if (j.contains("architectures") && j["architectures"].is_array() && !j["architectures"].empty())
    c.architecture = j["architectures"][0].get<std::string>();
  c.model_type = field_or<std::string>(j, "model_type", "", source);
  const bool qwen2 = c.architecture == "Qwen2ForCausalLM" || c.model_type == "qwen2";
  const bool llama = c.architecture == "LlamaForCausalLM" || c.model_type == "llama";
  const bool mistral = c.architecture == "MistralForCausalLM" || c.model_type == "mistral";
  VACC_CHECK(qwen2 || llama || mistral, source, ": unsupported architecture \"", c.architecture,
             "\" (model_type \"", c.model_type,
             "\"); supported: Qwen2ForCausalLM, LlamaForCausalLM, MistralForCausalLM");
  if (c.model_type.empty()) c.model_type = qwen2 ? "qwen2" : (llama ? "llama" : "mistral");

  c.vocab_size = field<int64_t>(j, "vocab_size", source);
  c.hidden_size = field<int64_t>(j, "hidden_size", source);
  c.intermediate_size = field<int64_t>(j, "intermediate_size", source);
  c.num_layers = field<int64_t>(j, "num_hidden_layers", source);
  c.num_heads = field<int64_t>(j, "num_attention_heads", source);
  c.num_kv_heads = field_or<int64_t>(j, "num_key_value_heads", c.num_heads, source);
  VACC_CHECK(c.num_heads > 0, source, ": \"num_attention_heads\" must be positive");
  c.head_dim = field_or<int64_t>(j, "head_dim", c.hidden_size / c.num_heads, source);
  c.max_position_embeddings = field_or<int64_t>(j, "max_position_embeddings", 32768, source);
  c.rope_theta = field_or<double>(j, "rope_theta", 10000.0, source);
  c.rms_norm_eps = field_or<double>(j, "rms_norm_eps", 1e-6, source);
  c.initializer_range = field_or<double>(j, "initializer_range", 0.02, source);
  c.tie_word_embeddings = field_or<bool>(j, "tie_word_embeddings", false, source);
  // Qwen2 always has q/k/v biases; Llama and Mistral have them only with attention_bias.
  c.attention_bias = qwen2 ? true : field_or<bool>(j, "attention_bias", false, source);
  c.bos_token_id = first_token_id(j, "bos_token_id");
  c.eos_token_id = first_token_id(j, "eos_token_id");
  if (j.contains("rope_scaling") && !j["rope_scaling"].is_null())
    fail(source, ": \"rope_scaling\" ", j["rope_scaling"].dump(),
         " is not supported yet (only plain RoPE)");
  c.validate(source);
  return c;
}

ModelConfig ModelConfig::from_file(const std::string& path) {
  return from_json(read_json_file(path), path);
}

nlohmann::json ModelConfig::to_json() const {
  nlohmann::json j{{"architectures", {architecture}},
                   {"model_type", model_type},
                   {"vocab_size", vocab_size},
                   {"hidden_size", hidden_size},
                   {"intermediate_size", intermediate_size},
                   {"num_hidden_layers", num_layers},
                   {"num_attention_heads", num_heads},
                   {"num_key_value_heads", num_kv_heads},
                   {"head_dim", head_dim},
                   {"max_position_embeddings", max_position_embeddings},
                   {"rope_theta", rope_theta},
                   {"rms_norm_eps", rms_norm_eps},
                   {"initializer_range", initializer_range},
                   {"tie_word_embeddings", tie_word_embeddings},
                   {"hidden_act", "silu"},
                   {"torch_dtype", "float32"}};
  if (model_type != "qwen2") j["attention_bias"] = attention_bias;
  if (bos_token_id >= 0) j["bos_token_id"] = bos_token_id;
  if (eos_token_id >= 0) j["eos_token_id"] = eos_token_id;
  return j;
}

}  // namespace vacc
