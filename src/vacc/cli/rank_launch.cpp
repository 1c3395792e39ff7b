#include "vacc/cli/rank_launch.h"

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <thread>

#include <unistd.h>

#include "vacc/cli/device_backend.h"
#include "vacc/comm/mpi_process.h"
#include "vacc/core/error.h"
#include "vacc/core/logging.h"
#include "vacc/launch/launcher.h"

namespace vacc::cli {
namespace {

std::vector<std::string> recorded;

// Starts the ranks and returns when the job has ended; exits with the launcher's code when
// it failed (the launcher has printed why). Logs "Requesting resources ..." first.
void launch_ranks(const Flavor& flavor) {
  const std::string spec = flavor.source_file.empty() ? flavor.name : flavor.source_file;
  std::vector<std::string> rank_argv = pin_flavor(recorded, spec);
  rank_argv[0] = std::filesystem::canonical("/proc/self/exe").string();
  const int cores = int(std::max(1u, std::thread::hardware_concurrency()));
  const LaunchCommand launch = make_launch_command(flavor, rank_argv, cores);
  log_info("Requesting resources for the accelerator " + flavor.name + " (" + flavor.describe() +
           ")");
  log_info("Initializing the worker processes: " + launch.description);
  setenv("VACC_JOB_PID", std::to_string(getpid()).c_str(), 1);
  const int code = run_launch_command(launch);
  if (code != 0) std::exit(code);
}

}  // namespace

void set_command_line(int argc, char** argv) { recorded.assign(argv, argv + argc); }

std::string command_line_text() {
  std::string text;
  for (const std::string& part : recorded) text += (text.empty() ? "" : " ") + part;
  return text;
}

void run_on_every_rank(const Flavor& flavor, double comm_timeout_s, const std::string& command,
                       const std::function<void(Communicator&)>& body) {
  if (flavor.total_devices() > 1 && !launched_as_rank()) {
    launch_ranks(flavor);
    return;
  }
  std::unique_ptr<Communicator> comm = make_job_communicator(flavor);
  comm->set_timeout(std::chrono::milliseconds(int64_t(comm_timeout_s * 1000)));
  set_log_rank(comm->rank());
  VACC_CHECK(comm->size() == flavor.total_devices(), command, ": started as ", comm->size(),
             " rank(s), but the accelerator ", flavor.name, " has ", flavor.total_devices(),
             " device(s)");
  if (comm->size() == 1) return body(*comm);
  try {
    body(*comm);
  } catch (const std::exception& e) {
    mpi_abort("vacc: error: rank " + std::to_string(comm->rank()) + " (host " + comm->host() +
              "): " + e.what());
  }
}

}  // namespace vacc::cli
