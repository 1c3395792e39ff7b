#include "vacc/core/logging.h"

#include <cstdio>

namespace vacc {

void log_info(const std::string& line) {
  std::fprintf(stdout, "%s\n", line.c_str());
  std::fflush(stdout);
}

void log_warn(const std::string& line) {
  std::fprintf(stderr, "warning: %s\n", line.c_str());
  std::fflush(stderr);
}

}  // namespace vacc
