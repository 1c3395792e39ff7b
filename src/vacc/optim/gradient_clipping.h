// Global gradient-norm clipping, as torch.nn.utils.clip_grad_norm_: the factor
// min(1, max_norm / (norm + 1e-6)) is passed to the optimizer as its grad_scale.
#pragma once

#include "vacc/kernels/backend.h"

namespace vacc {

// sqrt(sum of squares) over every element of the given f32 gradient tensors.
double global_grad_norm(Backend& backend, const std::vector<Tensor>& grads);

// The factor that scales gradients of norm `norm` down to at most `max_norm` (max_norm <= 0:
// no clipping).
float clip_factor(double norm, double max_norm);

}  // namespace vacc
