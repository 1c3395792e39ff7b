// `vacc eval`: the mean next-token cross-entropy of a model on a dataset, Hugging Face style
// (labels are the input ids, shifted inside: a sequence of n tokens predicts n-1).
#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <optional>

#include "vacc/cli/command_flavor.h"
#include "vacc/cli/commands.h"
#include "vacc/cli/device_backend.h"
#include "vacc/core/error.h"
#include "vacc/launch/accelerator_state.h"
#include "vacc/io/sft_dataset.h"
#include "vacc/io/tokenizer.h"
#include "vacc/runtime/evaluation.h"
#include "vacc/runtime/hf_checkpoint.h"

namespace vacc::cli {
namespace {

struct EvalArgs {
  std::string model, data, tokenizer, flavor, dtype = "f32";
  int64_t seq_len = 1024, batch = 4;
  bool json = false, pack = false;
  int threads = 0;
};

void run_eval(const EvalArgs& a) {
  // Before anything is read: a GPU flavor that cannot run here is the one error.
  const Flavor flavor = command_flavor(a.flavor);
  check_flavor_devices(flavor);
  const ModelConfig config = load_hf_config(a.model);
  std::string tok_dir = a.tokenizer;
  if (tok_dir.empty() && std::filesystem::exists(std::filesystem::path(a.model) / "tokenizer.json"))
    tok_dir = a.model;
  std::optional<Tokenizer> tokenizer;
  if (!tok_dir.empty()) tokenizer.emplace(Tokenizer::load(tok_dir));
  DatasetOptions d;
  d.seq_len = a.seq_len;
  d.shuffle = false;
  d.pack = a.pack;
  d.vocab_size = config.vocab_size;
  if (config.eos_token_id >= 0 && !tokenizer) d.eos_id = int32_t(config.eos_token_id);
  SftDataset data(a.data, tokenizer ? &*tokenizer : nullptr, d);

  auto backend = make_single_device_backend(flavor, a.threads);
  Transformer model(*backend, config, ModelShard::whole(config), parse_dtype(a.dtype), a.seq_len);
  load_hf_checkpoint(a.model, *backend, config, model.table(), model.parameters(), !a.json);
  model.parameters_changed();
  EvalBuffers buffers = EvalBuffers::allocate(model, a.batch, a.seq_len);
  EvalResult total;
  const int64_t chunk = 16 * a.batch;
  for (int64_t first = 0; first < data.train_sequences(); first += chunk) {
    EvalResult r = evaluate_loss(
        model, buffers, data.train_batch(0, first, std::min(chunk, data.train_sequences() - first)));
    total.loss_sum += r.loss_sum;
    total.tokens += r.tokens;
  }
  VACC_CHECK(total.tokens > 0, a.data, ": no tokens to evaluate");
  if (a.json)
    std::printf("%s\n", nlohmann::json{{"loss", total.mean()}, {"tokens", total.tokens}}.dump().c_str());
  else
    std::printf("Eval loss: %.6f over %lld tokens (%lld sequences)\n", total.mean(),
                (long long)total.tokens, (long long)data.train_sequences());
}

}  // namespace

void add_eval_command(CLI::App& app) {
  auto args = std::make_shared<EvalArgs>();
  CLI::App* cmd = app.add_subcommand("eval", "Mean next-token loss of a model on a dataset");
  cmd->add_option("--model", args->model, "Hugging Face model folder")->required();
  cmd->add_option("--data", args->data, "JSONL dataset (any format vacc train reads)")->required();
  cmd->add_option("--tokenizer", args->tokenizer, "Folder with tokenizer.json (default: --model)");
  cmd->add_option("--seq-len", args->seq_len, "Tokens per sequence (longer examples are cut)")
      ->capture_default_str();
  cmd->add_option("--batch", args->batch, "Sequences per forward pass")->capture_default_str();
  cmd->add_option("--dtype", args->dtype, "f32 or bf16")->capture_default_str();
  cmd->add_flag("--pack", args->pack, "Pack examples into sequences instead of padding each");
  cmd->add_flag("--json", args->json, "Print {\"loss\": L, \"tokens\": N}");
  cmd->add_option("--flavor", args->flavor,
                  "Accelerator whose first device runs the model (default: the current one)");
  cmd->add_option("--threads", args->threads, "CPU threads (0: all cores)");
  cmd->callback([args] { run_eval(*args); });
}

}  // namespace vacc::cli
