// Console logging for people: timestamps on rank 0's lines, nothing clever.
#pragma once

#include <string>

namespace vacc {

void log_info(const std::string& line);
void log_warn(const std::string& line);

}  // namespace vacc
