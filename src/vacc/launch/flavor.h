// Flavors: named virtual accelerators (which devices, how many, how linked, how started).
// Built-in local flavors are parsed from their names (cpu-N, cpu-NxSIZE, gpu-N); cluster
// flavors come from a flavor file (JSON, schema in DESIGN.md "Flavors and flavor files").
#pragma once

#include <cstddef>
#include <string>
#include <vector>

namespace vacc {

struct Link {
  double bandwidth_gbytes_per_s = 0;  // per device, one direction
  double latency_us = 0;
};

enum class LauncherKind { Local, Mpirun, Slurm };

const char* launcher_kind_name(LauncherKind kind);

struct Launcher {
  LauncherKind kind = LauncherKind::Local;
  std::string hostfile;   // mpirun only
  std::string partition;  // slurm only
};

struct Flavor {
  std::string name;
  std::string device_model;          // "CPU", "GPU", or a profile name (A100-80GB, ...)
  double memory_gib_per_device = 0;  // 0 = unknown
  int devices_per_node = 1;
  int nodes = 1;
  Link intra_node;
  Link inter_node;
  Launcher launcher;
  bool needs_gpus = false;
  std::string source_file;  // the flavor file it came from; empty for built-in flavors

  int total_devices() const { return devices_per_node * nodes; }
  size_t memory_budget_bytes_per_device() const;
  bool is_cpu() const { return device_model == "CPU"; }
  // One line for humans: "4 CPU devices, 1.9 GiB each, all cores divided".
  std::string describe() const;
};

// Host memory (MemTotal of /proc/meminfo) in bytes; throws vacc::Error if unreadable.
size_t host_memory_bytes();

// The default flavor on a fresh machine.
inline constexpr const char* kDefaultFlavorName = "cpu-1";

// cpu-N, cpu-NxSIZE (cpu-4x2g), gpu-N. Throws vacc::Error listing the valid forms.
Flavor parse_flavor_name(const std::string& name);

// Reads a flavor file; errors name the file and the field.
Flavor load_flavor_file(const std::string& path);

// A flavor name or a path to a flavor file (anything with '/' or ending in .json).
Flavor resolve_flavor(const std::string& name_or_path);

// The list `vacc switch` offers: cpu-1, cpu-2, cpu-4, cpu-8, gpu-1, gpu-8.
std::vector<Flavor> builtin_flavors();

}  // namespace vacc
