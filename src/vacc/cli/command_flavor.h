// The accelerator a command runs on or plans for.
#pragma once

#include <string>

#include "vacc/launch/flavor.h"

namespace vacc::cli {

// `--flavor NAME_OR_FILE`, else the current accelerator (`vacc switch`; default cpu-1). A
// built-in GPU flavor (gpu-N) takes this machine's GPU as its device model where one can be
// seen: the name of its built-in profile ("H200"), else the driver's name of it ("NVIDIA L40S").
// The planner then plans with that GPU's figures, `vacc profile` stores its measurements under
// that name, and the log names the GPU. Where no GPU is seen (planning a GPU job on a laptop)
// the model stays "GPU".
Flavor command_flavor(const std::string& flavor_flag);

}  // namespace vacc::cli
