#include "vacc/core/logging.h"

#include <cstdio>

namespace vacc {

namespace {
int log_rank = 0;
}  // namespace

void set_log_rank(int rank) { log_rank = rank; }

void log_info(const std::string& line) {
  if (log_rank != 0) return;
  std::fprintf(stdout, "%s\n", line.c_str());
  std::fflush(stdout);
}

void log_warn(const std::string& line) {
  if (log_rank != 0)
    std::fprintf(stderr, "warning: rank %d: %s\n", log_rank, line.c_str());
  else
    std::fprintf(stderr, "warning: %s\n", line.c_str());
  std::fflush(stderr);
}

}  // namespace vacc
