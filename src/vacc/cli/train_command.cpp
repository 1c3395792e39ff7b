// `vacc train`: train a model. For now on one CPU device, from a config.json with random
// initialisation, on synthetic data.
#include <cstdio>
#include <sstream>

#include "vacc/cli/commands.h"
#include "vacc/core/byte_size.h"
#include "vacc/core/error.h"
#include "vacc/core/logging.h"
#include "vacc/io/synthetic_data.h"
#include "vacc/kernels/profiling_backend.h"
#include "vacc/runtime/device_peak.h"
#include "vacc/runtime/metrics_log.h"
#include "vacc/runtime/trainer.h"

namespace vacc::cli {
namespace {

struct TrainArgs {
  std::string model_config, metrics_out, dtype = "f32", memory_budget, lr_schedule = "constant";
  bool synthetic = false, profile = false;
  int64_t batch = 8, seq_len = 128, steps = 10, micro_batches = 1, warmup_steps = 0;
  double lr = 1e-4, min_lr = 0.0, weight_decay = 0.0, max_grad_norm = 1.0;
  double beta1 = 0.9, beta2 = 0.999, eps = 1e-8;
  uint64_t seed = 1234;
  int threads = 0;
};

void run_train(const TrainArgs& a) {
  VACC_CHECK(!a.model_config.empty(), "vacc train: --model-config CONFIG.json is required");
  VACC_CHECK(a.synthetic,
             "vacc train: only --synthetic data is available in this version (datasets and "
             "checkpoints come next)");
  VACC_CHECK(a.steps > 0, "--steps must be positive (got ", a.steps, ")");
  const ModelConfig config = ModelConfig::from_file(a.model_config);
  const size_t budget = a.memory_budget.empty()
                            ? DeviceAllocator::kUnlimited
                            : parse_byte_size(a.memory_budget, "--memory-budget");

  auto backend = make_cpu_backend(budget, a.threads);
  TrainerOptions opt;
  opt.batch = a.batch;
  opt.seq_len = a.seq_len;
  opt.micro_batches = a.micro_batches;
  opt.dtype = parse_dtype(a.dtype);
  opt.lr = LrSchedule{LrSchedule::parse_kind(a.lr_schedule), a.lr, a.min_lr, a.warmup_steps,
                      a.steps};
  opt.adam = AdamWConfig{float(a.beta1), float(a.beta2), float(a.eps), float(a.weight_decay)};
  opt.max_grad_norm = a.max_grad_norm;
  opt.seed = a.seed;

  std::ostringstream info;
  info << "Model: " << config.architecture << ", " << config.num_layers << " layers, hidden "
       << config.hidden_size << ", " << config.num_heads << " heads (" << config.num_kv_heads
       << " kv), vocabulary " << config.vocab_size << ", "
       << double(config.total_parameters()) / 1e6 << "M parameters";
  log_info(info.str());
  log_info("Accelerator: 1 device, " + backend->name() + ", memory budget " +
           (budget == DeviceAllocator::kUnlimited ? std::string("unlimited") : format_bytes(budget)));
  const double peak = measure_matmul_peak(*backend, opt.dtype);
  char line[256];
  std::snprintf(line, sizeof line, "Measured peak (%s matrix products): %.1f GFLOP/s",
                dtype_name(opt.dtype).c_str(), peak / 1e9);
  log_info(line);
  backend->allocator().reset_high_water_mark();

  // --profile times every op (synchronising around each); the steps get a little slower.
  std::unique_ptr<ProfilingBackend> profiler;
  Backend* device = backend.get();
  if (a.profile) {
    profiler = std::make_unique<ProfilingBackend>(*backend);
    device = profiler.get();
  }
  Trainer trainer(*device, config, opt, peak);
  SyntheticData data(config.vocab_size, a.seq_len, a.seed);
  MetricsFile metrics(a.metrics_out);
  std::snprintf(line, sizeof line,
                "Training: batch %lld x %lld tokens, %lld micro-batch(es), %s, lr %g, %lld steps",
                (long long)a.batch, (long long)a.seq_len, (long long)a.micro_batches,
                a.dtype == "bf16" ? "bf16 mixed precision" : "f32", a.lr, (long long)a.steps);
  log_info(line);
  double timed_tokens = 0, timed_seconds = 0, timed_mfu = 0;
  for (int64_t s = 1; s <= a.steps; ++s) {
    StepMetrics m = trainer.step(data.batch(s, a.batch));
    log_info(format_step_line(m, a.steps));
    metrics.write(m);
    if (s > 1 || a.steps == 1) {  // the first step includes one-time set-up
      timed_tokens += double(m.tokens);
      timed_seconds += m.step_time_s;
      timed_mfu = m.mfu;
    }
    if (profiler && s == 1 && a.steps > 1) profiler->reset();
  }
  std::snprintf(line, sizeof line,
                "Done: %.1f tokens/sec on average%s, MFU %.1f%%; peak memory %s",
                timed_tokens / timed_seconds, a.steps > 1 ? " (after the first step)" : "",
                100.0 * (timed_tokens / timed_seconds) *
                    config.training_flops_per_token(a.seq_len) / peak,
                format_bytes(backend->allocator().high_water_mark()).c_str());
  (void)timed_mfu;
  log_info(line);
  log_info("Memory at peak: " + backend->allocator().usage_report());
  if (profiler)
    log_info("Profile of the timed steps (device time per op, summed over steps):\n" +
             profiler->report(timed_seconds));
}

}  // namespace

void add_train_command(CLI::App& app) {
  auto args = std::make_shared<TrainArgs>();
  CLI::App* cmd = app.add_subcommand("train", "Train a model");
  cmd->add_option("--model-config", args->model_config,
                  "Hugging Face config.json of the model (randomly initialised)");
  cmd->add_flag("--synthetic", args->synthetic, "Train on synthetic token sequences");
  cmd->add_option("--batch", args->batch, "Sequences per global batch")->capture_default_str();
  cmd->add_option("--seq-len", args->seq_len, "Tokens per sequence")->capture_default_str();
  cmd->add_option("--steps", args->steps, "Optimizer steps")->capture_default_str();
  cmd->add_option("--micro-batches", args->micro_batches,
                  "Split each batch into this many micro-batches (gradient accumulation)")
      ->capture_default_str();
  cmd->add_option("--dtype", args->dtype, "f32, or bf16 (mixed precision, f32 master weights)")
      ->capture_default_str();
  cmd->add_option("--lr", args->lr, "Peak learning rate")->capture_default_str();
  cmd->add_option("--lr-schedule", args->lr_schedule, "constant, linear or cosine")
      ->capture_default_str();
  cmd->add_option("--warmup-steps", args->warmup_steps, "Linear warm-up steps")
      ->capture_default_str();
  cmd->add_option("--min-lr", args->min_lr, "Final learning rate of a decaying schedule")
      ->capture_default_str();
  cmd->add_option("--weight-decay", args->weight_decay, "AdamW decoupled weight decay")
      ->capture_default_str();
  cmd->add_option("--adam-beta1", args->beta1)->capture_default_str();
  cmd->add_option("--adam-beta2", args->beta2)->capture_default_str();
  cmd->add_option("--adam-eps", args->eps)->capture_default_str();
  cmd->add_option("--max-grad-norm", args->max_grad_norm,
                  "Clip the global gradient norm to this (0: no clipping)")
      ->capture_default_str();
  cmd->add_option("--seed", args->seed, "Seed of the initialisation and the data")
      ->capture_default_str();
  cmd->add_option("--threads", args->threads, "CPU threads (0: all cores)")->capture_default_str();
  cmd->add_option("--memory-budget", args->memory_budget,
                  "Device memory budget, e.g. 8g (default: unlimited)");
  cmd->add_flag("--profile", args->profile, "Time every kernel and print where the time goes");
  cmd->add_option("--metrics-out", args->metrics_out, "Write one JSON object per step here");
  cmd->callback([args] { run_train(*args); });
}

}  // namespace vacc::cli
