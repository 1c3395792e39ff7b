// The index of each row's largest value (Backend::argmax_rows): greedy decoding's next token,
// so that a generated token reads back 4 bytes instead of its logits row (600 KB for Qwen).
#include <cstdint>

#include "vacc/kernels/cuda/cuda_check.h"
#include "vacc/kernels/cuda/cuda_kernels.h"

namespace vacc::cuda {
namespace {

constexpr int kThreads = 256;

// Whether (v, i) beats (best, best_i): larger, or equal at a lower index. NaN compares false.
__device__ __forceinline__ bool beats(float v, int64_t i, float best, int64_t best_i) {
  return best_i < 0 ? v == v : (v > best || (v == best && i < best_i));
}

// One block a row: each thread the best of its strided share, then a tree over the block.
__global__ void argmax_rows_kernel(const float* x, int64_t cols, int32_t* out) {
  __shared__ float value[kThreads];
  __shared__ int64_t index[kThreads];
  const float* row = x + int64_t(blockIdx.x) * cols;
  float best = 0.0f;
  int64_t best_i = -1;
  for (int64_t i = threadIdx.x; i < cols; i += kThreads)
    if (beats(row[i], i, best, best_i)) best = row[i], best_i = i;
  value[threadIdx.x] = best;
  index[threadIdx.x] = best_i;
  __syncthreads();
  const int t = int(threadIdx.x);
  for (int half = kThreads / 2; half > 0; half >>= 1) {
    if (t < half && index[t + half] >= 0 &&
        beats(value[t + half], index[t + half], value[t], index[t])) {
      value[t] = value[t + half];
      index[t] = index[t + half];
    }
    __syncthreads();
  }
  if (t == 0) out[blockIdx.x] = index[0] >= 0 && isfinite(value[0]) ? int32_t(index[0]) : -1;
}

}  // namespace

void argmax_rows(const float* x, int64_t rows, int64_t cols, int32_t* out, cudaStream_t stream) {
  if (rows == 0) return;
  argmax_rows_kernel<<<unsigned(rows), kThreads, 0, stream>>>(x, cols, out);
  VACC_CUDA_CHECK_LAUNCH("argmax_rows");
}

}  // namespace vacc::cuda
