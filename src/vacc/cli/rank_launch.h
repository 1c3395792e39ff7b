// Multi-device commands (`vacc train`, `vacc profile`) start one rank per device of the
// flavor through its launcher (mpirun / srun); every rank runs this same command line with
// the flavor pinned.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "vacc/comm/communicator.h"
#include "vacc/launch/flavor.h"

namespace vacc::cli {

// main() records the command line for the ranks to run again.
void set_command_line(int argc, char** argv);
// "vacc train --model ..." as one string, for logs and the job status.
std::string command_line_text();

// Runs `body` on every rank of the flavor: in a process that is not a rank yet, starts the
// ranks (each runs this command again) and returns when they end; a one-device flavor runs
// in-process. `command` names the command in errors ("vacc train"). A rank's error ends the
// whole job with its message (MPI_Abort stops the other ranks).
void run_on_every_rank(const Flavor& flavor, double comm_timeout_s, const std::string& command,
                       const std::function<void(Communicator&)>& body);

}  // namespace vacc::cli
