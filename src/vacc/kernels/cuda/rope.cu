// Rotary position embedding, rotate-half form (Hugging Face's Llama/Qwen2): with x = (x1, x2)
// the two halves of a head, y1 = x1 cos - x2 sin, y2 = x2 cos + x1 sin; inverse negates sin.
// Block i rotates token i's heads; each thread owns (head, j) pairs.
#include "vacc/core/error.h"
#include "vacc/kernels/cuda/cuda_check.h"
#include "vacc/kernels/cuda/cuda_kernels.h"
#include "vacc/kernels/cuda/device_math.cuh"

namespace vacc::cuda {
namespace {

constexpr int kThreads = 128;

template <typename T, typename CopyT>
__global__ void rope_kernel(T* x, int64_t row_width, const int32_t* positions, const float* cos,
                            const float* sin, int64_t max_positions, int64_t num_heads,
                            int64_t half, float sign, CopyT* copy, DeviceError* error) {
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
  T* row = x + i * row_width;
  CopyT* copy_row = copy ? copy + i * row_width : nullptr;
  // 32-bit indices within the row (heads x half is small): a 64-bit division per element
  // costs many times a 32-bit one.
  const int pairs = int(num_heads * half), hf = int(half);
  for (int p = threadIdx.x; p < pairs; p += blockDim.x) {
    const int h = p / hf, j = p % hf;
    const int64_t i1 = int64_t(h) * 2 * half + j, i2 = i1 + half;
    const float a = load(row, i1), b = load(row, i2), sj = sign * s[j];
    store(row, i1, a * c[j] - b * sj);
    store(row, i2, b * c[j] + a * sj);
    if (copy_row) {  // the rounded value x now holds
      store(copy_row, i1, load(row, i1));
      store(copy_row, i2, load(row, i2));
    }
  }
  if (copy_row)
    for (int64_t j = 2 * int64_t(pairs) + threadIdx.x; j < row_width; j += blockDim.x)
      store(copy_row, j, load(row, j));
}

}  // namespace

void rope(void* x, DType x_dtype, int64_t n, int64_t row_width, const int32_t* positions,
          const float* cos, const float* sin, int64_t max_positions, int64_t num_heads,
          int64_t head_dim, bool inverse, void* copy, DType copy_dtype, DeviceError* error,
          cudaStream_t stream) {
  if (n == 0 || (num_heads == 0 && !copy)) return;
  auto launch = [&](auto* xs, auto* cs) {
    rope_kernel<<<unsigned(n), kThreads, 0, stream>>>(xs, row_width, positions, cos, sin,
                                                      max_positions, num_heads, head_dim / 2,
                                                      inverse ? -1.0f : 1.0f, cs, error);
  };
  auto with_copy = [&](auto* xs) {
    if (!copy || copy_dtype == DType::F32)
      launch(xs, static_cast<float*>(copy));
    else if (copy_dtype == DType::BF16)
      launch(xs, static_cast<bf16*>(copy));
    else
      fail("rope: copy must be f32 or bf16, got ", dtype_name(copy_dtype));
  };
  if (x_dtype == DType::F32)
    with_copy(static_cast<float*>(x));
  else if (x_dtype == DType::BF16)
    with_copy(static_cast<bf16*>(x));
  else
    fail("rope: x must be f32 or bf16, got ", dtype_name(x_dtype));
  VACC_CUDA_CHECK_LAUNCH("rope_kernel");
}

}  // namespace vacc::cuda
