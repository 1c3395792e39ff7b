// ModelConfig: the architecture of a decoder-only model of the Llama family (Qwen2, Llama,
// Mistral), read from a Hugging Face config.json.
#pragma once

#include <cstdint>
#include <string>

#include <nlohmann/json_fwd.hpp>

namespace vacc {

struct ModelConfig {
  std::string architecture = "Qwen2ForCausalLM";  // as in config.json "architectures"[0]
  std::string model_type = "qwen2";
  int64_t vocab_size = 0;
  int64_t hidden_size = 0;
  int64_t intermediate_size = 0;
  int64_t num_layers = 0;
  int64_t num_heads = 0;
  int64_t num_kv_heads = 0;
  int64_t head_dim = 0;
  int64_t max_position_embeddings = 32768;
  double rope_theta = 10000.0;
  double rms_norm_eps = 1e-6;
  double initializer_range = 0.02;
  bool tie_word_embeddings = false;
  bool attention_bias = false;  // q/k/v biases (Qwen2: always)
  int64_t bos_token_id = -1, eos_token_id = -1;

  int64_t q_width() const { return num_heads * head_dim; }
  int64_t kv_width() const { return num_kv_heads * head_dim; }
  // Parameters of one decoder layer and of the whole model.
  int64_t layer_parameters() const;
  int64_t total_parameters() const;
  // Parameters used in matrix products (the embedding table counted once, as the output
  // projection): the N of the 6N + 12*L*h*s training FLOPs per token.
  int64_t matmul_parameters() const;
  double training_flops_per_token(int64_t seq_len) const;
  // The model FLOPs of a training step over `tokens` positions of which `counted_tokens` carry
  // a label: the output projection runs only on counted rows (rows labelled -100 are skipped),
  // so it is charged for those alone.
  double training_flops(int64_t tokens, int64_t counted_tokens, int64_t seq_len) const;

  // Throws vacc::Error naming the field when the configuration is inconsistent.
  void validate(const std::string& source) const;

  static ModelConfig from_json(const nlohmann::json& j, const std::string& source);
  static ModelConfig from_file(const std::string& path);
  nlohmann::json to_json() const;
};

}  // namespace vacc
