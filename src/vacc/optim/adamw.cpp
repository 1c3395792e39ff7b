#include "vacc/optim/adamw.h"

#include "vacc/core/error.h"

namespace vacc {

AdamW::AdamW(Backend& backend, Tensor params, Tensor grads, std::vector<OptimizerSegment> segments,
             AdamWConfig config)
    : backend_(backend),
      params_(std::move(params)),
      grads_(std::move(grads)),
      segments_(std::move(segments)),
      config_(config) {
  VACC_CHECK(params_.numel() == grads_.numel(), "AdamW: ", params_.numel(), " parameters but ",
             grads_.numel(), " gradients");
  for (const OptimizerSegment& s : segments_)
    VACC_CHECK(s.offset >= 0 && s.offset + s.numel <= params_.numel(),
               "AdamW: segment outside the parameters");
  m_ = backend_.zeros(params_.shape(), DType::F32, MemoryCategory::OptimizerState, "AdamW m");
  v_ = backend_.zeros(params_.shape(), DType::F32, MemoryCategory::OptimizerState, "AdamW v");
}

void AdamW::step(float lr, float grad_scale) {
  ++step_;
  for (const OptimizerSegment& s : segments_) {
    AdamWParams p{lr, config_.beta1, config_.beta2, config_.eps,
                  s.decay ? config_.weight_decay : 0.0f, step_, grad_scale};
    Tensor param = params_.view(s.offset, {s.numel});
    Tensor grad = grads_.view(s.offset, {s.numel});
    Tensor m = m_.view(s.offset, {s.numel}), v = v_.view(s.offset, {s.numel});
    backend_.adamw_step(param, grad, m, v, p);
  }
}

}  // namespace vacc
