// Rotary position embedding, rotate-half form (Hugging Face's Llama/Qwen2): with x = (x1, x2)
// the two halves of a head, y1 = x1 cos - x2 sin, y2 = x2 cos + x1 sin; inverse negates sin.
// Block i rotates token i's heads; each thread owns (head, j) pairs.
#include "vacc/kernels/cuda/cuda_check.h"
#include "vacc/kernels/cuda/cuda_kernels.h"

namespace vacc::cuda {
namespace {

constexpr int kThreads = 128;

__global__ void rope_kernel(float* x, int64_t row_width, const int32_t* positions,
                            const float* cos, const float* sin, int64_t max_positions,
                            int64_t num_heads, int64_t half, float sign, DeviceError* error) {
  const int64_t i = blockIdx.x;
  const int64_t pos = positions[i];
  if (pos < 0 || pos >= max_positions) {
    if (threadIdx.x == 0 && atomicCAS(&error->code, kNoError, kRopePositionOutOfRange) == kNoError) {
      error->a = pos;
      error->b = i;
      error->c = max_positions;
    }
    return;
  }
  const float* c = cos + pos * half;
  const float* s = sin + pos * half;
  float* row = x + i * row_width;
  // 32-bit indices within the row (heads x half is small): a 64-bit division per element
  // costs many times a 32-bit one.
  const int pairs = int(num_heads * half), hf = int(half);
  for (int p = threadIdx.x; p < pairs; p += blockDim.x) {
    const int h = p / hf, j = p % hf;
    float* x1 = row + int64_t(h) * 2 * half + j;
    float* x2 = x1 + half;
    const float a = *x1, b = *x2, sj = sign * s[j];
    *x1 = a * c[j] - b * sj;
    *x2 = b * c[j] + a * sj;
  }
}

}  // namespace

void rope(float* x, int64_t n, int64_t row_width, const int32_t* positions, const float* cos,
          const float* sin, int64_t max_positions, int64_t num_heads, int64_t head_dim,
          bool inverse, DeviceError* error, cudaStream_t stream) {
  if (n == 0 || num_heads == 0) return;
  rope_kernel<<<unsigned(n), kThreads, 0, stream>>>(x, row_width, positions, cos, sin,
                                                    max_positions, num_heads, head_dim / 2,
                                                    inverse ? -1.0f : 1.0f, error);
  VACC_CUDA_CHECK_LAUNCH("rope_kernel");
}

}  // namespace vacc::cuda
