// The current-accelerator state, per user under $VACC_HOME (default ~/.vacc):
//   flavor       one line: a flavor name or the path of a flavor file (default cpu-1)
//   status.json  the state a running job publishes, read by `vacc status`
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "vacc/launch/flavor.h"

namespace vacc {

// $VACC_HOME, else $HOME/.vacc. Not created here.
std::string vacc_home();

// The remembered flavor name/path ("cpu-1" when none is remembered).
std::string current_flavor_name();
// The remembered flavor, resolved; errors name $VACC_HOME/flavor when it is stale.
Flavor current_flavor();
// Validates `name_or_path` (a flavor file path is stored absolute), writes it via tmp+rename,
// and returns the flavor.
Flavor set_current_flavor(const std::string& name_or_path);

struct DeviceStatus {
  int rank = 0;
  std::string host;
  uint64_t memory_used = 0;   // bytes
  uint64_t memory_total = 0;  // bytes
};

struct JobStatus {
  int64_t pid = 0;
  std::string command;
  std::string started;  // ISO 8601 local time
  std::string flavor;
  int64_t step = 0;
  int64_t total_steps = 0;
  std::vector<DeviceStatus> devices;
};

std::string job_status_path();
// Written via tmp+rename so a reader never sees half a file.
void write_job_status(const JobStatus& status);
// std::nullopt when there is no status file; vacc::Error naming the file when it is corrupt.
std::optional<JobStatus> read_job_status();
// Removes the status file (no error if there is none).
void clear_job_status();
// kill(pid, 0): true when the process exists (also when it belongs to another user).
bool job_is_alive(int64_t pid);

}  // namespace vacc
