// Learning-rate schedules: linear warm-up, then constant, linear or cosine decay to
// min_lr at the last step.
#pragma once

#include <cstdint>
#include <string>

namespace vacc {

struct LrSchedule {
  enum class Kind { Constant, Linear, Cosine };
  Kind kind = Kind::Constant;
  double peak_lr = 1e-4;
  double min_lr = 0.0;
  int64_t warmup_steps = 0;
  int64_t total_steps = 1;

  // The rate for 1-based step `step`.
  double at(int64_t step) const;
  static Kind parse_kind(const std::string& name);  // "constant" | "linear" | "cosine"
};

}  // namespace vacc
