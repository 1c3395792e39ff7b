// A measured profile (`vacc profile`, stored as $VACC_HOME/profiles/<key>.json): the fitted
// device profile and intra-node link of one kind of device, with the raw measurements they
// came from. This is the reading side (pure: JSON in, figures out); docs/PLANNER.md
// "Measured profiles" has the schema.
#pragma once

#include <string>

#include <nlohmann/json.hpp>

#include "vacc/plan/cost_model.h"
#include "vacc/plan/device_profile.h"

namespace vacc {

inline constexpr const char* kMeasuredProfileSchema = "vacc-profile/1";

struct MeasuredProfile {
  std::string key;           // the file's name without .json: cpu-2, H100-SXM, ...
  std::string flavor;        // the flavor it was measured on
  std::string device_model;  // CPU, or a profile name
  std::string measured_at;   // ISO 8601, UTC
  std::string host;
  std::string dtype;         // of the matrix products: f32 or bf16
  int devices = 1;           // ranks measured at once
  int threads_per_device = 0;  // host threads of a CPU device; 0 for a GPU
  DeviceProfile device;      // fitted: peak and half_work, memory and kernel bandwidths
  bool has_link = false;     // links are measured only with 2 or more ranks
  LinkSpec link;             // fitted alpha (latency) and beta (bandwidth), intra-node
  nlohmann::json document;   // the whole file

  // Errors name `source` (the file) and the field.
  static MeasuredProfile from_json(const nlohmann::json& j, const std::string& source);
};

}  // namespace vacc
