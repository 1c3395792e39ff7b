#include "vacc/model/model_presets.h"

#include "vacc/core/error.h"

namespace vacc {
namespace {

// Qwen2 / Qwen2.5: q/k/v biases, RMSNorm eps 1e-6, RoPE theta 1e6; base models use
// <|endoftext|> (151643) as both bos and eos.
ModelConfig qwen2(int64_t hidden, int64_t intermediate, int64_t layers, int64_t heads,
                  int64_t kv_heads, int64_t vocab, bool tied, int64_t max_positions) {
  ModelConfig c;
  c.architecture = "Qwen2ForCausalLM";
  c.model_type = "qwen2";
  c.vocab_size = vocab;
  c.hidden_size = hidden;
  c.intermediate_size = intermediate;
  c.num_layers = layers;
  c.num_heads = heads;
  c.num_kv_heads = kv_heads;
  c.head_dim = hidden / heads;
  c.max_position_embeddings = max_positions;
  c.rope_theta = 1000000.0;
  c.rms_norm_eps = 1e-6;
  c.initializer_range = 0.02;
  c.tie_word_embeddings = tied;
  c.attention_bias = true;
  c.bos_token_id = 151643;
  c.eos_token_id = 151643;
  return c;
}

ModelConfig llama3_8b() {
  ModelConfig c;
  c.architecture = "LlamaForCausalLM";
  c.model_type = "llama";
  c.vocab_size = 128256;
  c.hidden_size = 4096;
  c.intermediate_size = 14336;
  c.num_layers = 32;
  c.num_heads = 32;
  c.num_kv_heads = 8;
  c.head_dim = 128;
  c.max_position_embeddings = 8192;
  c.rope_theta = 500000.0;
  c.rms_norm_eps = 1e-5;
  c.initializer_range = 0.02;
  c.tie_word_embeddings = false;
  c.attention_bias = false;
  c.bos_token_id = 128000;
  c.eos_token_id = 128001;
  return c;
}

std::vector<ModelPreset> make_presets() {
  std::vector<ModelPreset> p;
  // The Qwen vocabulary (151936, as Qwen2.5's config pads it) so the real tokenizer
  // attaches; nearly all of its ~10M parameters are the embedding.
  p.push_back({"tiny", "demo/test model, 2 layers, hidden 64, Qwen vocabulary (~10M parameters)",
               qwen2(64, 176, 2, 4, 2, 151936, true, 4096), "qwen"});
  p.push_back({"qwen2.5-0.5b", "Qwen2.5-0.5B shape (494M parameters)",
               qwen2(896, 4864, 24, 14, 2, 151936, true, 32768), "qwen"});
  p.push_back({"qwen2.5-1.5b", "Qwen2.5-1.5B shape (1.5B parameters)",
               qwen2(1536, 8960, 28, 12, 2, 151936, true, 131072), "qwen"});
  p.push_back({"qwen2.5-7b", "Qwen2.5-7B shape (7.6B parameters)",
               qwen2(3584, 18944, 28, 28, 4, 152064, false, 131072), "qwen"});
  p.push_back({"qwen2-7b", "Qwen2-7B shape (7.6B parameters)",
               qwen2(3584, 18944, 28, 28, 4, 152064, false, 131072), "qwen"});
  p.push_back(
      {"llama3-8b", "Llama-3-8B shape (8.0B parameters; no tokenizer bundled)", llama3_8b(), ""});
  for (ModelPreset& preset : p) preset.config.validate("preset " + preset.name);
  return p;
}

}  // namespace

const std::vector<ModelPreset>& model_presets() {
  static const std::vector<ModelPreset> presets = make_presets();
  return presets;
}

std::string model_preset_names() {
  std::string out;
  for (const ModelPreset& p : model_presets()) out += (out.empty() ? "" : ", ") + p.name;
  return out;
}

const ModelPreset& find_model_preset(const std::string& name) {
  for (const ModelPreset& p : model_presets())
    if (p.name == name) return p;
  fail("unknown preset \"", name, "\"; the presets are: ", model_preset_names());
}

}  // namespace vacc
