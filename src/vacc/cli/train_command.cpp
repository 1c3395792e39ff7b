// `vacc train`: train or fine-tune a model on the current accelerator: a Hugging Face folder
// (--model) or a randomly initialised config (--model-config), on a JSONL dataset (--data)
// or synthetic tokens (--synthetic). On a flavor of several devices the command starts one
// rank per device through the flavor's launcher (mpirun / srun), each running this same
// command; a one-device flavor runs in-process. Logs every step in the seed's form,
// evaluates, saves in Hugging Face format, and draws the loss curve.
#include <cstdio>
#include <filesystem>
#include <memory>
#include <optional>
#include <sstream>
#include <thread>

#include <unistd.h>

#include "vacc/cli/command_flavor.h"
#include "vacc/cli/cuda_graphs_option.h"
#include "vacc/cli/commands.h"
#include "vacc/cli/device_backend.h"
#include "vacc/cli/planning.h"
#include "vacc/cli/rank_launch.h"
#include "vacc/comm/communicator.h"
#include "vacc/core/byte_size.h"
#include "vacc/core/error.h"
#include "vacc/core/logging.h"
#include "vacc/core/strprintf.h"
#include "vacc/core/text_file.h"
#include "vacc/io/sft_dataset.h"
#include "vacc/io/synthetic_data.h"
#include "vacc/io/tokenizer.h"
#include "vacc/kernels/profiling_backend.h"
#include "vacc/launch/accelerator_state.h"
#include "vacc/launch/launcher.h"
#include "vacc/runtime/device_peak.h"
#include "vacc/runtime/hf_checkpoint.h"
#include "vacc/runtime/loss_curve_svg.h"
#include "vacc/runtime/metrics_log.h"
#include "vacc/runtime/trainer.h"

namespace vacc::cli {
namespace {

namespace fs = std::filesystem;

struct TrainArgs {
  std::string model, model_config, data, tokenizer, save, metrics_out, dtype = "f32";
  std::string memory_budget, lr_schedule = "constant", max_shard_size = "5GB", save_dtype, flavor;
  std::string parallel, trace, plan_out;
  double usable_memory = 0.8;
  int plan_threads = 0;
  int64_t trace_step = 0;
  double comm_timeout_s = 20.0;
  bool synthetic = false, profile = false, mask_prompt = false, pack = false;
  bool skip_bad_lines = false;
  CudaGraphsOption cuda_graphs;
  int64_t batch = 8, seq_len = 128, steps = 0, epochs = 0, micro_batches = 0, warmup_steps = 0;
  int64_t eval_every = 0, save_every = 0;
  double lr = 1e-4, min_lr = 0.0, weight_decay = 0.0, max_grad_norm = 1.0, eval_fraction = 0.0;
  double beta1 = 0.9, beta2 = 0.999, eps = 1e-8;
  uint64_t seed = 1234;
  int threads = 0;
};


// Where the batches come from: synthetic tokens or a dataset's training split.
struct DataSource {
  std::optional<SyntheticData> synthetic;
  std::unique_ptr<SftDataset> dataset;
  int64_t steps_per_epoch = 0;

  TokenBatch batch(int64_t step, int64_t batch_size) const {
    if (synthetic) return synthetic->batch(step, batch_size);
    int64_t epoch = (step - 1) / steps_per_epoch, index = (step - 1) % steps_per_epoch;
    return dataset->train_batch(epoch, index * batch_size, batch_size);
  }
};

std::string tokenizer_dir(const TrainArgs& a) {
  if (!a.tokenizer.empty()) return a.tokenizer;
  if (!a.model.empty() && fs::exists(fs::path(a.model) / "tokenizer.json")) return a.model;
  return "";
}

EvalResult evaluate(Trainer& trainer, const SftDataset& data, int64_t chunk) {
  EvalResult total;
  for (int64_t first = 0; first < data.eval_sequences(); first += chunk) {
    EvalResult r = trainer.evaluate(
        data.eval_batch(first, std::min(chunk, data.eval_sequences() - first)));
    total.loss_sum += r.loss_sum;
    total.tokens += r.tokens;
  }
  return total;
}

// What --parallel and --micro-batches pin; the planner chooses the rest.
PlanConstraints pinned_dimensions(const TrainArgs& a) {
  PlanConstraints pins = PlanConstraints::parse(a.parallel);
  if (a.micro_batches > 0) {
    VACC_CHECK(!pins.micro_batches || *pins.micro_batches == a.micro_batches,
               "--micro-batches ", a.micro_batches, " contradicts --parallel microbatches=",
               *pins.micro_batches);
    pins.micro_batches = a.micro_batches;
  }
  return pins;
}

// CUDA graphs for this run: the flags, else on with one GPU, except under --profile, which
// times the ops one by one (its backend has no graphs; asked for, the log says so).
bool train_uses_graphs(const TrainArgs& a, const Flavor& flavor) {
  if (a.profile && !a.cuda_graphs.on) return false;
  return cuda_graphs_wanted(a.cuda_graphs, flavor, GraphsDefault::OneGpu);
}

// Checks before starting N processes: some split keeps the pins. When none does, the error
// is the specific one of the pins' default completion (which tp does not divide the heads,
// which batch does not divide, ...).
void check_pins(const TrainArgs& a, int devices, const ModelConfig& config) {
  const PlanConstraints pins = pinned_dimensions(a);
  if (pins.whole()) {
    pins.completed(devices).validate(devices, a.batch, &config);
    return;
  }
  if (!enumerate_candidates(config, devices, a.batch, pins).empty()) return;
  pins.completed(devices).validate(devices, a.batch, &config);
  fail("--parallel ", pins.str(), ": no split of ", config.num_layers, " layers, ",
       config.num_heads, " heads (", config.num_kv_heads, " kv) over ", devices,
       " devices with a batch of ", a.batch,
       " keeps these pins (dp x pp x tp must equal the devices, tp divide the heads and FFN, "
       "pp be at most the layers, dp x micro-batches divide the batch)");
}

// The split of this job: the user's when every dimension is pinned, else the planner's
// (rank 0 plans, in the seed's words, writes the plan file and tells the other ranks).
// `peak`: the matrix-product peak every rank measured at once, averaged.
ParallelConfig choose_parallel(const TrainArgs& a, const Flavor& flavor, const ModelConfig& config,
                               Communicator& comm, size_t budget, DType dtype, double peak,
                               const std::string& plan_path) {
  const PlanConstraints pins = pinned_dimensions(a);
  if (pins.whole()) {
    // The user's split, run without the planner (even one it would predict over its usable
    // memory).
    const ParallelConfig p = pins.completed(comm.size());
    p.validate(comm.size(), a.batch, &config);
    log_info("Configuration for parallelism is given (--parallel): " + p.describe(a.batch));
    return p;
  }
  char chosen[256] = {};
  if (comm.rank() == 0) {
    log_info("Automatic parallelization" +
             (pins.empty() ? std::string() : " (pinned by --parallel: " + pins.str() + ")") +
             ": planning the split over " + std::to_string(comm.size()) + " device(s)");
    ProfileInputs inputs;
    inputs.measured_cpu_peak_flops = peak;
    ClusterSpec cluster = cluster_spec_for(flavor, inputs, dtype);
    cluster.memory_bytes_per_device =
        budget == DeviceAllocator::kUnlimited ? 0.0 : double(budget);
    PlannerOptions o;
    o.global_batch = a.batch;
    o.seq_len = a.seq_len;
    o.dtype = dtype;
    o.usable_memory_fraction = a.usable_memory;
    o.threads = a.plan_threads;
    o.scratch =
        device_scratch_for(flavor, planned_device_memory(cluster), train_uses_graphs(a, flavor));
    const PlanResult r =
        plan_parallelism(config, cluster, pins, o, [](const std::string& line) { log_info(line); });
    VACC_CHECK(r.chosen >= 0, r.no_feasible_message(), " (",
               strprintf("%.0f%%", 100 * a.usable_memory), " of the memory budget of ",
               format_bytes(budget), " per device; a flavor with more devices or memory, --usable-memory, a smaller --batch or "
               "--seq-len may fit; `vacc plan` shows every candidate)");
    const Candidate& c = r.candidates[size_t(r.chosen)];
    log_info("Predicted: " + c.cost.str() + "; memory per device " + c.memory.str());
    if (!plan_path.empty()) {
      nlohmann::json plan = chosen_plan_json(r, flavor.name, a.batch, a.seq_len);
      plan["candidates"] = nlohmann::json::array();
      for (const Candidate& k : r.candidates) plan["candidates"].push_back(candidate_json(k, a.batch));
      write_file_atomically(plan_path, plan.dump(2) + "\n");
      log_info("The selected configuration is written to " + plan_path);
    }
    const std::string text = c.config.to_string();
    VACC_CHECK(text.size() < sizeof chosen, "internal: the plan string is too long: ", text);
    std::snprintf(chosen, sizeof chosen, "%s", text.c_str());
  }
  comm.broadcast_host(chosen, sizeof chosen, 0);
  ParallelConfig p = ParallelConfig::parse(chosen, ParallelConfig{});
  p.validate(comm.size(), a.batch, &config);
  return p;
}

// Every rank's host and PID, gathered for the log and the status file.
std::vector<std::pair<std::string, long>> gather_hosts(Communicator& comm) {
  std::vector<std::pair<std::string, long>> hosts;
  for (int r = 0; r < comm.size(); ++r) {
    char record[256] = {};
    if (comm.rank() == r)
      std::snprintf(record, sizeof record, "%ld %s", long(getpid()), comm.host().c_str());
    comm.broadcast_host(record, sizeof record, r);
    char host[240] = {};
    long pid = 0;
    std::sscanf(record, "%ld %239s", &pid, host);
    hosts.emplace_back(host, pid);
  }
  return hosts;
}

// Publishes the job for `vacc status` (rank 0 only; the launcher's PID names the job).
struct StatusPublisher {
  JobStatus status;
  bool enabled = false;

  void start(const Flavor& flavor, int64_t steps, const std::vector<std::pair<std::string, long>>& hosts,
             size_t budget) {
    const char* job_pid = std::getenv("VACC_JOB_PID");
    status.pid = job_pid ? std::atol(job_pid) : long(getpid());
    status.command = command_line_text();
    char when[64];
    std::time_t now = std::time(nullptr);
    std::strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%S", std::localtime(&now));
    status.started = when;
    status.flavor = flavor.name;
    status.total_steps = steps;
    for (size_t r = 0; r < hosts.size(); ++r)
      status.devices.push_back({int(r), hosts[r].first, 0,
                                budget == DeviceAllocator::kUnlimited ? 0 : uint64_t(budget)});
    enabled = true;
    publish();
  }
  void update(const StepMetrics& m) {
    if (!enabled) return;
    status.step = m.step;
    for (size_t r = 0; r < status.devices.size() && r < m.memory_in_use_bytes.size(); ++r)
      status.devices[r].memory_used = uint64_t(m.memory_in_use_bytes[r]);
    publish();
  }
  void publish() {
    try {
      write_job_status(status);
    } catch (const Error& e) {
      log_warn(std::string("cannot publish the job status: ") + e.what());
      enabled = false;
    }
  }
  ~StatusPublisher() {
    if (!enabled) return;
    try {  // only our own entry: another job may have replaced it
      auto current = read_job_status();
      if (current && current->pid == status.pid) clear_job_status();
    } catch (...) {
    }
  }
};

void train_on_rank(const TrainArgs& a, const Flavor& flavor, const ModelConfig& config,
                   Communicator& comm) {
  const bool rank0 = comm.rank() == 0;
  const int device_index = local_rank(comm, flavor);
  const size_t budget = !a.memory_budget.empty()
                            ? parse_byte_size(a.memory_budget, "--memory-budget")
                            : device_memory_budget(flavor, device_index);
  const size_t max_shard = parse_byte_size(a.max_shard_size, "--max-shard-size");
  const DType dtype = parse_dtype(a.dtype);
  const DType save_dtype = a.save_dtype.empty() ? DType::F32 : parse_dtype(a.save_dtype);

  // The data, before anything expensive, so a bad dataset fails fast.
  DataSource source;
  const std::string tok_dir = tokenizer_dir(a);
  std::optional<Tokenizer> tokenizer;
  if (a.synthetic) {
    source.synthetic.emplace(config.vocab_size, a.seq_len, a.seed);
  } else {
    if (!tok_dir.empty()) tokenizer.emplace(Tokenizer::load(tok_dir));
    DatasetOptions d;
    d.seq_len = a.seq_len;
    d.mask_prompt = a.mask_prompt;
    d.pack = a.pack;
    d.seed = a.seed;
    d.eval_fraction = a.eval_fraction;
    d.skip_bad_lines = a.skip_bad_lines;
    d.vocab_size = config.vocab_size;
    if (config.eos_token_id >= 0 && !tokenizer) d.eos_id = int32_t(config.eos_token_id);
    source.dataset =
        std::make_unique<SftDataset>(a.data, tokenizer ? &*tokenizer : nullptr, d);
    log_info("Dataset: " + source.dataset->summary());
    source.steps_per_epoch = source.dataset->train_sequences() / a.batch;
    VACC_CHECK(source.steps_per_epoch > 0, a.data, ": ", source.dataset->train_sequences(),
               " training sequences are fewer than one batch of ", a.batch);
  }
  const int64_t steps = a.steps > 0 ? a.steps
                        : a.synthetic ? 10
                                      : std::max<int64_t>(1, a.epochs) * source.steps_per_epoch;

  const int cores = int(std::max(1u, std::thread::hardware_concurrency()));
  const int threads = a.threads > 0 ? a.threads
                      : comm.size() > 1 ? default_threads_per_rank(cores)
                                        : 0;
  auto backend = make_device_backend(flavor, device_index, budget, threads);
  connect_streams(comm, *backend);
  TrainerOptions opt;
  opt.batch = a.batch;
  opt.seq_len = a.seq_len;
  opt.dtype = dtype;
  opt.lr = LrSchedule{LrSchedule::parse_kind(a.lr_schedule), a.lr, a.min_lr, a.warmup_steps, steps};
  opt.adam = AdamWConfig{float(a.beta1), float(a.beta2), float(a.eps), float(a.weight_decay)};
  opt.max_grad_norm = a.max_grad_norm;
  opt.seed = a.seed;
  opt.graphs = train_uses_graphs(a, flavor);
  if (!a.model.empty()) {
    opt.load_weights = [&](Backend& be, const ParameterTable& table, FlatRange range, Tensor& dst) {
      log_info("Loading checkpoint shards from " + a.model +
               (comm.size() > 1 ? " (each rank reads only its shard)" : ""));
      load_hf_checkpoint(a.model, be, config, table, dst, rank0, range);
    };
  }

  log_info(strprintf("Model: %s, %lld layers, hidden %lld, %lld heads (%lld kv), vocabulary %lld, "
                     "%.1fM parameters",
                     config.architecture.c_str(), (long long)config.num_layers,
                     (long long)config.hidden_size, (long long)config.num_heads,
                     (long long)config.num_kv_heads, (long long)config.vocab_size,
                     double(config.total_parameters()) / 1e6));
  const auto hosts = gather_hosts(comm);
  for (int r = 0; r < comm.size(); ++r)
    log_info(strprintf("[%d/%d] Connecting to rank %d on %s (pid %ld)", r + 1, comm.size(), r,
                       hosts[size_t(r)].first.c_str(), hosts[size_t(r)].second));
  if (comm.size() > 1) {
    log_info("Establishing links between the ranks (" + comm.name() + ")...");
    double probe = 1.0;
    comm.all_reduce_host(&probe, 1);
    VACC_CHECK(probe == double(comm.size()), "the link check summed to ", probe, " over ",
               comm.size(), " ranks");
  }
  log_info("Accelerator " + flavor.name + " is ready to use: " + std::to_string(comm.size()) +
           " device(s), " + backend->name() +
           ", memory budget " +
           (budget == DeviceAllocator::kUnlimited ? std::string("unlimited") : format_bytes(budget)) +
           " per device");
  // Every rank at once, so a device is measured with the share of the cores it will have;
  // on a backend of its own, so the probe's buffers do not count against the budget.
  const double peak = measure_matmul_peak_together(
      *make_device_backend(flavor, device_index, DeviceAllocator::kUnlimited, threads), comm,
      dtype, peak_probe_size(flavor));
  const bool tera = peak >= 1e12;  // a GPU's
  log_info(strprintf("Measured peak per device (%s matrix products): %.1f %s",
                     dtype_name(dtype).c_str(), peak / (tera ? 1e12 : 1e9),
                     tera ? "TFLOP/s" : "GFLOP/s"));
  const std::string plan_path =
      !a.plan_out.empty() ? a.plan_out
      : !a.save.empty()   ? (fs::path(a.save) / "parallel_plan.json").string()
                          : "";
  if (rank0 && !plan_path.empty() && fs::path(plan_path).has_parent_path())
    fs::create_directories(fs::path(plan_path).parent_path());
  const ParallelConfig parallel =
      choose_parallel(a, flavor, config, comm, budget, dtype, peak, plan_path);
  opt.parallel = parallel;

  // --profile times every op (synchronising around each); the steps get a little slower.
  std::unique_ptr<ProfilingBackend> profiler;
  Backend* device = backend.get();
  if (a.profile) {
    profiler = std::make_unique<ProfilingBackend>(*backend);
    device = profiler.get();
  }
  Trainer trainer(*device, comm, config, opt, peak);
  if (!trainer.graphs_status().empty()) log_info("CUDA graphs: " + trainer.graphs_status());
  MetricsFile metrics(rank0 ? a.metrics_out : std::string());
  const fs::path out_dir = a.save.empty() ? fs::path() : fs::path(a.save);
  if (!out_dir.empty() && rank0) fs::create_directories(out_dir);
  log_info(strprintf("Training: %lld steps, batch %lld x %lld tokens, %lld micro-batch(es) per "
                     "rank, %s, lr %g (%s)",
                     (long long)steps, (long long)a.batch, (long long)a.seq_len,
                     (long long)parallel.micro_batches,
                     dtype == DType::BF16 ? "bf16 mixed precision" : "f32", a.lr,
                     a.lr_schedule.c_str()));
  StatusPublisher status;
  if (rank0) status.start(flavor, steps, hosts, budget);

  LossCurve curve;
  auto run_eval = [&](int64_t step) {
    if (!source.dataset || source.dataset->eval_sequences() == 0) return;
    EvalResult r = evaluate(trainer, *source.dataset, 16 * a.batch);
    log_info(strprintf("[Eval %lld/%lld] | Loss: %.4f | Tokens: %lld", (long long)step,
                       (long long)steps, r.mean(), (long long)r.tokens));
    metrics.write_eval(step, r.mean(), r.tokens);
    curve.eval.push_back({double(step), r.mean()});
  };
  auto save = [&](const fs::path& dir) {
    log_info("Saving the model to " + dir.string());
    HfSaveOptions so;
    so.dtype = save_dtype;
    so.max_shard_bytes = max_shard;
    so.tokenizer_dir = tok_dir;
    // Rank 0 writes while the others wait for it: give their wait the time a write can take.
    // Rank 0 itself waits only for ranks that are not writing (their pieces, the last
    // barrier), so a rank that hangs during a save still ends the job after --comm-timeout
    // (it waited an hour when rank 0 had the long timeout too).
    const auto timeout = comm.timeout();
    if (!rank0) comm.set_timeout(std::max(timeout, std::chrono::milliseconds(3'600'000)));
    trainer.save(dir.string(), so);
    comm.set_timeout(timeout);
    if (!out_dir.empty() && rank0)
      write_loss_curve_svg(curve, "vacc train: " + fs::path(a.model.empty() ? a.model_config : a.model).filename().string(),
                           (out_dir / "loss_curve.svg").string());
  };

  double timed_tokens = 0, timed_seconds = 0, timed_flops = 0;
  std::vector<double> peaks;
  // The traced step: the second by default (the first includes one-time set-up).
  const int64_t trace_step = a.trace.empty() ? 0 : a.trace_step > 0 ? a.trace_step : std::min<int64_t>(2, steps);
  for (int64_t s = 1; s <= steps; ++s) {
    StepMetrics m = trainer.step(source.batch(s, a.batch), s == trace_step);
    if (s == trace_step) {
      trainer.write_trace(a.trace);
      log_info("Trace of step " + std::to_string(s) + " written to " + a.trace +
               " (open it in https://ui.perfetto.dev)");
    }
    log_info(format_step_line(m, steps));
    metrics.write(m);
    status.update(m);
    peaks = m.peak_memory_bytes;
    curve.train.push_back({double(s), m.loss});
    if (s > 1 || steps == 1) {  // the first step includes one-time set-up
      timed_tokens += double(m.tokens);
      timed_seconds += m.step_time_s;
      timed_flops += m.flops_per_sec * m.step_time_s;
    }
    if (profiler && s == 1 && steps > 1) profiler->reset();
    if (a.eval_every > 0 && s % a.eval_every == 0 && s < steps) run_eval(s);
    if (!out_dir.empty() && a.save_every > 0 && s % a.save_every == 0 && s < steps)
      save(out_dir / ("checkpoint-" + std::to_string(s)));
  }
  run_eval(steps);
  const double tps = timed_tokens / timed_seconds;
  std::string per_rank;
  for (size_t r = 0; r < peaks.size(); ++r)
    per_rank += (r ? ", " : "") + format_bytes(size_t(peaks[r]));
  log_info(strprintf("Done: %.1f tokens/sec on average%s, MFU %.1f%%; peak memory per device: %s",
                     tps, steps > 1 ? " (after the first step)" : "",
                     100.0 * timed_flops / timed_seconds / peak, per_rank.c_str()));
  log_info("Memory at peak (rank 0): " + backend->allocator().usage_report());
  if (const std::string tuned = backend->tuning_summary(); !tuned.empty())
    log_info("Kernels timed on their first run (rank 0): " + tuned);
  if (trainer.graphs_captured() > 0 || !trainer.graphs_failure().empty())
    log_info(strprintf("CUDA graphs: %lld captured, %lld replays (rank 0)%s",
                       (long long)trainer.graphs_captured(), (long long)trainer.graph_replays(),
                       trainer.graphs_failure().empty() ? "" : "; given up after a failed capture"));
  if (!out_dir.empty()) {
    save(out_dir);
    log_info("Loss curve: " + (out_dir / "loss_curve.svg").string());
  }
  if (profiler)
    log_info("Profile of the timed steps (device time per op, summed over steps, rank 0):\n" +
             profiler->report(timed_seconds));
}

void run_train(const TrainArgs& a) {
  VACC_CHECK(a.model.empty() != a.model_config.empty(),
             "vacc train: give exactly one of --model DIR (a Hugging Face folder) and "
             "--model-config CONFIG.json (random initialisation)");
  VACC_CHECK(a.synthetic != !a.data.empty(),
             "vacc train: give exactly one of --data FILE.jsonl and --synthetic");
  VACC_CHECK(a.steps >= 0 && a.epochs >= 0, "--steps and --epochs must not be negative");
  VACC_CHECK(!(a.steps > 0 && a.epochs > 0), "give --steps or --epochs, not both");
  VACC_CHECK(a.comm_timeout_s > 0, "--comm-timeout must be positive");
  check_usable_memory(a.usable_memory);
  VACC_CHECK(a.micro_batches >= 0, "--micro-batches must not be negative (0: the planner's choice)");
  const ModelConfig config =
      a.model.empty() ? ModelConfig::from_file(a.model_config) : load_hf_config(a.model);
  // The accelerator: --flavor, else the one `vacc switch` remembered (default cpu-1).
  const Flavor flavor = command_flavor(a.flavor);
  check_flavor_devices(flavor);
  // Cheap checks first, so a mistake does not start N processes to fail N times.
  check_pins(a, flavor.total_devices(), config);
  run_on_every_rank(flavor, a.comm_timeout_s, "vacc train",
                    [&](Communicator& comm) { train_on_rank(a, flavor, config, comm); });
}

}  // namespace

void add_train_command(CLI::App& app) {
  auto args = std::make_shared<TrainArgs>();
  CLI::App* cmd = app.add_subcommand("train", "Train or fine-tune a model");
  cmd->add_option("--model", args->model, "A Hugging Face model folder to fine-tune");
  cmd->add_option("--model-config", args->model_config,
                  "A Hugging Face config.json: train a randomly initialised model");
  cmd->add_option("--data", args->data,
                  "JSONL dataset: alpaca {instruction,input,output}, chat {messages}, {text} or "
                  "pre-tokenized {input_ids[,labels]}");
  cmd->add_flag("--synthetic", args->synthetic, "Train on synthetic token sequences");
  cmd->add_option("--tokenizer", args->tokenizer,
                  "Folder with tokenizer.json (default: the --model folder)");
  cmd->add_option("--batch", args->batch, "Sequences per global batch")->capture_default_str();
  cmd->add_option("--seq-len", args->seq_len, "Tokens per sequence")->capture_default_str();
  cmd->add_option("--steps", args->steps, "Optimizer steps (default: --epochs, or 10 synthetic)");
  cmd->add_option("--epochs", args->epochs, "Passes over the dataset (default 1)");
  cmd->add_option("--micro-batches", args->micro_batches,
                  "Split each batch into this many micro-batches per replica (gradient "
                  "accumulation; default: the planner's choice)");
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
  cmd->add_flag("--mask-prompt", args->mask_prompt,
                "Take the loss on responses only (default: every token, as the tutorial does)");
  cmd->add_flag("--pack", args->pack, "Pack several examples per sequence instead of padding");
  cmd->add_option("--eval-fraction", args->eval_fraction,
                  "Hold out this fraction of the dataset for evaluation")
      ->capture_default_str();
  cmd->add_option("--eval-every", args->eval_every, "Evaluate every K steps (and at the end)");
  cmd->add_flag("--skip-bad-lines", args->skip_bad_lines,
                "Skip and count malformed dataset lines instead of stopping");
  cmd->add_option("--save", args->save,
                  "Save the trained model here (Hugging Face format), with loss_curve.svg");
  cmd->add_option("--save-every", args->save_every, "Also save to SAVE/checkpoint-K every K steps");
  cmd->add_option("--save-dtype", args->save_dtype, "f32 (default) or bf16 weights when saving");
  cmd->add_option("--max-shard-size", args->max_shard_size, "Largest safetensors shard")
      ->capture_default_str();
  cmd->add_option("--seed", args->seed, "Seed of the initialisation, data order and synthetic data")
      ->capture_default_str();
  cmd->add_option("--threads", args->threads, "CPU threads (0: all cores)")->capture_default_str();
  cmd->add_option("--flavor", args->flavor,
                  "Accelerator for this job (default: the one `vacc switch` chose)");
  cmd->add_option("--parallel", args->parallel,
                  "Pin any of dp=,pp=,tp=,zero=,microbatches=,recompute=,schedule=; the planner "
                  "chooses the rest (default: all of it)");
  cmd->add_option("--usable-memory", args->usable_memory,
                  "Fraction of device memory the planner may plan for")
      ->capture_default_str();
  cmd->add_option("--plan-threads", args->plan_threads, "Threads of the planner (0: all cores)")
      ->capture_default_str();
  cmd->add_option("--plan-out", args->plan_out,
                  "Write the chosen plan and every candidate here (default: SAVE/parallel_plan.json)");
  cmd->add_option("--trace", args->trace,
                  "Write one step's timeline of every rank (Chrome trace JSON, for Perfetto)");
  cmd->add_option("--trace-step", args->trace_step, "The step to trace (default 2)");
  cmd->add_option("--comm-timeout", args->comm_timeout_s,
                  "Seconds a rank waits for the others before ending the job (a rank died or "
                  "hangs)")
      ->capture_default_str();
  cmd->add_option("--memory-budget", args->memory_budget,
                  "Device memory budget, e.g. 8g (default: the flavor's per-device memory)");
  cmd->add_flag("--profile", args->profile, "Time every kernel and print where the time goes");
  add_cuda_graphs_flags(cmd, &args->cuda_graphs,
                        "Replay the layers' forward and backward passes as CUDA graphs, one "
                        "launch each, where tp = 1 and ZeRO is 0 or 1",
                        "Launch every op of the step (no CUDA graphs)", GraphsDefault::OneGpu);
  cmd->add_option("--metrics-out", args->metrics_out, "Write one JSON object per step here");
  cmd->callback([args] { run_train(*args); });
}

}  // namespace vacc::cli
