// Launchers of attention_flash_mma.cu: causal attention on the tensor cores, FlashAttention-2
// style (bf16 operands, f32 accumulation), with the layouts and semantics of attention.cu's
// kernels, so that forward and backward routes may be mixed (attention_route.h chooses).
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "vacc/core/dtype.h"

namespace vacc::cuda {

// Whether the kernels take this head_dim (64 or 128; any sequence length).
bool attention_flash_mma_supports(int64_t head_dim);

// The kernels read q, k and v in bf16: a bf16 qkv (the mixed-precision model's, rounded where
// it was written) directly, an f32 one after packing it into scratch.

// Bytes of device scratch attention_flash_mma_forward needs (an f32 qkv packed in bf16; none
// for a bf16 qkv).
size_t attention_flash_mma_forward_scratch_bytes(int64_t batch, int64_t seq, int64_t q_heads,
                                                 int64_t kv_heads, int64_t head_dim,
                                                 DType qkv_dtype);
// qkv (B*T, (Hq + 2 Hkv) D) of qkv_dtype (f32 or bf16); out (B*T, Hq D) of out_dtype; lse (B,
// Hq, T), natural log; out_bf16 (null: none) out rounded to bf16 as well, in the same pass.
void attention_flash_mma_forward(const void* qkv, DType qkv_dtype, int64_t batch, int64_t seq,
                                 int64_t q_heads, int64_t kv_heads, int64_t head_dim, void* out,
                                 DType out_dtype, float* lse, void* scratch, cudaStream_t stream,
                                 bf16* out_bf16 = nullptr);

// Bytes of device scratch attention_flash_mma_backward needs (D_i = rowsum(dO * O), with
// grouped heads the dK and dV shares, and an f32 qkv packed in bf16).
size_t attention_flash_mma_backward_scratch_bytes(int64_t batch, int64_t seq, int64_t q_heads,
                                                  int64_t kv_heads, int64_t head_dim,
                                                  DType qkv_dtype);
// The backward's dK/dV kernel comes in variants that compute the same bits and differ only in
// how ptxas fits it to the SM: 0 as many registers as it likes (2 blocks per SM at head_dim 64
// on sm_90), 1 (head_dim 64) bounded to fit 3 blocks per SM, with some spills. Which is faster
// depends on the GPU, so the backend times them on the first eager run (attention_tuning.h).
int attention_flash_mma_dkdv_variants(int64_t head_dim);
// dout and out (B*T, Hq D) of io_dtype; qkv of qkv_dtype; lse (B, Hq, T); dqkv (B*T, (Hq +
// 2 Hkv) D) f32 overwritten. Deterministic: dK/dV and dQ by separate kernels, no atomics.
// Reads only its inputs, so it may run again on them (to time a variant).
void attention_flash_mma_backward(const void* dout, const void* qkv, DType qkv_dtype,
                                  const void* out, DType io_dtype, const float* lse,
                                  int64_t batch, int64_t seq, int64_t q_heads, int64_t kv_heads,
                                  int64_t head_dim, float* dqkv, void* scratch,
                                  cudaStream_t stream, int dkdv_variant = 0);

// One m16n8k16 tensor-core product on the device, through the same helper as the kernels:
// d (16x8) = bf16(a) (16x16) bf16(b) (16x8) + c (16x8), all row-major f32 device arrays. For the
// route's self-check and the tests.
void mma_bf16_tile_product(const float* a, const float* b, const float* c, float* d,
                           cudaStream_t stream);

}  // namespace vacc::cuda
