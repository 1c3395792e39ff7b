// Causal attention on the tensor cores, through batched cuBLASLt products: the path of bf16
// (mixed-precision) attention on the GPU. Per block of (sequence, q head) pairs:
//   forward:  S = (Q K^T) / sqrt(d) (f32), P = causal softmax(S) (bf16, lse saved), O = P V;
//   backward: S and P again from Q, K and the saved lse; dV = P^T dO; dP = dO V^T;
//             dS = P (dP - D), D = rowsum(dO O); dQ = dS K / sqrt(d); dK = dS^T Q / sqrt(d).
// Q, K, V and dO are rounded to bf16 once, heads laid out one after another with K and V
// repeated per q head of a group; the products accumulate in f32. The full (T, T) score
// matrices are computed (twice the causal work) and stored for a block of heads at a time
// (kAttentionGemmChunkBytes of f32 scores), which is why long sequences take the flash kernel
// (attention.cu) instead: see attention_route.h. The tensors are already checked by CudaBackend.
#pragma once

#include "vacc/core/tensor.h"
#include "vacc/kernels/cuda/cuda_context.h"

namespace vacc::cuda {

void attention_gemm_forward(CudaContext& ctx, const Tensor& qkv, int64_t batch, int64_t seq,
                            int64_t q_heads, int64_t kv_heads, int64_t head_dim, Tensor& out,
                            Tensor& lse);

void attention_gemm_backward(CudaContext& ctx, const Tensor& dout, const Tensor& qkv,
                             const Tensor& out, const Tensor& lse, int64_t batch, int64_t seq,
                             int64_t q_heads, int64_t kv_heads, int64_t head_dim, Tensor& dqkv);

}  // namespace vacc::cuda
