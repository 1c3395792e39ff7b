#include "vacc/cli/profile_store.h"

#include <cctype>
#include <filesystem>
#include <system_error>

#include "vacc/core/error.h"
#include "vacc/core/json_file.h"
#include "vacc/core/text_file.h"
#include "vacc/launch/accelerator_state.h"

namespace vacc::cli {

std::string measured_profile_key(const Flavor& f) {
  std::string key = f.is_cpu() && f.source_file.empty() ? "cpu-" + std::to_string(f.total_devices())
                    : f.is_cpu()                        ? f.name
                                                        : f.device_model;
  for (char& c : key)
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.')) c = '_';
  return key;
}

std::string measured_profile_path(const Flavor& f) {
  return (std::filesystem::path(vacc_home()) / "profiles" / (measured_profile_key(f) + ".json"))
      .string();
}

MeasuredProfile read_measured_profile(const std::string& path) {
  try {
    return MeasuredProfile::from_json(read_json_file(path), path);
  } catch (const Error& e) {
    fail(e.what(), " (measure again with `vacc profile`, or delete the file)");
  }
}

std::optional<MeasuredProfile> load_measured_profile(const Flavor& f) {
  const std::string path = measured_profile_path(f);
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) return std::nullopt;
  return read_measured_profile(path);
}

void save_measured_profile(const std::string& path, const nlohmann::json& document) {
  const std::filesystem::path dir = std::filesystem::path(path).parent_path();
  if (!dir.empty()) {
    std::error_code ec;
    std::filesystem::create_directories(dir, ec);
    VACC_CHECK(!ec, "cannot create the folder ", dir.string(), ": ", ec.message());
  }
  write_file_atomically(path, document.dump(2) + "\n");
}

}  // namespace vacc::cli
