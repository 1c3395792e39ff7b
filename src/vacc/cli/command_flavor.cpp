#include "vacc/cli/command_flavor.h"

#include "vacc/cli/device_backend.h"
#include "vacc/launch/accelerator_state.h"
#include "vacc/plan/device_profile.h"

namespace vacc::cli {

Flavor command_flavor(const std::string& flavor_flag) {
  Flavor f = flavor_flag.empty() ? current_flavor() : resolve_flavor(flavor_flag);
  if (f.device_model == "GPU" && f.source_file.empty()) {
    const LocalGpu gpu = local_gpu(0);
    if (!gpu.name.empty()) {
      const std::string builtin = builtin_profile_for_gpu(gpu.name);
      f.device_model = builtin.empty() ? gpu.name : builtin;
    }
  }
  return f;
}

}  // namespace vacc::cli
