// The matrix product without cuBLASLt (see matmul_fallback.cu): same contract as
// CublasLtMatmul::run, for whatever cuBLASLt declines.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "vacc/core/dtype.h"

namespace vacc::cuda {

void matmul_fallback(const void* a, bool trans_a, const void* b, bool trans_b, void* out,
                     int64_t M, int64_t N, int64_t K, DType in_dtype, DType out_dtype, float alpha,
                     float beta, const float* bias, cudaStream_t stream);

}  // namespace vacc::cuda
