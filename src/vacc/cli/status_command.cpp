// `vacc status [--reset]`: the current accelerator, its devices and the running job.
#include <unistd.h>

#include <cstdio>
#include <iostream>
#include <string>

#include "vacc/cli/command_flavor.h"
#include "vacc/cli/commands.h"
#include "vacc/cli/device_backend.h"
#include "vacc/core/error.h"
#include "vacc/launch/accelerator_state.h"
#include "vacc/launch/flavor.h"

namespace vacc::cli {
namespace {

std::string human_bytes(uint64_t bytes) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double v = double(bytes);
  int u = 0;
  while (v >= 1024 && u < 4) v /= 1024, ++u;
  char buf[32];
  std::snprintf(buf, sizeof buf, u == 0 ? "%.0f %s" : "%.1f %s", v, units[u]);
  return buf;
}

std::string this_host() {
  char buf[256] = {};
  if (::gethostname(buf, sizeof buf - 1) != 0) return "localhost";
  return buf;
}

void show_devices(const Flavor& f, const JobStatus* job) {
  std::cout << "Devices:\n";
  if (job && !job->devices.empty()) {
    for (const DeviceStatus& d : job->devices)
      std::cout << "  [" << d.rank << "] " << f.device_model << " on " << d.host << "  memory "
                << human_bytes(d.memory_used) << " / "
                << (d.memory_total ? human_bytes(d.memory_total) : "unknown") << "\n";
    return;
  }
  const std::string host = f.launcher.kind == LauncherKind::Local ? this_host() : "";
  const size_t budget = f.memory_budget_bytes_per_device();
  if (!f.is_cpu() && !host.empty()) {
    // This machine's GPUs: what they are, or why the flavor cannot run here.
    for (int r = 0; r < f.total_devices(); ++r) {
      const LocalGpu g = local_gpu(r);
      if (!g.unavailable.empty()) {
        std::cout << "  [" << r << "] " << f.device_model << ": cannot be used here ("
                  << g.unavailable << ")\n";
        continue;
      }
      std::cout << "  [" << r << "] " << g.name << " on " << host << "  memory 0 B / "
                << human_bytes(budget ? budget : g.memory_bytes) << "\n";
    }
    return;
  }
  for (int r = 0; r < f.total_devices(); ++r) {
    std::cout << "  [" << r << "] " << f.device_model;
    if (!host.empty())
      std::cout << " on " << host;
    else
      std::cout << " on node " << r / f.devices_per_node;
    std::cout << "  memory 0 B / " << (budget ? human_bytes(budget) : "unknown") << "\n";
  }
}

}  // namespace

void add_status_command(CLI::App& app) {
  CLI::App* cmd =
      app.add_subcommand("status", "Show the current accelerator, its devices and the running job");
  static bool reset = false;
  cmd->add_flag("--reset", reset, "Clear the state a dead job left behind");
  cmd->callback([] {
    std::optional<JobStatus> job = read_job_status();
    if (reset) {
      if (!job) {
        std::cout << "Nothing to reset: no job status in " << job_status_path() << "\n";
        return;
      }
      VACC_CHECK(!job_is_alive(job->pid), "job PID ", job->pid, " (", job->command,
                 ") is still running; stop it before resetting its status");
      clear_job_status();
      std::cout << "Cleared the status left by job PID " << job->pid << "\n";
      return;
    }
    const Flavor f = command_flavor("");
    std::cout << "Accelerator: " << f.name << " (" << f.describe() << ")\n";
    if (!f.source_file.empty()) std::cout << "Flavor file: " << f.source_file << "\n";
    const bool alive = job && job_is_alive(job->pid);
    show_devices(f, alive ? &*job : nullptr);
    if (!job) {
      std::cout << "Job: none running\n";
    } else if (alive) {
      std::cout << "Job: running, PID " << job->pid << ": " << job->command << "\n";
      std::cout << "  flavor " << job->flavor << ", started " << job->started << ", step "
                << job->step << " / " << job->total_steps << "\n";
    } else {
      std::cout << "Job: PID " << job->pid << " (" << job->command
                << ") is dead; it left its status behind. Clear it with `vacc status --reset`\n";
    }
  });
}

}  // namespace vacc::cli
