#include "vacc/cli/planning.h"

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <optional>
#include <thread>

#include "vacc/cli/profile_store.h"
#include "vacc/core/device_allocator.h"
#include "vacc/core/error.h"
#include "vacc/core/json_file.h"
#include "vacc/core/strprintf.h"
#include "vacc/kernels/backend.h"
#include "vacc/runtime/device_peak.h"

namespace vacc::cli {
namespace {

std::vector<DeviceProfile> read_profile_file(const std::string& path) {
  if (path.empty()) return {};
  return profiles_from_json(read_json_file(path), path);
}

// The peak of one device of a local CPU flavor, measured with the threads `vacc train` gives
// each rank. When the ranks' threads outnumber the cores (cpu-4 on 2 cores), they take
// turns: a device gets cores / (devices x threads) of what it measures alone.
double measure_local_cpu_peak(const Flavor& f, DType dtype) {
  const int cores = std::max(1, int(std::thread::hardware_concurrency()));
  const int devices = f.total_devices();
  const int threads = std::max(1, cores / devices);
  const double alone =
      measure_matmul_peak(*make_cpu_backend(DeviceAllocator::kUnlimited, threads), dtype);
  const double share = std::min(1.0, double(cores) / double(devices * threads));
  std::fprintf(stderr,
               "Measured peak per device (%s matrix products, %d thread(s)%s): %.1f GFLOP/s\n",
               dtype_name(dtype).c_str(), threads,
               share < 1 ? ", sharing the cores with the other devices" : "",
               alone * share / 1e9);
  return alone * share;
}

}  // namespace

void check_usable_memory(double fraction) {
  VACC_CHECK(fraction > 0 && fraction <= 1,
             "--usable-memory is a fraction of the device memory, in (0, 1]; got ", fraction);
}

ClusterSpec cluster_spec_for(const Flavor& f, const ProfileInputs& in, DType dtype) {
  ClusterSpec k;
  k.devices = f.total_devices();
  k.devices_per_node = std::max(1, f.devices_per_node);
  k.memory_bytes_per_device = double(f.memory_budget_bytes_per_device());
  // Local CPU ranks talk through MPI's shared memory: a rough 5 GB/s and 5 us unless the
  // flavor says otherwise (the defaults of ClusterSpec are NVLink-class).
  if (f.is_cpu()) k.intra_node = k.inter_node = {5e9, 5e-6};
  if (f.intra_node.bandwidth_gbytes_per_s > 0)
    k.intra_node = {f.intra_node.bandwidth_gbytes_per_s * 1e9, f.intra_node.latency_us * 1e-6};
  if (f.inter_node.bandwidth_gbytes_per_s > 0)
    k.inter_node = {f.inter_node.bandwidth_gbytes_per_s * 1e9, f.inter_node.latency_us * 1e-6};
  const std::vector<DeviceProfile> extra = read_profile_file(in.profile_file);
  const bool named = std::any_of(extra.begin(), extra.end(), [&](const DeviceProfile& p) {
    return p.name == f.device_model;
  });
  // A profile `vacc profile` measured and stored under $VACC_HOME: its device curve and
  // kernel bandwidths (unless --profile-file names the device or --device-peak-tflops is
  // given: those win) and its intra-node link (measured on one host; the inter-node link
  // stays the flavor's).
  const std::optional<MeasuredProfile> measured = load_measured_profile(f);
  // A peak given for a CPU (--device-peak-tflops, or the one every rank of `vacc train` has
  // just measured) rescales a measured CPU profile to the machine's speed now; it replaces the
  // device only without one.
  const double given_cpu_peak =
      in.device_peak_tflops > 0 ? in.device_peak_tflops * 1e12 : in.measured_cpu_peak_flops;
  const bool rescale = measured && f.is_cpu() && !named && given_cpu_peak > 0;
  const bool explicit_device = named || (in.device_peak_tflops > 0 && !rescale);
  if (measured) {
    if (measured->has_link) {
      k.intra_node = measured->link;
      if (f.is_cpu() && f.nodes == 1) k.inter_node = measured->link;
    }
    const std::string where = measured_profile_path(f);
    const DeviceProfile& d = measured->device;
    std::string links = measured->has_link
                            ? strprintf("link %.2f GB/s, %.1f us (all-reduce %.2f GB/s)",
                                        measured->link.bandwidth / 1e9, measured->link.latency * 1e6,
                                        link_for(measured->link, measured->link.all_reduce).bandwidth / 1e9)
                            : std::string("no links (measured on one device)");
    if (explicit_device)
      std::fprintf(stderr,
                   "Using the measured profile %s from %s (measured %s): %s; the device from %s\n",
                   measured->key.c_str(), where.c_str(), measured->measured_at.c_str(),
                   links.c_str(), named ? "--profile-file" : "--device-peak-tflops");
    else
      std::fprintf(stderr,
                   "Using the measured profile %s from %s (measured %s): matmul peak %.1f "
                   "GFLOP/s (%s, half at %.3g multiply-adds), memory %.1f GB/s, %s\n",
                   measured->key.c_str(), where.c_str(), measured->measured_at.c_str(),
                   d.peak_flops(dtype) / 1e9, measured->dtype.c_str(), d.half_work,
                   d.memory_bandwidth / 1e9, links.c_str());
  }
  if (measured && !explicit_device) {
    k.profile = measured->device;
    if (rescale) {
      // measure_matmul_peak's figure is a 2048^3 product's throughput.
      const double stored = 1 / k.profile.matmul_seconds(dtype, 2048, 2048, 2048) * 2 * 2048.0 * 2048 * 2048;
      k.profile = k.profile.scaled(given_cpu_peak / stored);
      std::fprintf(stderr, "  scaled to the peak %s: %.1f GFLOP/s (x%.2f)\n",
                   in.device_peak_tflops > 0 ? "of --device-peak-tflops" : "measured now",
                   given_cpu_peak / 1e9, given_cpu_peak / stored);
    }
    if (k.memory_bytes_per_device > 0) k.profile.memory_bytes = k.memory_bytes_per_device;
  } else if (f.is_cpu() && !named) {
    double peak = in.device_peak_tflops * 1e12;
    if (peak <= 0) peak = in.measured_cpu_peak_flops;
    if (peak <= 0) peak = measure_local_cpu_peak(f, dtype);
    k.profile = DeviceProfile::cpu(peak, k.memory_bytes_per_device);
  } else {
    // A built-in GPU flavor is named after this machine's GPU (command_flavor); without a
    // profile of that GPU, or with no GPU to see, it plans with the H100's figures.
    std::string model = f.device_model;
    if (!f.is_cpu() && f.source_file.empty() && !has_profile(model, extra)) {
      if (model != "GPU")
        std::fprintf(stderr, "No built-in device profile for %s: planning with H100-SXM's figures "
                     "(`vacc profile --flavor %s` measures this GPU)\n", model.c_str(),
                     f.name.c_str());
      model = "H100-SXM";
    }
    k.profile = find_profile(model, extra);
    if (in.device_peak_tflops > 0)
      k.profile.peak_bf16_flops = k.profile.peak_fp32_flops = in.device_peak_tflops * 1e12;
  }
  // A flavor file's "device" may override the profile's figures (DESIGN.md): "peak_tflops":
  // {"bf16": ..., "fp32": ...} and "memory_bandwidth_gbytes_per_s".
  if (!f.source_file.empty()) {
    std::ifstream file(f.source_file);
    const nlohmann::json j = nlohmann::json::parse(file, nullptr, false);
    if (j.is_object() && j.contains("device") && j["device"].is_object()) {
      const nlohmann::json& d = j["device"];
      auto positive = [&](const nlohmann::json& v, const char* what) {
        VACC_CHECK(v.is_number() && v.get<double>() > 0, f.source_file, ": ", what,
                   " must be a positive number");
        return v.get<double>();
      };
      if (d.contains("peak_tflops")) {
        const nlohmann::json& t = d["peak_tflops"];
        VACC_CHECK(t.is_object(), f.source_file,
                   ": device.peak_tflops must be {\"bf16\": ..., \"fp32\": ...}");
        if (t.contains("bf16"))
          k.profile.peak_bf16_flops = positive(t["bf16"], "device.peak_tflops.bf16") * 1e12;
        if (t.contains("fp32"))
          k.profile.peak_fp32_flops = positive(t["fp32"], "device.peak_tflops.fp32") * 1e12;
      }
      if (d.contains("memory_bandwidth_gbytes_per_s"))
        k.profile.memory_bandwidth =
            positive(d["memory_bandwidth_gbytes_per_s"], "device.memory_bandwidth_gbytes_per_s") *
            1e9;
    }
  }
  return k;
}

DeviceScratch device_scratch_for(const Flavor& flavor, double device_memory_bytes,
                                 bool cuda_graphs) {
  if (flavor.is_cpu()) return {};
  DeviceScratch d = gpu_device_scratch(device_memory_bytes);
  d.graphs = cuda_graphs;
  return d;
}

double planned_device_memory(const ClusterSpec& cluster) {
  return cluster.memory_bytes_per_device > 0 ? cluster.memory_bytes_per_device
                                             : cluster.profile.memory_bytes;
}

nlohmann::json candidate_json(const Candidate& c, int64_t batch) {
  nlohmann::json j{{"dp", c.config.dp},
                   {"tp", c.config.tp},
                   {"pp", c.config.pp},
                   {"microbatches", c.config.micro_batches},
                   {"micro_batch_size", c.config.micro_batch_size(batch)},
                   {"recompute", recompute_name(c.config.recompute)},
                   {"zero", c.config.zero},
                   {"schedule", schedule_name(c.config.schedule)},
                   {"predicted_peak_memory_bytes", int64_t(c.memory.total())},
                   {"feasible", c.feasible},
                   {"reason", c.reason}};
  if (c.feasible) {
    j["predicted_step_time_s"] = c.cost.step_s;
    j["predicted_tokens_per_sec"] = c.tokens_per_s;
    j["predicted_tflops_per_device"] = c.tflops_per_device;
  } else {
    j["predicted_step_time_s"] = nullptr;
    j["predicted_tokens_per_sec"] = nullptr;
    j["predicted_tflops_per_device"] = nullptr;
  }
  return j;
}

nlohmann::json chosen_plan_json(const PlanResult& r, const std::string& flavor_name,
                                int64_t batch, int64_t seq_len) {
  VACC_CHECK(r.chosen >= 0, r.no_feasible_message());
  const Candidate& c = r.candidates[size_t(r.chosen)];
  nlohmann::json plan = candidate_json(c, batch);
  plan["describe"] = c.config.describe(batch);
  plan["parallel"] = c.config.to_string();
  plan["flavor"] = flavor_name;
  plan["batch"] = batch;
  plan["seq_len"] = seq_len;
  return plan;
}

}  // namespace vacc::cli
