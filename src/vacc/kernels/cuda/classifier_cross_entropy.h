// The chunked output projection + cross-entropy on the GPU (see backend.h for the contract and
// kernels/cpu/classifier_cross_entropy.cpp for the algorithm, which this follows chunk for
// chunk). The tensors are already checked by CudaBackend.
#pragma once

#include "vacc/core/tensor.h"
#include "vacc/kernels/cuda/cuda_context.h"

namespace vacc::cuda {

void classifier_cross_entropy(CudaContext& ctx, const Tensor& x, const Tensor& weight,
                              const Tensor& labels, float grad_scale, Tensor& loss_sum,
                              Tensor* dx, Tensor* dweight);

}  // namespace vacc::cuda
