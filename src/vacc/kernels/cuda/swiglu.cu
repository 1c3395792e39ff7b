// SwiGLU: out = silu(gate) * up with gate and up the two halves of one fused (N, 2F) product.
#include "vacc/core/error.h"
#include "vacc/kernels/cuda/cuda_check.h"
#include "vacc/kernels/cuda/cuda_kernels.h"
#include "vacc/kernels/cuda/device_math.cuh"

namespace vacc::cuda {
namespace {

constexpr int kThreads = 256;

__device__ __forceinline__ float sigmoid(float x) { return 1.0f / (1.0f + expf(-x)); }

template <typename OutT>
__global__ void swiglu_forward_kernel(const float* gate_up, int64_t n, int64_t f, OutT* out) {
  for (int64_t e = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; e < n * f;
       e += int64_t(gridDim.x) * blockDim.x) {
    const int64_t i = e / f, j = e % f;
    const float g = gate_up[i * 2 * f + j], u = gate_up[i * 2 * f + f + j];
    store(out, e, g * sigmoid(g) * u);
  }
}

// d silu(g)/dg = sig(g) (1 + g (1 - sig(g))).
template <typename OutT>
__global__ void swiglu_backward_kernel(const float* dout, const float* gate_up, int64_t n,
                                       int64_t f, OutT* dgate_up) {
  for (int64_t e = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; e < n * f;
       e += int64_t(gridDim.x) * blockDim.x) {
    const int64_t i = e / f, j = e % f;
    const float g = gate_up[i * 2 * f + j], u = gate_up[i * 2 * f + f + j], dy = dout[e];
    const float sig = sigmoid(g);
    store(dgate_up, i * 2 * f + j, dy * u * sig * (1.0f + g * (1.0f - sig)));
    store(dgate_up, i * 2 * f + f + j, dy * g * sig);
  }
}

}  // namespace

void swiglu_forward(const float* gate_up, int64_t n, int64_t f, void* out, DType out_dtype,
                    cudaStream_t stream) {
  if (n == 0 || f == 0) return;
  const unsigned blocks = grid_for(n * f, kThreads);
  if (out_dtype == DType::F32)
    swiglu_forward_kernel<<<blocks, kThreads, 0, stream>>>(gate_up, n, f, static_cast<float*>(out));
  else if (out_dtype == DType::BF16)
    swiglu_forward_kernel<<<blocks, kThreads, 0, stream>>>(gate_up, n, f, static_cast<bf16*>(out));
  else
    fail("swiglu_forward: out must be f32 or bf16, got ", dtype_name(out_dtype));
  VACC_CUDA_CHECK_LAUNCH("swiglu_forward_kernel");
}

void swiglu_backward(const float* dout, const float* gate_up, int64_t n, int64_t f,
                     void* dgate_up, DType dgate_up_dtype, cudaStream_t stream) {
  if (n == 0 || f == 0) return;
  const unsigned blocks = grid_for(n * f, kThreads);
  if (dgate_up_dtype == DType::F32)
    swiglu_backward_kernel<<<blocks, kThreads, 0, stream>>>(dout, gate_up, n, f,
                                                            static_cast<float*>(dgate_up));
  else if (dgate_up_dtype == DType::BF16)
    swiglu_backward_kernel<<<blocks, kThreads, 0, stream>>>(dout, gate_up, n, f,
                                                            static_cast<bf16*>(dgate_up));
  else
    fail("swiglu_backward: dgate_up must be f32 or bf16, got ", dtype_name(dgate_up_dtype));
  VACC_CUDA_CHECK_LAUNCH("swiglu_backward_kernel");
}

}  // namespace vacc::cuda
