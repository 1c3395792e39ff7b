// Flavors: built-in names, flavor files, and the list `vacc switch` offers.
#include "vacc/launch/flavor.h"

#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "vacc/core/byte_size.h"
#include "vacc/core/error.h"
#include "vacc/core/json_file.h"

namespace vacc {
namespace {

constexpr double kGiB = 1024.0 * 1024.0 * 1024.0;

const char* kValidForms =
    "valid flavors are cpu-N (N CPU devices on this host, e.g. cpu-4), cpu-NxSIZE (with a "
    "per-device memory budget, e.g. cpu-4x2g), gpu-N (N GPUs on this host), or the path of a "
    "flavor file (.json)";

// A positive decimal count of at most 4 digits; -1 if not.
int parse_count(const std::string& s) {
  if (s.empty() || s.size() > 4) return -1;
  for (char c : s)
    if (c < '0' || c > '9') return -1;
  int n = std::stoi(s);
  return n > 0 ? n : -1;
}

// "2.0 GiB"; below 1 GiB in MiB ("30.0 MiB", not "0.0 GiB").
std::string format_gib(double gib) {
  std::ostringstream out;
  out.precision(1);
  if (gib < 1.0)
    out << std::fixed << gib * 1024 << " MiB";
  else
    out << std::fixed << gib << " GiB";
  return out.str();
}

}  // namespace

const char* launcher_kind_name(LauncherKind kind) {
  switch (kind) {
    case LauncherKind::Local:
      return "local";
    case LauncherKind::Mpirun:
      return "mpirun";
    case LauncherKind::Slurm:
      return "slurm";
  }
  return "?";
}

size_t Flavor::memory_budget_bytes_per_device() const {
  return size_t(std::llround(memory_gib_per_device * kGiB));
}

std::string Flavor::describe() const {
  std::ostringstream out;
  const int n = total_devices();
  out << n << " " << device_model << " device" << (n == 1 ? "" : "s");
  if (nodes > 1) out << " (" << nodes << " nodes x " << devices_per_node << ")";
  if (memory_gib_per_device > 0)
    out << ", " << format_gib(memory_gib_per_device) << (n == 1 ? "" : " each");
  if (is_cpu() && launcher.kind == LauncherKind::Local) {
    const unsigned cores = std::max(1u, std::thread::hardware_concurrency());
    if (n == 1)
      out << ", all cores";
    else if (unsigned(n) <= cores)
      out << ", " << cores / unsigned(n) << " of " << cores << " cores each";
    else  // more devices than cores: one thread each, taking turns
      out << ", sharing " << cores << " core" << (cores == 1 ? "" : "s");
  }
  if (needs_gpus) out << " (needs GPUs)";
  return out.str();
}

size_t host_memory_bytes() {
  std::ifstream in("/proc/meminfo");
  std::string key;
  size_t kib = 0;
  std::string unit;
  while (in >> key >> kib >> unit) {
    if (key == "MemTotal:") return kib * 1024;
  }
  fail(
      "/proc/meminfo: no MemTotal line; cannot size the cpu-N memory budget (use cpu-NxSIZE, "
      "e.g. cpu-4x2g)");
}

Flavor parse_flavor_name(const std::string& name) {
  Flavor f;
  f.name = name;
  f.launcher.kind = LauncherKind::Local;
  if (name.rfind("cpu-", 0) == 0) {
    const std::string rest = name.substr(4);
    const size_t x = rest.find('x');
    const int n = parse_count(rest.substr(0, x));
    VACC_CHECK(n > 0, "unknown flavor '", name, "': ", kValidForms);
    f.device_model = "CPU";
    f.devices_per_node = n;
    if (x == std::string::npos) {
      f.memory_gib_per_device = double(host_memory_bytes() / size_t(n)) / kGiB;
    } else {
      const std::string size = rest.substr(x + 1);
      VACC_CHECK(!size.empty(), "unknown flavor '", name, "': ", kValidForms);
      const size_t bytes = parse_byte_size(size, "the memory budget of flavor '" + name + "'");
      VACC_CHECK(bytes > 0, "flavor '", name, "': the per-device memory budget must be > 0");
      f.memory_gib_per_device = double(bytes) / kGiB;
    }
    return f;
  }
  if (name.rfind("gpu-", 0) == 0) {
    const int n = parse_count(name.substr(4));
    VACC_CHECK(n > 0, "unknown flavor '", name, "': ", kValidForms);
    f.device_model = "GPU";
    f.devices_per_node = n;
    f.memory_gib_per_device = 0;
    f.needs_gpus = true;
    return f;
  }
  fail("unknown flavor '", name, "': ", kValidForms);
}

Flavor load_flavor_file(const std::string& path) {
  const nlohmann::json j = read_json_file(path);
  auto where = [&](const std::string& field) { return path + ": field '" + field + "'"; };
  VACC_CHECK(j.is_object(), path, ": a flavor file must be a JSON object");
  auto object = [&](const nlohmann::json& parent, const char* key,
                    const std::string& field) -> const nlohmann::json& {
    VACC_CHECK(parent.contains(key), where(field), " is missing");
    VACC_CHECK(parent[key].is_object(), where(field), " must be an object");
    return parent[key];
  };
  auto string = [&](const nlohmann::json& parent, const char* key, const std::string& field) {
    VACC_CHECK(parent.contains(key), where(field), " is missing");
    VACC_CHECK(parent[key].is_string() && !parent[key].get<std::string>().empty(), where(field),
               " must be a non-empty string");
    return parent[key].get<std::string>();
  };
  auto number = [&](const nlohmann::json& parent, const char* key, const std::string& field,
                    bool allow_zero) {
    VACC_CHECK(parent.contains(key), where(field), " is missing");
    VACC_CHECK(parent[key].is_number(), where(field), " must be a number");
    const double v = parent[key].get<double>();
    VACC_CHECK(std::isfinite(v) && (allow_zero ? v >= 0 : v > 0), where(field), " must be ",
               allow_zero ? ">= 0" : "> 0", " (got ", parent[key].dump(), ")");
    return v;
  };
  auto count = [&](const char* key) {
    VACC_CHECK(j.contains(key), where(key), " is missing");
    VACC_CHECK(
        j[key].is_number_integer() && j[key].get<int64_t>() > 0 && j[key].get<int64_t>() <= 1000000,
        where(key), " must be a positive integer (got ", j[key].dump(), ")");
    return int(j[key].get<int64_t>());
  };

  Flavor f;
  f.source_file = path;
  f.name = string(j, "name", "name");
  const nlohmann::json& device = object(j, "device", "device");
  f.device_model = string(device, "model", "device.model");
  f.memory_gib_per_device = number(device, "memory_gib", "device.memory_gib", false);
  f.devices_per_node = count("devices_per_node");
  f.nodes = count("nodes");
  const nlohmann::json& links = object(j, "links", "links");
  for (const char* which : {"intra_node", "inter_node"}) {
    const std::string field = std::string("links.") + which;
    const nlohmann::json& link = object(links, which, field);
    Link& l = std::string(which) == "intra_node" ? f.intra_node : f.inter_node;
    l.bandwidth_gbytes_per_s =
        number(link, "bandwidth_gbytes_per_s", field + ".bandwidth_gbytes_per_s", false);
    l.latency_us = number(link, "latency_us", field + ".latency_us", true);
  }
  const nlohmann::json& launcher = object(j, "launcher", "launcher");
  const std::string kind = string(launcher, "kind", "launcher.kind");
  if (kind == "local") {
    f.launcher.kind = LauncherKind::Local;
    VACC_CHECK(f.nodes == 1, where("launcher.kind"), " is 'local' but nodes is ", f.nodes,
               "; use 'mpirun' with a hostfile or 'slurm' for several nodes");
  } else if (kind == "mpirun") {
    f.launcher.kind = LauncherKind::Mpirun;
  } else if (kind == "slurm") {
    f.launcher.kind = LauncherKind::Slurm;
  } else {
    fail(where("launcher.kind"), " must be 'local', 'mpirun' or 'slurm' (got '", kind, "')");
  }
  if (launcher.contains("hostfile")) {
    // A relative hostfile is next to the flavor file.
    std::filesystem::path host_path = string(launcher, "hostfile", "launcher.hostfile");
    if (host_path.is_relative())
      host_path = std::filesystem::absolute(std::filesystem::path(path).parent_path() / host_path);
    f.launcher.hostfile = host_path.string();
  }
  if (launcher.contains("partition"))
    f.launcher.partition = string(launcher, "partition", "launcher.partition");
  VACC_CHECK(
      !(f.launcher.kind == LauncherKind::Mpirun && f.nodes > 1 && f.launcher.hostfile.empty()),
      where("launcher.hostfile"), " is missing: mpirun across ", f.nodes,
      " nodes needs a hostfile");
  f.needs_gpus = f.device_model != "CPU";
  return f;
}

Flavor resolve_flavor(const std::string& name_or_path) {
  const bool is_path =
      name_or_path.find('/') != std::string::npos ||
      (name_or_path.size() > 5 && name_or_path.compare(name_or_path.size() - 5, 5, ".json") == 0);
  return is_path ? load_flavor_file(name_or_path) : parse_flavor_name(name_or_path);
}

std::vector<Flavor> builtin_flavors() {
  std::vector<Flavor> list;
  for (const char* name : {"cpu-1", "cpu-2", "cpu-4", "cpu-8", "gpu-1", "gpu-8"})
    list.push_back(parse_flavor_name(name));
  return list;
}

}  // namespace vacc
