// AdamW over flat parameter and gradient buffers (f32 master weights), one segment per
// parameter tensor so norms and biases can skip weight decay. The moments share the layout.
#pragma once

#include <vector>

#include "vacc/kernels/backend.h"

namespace vacc {

struct AdamWConfig {
  float beta1 = 0.9f, beta2 = 0.999f, eps = 1e-8f, weight_decay = 0.0f;
};

// Elements [offset, offset + numel) of the flat buffers; decay says if weight decay applies
// (the backend's type, so a step is one call).
using OptimizerSegment = AdamWSegment;

class AdamW {
 public:
  // compute_copy (params' numel, optional): written with the updated parameters in its dtype
  // at every step (the model's bf16 weights, with no conversion pass after the step).
  AdamW(Backend& backend, Tensor params, Tensor grads, std::vector<OptimizerSegment> segments,
        AdamWConfig config, Tensor compute_copy = Tensor());

  // One update with learning rate lr; gradients are multiplied by grad_scale first.
  void step(float lr, float grad_scale = 1.0f);
  int64_t steps_taken() const { return step_; }
  bool writes_compute_copy() const { return compute_copy_.defined(); }
  const AdamWConfig& config() const { return config_; }
  Tensor& first_moment() { return m_; }
  Tensor& second_moment() { return v_; }

 private:
  Backend& backend_;
  Tensor params_, grads_, m_, v_, compute_copy_;
  std::vector<OptimizerSegment> segments_;
  AdamWConfig config_;
  int64_t step_ = 0;
};

}  // namespace vacc
