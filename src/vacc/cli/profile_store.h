// The measured-profile database of `vacc profile`: one JSON file per kind of device under
// $VACC_HOME/profiles/ (schema: plan/measured_profile.h, docs/PLANNER.md). A local CPU
// flavor's device is a share of this host's cores, so its key is the flavor's device count
// (cpu-2.json serves cpu-2 and cpu-2x4g); a flavor file of CPU devices is keyed by its name;
// any other device by its model (H100-SXM.json).
#pragma once

#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "vacc/launch/flavor.h"
#include "vacc/plan/measured_profile.h"

namespace vacc::cli {

std::string measured_profile_key(const Flavor& flavor);
// $VACC_HOME/profiles/<key>.json
std::string measured_profile_path(const Flavor& flavor);
// The stored profile of the flavor; nullopt when there is none. A file that is not a valid
// measured profile is an error naming it.
std::optional<MeasuredProfile> load_measured_profile(const Flavor& flavor);
// Reads a measured profile file; errors name it.
MeasuredProfile read_measured_profile(const std::string& path);
// Writes atomically (creating the folder).
void save_measured_profile(const std::string& path, const nlohmann::json& document);

}  // namespace vacc::cli
