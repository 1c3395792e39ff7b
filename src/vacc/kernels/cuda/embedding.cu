// Token embedding lookup and its scatter-add backward, over a vocabulary shard.
#include "vacc/kernels/cuda/cuda_check.h"
#include "vacc/kernels/cuda/cuda_kernels.h"
#include "vacc/kernels/cuda/device_math.cuh"

namespace vacc::cuda {
namespace {

constexpr int kThreads = 256;

// Block i copies token i's row (or writes zeros when the id is outside the shard).
__global__ void embedding_forward_kernel(const int32_t* ids, const float* table,
                                         int64_t vocab_start, int64_t vocab_size, int64_t c,
                                         float* out) {
  const int64_t i = blockIdx.x;
  const int64_t row = int64_t(ids[i]) - vocab_start;
  const bool inside = row >= 0 && row < vocab_size;
  float* dst = out + i * c;
  for (int64_t j = threadIdx.x; j < c; j += blockDim.x) dst[j] = inside ? table[row * c + j] : 0.0f;
}

__global__ void embedding_backward_kernel(const int32_t* ids, const float* dout,
                                          int64_t vocab_start, int64_t vocab_size, int64_t c,
                                          float* dtable) {
  const int64_t i = blockIdx.x;
  const int64_t row = int64_t(ids[i]) - vocab_start;
  if (row < 0 || row >= vocab_size) return;
  const float* src = dout + i * c;
  float* dst = dtable + row * c;
  for (int64_t j = threadIdx.x; j < c; j += blockDim.x) atomicAdd(dst + j, src[j]);
}

}  // namespace

void embedding_forward(const int32_t* ids, const float* table, int64_t vocab_start,
                       int64_t vocab_size, int64_t n, int64_t c, float* out, cudaStream_t stream) {
  if (n == 0 || c == 0) return;
  embedding_forward_kernel<<<unsigned(n), kThreads, 0, stream>>>(ids, table, vocab_start,
                                                                 vocab_size, c, out);
  VACC_CUDA_CHECK_LAUNCH("embedding_forward_kernel");
}

void embedding_backward(const int32_t* ids, const float* dout, int64_t vocab_start,
                        int64_t vocab_size, int64_t n, int64_t c, float* dtable,
                        cudaStream_t stream) {
  if (n == 0 || c == 0) return;
  embedding_backward_kernel<<<unsigned(n), kThreads, 0, stream>>>(ids, dout, vocab_start,
                                                                  vocab_size, c, dtable);
  VACC_CUDA_CHECK_LAUNCH("embedding_backward_kernel");
}

}  // namespace vacc::cuda
