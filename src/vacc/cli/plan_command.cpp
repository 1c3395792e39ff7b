// `vacc plan`: the planner's choice of split for a training job on an accelerator — one the
// user has (--flavor) or one they describe (--flavor-file) — with a table of every candidate
// (its memory per device, predicted step time, tokens/s, TFLOP/s per device, or why it was
// rejected), the choice and the reason. Dimensions pinned with --parallel stay as given.
// docs/PLANNER.md describes the models.
#include <algorithm>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>
#include <thread>

#include "vacc/cli/command_flavor.h"
#include "vacc/cli/cuda_graphs_option.h"
#include "vacc/cli/commands.h"
#include "vacc/cli/planning.h"
#include "vacc/core/byte_size.h"
#include "vacc/core/error.h"
#include "vacc/core/logging.h"
#include "vacc/kernels/backend.h"
#include "vacc/launch/accelerator_state.h"
#include "vacc/plan/planner.h"
#include "vacc/runtime/device_peak.h"
#include "vacc/runtime/hf_checkpoint.h"

namespace vacc::cli {
namespace {

struct PlanArgs {
  std::string model, model_config, flavor, flavor_file, profile_file, parallel, out, dtype = "auto";
  int64_t batch = 8, seq_len = 128, micro_batches = 0;
  double usable_memory = 0.8, device_peak_tflops = 0;
  int threads = 0, show = 20;
  bool json = false, fixed = false;
  CudaGraphsOption cuda_graphs;
};

std::string config_cell(const ParallelConfig& c) {
  char buf[96];
  std::snprintf(buf, sizeof buf, "dp=%d pp=%d tp=%d mb=%lld %s z%d", c.dp, c.pp, c.tp,
                static_cast<long long>(c.micro_batches), recompute_name(c.recompute), c.zero);
  return buf;
}

nlohmann::json breakdown_json(const MemoryBreakdown& m) {
  return {{"total", int64_t(m.total())},
          {"parameters", int64_t(m.parameters)},
          {"gradients", int64_t(m.gradients)},
          {"optimizer_state", int64_t(m.optimizer_state)},
          {"activations", int64_t(m.activations)},
          {"buffers", int64_t(m.buffers)}};
}

// --dtype auto: bf16 mixed precision on GPUs, f32 on CPUs (what `vacc train` would run).
DType plan_dtype(const PlanArgs& a, const Flavor& flavor) {
  if (a.dtype != "auto") return parse_dtype(a.dtype);
  return flavor.is_cpu() ? DType::F32 : DType::BF16;
}

// --fixed: the memory of exactly the --parallel split (unset keys at their defaults, dp
// filling the devices), every rank by category (bench/memory_table.py reads its JSON).
void run_fixed(const PlanArgs& a, const ModelConfig& config, const Flavor& flavor,
               const PlanConstraints& pins) {
  const int devices = flavor.total_devices();
  const ParallelConfig p = pins.completed(devices);
  p.validate(devices, a.batch, &config);
  size_t device_memory = flavor.memory_budget_bytes_per_device();
  std::string memory_source;
  if (device_memory == 0) {  // GPUs not visible here: the device profile's memory, as the search
    const ClusterSpec cluster =
        cluster_spec_for(flavor, {a.profile_file, a.device_peak_tflops, 0.0}, plan_dtype(a, flavor));
    device_memory = size_t(planned_device_memory(cluster));
    memory_source = " (profile " + cluster.profile.name + "'s: the devices are not visible here)";
  }
  const bool graphs = cuda_graphs_wanted(a.cuda_graphs, flavor, GraphsDefault::OneGpu);
  const MemoryQuery q{a.batch, a.seq_len, plan_dtype(a, flavor),
                      device_scratch_for(flavor, double(device_memory), graphs)};

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
            << memory_source << "\n";
}

void run_plan(const PlanArgs& a) {
  VACC_CHECK(a.model.empty() != a.model_config.empty(),
             "vacc plan: give exactly one of --model DIR and --model-config CONFIG.json");
  VACC_CHECK(a.flavor.empty() || a.flavor_file.empty(),
             "vacc plan: give at most one of --flavor and --flavor-file");
  check_usable_memory(a.usable_memory);
  VACC_CHECK(a.batch > 0 && a.seq_len > 0, "--batch and --seq-len must be positive");
  const ModelConfig config =
      a.model.empty() ? ModelConfig::from_file(a.model_config) : load_hf_config(a.model);
  const Flavor flavor =
      !a.flavor_file.empty() ? load_flavor_file(a.flavor_file) : command_flavor(a.flavor);
  // --parallel's pins, and --micro-batches unless --parallel pins the micro-batches too.
  PlanConstraints pinned = PlanConstraints::parse(a.parallel);
  if (a.micro_batches > 0 && !pinned.micro_batches) pinned.micro_batches = a.micro_batches;
  if (a.fixed) return run_fixed(a, config, flavor, pinned);
  const DType dtype = plan_dtype(a, flavor);
  const ClusterSpec cluster =
      cluster_spec_for(flavor, {a.profile_file, a.device_peak_tflops, 0.0}, dtype);

  PlannerOptions o;
  o.global_batch = a.batch;
  o.seq_len = a.seq_len;
  o.dtype = dtype;
  o.usable_memory_fraction = a.usable_memory;
  o.threads = a.threads;
  o.scratch = device_scratch_for(flavor, planned_device_memory(cluster),
                                cuda_graphs_wanted(a.cuda_graphs, flavor, GraphsDefault::OneGpu));
  // With --json the log goes to stderr, so stdout is the JSON alone.
  const PlanLog log = [&](const std::string& line) {
    if (a.json) std::fprintf(stderr, "%s\n", line.c_str());
    else log_info(line);
  };
  const PlanResult r = plan_parallelism(config, cluster, pinned, o, log);

  if (!a.out.empty() && r.chosen >= 0) {
    std::ofstream f(a.out);
    VACC_CHECK(f && (f << chosen_plan_json(r, flavor.name, a.batch, a.seq_len).dump(2) << "\n"),
               "cannot write the plan to ", a.out);
  }
  if (a.json) {
    nlohmann::json cands = nlohmann::json::array();
    for (const Candidate& c : r.candidates) cands.push_back(candidate_json(c, a.batch));
    nlohmann::json out{{"flavor", flavor.name},
                       {"devices", cluster.devices},
                       {"device_profile", cluster.profile.to_json()},
                       {"usable_memory_bytes", int64_t(r.usable_memory_bytes)},
                       {"compile_ms", r.compile_ms},
                       {"cost_ms", r.cost_ms},
                       {"chosen", r.chosen >= 0 ? candidate_json(r.candidates[size_t(r.chosen)], a.batch)
                                                : nlohmann::json(nullptr)},
                       {"candidates", cands}};
    if (r.chosen >= 0) out["chosen"]["describe"] = r.candidates[size_t(r.chosen)].config.describe(a.batch);
    std::cout << out.dump(2) << "\n";
  } else {
    std::printf("\nAccelerator: %s (%s); profile %s; usable memory %s per device\n",
                flavor.name.c_str(), flavor.describe().c_str(), cluster.profile.name.c_str(),
                r.usable_memory_bytes > 0 ? format_bytes(size_t(r.usable_memory_bytes)).c_str()
                                          : "unlimited");
    std::printf("%-4s %-40s %12s %12s %12s %10s  %s\n", "rank", "configuration", "memory/dev",
                "step (s)", "tokens/s", "TFLOP/s", "feasible / why");
    const int shown = std::min<int>(int(r.candidates.size()), a.show <= 0 ? int(r.candidates.size()) : a.show);
    for (int i = 0; i < shown; ++i) {
      const Candidate& c = r.candidates[size_t(i)];
      if (c.feasible)
        std::printf("%-4d %-40s %12s %12.4g %12.4g %10.2f  %s\n", i + 1, config_cell(c.config).c_str(),
                    format_bytes(size_t(c.memory.total())).c_str(), c.cost.step_s, c.tokens_per_s,
                    c.tflops_per_device, c.reason.c_str());
      else
        std::printf("%-4d %-40s %12s %12s %12s %10s  rejected: %s\n", i + 1, config_cell(c.config).c_str(),
                    format_bytes(size_t(c.memory.total())).c_str(), "-", "-", "-", c.reason.c_str());
    }
    if (shown < int(r.candidates.size()))
      std::printf("... %zu more (%lld feasible in all; --show 0 lists every candidate, --json too)\n",
                  r.candidates.size() - size_t(shown), static_cast<long long>(r.feasible_count));
    if (r.chosen >= 0) {
      const Candidate& c = r.candidates[size_t(r.chosen)];
      std::printf("\nChosen: %s\n  %s\n  predicted: %s\n  memory: %s\n", c.config.describe(a.batch).c_str(),
                  c.reason.c_str(), c.cost.str().c_str(), c.memory.str().c_str());
    }
  }
  VACC_CHECK(r.chosen >= 0, r.no_feasible_message(),
             " (a larger flavor, --usable-memory, a smaller --batch or --seq-len may fit)");
}

}  // namespace

void add_plan_command(CLI::App& app) {
  auto args = std::make_shared<PlanArgs>();
  CLI::App* cmd = app.add_subcommand(
      "plan", "Choose the split of a training job over an accelerator and explain it (dry run)");
  cmd->add_option("--model", args->model, "A Hugging Face model folder (only config.json is read)");
  cmd->add_option("--model-config", args->model_config, "A Hugging Face config.json");
  cmd->add_option("--flavor", args->flavor, "Accelerator (default: the current one)");
  cmd->add_option("--flavor-file", args->flavor_file,
                  "A flavor file describing a cluster (see docs/PLANNER.md)");
  cmd->add_option("--profile-file", args->profile_file,
                  "Device profiles (JSON) replacing or adding to the built-in ones");
  cmd->add_option("--device-peak-tflops", args->device_peak_tflops,
                  "Override the device's peak (CPU: instead of measuring it)");
  cmd->add_option("--batch", args->batch, "Sequences per global batch")->capture_default_str();
  cmd->add_option("--seq-len", args->seq_len, "Tokens per sequence")->capture_default_str();
  cmd->add_option("--micro-batches", args->micro_batches, "Pin the micro-batches per replica");
  cmd->add_option("--parallel", args->parallel,
                  "Pin any of dp=,pp=,tp=,zero=,microbatches=,recompute=,schedule=; the rest is searched");
  cmd->add_option("--dtype", args->dtype, "f32, bf16 or auto (bf16 on GPUs)")->capture_default_str();
  cmd->add_option("--usable-memory", args->usable_memory, "Usable fraction of device memory")
      ->capture_default_str();
  cmd->add_option("--threads", args->threads, "Planner threads (0: all cores)")->capture_default_str();
  cmd->add_option("--show", args->show, "Candidates in the table (0: all)")->capture_default_str();
  cmd->add_option("--out", args->out,
                  "Write the chosen plan (JSON, with its --parallel string) to this file");
  cmd->add_flag("--fixed", args->fixed,
                "No search: the memory of exactly the --parallel split, every rank by category");
  add_cuda_graphs_flags(cmd, &args->cuda_graphs,
                        "Count the memory the layers' CUDA graphs keep, as vacc train uses them",
                        "Count no CUDA graphs (vacc train --no-cuda-graphs)",
                        GraphsDefault::OneGpu);
  cmd->add_flag("--json", args->json, "Print JSON: {\"chosen\": {...}, \"candidates\": [...]}");
  cmd->callback([args] { run_plan(*args); });
}

}  // namespace vacc::cli
