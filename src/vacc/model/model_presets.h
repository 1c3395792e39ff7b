// Built-in model shapes for `vacc init --preset NAME`: a small demo model and the real
// shapes of well-known checkpoints (Qwen2 / Qwen2.5, Llama 3), as their config.json files
// give them.
#pragma once

#include <string>
#include <vector>

#include "vacc/model/model_config.h"

namespace vacc {

struct ModelPreset {
  std::string name;         // "qwen2.5-0.5b"
  std::string description;  // one line for --help and error messages
  ModelConfig config;
  // The tokenizer family the model's vocabulary belongs to ("qwen"); empty when vacc ships
  // no tokenizer for it.
  std::string tokenizer;
};

// Every preset, in the order they are listed.
const std::vector<ModelPreset>& model_presets();
// The preset of that name; throws vacc::Error listing the known names otherwise.
const ModelPreset& find_model_preset(const std::string& name);
// Its ModelConfig.
inline const ModelConfig& model_preset(const std::string& name) {
  return find_model_preset(name).config;
}
// "tiny, qwen2.5-0.5b, ..." for messages.
std::string model_preset_names();

}  // namespace vacc
