// `vacc profile`: measures this machine's devices and links for the planner and stores the
// result under $VACC_HOME/profiles/ (cli/profile_store.h), where `vacc plan` and `vacc train`
// pick it up (cli/planning.cpp). On a flavor of N devices it starts N ranks, like `vacc
// train`, so every device is measured while the others run: matrix products over a
// transformer's shapes (fitted to the profile's peak and efficiency curve), memory bandwidth
// (a stream over buffers far larger than the caches), the element-wise kernels, AdamW and
// attention; with N > 1, all-reduce, reduce-scatter, all-gather (groups of 2..N ranks) and
// send/recv from 4 KiB to 64 MiB, fitted to one link's latency and bandwidth.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <memory>
#include <thread>

#include <nlohmann/json.hpp>

#include "vacc/cli/command_flavor.h"
#include "vacc/cli/commands.h"
#include "vacc/cli/device_backend.h"
#include "vacc/cli/profile_store.h"
#include "vacc/cli/rank_launch.h"
#include "vacc/comm/communicator.h"
#include "vacc/core/error.h"
#include "vacc/core/strprintf.h"
#include "vacc/core/logging.h"
#include "vacc/kernels/backend.h"
#include "vacc/launch/accelerator_state.h"
#include "vacc/launch/launcher.h"
#include "vacc/plan/cost_model.h"
#include "vacc/plan/measured_profile.h"
#include "vacc/plan/profile_fit.h"
#include "vacc/runtime/profile_measure.h"

namespace vacc::cli {
namespace {

struct ProfileArgs {
  std::string flavor, out, dtype = "f32";
  bool quick = false;
  int threads = 0;
  double comm_timeout_s = 60;
};

std::string utc_now() {
  const std::time_t t = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

// The 1-minute load average (/proc/loadavg), -1 when unknown.
double load_average() {
  std::FILE* f = std::fopen("/proc/loadavg", "r");
  if (!f) return -1;
  double load = -1;
  if (std::fscanf(f, "%lf", &load) != 1) load = -1;
  std::fclose(f);
  return load;
}

double sum_bytes_per_second(const std::vector<KernelSample>& ks, std::initializer_list<const char*> names) {
  double bytes = 0, seconds = 0;
  for (const KernelSample& k : ks)
    for (const char* n : names)
      if (k.name == n) bytes += k.bytes, seconds += k.seconds;
  return seconds > 0 ? bytes / seconds : 0;
}

// Fits the measurements, writes the profile and prints the summary (rank 0).
void fit_and_store(const ProfileArgs& a, const Flavor& flavor, int ranks, int threads,
                   DType dtype, const DeviceMeasurements& dev,
                   const std::vector<CollectiveSample>& links,
                   const std::vector<SyncSample>& sync, double elapsed_s,
                   double load_before) {
  const EfficiencyFit ef = fit_efficiency_curve(dev.matmul);
  DeviceProfile p;
  p.name = flavor.device_model;
  p.peak_bf16_flops = p.peak_fp32_flops = ef.peak_flops;
  p.peak_efficiency = 1.0;
  p.half_work = std::max(1.0, ef.half_work);
  // CPU ranks progress MPI's non-blocking collectives only while they poll, between kernels:
  // their gradient reduction does not hide behind backward (as DeviceProfile::cpu says).
  p.overlaps_communication = !flavor.is_cpu();
  const size_t budget = device_memory_budget(flavor, 0);  // a GPU's memory, when none is given
  p.memory_bytes = double(budget == DeviceAllocator::kUnlimited ? host_memory_bytes() : budget);
  p.memory_bandwidth = sum_bytes_per_second(dev.kernels, {"stream_add"});
  p.elementwise_bandwidth = sum_bytes_per_second(
      dev.kernels, {"rmsnorm_forward", "rmsnorm_backward", "swiglu_forward", "swiglu_backward"});
  p.optimizer_bandwidth = sum_bytes_per_second(dev.kernels, {"adamw"});
  const AttentionShape& as = dev.attention.shape;
  const double S = double(as.seq), D = double(as.head_dim);
  const double curve_attention =
      3.0 * double(as.batch * as.q_heads) *
      (p.matmul_seconds(DType::F32, S, S, D) + p.matmul_seconds(DType::F32, S, D, S));
  p.attention_factor = dev.attention.seconds / curve_attention;
  const ClassifierSample& cs = dev.classifier;
  const double curve_classifier =
      3 * p.matmul_seconds(DType::F32, double(cs.rows), double(cs.vocab), double(cs.hidden)) +
      p.elementwise_seconds(classifier_logit_bytes(dtype) * double(cs.rows) * double(cs.vocab));
  p.classifier_factor = cs.seconds / curve_classifier;

  nlohmann::json matmul = nlohmann::json::array();
  for (const MatmulSample& s : dev.matmul) {
    const double flops = 2 * s.m * s.n * s.k;
    matmul.push_back({{"m", s.m}, {"n", s.n}, {"k", s.k}, {"seconds", s.seconds},
                      {"gflops", flops / s.seconds / 1e9},
                      {"fitted_gflops", flops / p.matmul_seconds(dtype, s.m, s.n, s.k) / 1e9}});
  }
  nlohmann::json kernels = nlohmann::json::array();
  for (const KernelSample& k : dev.kernels) {
    nlohmann::json j{{"name", k.name}, {"shape", k.shape}, {"seconds", k.seconds}};
    if (k.bytes > 0) j["bytes"] = k.bytes, j["gbytes_per_s"] = k.bytes / k.seconds / 1e9;
    if (k.flops > 0) j["flops"] = k.flops, j["gflops"] = k.flops / k.seconds / 1e9;
    kernels.push_back(j);
  }
  nlohmann::json doc{
      {"schema", kMeasuredProfileSchema},
      {"key", measured_profile_key(flavor)},
      {"flavor", flavor.name},
      {"device_model", flavor.device_model},
      {"devices", ranks},
      {"threads_per_device", threads},
      {"dtype", dtype_name(dtype)},
      {"quick", a.quick},
      {"measured_at", utc_now()},
      {"host", host_name()},
      {"duration_s", elapsed_s},
      {"load_average", {{"before", load_before}, {"after", load_average()}}},
      {"device",
       {{"profile", p.to_json()},
        {"matmul_fit",
         {{"peak_gflops", ef.peak_flops / 1e9},
          {"half_work", p.half_work},
          {"rms_relative_error", ef.rms_relative_error}}},
        {"matmul", matmul},
        {"memory_bandwidth_gbytes_per_s", p.memory_bandwidth / 1e9},
        {"kernels", kernels},
        {"attention",
         {{"batch", as.batch}, {"seq", as.seq}, {"q_heads", as.q_heads}, {"kv_heads", as.kv_heads},
          {"head_dim", as.head_dim}, {"seconds", dev.attention.seconds},
          {"curve_seconds", curve_attention}, {"factor", p.attention_factor}}},
        {"classifier",
         {{"rows", cs.rows}, {"vocab", cs.vocab}, {"hidden", cs.hidden}, {"seconds", cs.seconds},
          {"curve_seconds", curve_classifier}, {"factor", p.classifier_factor}}}}},
      {"links", nullptr}};

  std::string link_summary;
  if (!links.empty()) {
    const LinkFit lf = fit_link(links);
    nlohmann::json collectives = nlohmann::json::array();
    nlohmann::json per_collective = nlohmann::json::object();
    for (CollectiveOp op : {CollectiveOp::AllReduce, CollectiveOp::ReduceScatter,
                            CollectiveOp::AllGather, CollectiveOp::SendRecv}) {
      std::vector<CollectiveSample> of_op;
      for (const CollectiveSample& s : links)
        if (s.op == op) of_op.push_back(s);
      if (of_op.empty()) continue;
      const LinkFit opf = fit_link(of_op);
      per_collective[collective_name(op)] = {{"bandwidth_gbytes_per_s", opf.bandwidth / 1e9},
                                             {"latency_us", opf.latency * 1e6},
                                             {"rms_relative_error", opf.rms_relative_error}};
      link_summary += strprintf("    %-14s as a link: %7.1f us, %6.2f GB/s (within %.0f%% rms)\n",
                          collective_name(op), opf.latency * 1e6, opf.bandwidth / 1e9,
                          100 * opf.rms_relative_error);
      for (int n = 2; n <= ranks; ++n) {
        std::vector<CollectiveSample> of_n;
        nlohmann::json points = nlohmann::json::array();
        for (const CollectiveSample& s : of_op)
          if (s.ranks == n) {
            of_n.push_back(s);
            points.push_back({{"bytes", s.bytes}, {"seconds", s.seconds}});
          }
        if (of_n.empty()) continue;
        const LinkFit f = fit_link(of_n);
        std::string line;
        for (const CollectiveSample& s : of_n)
          line += strprintf(" %s %.0f", s.bytes >= 1 << 20 ? strprintf("%.0fM", s.bytes / (1 << 20)).c_str()
                                                     : strprintf("%.0fK", s.bytes / 1024).c_str(),
                      s.seconds * 1e6);
        link_summary += strprintf("      on %d ranks, us by size:%s\n", n, line.c_str());
        collectives.push_back(
            {{"op", collective_name(op)}, {"ranks", n},
             {"link_latency_us", f.latency * 1e6},
             {"link_bandwidth_gbytes_per_s", f.bandwidth / 1e9},
             {"latency_us", f.latency * collective_steps(op, n) * 1e6},
             {"bandwidth_gbytes_per_s", f.bandwidth / collective_traffic(op, n) / 1e9},
             {"rms_relative_error", f.rms_relative_error},
             {"points", points}});
      }
    }
    // sync_us: every rank in one group after the longest compute (one figure, for readers
    // that take one); sync: every point, for the planner.
    nlohmann::json sync_points = nlohmann::json::array();
    std::string sync_line;
    for (const SyncSample& g : sync) {
      sync_points.push_back(
          {{"ranks", g.ranks}, {"compute_us", g.compute_s * 1e6}, {"sync_us", g.seconds * 1e6}});
      sync_line += strprintf("\n      groups of %d, after %.0f us of compute: %.0f us", g.ranks,
                             g.compute_s * 1e6, g.seconds * 1e6);
    }
    doc["links"] = {{"intra_node",
                     {{"bandwidth_gbytes_per_s", lf.bandwidth / 1e9},
                      {"latency_us", lf.latency * 1e6},
                      {"sync_us", sync.empty() ? 0.0 : sync.back().seconds * 1e6},
                      {"sync", sync_points},
                      {"rms_relative_error", lf.rms_relative_error},
                      {"per_collective", per_collective}}},
                    {"collectives", collectives}};
    link_summary = strprintf("  links (the planner's rings; latency from messages <= 16 KiB, bandwidth from "
                       ">= 1 MiB): %.1f us, %.2f GB/s over every collective (within %.0f%% rms); "
                       "each collective:\n",
                       lf.latency * 1e6, lf.bandwidth / 1e9, 100 * lf.rms_relative_error) +
                   strprintf("  synchronisation, per collective (ranks computing between "
                       "collectives wait for each other):%s\n", sync_line.c_str()) +
                   link_summary;
  }

  const std::string path = a.out.empty() ? measured_profile_path(flavor) : a.out;
  // Reading it back checks the document against the schema the planner reads.
  MeasuredProfile::from_json(doc, path);
  save_measured_profile(path, doc);

  std::printf("\nProfile of %s: %d device(s) measured at once, %s, %s, %.1f s\n",
              flavor.name.c_str(), ranks,
              threads > 0 ? strprintf("%d thread(s) each", threads).c_str() : "one GPU each",
              a.quick ? "quick" : "full", elapsed_s);
  std::printf("  matrix products (%s): peak %.1f GFLOP/s per device, half of it at %.3g "
              "multiply-adds (%.0f^3); fit within %.1f%% rms\n",
              dtype_name(dtype).c_str(), ef.peak_flops / 1e9, p.half_work,
              std::cbrt(p.half_work), 100 * ef.rms_relative_error);
  for (const MatmulSample& s : dev.matmul)
    std::printf("    %5.0f x %5.0f x %5.0f: %7.1f GFLOP/s (curve %7.1f)\n", s.m, s.n, s.k,
                2 * s.m * s.n * s.k / s.seconds / 1e9,
                2 * s.m * s.n * s.k / p.matmul_seconds(dtype, s.m, s.n, s.k) / 1e9);
  std::printf("  memory bandwidth (stream): %.2f GB/s; element-wise kernels %.2f GB/s; AdamW %.2f GB/s\n",
              p.memory_bandwidth / 1e9, p.elementwise_bandwidth / 1e9, p.optimizer_bandwidth / 1e9);
  for (const KernelSample& k : dev.kernels)
    std::printf("    %-16s %-28s %s\n", k.name.c_str(), k.shape.c_str(),
                k.flops > 0 ? strprintf("%.1f GFLOP/s", k.flops / k.seconds / 1e9).c_str()
                            : strprintf("%.2f GB/s", k.bytes / k.seconds / 1e9).c_str());
  std::printf("  attention: %.2fx the time of its products on the curve\n", p.attention_factor);
  std::printf("  classifier + cross-entropy: %.2fx the time of its products and traffic on the curve\n",
              p.classifier_factor);
  if (links.empty()) std::printf("  links: none (one device)\n");
  std::printf("%s", link_summary.c_str());
  std::printf("Saved to %s\n", path.c_str());
  std::fflush(stdout);
}

void profile_on_rank(const ProfileArgs& a, const Flavor& flavor, DType dtype, Communicator& comm) {
  const bool rank0 = comm.rank() == 0;
  const bool gpu = !flavor.is_cpu();
  const int cores = int(std::max(1u, std::thread::hardware_concurrency()));
  const int threads = gpu ? 0
                      : a.threads > 0 ? a.threads
                      : comm.size() > 1 ? default_threads_per_rank(cores)
                                        : cores;
  // The whole device (no budget): the largest shapes need a few GiB.
  auto backend = make_device_backend(flavor, local_rank(comm, flavor), DeviceAllocator::kUnlimited,
                                     threads);
  connect_streams(comm, *backend);
  ProfileMeasureOptions o;
  o.dtype = dtype;
  o.quick = a.quick;
  o.gpu = gpu;
  o.progress = [&](const std::string& line) {
    if (rank0) log_info(line);
  };
  log_info(strprintf("Profiling %s: %d device(s) at once, %s, %s matrix products%s",
               flavor.name.c_str(), comm.size(),
               gpu ? backend->name().c_str() : strprintf("%d thread(s) each", threads).c_str(),
               dtype_name(dtype).c_str(), a.quick ? " (quick)" : ""));
  const double load = load_average();
  if (rank0 && load > cores)
    log_warn(strprintf("this machine is busy (load average %.1f on %d cores): other work shares the "
                 "cores, so the figures will be lower than the devices reach alone",
                 load, cores));
  const auto t0 = std::chrono::steady_clock::now();
  const DeviceMeasurements dev = measure_device(*backend, comm, o);
  const std::vector<CollectiveSample> links = measure_links(*backend, comm, o);
  const std::vector<SyncSample> sync = measure_sync(*backend, comm, o);
  const double elapsed =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (rank0) fit_and_store(a, flavor, comm.size(), threads, dtype, dev, links, sync, elapsed, load);
  comm.barrier();
}

void run_profile(const ProfileArgs& a) {
  VACC_CHECK(a.dtype == "f32" || a.dtype == "bf16", "--dtype must be f32 or bf16; got ", a.dtype);
  VACC_CHECK(a.comm_timeout_s > 0, "--comm-timeout must be positive");
  const Flavor flavor = command_flavor(a.flavor);
  check_flavor_devices(flavor);
  const DType dtype = parse_dtype(a.dtype);
  run_on_every_rank(flavor, a.comm_timeout_s, "vacc profile",
                    [&](Communicator& comm) { profile_on_rank(a, flavor, dtype, comm); });
}

}  // namespace

void add_profile_command(CLI::App& app) {
  auto args = std::make_shared<ProfileArgs>();
  CLI::App* cmd = app.add_subcommand(
      "profile", "Measure this machine's devices and links for the planner (stored under $VACC_HOME/profiles)");
  cmd->add_option("--flavor", args->flavor, "Accelerator (default: the current one)");
  cmd->add_flag("--quick", args->quick, "Fewer shapes and message sizes (seconds, not a minute)");
  cmd->add_option("--out", args->out,
                  "Write the profile here instead of $VACC_HOME/profiles/<key>.json");
  cmd->add_option("--dtype", args->dtype, "Matrix products in f32 or bf16")->capture_default_str();
  cmd->add_option("--threads", args->threads, "CPU threads per device (0: the cores / devices)")
      ->capture_default_str();
  cmd->add_option("--comm-timeout", args->comm_timeout_s,
                  "Seconds a rank waits for the others before giving up")
      ->capture_default_str();
  cmd->callback([args] { run_profile(*args); });
}

}  // namespace vacc::cli
