// What `vacc plan` and `vacc train` share of the planner: the check of --usable-memory, the
// ClusterSpec of a flavor (its devices, links and device profile) and the JSON of candidates
// and of a chosen plan.
#pragma once

#include <cstdint>
#include <string>

#include <nlohmann/json.hpp>

#include "vacc/launch/flavor.h"
#include "vacc/plan/planner.h"

namespace vacc::cli {

struct ProfileInputs {
  std::string profile_file;         // --profile-file: profiles replacing the built-in ones
  double device_peak_tflops = 0;    // --device-peak-tflops: overrides the profile's peak
  // A CPU flavor's peak per device (FLOP/s) measured by the caller, e.g. by every rank at
  // once; 0: measured here, one device's share of the cores at a time.
  double measured_cpu_peak_flops = 0;
};

// --usable-memory is a fraction in (0, 1]; else one error naming it.
void check_usable_memory(double fraction);

// What the planner needs of the flavor.
ClusterSpec cluster_spec_for(const Flavor& flavor, const ProfileInputs& inputs, DType dtype);

// What the flavor's devices allocate for themselves besides the job's tensors: a GPU backend's
// scratch on a device of `device_memory_bytes` (0: unknown), and with `cuda_graphs` (vacc train
// --cuda-graphs) what the graphs keep; nothing on CPUs.
DeviceScratch device_scratch_for(const Flavor& flavor, double device_memory_bytes,
                                 bool cuda_graphs);
// The memory per device the planner assumes: the cluster's, else its device profile's.
double planned_device_memory(const ClusterSpec& cluster);

// One candidate as `vacc plan --json` prints it.
nlohmann::json candidate_json(const Candidate& c, int64_t batch);

// The chosen candidate with what pins it and what it was planned for: candidate_json's
// fields plus "describe" (the seed's words), "parallel" (the `--parallel` string that pins
// exactly this split), "flavor", "batch" and "seq_len". `vacc plan --out` writes it;
// `vacc train` writes it with every candidate added ("candidates").
nlohmann::json chosen_plan_json(const PlanResult& r, const std::string& flavor_name,
                                int64_t batch, int64_t seq_len);

}  // namespace vacc::cli
