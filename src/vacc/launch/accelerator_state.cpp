// The current-accelerator state under $VACC_HOME: the remembered flavor and a job's status.
#include "vacc/launch/accelerator_state.h"

#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "vacc/core/error.h"
#include "vacc/core/text_file.h"
#include "vacc/core/json_file.h"

namespace vacc {
namespace fs = std::filesystem;
namespace {

std::string flavor_path() {
  return vacc_home() + "/flavor";
}

void write_atomically(const std::string& path, const std::string& text) {
  std::error_code ec;
  fs::create_directories(fs::path(path).parent_path(), ec);
  VACC_CHECK(!ec, "cannot create ", fs::path(path).parent_path().string(), ": ", ec.message());
  write_file_atomically(path, text);
}

}  // namespace

std::string vacc_home() {
  const char* home = std::getenv("VACC_HOME");
  if (home && *home) return home;
  const char* user_home = std::getenv("HOME");
  VACC_CHECK(user_home && *user_home, "neither VACC_HOME nor HOME is set");
  return std::string(user_home) + "/.vacc";
}

std::string current_flavor_name() {
  std::ifstream in(flavor_path());
  if (!in) return kDefaultFlavorName;
  std::string line;
  std::getline(in, line);
  while (!line.empty() && (line.back() == ' ' || line.back() == '\r' || line.back() == '\t'))
    line.pop_back();
  return line.empty() ? kDefaultFlavorName : line;
}

Flavor current_flavor() {
  const std::string name = current_flavor_name();
  try {
    return resolve_flavor(name);
  } catch (const Error& e) {
    fail("the current flavor (", flavor_path(), ") is not usable: ", e.what(),
         "; pick another with `vacc switch`");
  }
}

Flavor set_current_flavor(const std::string& name_or_path) {
  Flavor f = resolve_flavor(name_or_path);
  const std::string stored = f.source_file.empty()
                                 ? name_or_path
                                 : fs::absolute(f.source_file).lexically_normal().string();
  write_atomically(flavor_path(), stored + "\n");
  return f;
}

std::string job_status_path() {
  return vacc_home() + "/status.json";
}

void write_job_status(const JobStatus& s) {
  nlohmann::json devices = nlohmann::json::array();
  for (const DeviceStatus& d : s.devices)
    devices.push_back({{"rank", d.rank},
                       {"host", d.host},
                       {"memory_used", d.memory_used},
                       {"memory_total", d.memory_total}});
  nlohmann::json j = {{"pid", s.pid},       {"command", s.command}, {"started", s.started},
                      {"flavor", s.flavor}, {"step", s.step},       {"total_steps", s.total_steps},
                      {"devices", devices}};
  write_atomically(job_status_path(), j.dump(2) + "\n");
}

std::optional<JobStatus> read_job_status() {
  const std::string path = job_status_path();
  if (!fs::exists(path)) return std::nullopt;
  const nlohmann::json j = read_json_file(path);
  const std::string hint = " (clear it with `vacc status --reset`)";
  try {
    VACC_CHECK(j.is_object(), path, ": not a JSON object", hint);
    JobStatus s;
    s.pid = j.at("pid").get<int64_t>();
    s.command = j.value("command", "");
    s.started = j.value("started", "");
    s.flavor = j.value("flavor", "");
    s.step = j.value("step", int64_t(0));
    s.total_steps = j.value("total_steps", int64_t(0));
    if (j.contains("devices")) {
      for (const nlohmann::json& d : j.at("devices")) {
        DeviceStatus ds;
        ds.rank = d.at("rank").get<int>();
        ds.host = d.value("host", "");
        ds.memory_used = d.value("memory_used", uint64_t(0));
        ds.memory_total = d.value("memory_total", uint64_t(0));
        s.devices.push_back(ds);
      }
    }
    return s;
  } catch (const nlohmann::json::exception& e) {
    fail(path, ": bad job status (", e.what(), ")", hint);
  }
}

void clear_job_status() {
  std::error_code ec;
  fs::remove(job_status_path(), ec);
  VACC_CHECK(!ec, "cannot remove ", job_status_path(), ": ", ec.message());
}

bool job_is_alive(int64_t pid) {
  if (pid <= 0) return false;
  if (::kill(pid_t(pid), 0) == 0) return true;
  return errno == EPERM;
}

}  // namespace vacc
