#include "vacc/core/json_file.h"

#include <fstream>

#include "vacc/core/error.h"

namespace vacc {

nlohmann::json read_json_file(const std::string& path) {
  std::ifstream in(path);
  VACC_CHECK(in.good(), "cannot open ", path);
  try {
    return nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception& e) {
    fail(path, ": not valid JSON (", e.what(), ")");
  }
}

}  // namespace vacc
