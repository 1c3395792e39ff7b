#include "vacc/optim/adamw.h"

#include "vacc/core/error.h"

namespace vacc {

AdamW::AdamW(Backend& backend, Tensor params, Tensor grads, std::vector<OptimizerSegment> segments,
             AdamWConfig config, Tensor compute_copy)
    : backend_(backend),
      params_(std::move(params)),
      grads_(std::move(grads)),
      compute_copy_(std::move(compute_copy)),
      segments_(std::move(segments)),
      config_(config) {
  VACC_CHECK(params_.numel() == grads_.numel(), "AdamW: ", params_.numel(), " parameters but ",
             grads_.numel(), " gradients");
  VACC_CHECK(!compute_copy_.defined() || compute_copy_.numel() == params_.numel(), "AdamW: ",
             params_.numel(), " parameters but a compute copy of ", compute_copy_.numel());
  int64_t end = 0;
  for (const OptimizerSegment& s : segments_) {
    VACC_CHECK(s.offset >= 0 && s.numel >= 0 && s.offset + s.numel <= params_.numel(),
               "AdamW: segment outside the parameters");
    VACC_CHECK(s.offset >= end, "AdamW: segments must be in order and must not overlap");
    end = s.offset + s.numel;
  }
  m_ = backend_.zeros(params_.shape(), DType::F32, MemoryCategory::OptimizerState, "AdamW m");
  v_ = backend_.zeros(params_.shape(), DType::F32, MemoryCategory::OptimizerState, "AdamW v");
}

void AdamW::step(float lr, float grad_scale) {
  ++step_;
  AdamWParams p{lr, config_.beta1, config_.beta2, config_.eps, config_.weight_decay};
  p.step = step_;
  p.grad_scale = grad_scale;
  backend_.adamw_step_segments(params_, grads_, m_, v_, segments_, p,
                               compute_copy_.defined() ? &compute_copy_ : nullptr);
}

}  // namespace vacc
