// Checks, run once per process on the device itself, that the tensor-core flash attention
// (attention_flash_mma.cu) computes what the exact f32 kernels (attention.cu) compute, before
// attention_route lets training use it. A wrong fragment layout, instruction or tile index on
// some GPU would otherwise corrupt training quietly: the route falls back to cuBLASLt instead,
// with a warning that says why.
#pragma once

#include <cstdint>

#include "vacc/kernels/cuda/cuda_context.h"

namespace vacc::cuda {

// Runs one m16n8k16 product on the device on fixed inputs and compares it with the exact host
// result; the first call decides for the process (a mismatch is logged once).
bool tensor_core_mma_self_check(CudaContext& ctx);

// How far the flash_mma kernels are from the f32 flash kernels on one small causal problem
// (one sequence of 80 tokens: a full and a partial tile of 64 queries, three key tiles of 32;
// 2 query heads sharing 1 key/value head), bf16 outputs and gradients as in training. Each is
// the largest difference relative to the reference's largest magnitude (lse: absolute).
// Also: how many of the backward's dK/dV variants, from the first, give variant 0's dqkv to the
// bit (they differ only in register allocation; attention_tuning.h times only those).
struct FlashMmaAgreement {
  double out = 0, lse = 0, dqkv = 0;
  int dkdv_variants_alike = 1;
  double worst() const;
};
FlashMmaAgreement flash_mma_agreement(CudaContext& ctx, int64_t head_dim);

// What the bf16 flash kernels may differ by (out, lse and dqkv alike). A correct kernel stays
// near bf16 rounding (about 5e-3, cuda_backend_test); a wrong tile or fragment gives O(1).
constexpr double kFlashMmaSelfCheckTolerance = 3e-2;

// The product check, then flash_mma_agreement within the tolerance, for this head_dim (64 or
// 128); the first call per head_dim decides for the process, and a failure is logged once.
bool flash_mma_self_check(CudaContext& ctx, int64_t head_dim);

// The dK/dV variants the tuning may time for this head_dim: the agreeing ones of the self-check
// (1 where it failed or the variants differ).
int flash_mma_dkdv_variants_checked(CudaContext& ctx, int64_t head_dim);

}  // namespace vacc::cuda
