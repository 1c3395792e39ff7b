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

// dtable[row] += dout[i] for every token i of the shard's rows, deterministically: block i
// writes its row only if token i is the row's first occurrence, and then adds the rows of every
// later occurrence in token order, as the CPU kernel does (the same bits on both). Atomic adds
// summed repeated tokens in whatever order the blocks ran, so two runs (an eager step and its
// CUDA graph's replay) differed in the last bits. Each block reads the ids once (in tiles of
// kThreads); the repeats of a tile are compacted in order by a warp scan.
__global__ void __launch_bounds__(kThreads)
    embedding_backward_kernel(const int32_t* ids, const float* dout, int64_t vocab_start,
                              int64_t vocab_size, int64_t n, int64_t c, float* dtable) {
  constexpr int kWarps = kThreads / 32;
  __shared__ int64_t repeats[kThreads];
  __shared__ int warp_count[kWarps];
  __shared__ int earlier;
  const int64_t i = blockIdx.x;
  const int32_t id = ids[i];
  const int64_t row = int64_t(id) - vocab_start;
  if (row < 0 || row >= vocab_size) return;  // the whole block
  if (threadIdx.x == 0) earlier = 0;
  __syncthreads();
  for (int64_t t0 = 0; t0 < i; t0 += kThreads) {
    const int64_t p = t0 + threadIdx.x;
    if (p < i && ids[p] == id) earlier = 1;
    __syncthreads();
    const bool found = earlier;
    __syncthreads();  // every thread has read `earlier` before the next tile can set it
    if (found) return;  // the whole block: an earlier block owns the row
  }

  float* dst = dtable + row * c;
  for (int64_t t0 = i; t0 < n; t0 += kThreads) {
    const int64_t p = t0 + threadIdx.x;
    const int match = p < n && ids[p] == id;
    int count = 0;
    const int rank = block_inclusive_scan(match, warp_count, count);  // matches up to p
    if (match) repeats[rank - 1] = p;
    __syncthreads();
    if (count > 0) {
      for (int64_t j = threadIdx.x; j < c; j += kThreads) {
        float v = dst[j];
        for (int k = 0; k < count; ++k) v += dout[repeats[k] * c + j];
        dst[j] = v;
      }
    }
    __syncthreads();  // before the next tile overwrites repeats and warp_count
  }
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
                                                                  vocab_size, n, c, dtable);
  VACC_CUDA_CHECK_LAUNCH("embedding_backward_kernel");
}

}  // namespace vacc::cuda
