#include "vacc/optim/gradient_clipping.h"

#include <cmath>

namespace vacc {

double global_grad_norm(Backend& backend, const std::vector<Tensor>& grads) {
  Tensor acc = backend.zeros({1}, DType::F32, MemoryCategory::Buffers, "gradient norm");
  for (const Tensor& g : grads) backend.sum_of_squares(g, acc);
  float total = 0.0f;
  backend.download(acc, &total);
  return std::sqrt(double(total));
}

float clip_factor(double norm, double max_norm) {
  if (max_norm <= 0.0) return 1.0f;
  double coef = max_norm / (norm + 1e-6);
  return coef < 1.0 ? float(coef) : 1.0f;
}

}  // namespace vacc
