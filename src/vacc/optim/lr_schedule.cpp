#include "vacc/optim/lr_schedule.h"

#include <cmath>

#include "vacc/core/error.h"

namespace vacc {

double LrSchedule::at(int64_t step) const {
  if (warmup_steps > 0 && step <= warmup_steps) return peak_lr * double(step) / double(warmup_steps);
  if (kind == Kind::Constant) return peak_lr;
  int64_t decay_steps = total_steps - warmup_steps;
  if (decay_steps <= 0) return peak_lr;
  double progress = double(step - warmup_steps) / double(decay_steps);
  progress = progress < 0 ? 0 : (progress > 1 ? 1 : progress);
  double shape = kind == Kind::Linear ? 1.0 - progress : 0.5 * (1.0 + std::cos(M_PI * progress));
  return min_lr + (peak_lr - min_lr) * shape;
}

LrSchedule::Kind LrSchedule::parse_kind(const std::string& name) {
  if (name == "constant") return Kind::Constant;
  if (name == "linear") return Kind::Linear;
  if (name == "cosine") return Kind::Cosine;
  fail("unknown learning-rate schedule '", name, "' (expected constant, linear or cosine)");
}

}  // namespace vacc
