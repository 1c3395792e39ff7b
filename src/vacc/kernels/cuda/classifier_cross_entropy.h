// The chunked output projection + cross-entropy on the GPU, whole-vocabulary and
// vocabulary-parallel (see backend.h for the contracts and kernels/cpu/classifier_cross_entropy.cpp
// for the algorithm, which these follow chunk for chunk). The tensors are already checked by
// CudaBackend.
#pragma once

#include "vacc/core/tensor.h"
#include "vacc/kernels/cuda/cuda_context.h"

namespace vacc::cuda {

// The largest logits chunk (f32 or bf16) the classifier holds on this context's device (bytes).
int64_t classifier_chunk_bytes(CudaContext& ctx);

void classifier_cross_entropy(CudaContext& ctx, const Tensor& x, const Tensor& weight,
                              const Tensor& labels, float grad_scale, Tensor& loss_sum,
                              Tensor* dx, Tensor* dweight);

void classifier_logsumexp(CudaContext& ctx, const Tensor& x, const Tensor& weight,
                          int64_t vocab_start, const Tensor& labels, Tensor& lse,
                          Tensor& target_logit);

void classifier_cross_entropy_backward(CudaContext& ctx, const Tensor& x, const Tensor& weight,
                                       int64_t vocab_start, const Tensor& labels,
                                       const Tensor& lse_global, float grad_scale, Tensor* dx,
                                       Tensor* dweight);

}  // namespace vacc::cuda
