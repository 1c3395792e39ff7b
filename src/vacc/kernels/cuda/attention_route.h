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
// and the device's tensor-core product passed its self-check, else Gemm up to 8192 tokens, else
// FlashF32. The environment variable VACC_ATTENTION = flash_mma | gemm | flash_f32 prefers that
// route for bf16 compute (for benchmarks and tests), falling back as above where it cannot run.
AttentionRoute attention_route(CudaContext& ctx, int64_t seq, int64_t head_dim, DType compute);

// Runs one m16n8k16 product on the device on fixed inputs and compares it with the exact host
// result; the first call decides for the process (a mismatch is logged once). The tensor-core
// kernels have to pass it before they are used: a wrong fragment layout or instruction would
// otherwise corrupt training quietly.
bool tensor_core_mma_self_check(CudaContext& ctx);

}  // namespace vacc::cuda
