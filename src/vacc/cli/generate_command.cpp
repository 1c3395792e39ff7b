// `vacc generate`: text from a model, streamed token by token (KV cache), as the tutorial's
// inference step does after fine-tuning.
#include <chrono>
#include <cstdio>
#include <string>

#include "vacc/cli/command_flavor.h"
#include "vacc/cli/cuda_graphs_option.h"
#include "vacc/cli/commands.h"
#include "vacc/cli/device_backend.h"
#include "vacc/core/error.h"
#include "vacc/launch/accelerator_state.h"
#include "vacc/io/chat_template.h"
#include "vacc/io/sft_example.h"
#include "vacc/io/tokenizer.h"
#include "vacc/runtime/generator.h"
#include "vacc/runtime/hf_checkpoint.h"

namespace vacc::cli {
namespace {

struct GenerateArgs {
  std::string model, prompt, tokenizer, flavor, dtype = "f32";
  bool chat = false, alpaca = false;
  CudaGraphsOption cuda_graphs;
  int64_t max_new_tokens = 128;
  float temperature = 0.7f, top_p = 0.9f;
  uint64_t seed = 0;
  int threads = 0;
};

// Prints the text of the ids so far as it grows, holding back a trailing partial UTF-8
// character (decoded as U+FFFD until its last byte arrives).
class TextStream {
 public:
  explicit TextStream(const Tokenizer& t) : tokenizer_(t) {}
  void push(int32_t id) {
    ids_.push_back(id);
    std::string text = tokenizer_.decode(ids_, true);
    static const std::string kReplacement = "\xEF\xBF\xBD";
    if (text.size() >= 3 && text.compare(text.size() - 3, 3, kReplacement) == 0) return;
    if (text.size() > printed_ && text.compare(0, printed_, text, 0, printed_) == 0) {
      std::fwrite(text.data() + printed_, 1, text.size() - printed_, stdout);
      std::fflush(stdout);
      printed_ = text.size();
    }
  }

 private:
  const Tokenizer& tokenizer_;
  std::vector<int32_t> ids_;
  size_t printed_ = 0;
};

void run_generate(const GenerateArgs& a) {
  // Before anything is read: a GPU flavor that cannot run here is the one error.
  const Flavor flavor = command_flavor(a.flavor);
  check_flavor_devices(flavor);
  VACC_CHECK(!(a.chat && a.alpaca), "vacc generate: --chat and --alpaca exclude each other");
  VACC_CHECK(a.max_new_tokens >= 1, "vacc generate: --max-new-tokens must be at least 1, got ",
             a.max_new_tokens);
  GenerationOptions g;
  g.max_new_tokens = a.max_new_tokens;
  g.temperature = a.temperature;
  g.top_p = a.top_p;
  g.seed = a.seed;
  check_generation_options(g);  // --temperature, --top-p
  const ModelConfig config = load_hf_config(a.model);
  const Tokenizer tokenizer = Tokenizer::load(a.tokenizer.empty() ? a.model : a.tokenizer);
  std::string text = a.prompt;
  if (a.chat) text = render_chatml({{"user", a.prompt}}, kQwenDefaultSystemMessage, true);
  if (a.alpaca) text = alpaca_prompt(a.prompt, "");
  std::vector<int32_t> prompt = tokenizer.encode(text);
  VACC_CHECK(!prompt.empty(), "vacc generate: the prompt is empty");
  for (int32_t id : prompt)
    VACC_CHECK(id < config.vocab_size, "the prompt's token ", id, " is outside the model's vocabulary of ",
               config.vocab_size, " (is the tokenizer the model's?)");

  auto backend = make_single_device_backend(flavor, a.threads);
  const int64_t max_len =
      std::min<int64_t>(config.max_position_embeddings, int64_t(prompt.size()) + a.max_new_tokens);
  Transformer model(*backend, config, ModelShard::whole(config), parse_dtype(a.dtype), max_len);
  load_hf_checkpoint(a.model, *backend, config, model.table(), model.parameters(), false);
  model.parameters_changed();
  if (cuda_graphs_wanted(a.cuda_graphs, flavor, GraphsDefault::AnyGpu)) {
    if (backend->supports_graphs()) {
      model.set_decode_graphs(true);
      std::fprintf(stderr, "CUDA graphs: on (each new token's pass replayed as one graph)\n");
    } else {
      std::fprintf(stderr, "CUDA graphs: off: backend %s has no graphs\n",
                   backend->name().c_str());
    }
  }

  g.max_len = max_len;
  if (auto eos = tokenizer.eos_id()) g.stop_ids.push_back(*eos);
  for (const char* stop : {"<|im_end|>", "<|endoftext|>"})
    if (auto id = tokenizer.token_id(stop)) g.stop_ids.push_back(*id);
  if (config.eos_token_id >= 0) g.stop_ids.push_back(int32_t(config.eos_token_id));

  // The speed, on stderr (the text is stdout's): the first token waits for the prompt's pass,
  // each later one for one token's pass and the sampling.
  using Clock = std::chrono::steady_clock;
  const Clock::time_point start = Clock::now();
  Clock::time_point first, last;
  int64_t count = 0;
  TextStream stream(tokenizer);
  generate(model, prompt, g, [&](int32_t id) {
    last = Clock::now();
    if (count++ == 0) first = last;
    stream.push(id);
  });
  std::printf("\n");
  std::fflush(stdout);
  if (count > 0) {
    const double first_ms = std::chrono::duration<double, std::milli>(first - start).count();
    const double rest_s = std::chrono::duration<double>(last - first).count();
    std::fprintf(stderr, "Generated %lld token(s): the first after %.1f ms (the prompt's %zu tokens)",
                 static_cast<long long>(count), first_ms, prompt.size());
    if (count > 1 && rest_s > 0)
      std::fprintf(stderr, ", then %.1f tokens/s", double(count - 1) / rest_s);
    if (model.decode_graphs_captured() > 0)
      std::fprintf(stderr, "; CUDA graphs: %lld captured, %lld replays",
                   static_cast<long long>(model.decode_graphs_captured()),
                   static_cast<long long>(model.decode_graph_replays()));
    std::fprintf(stderr, "\n");
  }
}

}  // namespace

void add_generate_command(CLI::App& app) {
  auto args = std::make_shared<GenerateArgs>();
  CLI::App* cmd = app.add_subcommand("generate", "Generate text from a model (streamed)");
  cmd->add_option("--model", args->model, "Hugging Face model folder")->required();
  cmd->add_option("--prompt", args->prompt, "The prompt text")->required();
  cmd->add_flag("--chat", args->chat, "Wrap the prompt as a ChatML user turn (Qwen chat models)");
  cmd->add_flag("--alpaca", args->alpaca, "Wrap the prompt in the Alpaca instruction template");
  cmd->add_option("--tokenizer", args->tokenizer, "Folder with tokenizer.json (default: --model)");
  cmd->add_option("--max-new-tokens", args->max_new_tokens)->capture_default_str();
  cmd->add_option("--temperature", args->temperature, "0: greedy")->capture_default_str();
  cmd->add_option("--top-p", args->top_p, "Nucleus sampling mass")->capture_default_str();
  cmd->add_option("--seed", args->seed, "Sampling seed")->capture_default_str();
  cmd->add_option("--dtype", args->dtype, "f32 or bf16")->capture_default_str();
  add_cuda_graphs_flags(cmd, &args->cuda_graphs,
                        "Replay each new token's pass as one CUDA graph",
                        "Launch every op of each token's pass (no CUDA graphs)",
                        GraphsDefault::AnyGpu);
  cmd->add_option("--flavor", args->flavor,
                  "Accelerator whose first device runs the model (default: the current one)");
  cmd->add_option("--threads", args->threads, "CPU threads (0: all cores)");
  cmd->callback([args] { run_generate(*args); });
}

}  // namespace vacc::cli
