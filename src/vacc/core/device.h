// Which device a tensor lives on.
#pragma once

#include <string>

namespace vacc {

struct Device {
  enum class Kind { CPU, CUDA };
  Kind kind = Kind::CPU;
  int index = 0;

  std::string str() const { return (kind == Kind::CPU ? "cpu:" : "cuda:") + std::to_string(index); }
  bool operator==(const Device&) const = default;
};

}  // namespace vacc
