// Multi-device commands (`vacc train`, `vacc profile`) start one rank per device of the
// flavor through its launcher (mpirun / srun); every rank runs this same command line with
// the flavor pinned.
#pragma once

#include <string>
#include <vector>

#include "vacc/launch/flavor.h"

namespace vacc::cli {

// main() records the command line for the ranks to run again.
void set_command_line(int argc, char** argv);
const std::vector<std::string>& command_line();
// "vacc train --model ..." as one string, for logs and the job status.
std::string command_line_text();

// Starts the ranks and returns when the job has ended; exits with the launcher's code when
// it failed (the launcher has printed why). Logs "Requesting resources ..." first.
void launch_ranks(const Flavor& flavor);

}  // namespace vacc::cli
