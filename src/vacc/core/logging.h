// Console logging for people: timestamps on rank 0's lines, nothing clever.
#pragma once

#include <string>

namespace vacc {

void log_info(const std::string& line);
void log_warn(const std::string& line);

// In a job of several ranks only rank 0 logs information; warnings of other ranks carry
// their rank. Call once at start-up.
void set_log_rank(int rank);

}  // namespace vacc
