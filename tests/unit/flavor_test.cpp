// Flavors: built-in names, flavor files (each field's error), and the $VACC_HOME state.
#include "vacc/launch/flavor.h"

#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "vacc/core/error.h"
#include "vacc/launch/accelerator_state.h"

namespace vacc {
namespace {
namespace fs = std::filesystem;

// The error message of `f()`, or "" when it does not throw vacc::Error.
template <typename F>
std::string error_of(F f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

class TempDir {
 public:
  TempDir() {
    std::string tmpl = (fs::temp_directory_path() / "vacc_flavor_test.XXXXXX").string();
    path_ = ::mkdtemp(tmpl.data());
  }
  ~TempDir() { fs::remove_all(path_); }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

TEST(Flavor, CpuN) {
  Flavor f = parse_flavor_name("cpu-4");
  EXPECT_EQ(f.device_model, "CPU");
  EXPECT_EQ(f.total_devices(), 4);
  EXPECT_EQ(f.launcher.kind, LauncherKind::Local);
  EXPECT_FALSE(f.needs_gpus);
  const size_t host = host_memory_bytes();
  EXPECT_GT(host, 0u);
  EXPECT_NEAR(double(f.memory_budget_bytes_per_device()), double(host / 4), 1.0);
  EXPECT_EQ(parse_flavor_name(kDefaultFlavorName).total_devices(), 1);
}

TEST(Flavor, CpuNWithSize) {
  Flavor f = parse_flavor_name("cpu-4x2g");
  EXPECT_EQ(f.name, "cpu-4x2g");
  EXPECT_EQ(f.total_devices(), 4);
  EXPECT_EQ(f.memory_budget_bytes_per_device(), size_t(2) << 30);
  EXPECT_EQ(parse_flavor_name("cpu-2x512m").memory_budget_bytes_per_device(), size_t(512) << 20);
}

TEST(Flavor, GpuN) {
  Flavor f = parse_flavor_name("gpu-8");
  EXPECT_EQ(f.device_model, "GPU");
  EXPECT_EQ(f.total_devices(), 8);
  EXPECT_EQ(f.memory_budget_bytes_per_device(), 0u);
  EXPECT_TRUE(f.needs_gpus);
}

TEST(Flavor, BadNamesListTheValidForms) {
  for (const char* bad : {"", "cpu", "cpu-", "cpu-0", "cpu-x2g", "cpu-4x", "cpu--1", "gpu-0",
                          "gpu-2x4g", "tpu-4", "cpu-4 ", "cpu-99999"}) {
    const std::string err = error_of([&] { parse_flavor_name(bad); });
    EXPECT_NE(err.find("cpu-NxSIZE"), std::string::npos) << "'" << bad << "': " << err;
  }
  EXPECT_NE(error_of([] { parse_flavor_name("cpu-4xlots"); }).find("cpu-4xlots"),
            std::string::npos);
}

TEST(Flavor, BuiltinList) {
  std::vector<Flavor> list = builtin_flavors();
  std::vector<std::string> names;
  for (const Flavor& f : list) names.push_back(f.name);
  EXPECT_EQ(names,
            (std::vector<std::string>{"cpu-1", "cpu-2", "cpu-4", "cpu-8", "gpu-1", "gpu-8"}));
  EXPECT_FALSE(list[0].needs_gpus);
  EXPECT_TRUE(list[5].needs_gpus);
}

nlohmann::json a100_x64() {
  return nlohmann::json::parse(R"({
    "name": "a100-x64",
    "device": {"model": "A100-80GB", "memory_gib": 80},
    "devices_per_node": 8,
    "nodes": 8,
    "links": {
      "intra_node": {"bandwidth_gbytes_per_s": 300, "latency_us": 3},
      "inter_node": {"bandwidth_gbytes_per_s": 25, "latency_us": 5}
    },
    "launcher": {"kind": "slurm", "partition": "gpu"}
  })");
}

std::string write_json(const TempDir& dir, const nlohmann::json& j,
                       const std::string& name = "f.json") {
  const std::string path = dir.path() + "/" + name;
  std::ofstream(path) << j.dump();
  return path;
}

TEST(FlavorFile, ReadsTheDesignExample) {
  TempDir dir;
  Flavor f = load_flavor_file(write_json(dir, a100_x64()));
  EXPECT_EQ(f.name, "a100-x64");
  EXPECT_EQ(f.device_model, "A100-80GB");
  EXPECT_EQ(f.total_devices(), 64);
  EXPECT_EQ(f.memory_budget_bytes_per_device(), size_t(80) << 30);
  EXPECT_DOUBLE_EQ(f.intra_node.bandwidth_gbytes_per_s, 300);
  EXPECT_DOUBLE_EQ(f.inter_node.latency_us, 5);
  EXPECT_EQ(f.launcher.kind, LauncherKind::Slurm);
  EXPECT_EQ(f.launcher.partition, "gpu");
  EXPECT_TRUE(f.needs_gpus);
  EXPECT_EQ(resolve_flavor(dir.path() + "/f.json").name, "a100-x64");
}

TEST(FlavorFile, EachMissingOrBadFieldIsNamed) {
  TempDir dir;
  struct Case {
    std::string pointer;   // JSON pointer to remove or replace
    nlohmann::json value;  // null: remove
    std::string field;
  };
  const std::vector<Case> cases = {
      {"/name", nullptr, "'name' is missing"},
      {"/name", 3, "'name' must be"},
      {"/device", nullptr, "'device' is missing"},
      {"/device", "A100", "'device' must be an object"},
      {"/device/model", nullptr, "'device.model' is missing"},
      {"/device/memory_gib", nullptr, "'device.memory_gib' is missing"},
      {"/device/memory_gib", -1, "'device.memory_gib' must be > 0"},
      {"/device/memory_gib", "80", "'device.memory_gib' must be a number"},
      {"/devices_per_node", nullptr, "'devices_per_node' is missing"},
      {"/devices_per_node", 0, "'devices_per_node' must be a positive integer"},
      {"/devices_per_node", 2.5, "'devices_per_node' must be a positive integer"},
      {"/nodes", nullptr, "'nodes' is missing"},
      {"/nodes", -2, "'nodes' must be a positive integer"},
      {"/links", nullptr, "'links' is missing"},
      {"/links/intra_node", nullptr, "'links.intra_node' is missing"},
      {"/links/inter_node/bandwidth_gbytes_per_s", nullptr,
       "'links.inter_node.bandwidth_gbytes_per_s' is missing"},
      {"/links/intra_node/bandwidth_gbytes_per_s", 0,
       "'links.intra_node.bandwidth_gbytes_per_s' must be > 0"},
      {"/links/intra_node/latency_us", -1, "'links.intra_node.latency_us' must be >= 0"},
      {"/launcher", nullptr, "'launcher' is missing"},
      {"/launcher/kind", nullptr, "'launcher.kind' is missing"},
      {"/launcher/kind", "ssh", "'launcher.kind' must be 'local', 'mpirun' or 'slurm'"},
      {"/launcher/kind", "local", "'launcher.kind' is 'local' but nodes is 8"},
      {"/launcher/kind", "mpirun", "'launcher.hostfile' is missing"},
      {"/launcher/partition", 7, "'launcher.partition' must be"},
  };
  for (const Case& c : cases) {
    nlohmann::json j = a100_x64();
    const nlohmann::json::json_pointer ptr(c.pointer);
    if (c.value.is_null())
      j[ptr.parent_pointer()].erase(ptr.back());
    else
      j[ptr] = c.value;
    const std::string path = write_json(dir, j);
    const std::string err = error_of([&] { load_flavor_file(path); });
    EXPECT_NE(err.find(path), std::string::npos) << c.pointer << ": " << err;
    EXPECT_NE(err.find(c.field), std::string::npos) << c.pointer << ": " << err;
  }
  EXPECT_NE(error_of([&] { load_flavor_file(dir.path() + "/missing.json"); }).find("missing.json"),
            std::string::npos);
  std::ofstream(dir.path() + "/broken.json") << "{\"name\": ";
  EXPECT_NE(error_of([&] { load_flavor_file(dir.path() + "/broken.json"); }).find("broken.json"),
            std::string::npos);
}

class StateTest : public ::testing::Test {
 protected:
  void SetUp() override { ::setenv("VACC_HOME", (home_.path() + "/home").c_str(), 1); }
  void TearDown() override { ::unsetenv("VACC_HOME"); }
  TempDir home_;
};

TEST_F(StateTest, FlavorDefaultsToCpu1AndRoundTrips) {
  EXPECT_EQ(vacc_home(), home_.path() + "/home");
  EXPECT_EQ(current_flavor_name(), "cpu-1");
  EXPECT_EQ(current_flavor().total_devices(), 1);
  EXPECT_EQ(set_current_flavor("cpu-4x2g").total_devices(), 4);
  EXPECT_EQ(current_flavor_name(), "cpu-4x2g");
  EXPECT_EQ(current_flavor().memory_budget_bytes_per_device(), size_t(2) << 30);
  // A bad name is refused and leaves the remembered flavor alone.
  EXPECT_NE(error_of([] { set_current_flavor("cpu-zero"); }), "");
  EXPECT_EQ(current_flavor_name(), "cpu-4x2g");
  // A flavor file is remembered by its path.
  const std::string path = write_json(home_, a100_x64(), "cluster.json");
  set_current_flavor(path);
  EXPECT_EQ(current_flavor_name(), fs::absolute(path).lexically_normal().string());
  EXPECT_EQ(current_flavor().name, "a100-x64");
  // A remembered flavor file that went away gets an error naming the state file.
  fs::remove(path);
  EXPECT_NE(error_of([] { current_flavor(); }).find("/flavor"), std::string::npos);
}

TEST_F(StateTest, JobStatusRoundTrip) {
  EXPECT_FALSE(read_job_status().has_value());
  JobStatus s;
  s.pid = ::getpid();
  s.command = "vacc train --steps 20";
  s.started = "2025-01-01T10:00:00";
  s.flavor = "cpu-2";
  s.step = 3;
  s.total_steps = 20;
  s.devices = {{0, "hostA", 100, 1000}, {1, "hostB", 200, 1000}};
  write_job_status(s);
  std::optional<JobStatus> r = read_job_status();
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->pid, s.pid);
  EXPECT_EQ(r->command, s.command);
  EXPECT_EQ(r->started, s.started);
  EXPECT_EQ(r->flavor, "cpu-2");
  EXPECT_EQ(r->step, 3);
  EXPECT_EQ(r->total_steps, 20);
  ASSERT_EQ(r->devices.size(), 2u);
  EXPECT_EQ(r->devices[1].host, "hostB");
  EXPECT_EQ(r->devices[1].memory_used, 200u);
  EXPECT_EQ(r->devices[1].memory_total, 1000u);
  EXPECT_TRUE(job_is_alive(r->pid));
  clear_job_status();
  EXPECT_FALSE(read_job_status().has_value());
  clear_job_status();  // no error when there is none

  std::ofstream(job_status_path()) << "{\"command\": \"x\"}";
  EXPECT_NE(error_of([] { read_job_status(); }).find("status.json"), std::string::npos);
}

TEST(JobIsAlive, DeadPid) {
  const pid_t child = ::fork();
  if (child == 0) ::_exit(0);
  int status = 0;
  ::waitpid(child, &status, 0);
  EXPECT_FALSE(job_is_alive(child));
  EXPECT_FALSE(job_is_alive(0));
  EXPECT_TRUE(job_is_alive(::getpid()));
}

}  // namespace
}  // namespace vacc
