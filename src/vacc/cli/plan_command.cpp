// `vacc plan`: what a split of a job needs on each device, before running it. This version
// evaluates the split given with --parallel (or plain data parallelism over the flavor's
// devices): the predicted peak memory of every pipeline stage by category, against the
// device's memory. The automatic search over splits comes with the planner.
#include <cstdio>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>

#include "vacc/cli/commands.h"
#include "vacc/core/byte_size.h"
#include "vacc/core/error.h"
#include "vacc/launch/accelerator_state.h"
#include "vacc/plan/memory_model.h"
#include "vacc/runtime/hf_checkpoint.h"

namespace vacc::cli {
namespace {

struct PlanArgs {
  std::string model, model_config, flavor, parallel, dtype = "f32";
  int64_t batch = 8, seq_len = 128, micro_batches = 1;
  bool json = false;
};

nlohmann::json breakdown_json(const MemoryBreakdown& m) {
  return {{"total", int64_t(m.total())},
          {"parameters", int64_t(m.parameters)},
          {"gradients", int64_t(m.gradients)},
          {"optimizer_state", int64_t(m.optimizer_state)},
          {"activations", int64_t(m.activations)},
          {"buffers", int64_t(m.buffers)}};
}

void run_plan(const PlanArgs& a) {
  VACC_CHECK(a.model.empty() != a.model_config.empty(),
             "vacc plan: give exactly one of --model DIR and --model-config CONFIG.json");
  const ModelConfig config =
      a.model.empty() ? ModelConfig::from_file(a.model_config) : load_hf_config(a.model);
  const Flavor flavor = a.flavor.empty() ? current_flavor() : resolve_flavor(a.flavor);
  const int devices = flavor.total_devices();
  ParallelConfig p;
  p.dp = 0;
  p.micro_batches = a.micro_batches;
  p = ParallelConfig::parse(a.parallel, p);
  if (p.dp == 0) {
    VACC_CHECK(devices % (p.pp * p.tp) == 0, "--parallel pp=", p.pp, ",tp=", p.tp,
               " does not divide the ", devices, " devices of ", flavor.name);
    p.dp = devices / (p.pp * p.tp);
  }
  p.validate(devices, a.batch, &config);
  const MemoryQuery q{a.batch, a.seq_len, parse_dtype(a.dtype)};
  const size_t device_memory = flavor.memory_budget_bytes_per_device();

  nlohmann::json ranks = nlohmann::json::array();
  MemoryBreakdown peak;
  for (int stage = 0; stage < p.pp; ++stage)
    for (int dp_rank = 0; dp_rank < p.dp; ++dp_rank) {
      const MemoryBreakdown m = predict_rank_memory(config, p, q, stage, dp_rank);
      if (m.total() > peak.total()) peak = m;
      ranks.push_back({{"stage", stage}, {"dp_rank", dp_rank}, {"predicted", breakdown_json(m)}});
    }
  const bool fits = device_memory == DeviceAllocator::kUnlimited || peak.total() <= double(device_memory);
  if (a.json) {
    nlohmann::json out{{"flavor", flavor.name},
                       {"plan", p.describe(a.batch)},
                       {"dp", p.dp}, {"pp", p.pp}, {"tp", p.tp}, {"zero", p.zero},
                       {"microbatches", p.micro_batches}, {"recompute", p.recompute},
                       {"predicted_peak_memory_bytes", int64_t(peak.total())},
                       {"device_memory_bytes", device_memory == DeviceAllocator::kUnlimited ? int64_t(-1) : int64_t(device_memory)},
                       {"feasible", fits},
                       {"ranks", ranks}};
    std::cout << out.dump(2) << "\n";
    return;
  }
  std::cout << "Accelerator: " << flavor.name << " (" << flavor.describe() << ")\n"
            << "Split: " << p.describe(a.batch) << "\n"
            << "Predicted peak memory per device, by pipeline stage:\n";
  for (int stage = 0; stage < p.pp; ++stage)
    std::cout << "  stage " << stage << ": " << predict_rank_memory(config, p, q, stage, 0).str()
              << "\n";
  std::cout << (fits ? "Fits" : "Does NOT fit") << " the device memory of "
            << (device_memory == DeviceAllocator::kUnlimited ? std::string("(unlimited)")
                                                             : format_bytes(device_memory))
            << "\n";
}

}  // namespace

void add_plan_command(CLI::App& app) {
  auto args = std::make_shared<PlanArgs>();
  CLI::App* cmd = app.add_subcommand(
      "plan", "Predict what a split of a training job needs on each device (dry run)");
  cmd->add_option("--model", args->model, "A Hugging Face model folder (only config.json is read)");
  cmd->add_option("--model-config", args->model_config, "A Hugging Face config.json");
  cmd->add_option("--flavor", args->flavor, "Accelerator (default: the current one)");
  cmd->add_option("--batch", args->batch, "Sequences per global batch")->capture_default_str();
  cmd->add_option("--seq-len", args->seq_len, "Tokens per sequence")->capture_default_str();
  cmd->add_option("--micro-batches", args->micro_batches, "Micro-batches per replica")
      ->capture_default_str();
  cmd->add_option("--parallel", args->parallel, "dp=,pp=,tp=,zero=,microbatches=,recompute=,schedule=");
  cmd->add_option("--dtype", args->dtype, "f32 or bf16")->capture_default_str();
  cmd->add_flag("--json", args->json, "Print JSON");
  cmd->callback([args] { run_plan(*args); });
}

}  // namespace vacc::cli
