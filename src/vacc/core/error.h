// Errors a user can act on: every failure in vacc is a vacc::Error whose message names
// the file, tensor, line or limit involved. The CLI prints it and exits non-zero.
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>

namespace vacc {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& message) : std::runtime_error(message) {}
};

namespace detail {
template <typename... Parts>
std::string concat(const Parts&... parts) {
  std::ostringstream out;
  (out << ... << parts);
  return out.str();
}
}  // namespace detail

// Throws vacc::Error with the parts streamed together.
template <typename... Parts>
[[noreturn]] void fail(const Parts&... parts) {
  throw Error(detail::concat(parts...));
}

// Checks a condition that bad input (not a bug) can violate.
#define VACC_CHECK(cond, ...)            \
  do {                                   \
    if (!(cond)) ::vacc::fail(__VA_ARGS__); \
  } while (0)

}  // namespace vacc
