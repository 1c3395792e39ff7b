// A plain tiled matrix product for the combinations cuBLASLt declines (no algorithm for an
// unusual alignment, say): 16 x 16 tiles in shared memory, f32 accumulation. Slow but simple.
#include "vacc/core/error.h"
#include "vacc/kernels/cuda/cuda_check.h"
#include "vacc/kernels/cuda/device_math.cuh"
#include "vacc/kernels/cuda/matmul_fallback.h"

namespace vacc::cuda {
namespace {

constexpr int kTileSize = 16;

template <typename InT, typename OutT>
__global__ void gemm_tiled_kernel(const InT* a, bool trans_a, const InT* b, bool trans_b,
                                  OutT* out, int64_t M, int64_t N, int64_t K, float alpha,
                                  float beta, const float* bias) {
  __shared__ float As[kTileSize][kTileSize + 1], Bs[kTileSize][kTileSize + 1];
  const int tx = threadIdx.x, ty = threadIdx.y;
  const int64_t row = int64_t(blockIdx.y) * kTileSize + ty;
  const int64_t col = int64_t(blockIdx.x) * kTileSize + tx;
  float acc = 0.0f;
  for (int64_t k0 = 0; k0 < K; k0 += kTileSize) {
    const int64_t ka = k0 + tx, kb = k0 + ty;
    // As[ty][tx] = op(a)[row][ka]; Bs[ty][tx] = op(b)[kb][col].
    As[ty][tx] = row < M && ka < K ? load(a, trans_a ? ka * M + row : row * K + ka) : 0.0f;
    Bs[ty][tx] = kb < K && col < N ? load(b, trans_b ? col * K + kb : kb * N + col) : 0.0f;
    __syncthreads();
#pragma unroll
    for (int k = 0; k < kTileSize; ++k) acc += As[ty][k] * Bs[k][tx];
    __syncthreads();
  }
  if (row < M && col < N) {
    float v = alpha * acc;
    if (beta != 0.0f) v += beta * load(out, row * N + col);
    if (bias) v += bias[col];
    store(out, row * N + col, v);
  }
}

template <typename InT>
void launch_for_out(const InT* a, bool trans_a, const InT* b, bool trans_b, void* out, int64_t M,
                    int64_t N, int64_t K, DType out_dtype, float alpha, float beta,
                    const float* bias, cudaStream_t stream) {
  const dim3 grid{unsigned((N + kTileSize - 1) / kTileSize), unsigned((M + kTileSize - 1) / kTileSize)};
  const dim3 block(kTileSize, kTileSize);
  if (out_dtype == DType::F32)
    gemm_tiled_kernel<<<grid, block, 0, stream>>>(a, trans_a, b, trans_b, static_cast<float*>(out),
                                                  M, N, K, alpha, beta, bias);
  else
    gemm_tiled_kernel<<<grid, block, 0, stream>>>(a, trans_a, b, trans_b, static_cast<bf16*>(out),
                                                  M, N, K, alpha, beta, bias);
}

}  // namespace

void matmul_fallback(const void* a, bool trans_a, const void* b, bool trans_b, void* out,
                     int64_t M, int64_t N, int64_t K, DType in_dtype, DType out_dtype, float alpha,
                     float beta, const float* bias, cudaStream_t stream) {
  if (M == 0 || N == 0) return;
  VACC_CHECK((M + kTileSize - 1) / kTileSize <= 65535, "matmul: ", M,
             " rows are too many for the fallback kernel");
  VACC_CHECK(out_dtype == DType::F32 || out_dtype == DType::BF16, "matmul: bad output dtype ",
             dtype_name(out_dtype));
  if (in_dtype == DType::F32)
    launch_for_out(static_cast<const float*>(a), trans_a, static_cast<const float*>(b), trans_b,
                   out, M, N, K, out_dtype, alpha, beta, bias, stream);
  else if (in_dtype == DType::BF16)
    launch_for_out(static_cast<const bf16*>(a), trans_a, static_cast<const bf16*>(b), trans_b, out,
                   M, N, K, out_dtype, alpha, beta, bias, stream);
  else
    fail("matmul: unsupported input dtype ", dtype_name(in_dtype));
  VACC_CUDA_CHECK_LAUNCH("gemm_tiled_kernel");
}

}  // namespace vacc::cuda
