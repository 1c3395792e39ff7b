#include "vacc/core/byte_size.h"

#include <cctype>
#include <cmath>

#include "vacc/core/error.h"

namespace vacc {

size_t parse_byte_size(const std::string& text, const std::string& what) {
  size_t pos = 0;
  double value = 0;
  try {
    value = std::stod(text, &pos);
  } catch (const std::exception&) {
    fail(what, ": '", text, "' is not a size (examples: 512m, 8g, 5GB)");
  }
  std::string unit;
  for (size_t i = pos; i < text.size(); ++i)
    if (!std::isspace(static_cast<unsigned char>(text[i])))
      unit += char(std::tolower(static_cast<unsigned char>(text[i])));
  double scale = 0;
  if (unit.empty() || unit == "b") scale = 1;
  else if (unit == "k" || unit == "kib") scale = 1024.0;
  else if (unit == "m" || unit == "mib") scale = std::pow(1024.0, 2);
  else if (unit == "g" || unit == "gib") scale = std::pow(1024.0, 3);
  else if (unit == "t" || unit == "tib") scale = std::pow(1024.0, 4);
  else if (unit == "kb") scale = 1e3;
  else if (unit == "mb") scale = 1e6;
  else if (unit == "gb") scale = 1e9;
  else if (unit == "tb") scale = 1e12;
  VACC_CHECK(scale > 0, what, ": unknown unit '", unit, "' in '", text, "'");
  VACC_CHECK(value > 0 && std::isfinite(value), what, ": '", text, "' must be a positive size");
  return size_t(value * scale);
}

}  // namespace vacc
