// Which kernels compute attention on the GPU; the one place that chooses, for the forward and
// the backward alike (their lse is the same, so the two may take different routes).
#pragma once

#include <cstdint>

#include "vacc/core/dtype.h"
#include "vacc/kernels/cuda/cuda_context.h"

namespace vacc::cuda {

enum class AttentionRoute {
  FlashF32,  // attention.cu: flash kernels in f32 on CUDA cores (exact; any shape)
  Gemm,      // attention_gemm: batched cuBLASLt products over (T, T) scores (bf16, T <= 8192)
  FlashMma,  // attention_flash_mma.cu: flash kernels on the tensor cores (bf16, head_dim 64/128)
};

const char* attention_route_name(AttentionRoute route);

// f32 compute: FlashF32. bf16 compute (mixed precision): FlashMma where it takes the head_dim
// and its kernels passed their self-check on this device (attention_self_check.h), else Gemm
// up to 8192 tokens, else FlashF32. The environment variable VACC_ATTENTION = flash_mma | gemm |
// flash_f32 prefers that route for bf16 compute (for benchmarks and tests), falling back as
// above where it cannot run.
AttentionRoute attention_route(CudaContext& ctx, int64_t seq, int64_t head_dim, DType compute);

}  // namespace vacc::cuda
