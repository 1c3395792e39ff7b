// `vacc init`: a randomly initialised model as a Hugging Face folder (config.json,
// safetensors weights, tokenizer), from a preset or a config.json.
//
// The weights are initialised and written one piece and one shard at a time
// (write_initialized_hf_checkpoint), so even the 7B/8B presets need only a few GB of
// memory; the need is checked against the machine's available memory and free disk first.
// --config-only writes config.json (+ tokenizer) alone, instantly, for planning.
//
// The tokenizer: a preset attaches its family's tokenizer from the cache
// ${VACC_HOME:-$HOME/.vacc}/cache/tokenizers/<family> (filled by scripts/setup.sh), a
// --config of a Qwen2 model the Qwen one if the cache has it, --tokenizer DIR any other.
// A model whose vocabulary is smaller than the tokenizer's gets none (with a note): its
// embedding could not hold the tokenizer's ids.
#include <sys/statvfs.h>

#include <cctype>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>

#include "vacc/cli/commands.h"
#include "vacc/core/byte_size.h"
#include "vacc/core/device_allocator.h"
#include "vacc/core/error.h"
#include "vacc/core/json_file.h"
#include "vacc/core/logging.h"
#include "vacc/model/model_presets.h"
#include "vacc/runtime/hf_checkpoint.h"

namespace vacc::cli {
namespace {

namespace fs = std::filesystem;

struct InitArgs {
  std::string preset, config, dtype = "f32", tokenizer, max_shard_size = "5GB", out_dir;
  uint64_t seed = 1234;
  bool config_only = false;
};

std::string vacc_home() {
  if (const char* home = std::getenv("VACC_HOME"); home && *home) return home;
  const char* user_home = std::getenv("HOME");
  return std::string(user_home && *user_home ? user_home : ".") + "/.vacc";
}

std::string tokenizer_cache_dir(const std::string& family) {
  return vacc_home() + "/cache/tokenizers/" + family;
}

// The number of token ids of a tokenizer.json: largest id of model.vocab and added_tokens,
// plus one.
int64_t tokenizer_vocabulary(const std::string& path) {
  nlohmann::json j = read_json_file(path);
  int64_t largest = -1;
  try {
    if (j.contains("model") && j["model"].contains("vocab") && j["model"]["vocab"].is_object())
      for (const auto& [token, id] : j["model"]["vocab"].items())
        largest = std::max(largest, id.get<int64_t>());
    if (j.contains("added_tokens") && j["added_tokens"].is_array())
      for (const nlohmann::json& t : j["added_tokens"])
        largest = std::max(largest, t.at("id").get<int64_t>());
  } catch (const nlohmann::json::exception& e) {
    fail(path, ": a token id is not an integer (", e.what(), ")");
  }
  VACC_CHECK(largest >= 0, path, ": no tokens in model.vocab or added_tokens");
  return largest + 1;
}

// MemAvailable of /proc/meminfo in bytes; 0 when unknown.
size_t available_memory() {
  std::ifstream in("/proc/meminfo");
  std::string key;
  size_t kib = 0;
  std::string unit;
  while (in >> key >> kib >> unit)
    if (key == "MemAvailable:") return kib * 1024;
  return 0;
}

// Free bytes on the file system that will hold `dir` (its nearest existing ancestor).
uint64_t free_disk(const std::string& dir) {
  fs::path p = fs::absolute(dir);
  std::error_code ec;
  while (!p.empty() && !fs::exists(p, ec) && p != p.parent_path()) p = p.parent_path();
  struct statvfs st {};
  if (::statvfs(p.c_str(), &st) != 0) return ~uint64_t{0};
  return uint64_t(st.f_bavail) * uint64_t(st.f_frsize);
}

// "qwen" -> "Qwen", for messages.
std::string family_title(std::string family) {
  if (!family.empty()) family[0] = char(std::toupper(static_cast<unsigned char>(family[0])));
  return family;
}

void note(const std::string& text) {
  log_info("Note: " + text);
}

// Which tokenizer folder to attach (empty: none), printing a note when there is none.
std::string choose_tokenizer(const InitArgs& a, const ModelConfig& config,
                             const ModelPreset* preset) {
  std::string dir;
  std::error_code ec;
  if (!a.tokenizer.empty()) {
    VACC_CHECK(fs::is_regular_file(fs::path(a.tokenizer) / "tokenizer.json", ec), "--tokenizer ",
               a.tokenizer, ": no tokenizer.json in that folder");
    dir = a.tokenizer;
  } else if (preset) {
    if (preset->tokenizer.empty()) {
      note("no tokenizer attached: vacc bundles none for " + preset->name +
           "; pass --tokenizer DIR to attach one");
      return "";
    }
    dir = tokenizer_cache_dir(preset->tokenizer);
    VACC_CHECK(fs::is_regular_file(fs::path(dir) / "tokenizer.json", ec), "the ",
               family_title(preset->tokenizer), " tokenizer is not in the cache (", dir,
               "/tokenizer.json); run scripts/setup.sh to fetch it, or pass --tokenizer DIR");
  } else if (config.model_type == "qwen2") {
    dir = tokenizer_cache_dir("qwen");
    if (!fs::is_regular_file(fs::path(dir) / "tokenizer.json", ec)) {
      note("no tokenizer attached: the Qwen tokenizer is not in the cache (" + dir +
           "); run scripts/setup.sh to fetch it, or pass --tokenizer DIR");
      return "";
    }
  } else {
    note("no tokenizer attached (none bundled for " + config.model_type +
         " models); pass --tokenizer DIR to attach one");
    return "";
  }
  const int64_t ids = tokenizer_vocabulary((fs::path(dir) / "tokenizer.json").string());
  if (config.vocab_size < ids) {
    note("no tokenizer attached: the model's vocabulary (" + std::to_string(config.vocab_size) +
         ") is smaller than the tokenizer's " + std::to_string(ids) + " ids (" + dir + ")");
    return "";
  }
  return dir;
}

std::string millions(int64_t n) {
  char text[32];
  if (n >= 1'000'000'000)
    std::snprintf(text, sizeof text, "%.2fB", double(n) / 1e9);
  else
    std::snprintf(text, sizeof text, "%.1fM", double(n) / 1e6);
  return text;
}

void run_init(const InitArgs& a) {
  VACC_CHECK(a.preset.empty() != a.config.empty(),
             "vacc init: give either --preset NAME or --config CONFIG.json (presets: ",
             model_preset_names(), ")");
  VACC_CHECK(!a.out_dir.empty(), "vacc init: the output folder OUT_DIR is required");
  const ModelPreset* preset = a.preset.empty() ? nullptr : &find_model_preset(a.preset);
  const ModelConfig config = preset ? preset->config : ModelConfig::from_file(a.config);
  const std::string model_name = preset ? preset->name : a.config;

  HfSaveOptions options;
  options.dtype = parse_dtype(a.dtype);
  options.max_shard_bytes = parse_byte_size(a.max_shard_size, "--max-shard-size");
  options.progress = true;

  std::error_code ec;
  const fs::path out(a.out_dir);
  if (fs::exists(out, ec)) {
    VACC_CHECK(fs::is_directory(out, ec), a.out_dir,
               " exists and is not a folder; vacc init writes a model folder");
    bool empty = true;  // what an interrupted earlier save left does not count
    for (const fs::directory_entry& e : fs::directory_iterator(out, ec))
      if (e.path().filename() != ".vacc-save.tmp") empty = false;
    VACC_CHECK(empty || fs::exists(out / "config.json", ec), a.out_dir,
               " is not empty and holds no config.json (not a model folder); choose a new or "
               "empty folder");
  }
  std::ostringstream info;
  info << "Model: " << model_name << " (" << config.architecture << "), " << config.num_layers
       << " layers, hidden " << config.hidden_size << ", " << config.num_heads << " heads ("
       << config.num_kv_heads << " kv), vocabulary " << config.vocab_size << ", "
       << millions(config.total_parameters()) << " parameters"
       << (config.tie_word_embeddings ? ", tied embeddings" : "");
  log_info(info.str());
  options.tokenizer_dir = choose_tokenizer(a, config, preset);

  if (a.config_only) {
    write_hf_config_only(a.out_dir, config, options);
    log_info("Wrote " + a.out_dir + ": config.json" +
             (options.tokenizer_dir.empty() ? "" : " and the tokenizer") + " (no weights)");
    return;
  }

  const uint64_t weight_bytes = hf_checkpoint_weight_bytes(config, options.dtype);
  const size_t need = initialized_checkpoint_peak_memory(config, options);
  const size_t have = available_memory();
  VACC_CHECK(have == 0 || need <= have, "vacc init: writing ", model_name, " needs about ",
             format_bytes(need), " of memory (each shard is built in memory; --max-shard-size ",
             a.max_shard_size, ") but ", format_bytes(have),
             " is available; lower --max-shard-size, or use --config-only");
  const uint64_t disk = free_disk(a.out_dir);
  VACC_CHECK(weight_bytes <= disk, "vacc init: the weights of ", model_name, " take ",
             format_bytes(weight_bytes), " in ", dtype_name(options.dtype), " but only ",
             format_bytes(disk), " is free for ", a.out_dir,
             "; free some space, use --dtype bf16, or --config-only");

  char line[160];
  std::snprintf(line, sizeof line,
                "Initialising: weights normal(0, %g), norms 1, biases 0, seed %llu, saved in %s",
                config.initializer_range, (unsigned long long)a.seed,
                dtype_name(options.dtype).c_str());
  log_info(line);
  write_initialized_hf_checkpoint(a.out_dir, config, a.seed, options);
  log_info("Wrote " + a.out_dir + ": " + format_bytes(weight_bytes) + " of weights" +
           (options.tokenizer_dir.empty() ? "" : ", the tokenizer") + ", config.json");
}

}  // namespace

void add_init_command(CLI::App& app) {
  auto args = std::make_shared<InitArgs>();
  CLI::App* cmd =
      app.add_subcommand("init", "Write a randomly initialised model as a Hugging Face folder");
  cmd->add_option("--preset", args->preset, "Model shape: " + model_preset_names());
  cmd->add_option("--config", args->config, "A Hugging Face config.json instead of a preset");
  cmd->add_option("--seed", args->seed, "Seed of the initialisation")->capture_default_str();
  cmd->add_option("--dtype", args->dtype, "Saved weights: f32 or bf16")->capture_default_str();
  cmd->add_flag("--config-only", args->config_only,
                "Write config.json (and the tokenizer) only, no weights: for planning");
  cmd->add_option("--tokenizer", args->tokenizer,
                  "Attach this tokenizer folder (tokenizer.json, tokenizer_config.json)");
  cmd->add_option("--max-shard-size", args->max_shard_size,
                  "Largest safetensors file; bigger models are sharded")
      ->capture_default_str();
  cmd->add_option("OUT_DIR", args->out_dir, "The model folder to write");
  cmd->callback([args] { run_init(*args); });
}

}  // namespace vacc::cli
