// Launcher: starts the ranks of a job on the devices of a flavor, through the existing
// distributed engines: `mpirun` on this host (local flavors) or across the hosts of a
// hostfile, and `srun` inside (or asking for) a Slurm allocation. Every rank runs the same
// vacc command with the flavor pinned; the launcher relays the output, forwards Ctrl-C, and
// when a rank dies names it (rank, host, signal or exit code) in one line.
#pragma once

#include <string>
#include <vector>

#include "vacc/launch/flavor.h"

namespace vacc {

struct LaunchCommand {
  std::vector<std::string> argv;  // mpirun/srun and its arguments, then the rank's command
  std::string description;        // for the log: "mpirun, 4 ranks on this host"
};

// The command that starts one rank per device of `flavor`, each running `rank_argv` (a vacc
// command line with its arguments). cores: this host's cores (mpirun oversubscribes when the
// ranks outnumber them).
LaunchCommand make_launch_command(const Flavor& flavor, const std::vector<std::string>& rank_argv,
                                  int cores);

// What a failed launch means, from the launcher's output: one line naming the rank and host.
// Empty when the output names no rank.
std::string describe_rank_failure(const std::vector<std::string>& output_lines);

// Runs the launch command, relaying its output; returns its exit code (128 + signal when it
// was killed). On failure prints "vacc: error: ..." naming the failed rank when known.
int run_launch_command(const LaunchCommand& command);

// The same command line without any `--flavor X` / `--flavor=X`, then `--flavor spec`.
std::vector<std::string> pin_flavor(std::vector<std::string> argv, const std::string& spec);

// Threads each rank uses by default: this host's cores divided by the ranks on it
// (OMPI_COMM_WORLD_LOCAL_SIZE, or SLURM_NTASKS_PER_NODE), at least 1.
int default_threads_per_rank(int cores);

}  // namespace vacc
