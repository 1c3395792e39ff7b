// printf into a std::string, for log lines and messages (at most 1023 characters).
#pragma once

#include <cstdio>
#include <string>

namespace vacc {

template <typename... Args>
std::string strprintf(const char* format, Args... args) {
  char buf[1024];
  std::snprintf(buf, sizeof buf, format, args...);
  return buf;
}

}  // namespace vacc
