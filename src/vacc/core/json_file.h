// Reading a whole JSON file (config.json, an index, tokenizer.json) with errors that name it.
#pragma once

#include <nlohmann/json.hpp>
#include <string>

namespace vacc {

// Throws vacc::Error "cannot open PATH" or "PATH: not valid JSON (...)".
nlohmann::json read_json_file(const std::string& path);

}  // namespace vacc
