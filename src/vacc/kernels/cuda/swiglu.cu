// SwiGLU: out = silu(gate) * up with gate and up the two halves of one fused (N, 2F) product.
#include "vacc/core/error.h"
#include "vacc/kernels/cuda/cuda_check.h"
#include "vacc/kernels/cuda/cuda_kernels.h"
#include "vacc/kernels/cuda/device_math.cuh"

namespace vacc::cuda {
namespace {

constexpr int kThreads = 256;

__device__ __forceinline__ float sigmoid(float x) { return 1.0f / (1.0f + expf(-x)); }
__device__ __forceinline__ float silu_times(float g, float u) { return g * sigmoid(g) * u; }
// d silu(g)/dg = sig(g) (1 + g (1 - sig(g))); d(silu(g) u)/du = silu(g).
__device__ __forceinline__ void swiglu_grads(float dy, float g, float u, float& dg, float& du) {
  const float sig = sigmoid(g);
  dg = dy * u * sig * (1.0f + g * (1.0f - sig));
  du = dy * g * sig;
}

template <typename OutT>
__global__ void swiglu_forward_kernel(const float* gate_up, int64_t n, int64_t f, OutT* out) {
  for (int64_t e = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; e < n * f;
       e += int64_t(gridDim.x) * blockDim.x) {
    const int64_t i = e / f, j = e % f;
    const float g = gate_up[i * 2 * f + j], u = gate_up[i * 2 * f + f + j];
    store(out, e, silu_times(g, u));
  }
}

template <typename OutT>
__global__ void swiglu_backward_kernel(const float* dout, const float* gate_up, int64_t n,
                                       int64_t f, OutT* dgate_up) {
  for (int64_t e = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; e < n * f;
       e += int64_t(gridDim.x) * blockDim.x) {
    const int64_t i = e / f, j = e % f;
    float dg, du;
    swiglu_grads(dout[e], gate_up[i * 2 * f + j], gate_up[i * 2 * f + f + j], dg, du);
    store(dgate_up, i * 2 * f + j, dg);
    store(dgate_up, i * 2 * f + f + j, du);
  }
}

// The same two kernels over rows (blockIdx.y, strided) and groups of four columns (x): no
// 64-bit division per element, 16-byte loads. For f a multiple of 4 and aligned buffers.
template <typename OutT>
__global__ void swiglu_forward4_kernel(const float* gate_up, int64_t n, int64_t f4, OutT* out) {
  const int64_t j = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (j >= f4) return;
  for (int64_t i = blockIdx.y; i < n; i += gridDim.y) {
    const Vec4 g = load4(gate_up, i * 2 * f4 + j), u = load4(gate_up, i * 2 * f4 + f4 + j);
    store4(out, i * f4 + j,
           Vec4{silu_times(g.x, u.x), silu_times(g.y, u.y), silu_times(g.z, u.z),
                silu_times(g.w, u.w)});
  }
}

template <typename OutT>
__global__ void swiglu_backward4_kernel(const float* dout, const float* gate_up, int64_t n,
                                        int64_t f4, OutT* dgate_up) {
  const int64_t j = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (j >= f4) return;
  for (int64_t i = blockIdx.y; i < n; i += gridDim.y) {
    const Vec4 g = load4(gate_up, i * 2 * f4 + j), u = load4(gate_up, i * 2 * f4 + f4 + j);
    const Vec4 dy = load4(dout, i * f4 + j);
    Vec4 dg, du;
    swiglu_grads(dy.x, g.x, u.x, dg.x, du.x);
    swiglu_grads(dy.y, g.y, u.y, dg.y, du.y);
    swiglu_grads(dy.z, g.z, u.z, dg.z, du.z);
    swiglu_grads(dy.w, g.w, u.w, dg.w, du.w);
    store4(dgate_up, i * 2 * f4 + j, dg);
    store4(dgate_up, i * 2 * f4 + f4 + j, du);
  }
}

// The 2-D grid of the vectorised kernels.
dim3 rows_by_groups(int64_t n, int64_t f4) {
  return dim3(unsigned((f4 + kThreads - 1) / kThreads), unsigned(n < 65535 ? n : 65535));
}

}  // namespace

void swiglu_forward(const float* gate_up, int64_t n, int64_t f, void* out, DType out_dtype,
                    cudaStream_t stream) {
  if (n == 0 || f == 0) return;
  VACC_CHECK(out_dtype == DType::F32 || out_dtype == DType::BF16,
             "swiglu_forward: out must be f32 or bf16, got ", dtype_name(out_dtype));
  const bool vec = f % 4 == 0 && vec4_aligned(gate_up, 4) && vec4_aligned(out, dtype_size(out_dtype));
  const unsigned blocks = grid_for(n * f, kThreads);
  const dim3 grid4 = rows_by_groups(n, f / 4);
  if (out_dtype == DType::F32 && vec)
    swiglu_forward4_kernel<<<grid4, kThreads, 0, stream>>>(gate_up, n, f / 4, static_cast<float*>(out));
  else if (out_dtype == DType::F32)
    swiglu_forward_kernel<<<blocks, kThreads, 0, stream>>>(gate_up, n, f, static_cast<float*>(out));
  else if (vec)
    swiglu_forward4_kernel<<<grid4, kThreads, 0, stream>>>(gate_up, n, f / 4, static_cast<bf16*>(out));
  else
    swiglu_forward_kernel<<<blocks, kThreads, 0, stream>>>(gate_up, n, f, static_cast<bf16*>(out));
  VACC_CUDA_CHECK_LAUNCH("swiglu_forward_kernel");
}

void swiglu_backward(const float* dout, const float* gate_up, int64_t n, int64_t f,
                     void* dgate_up, DType dgate_up_dtype, cudaStream_t stream) {
  if (n == 0 || f == 0) return;
  VACC_CHECK(dgate_up_dtype == DType::F32 || dgate_up_dtype == DType::BF16,
             "swiglu_backward: dgate_up must be f32 or bf16, got ", dtype_name(dgate_up_dtype));
  const bool vec = f % 4 == 0 && vec4_aligned(dout, 4) && vec4_aligned(gate_up, 4) &&
                   vec4_aligned(dgate_up, dtype_size(dgate_up_dtype));
  const unsigned blocks = grid_for(n * f, kThreads);
  const dim3 grid4 = rows_by_groups(n, f / 4);
  if (dgate_up_dtype == DType::F32 && vec)
    swiglu_backward4_kernel<<<grid4, kThreads, 0, stream>>>(dout, gate_up, n, f / 4,
                                                            static_cast<float*>(dgate_up));
  else if (dgate_up_dtype == DType::F32)
    swiglu_backward_kernel<<<blocks, kThreads, 0, stream>>>(dout, gate_up, n, f,
                                                            static_cast<float*>(dgate_up));
  else if (vec)
    swiglu_backward4_kernel<<<grid4, kThreads, 0, stream>>>(dout, gate_up, n, f / 4,
                                                            static_cast<bf16*>(dgate_up));
  else
    swiglu_backward_kernel<<<blocks, kThreads, 0, stream>>>(dout, gate_up, n, f,
                                                            static_cast<bf16*>(dgate_up));
  VACC_CUDA_CHECK_LAUNCH("swiglu_backward_kernel");
}

}  // namespace vacc::cuda
