// SwiGLU: out = silu(gate) * up with gate and up the two halves of one fused (N, 2F) product.
#include <type_traits>

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

template <typename InT, typename OutT>
__global__ void swiglu_forward_kernel(const InT* gate_up, int64_t n, int64_t f, OutT* out) {
  for (int64_t e = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; e < n * f;
       e += int64_t(gridDim.x) * blockDim.x) {
    const int64_t i = e / f, j = e % f;
    store(out, e, silu_times(load(gate_up, i * 2 * f + j), load(gate_up, i * 2 * f + f + j)));
  }
}

template <typename InT, typename OutT>
__global__ void swiglu_backward_kernel(const InT* dout, const InT* gate_up, int64_t n, int64_t f,
                                       OutT* dgate_up) {
  for (int64_t e = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; e < n * f;
       e += int64_t(gridDim.x) * blockDim.x) {
    const int64_t i = e / f, j = e % f;
    float dg, du;
    swiglu_grads(load(dout, e), load(gate_up, i * 2 * f + j), load(gate_up, i * 2 * f + f + j),
                 dg, du);
    store(dgate_up, i * 2 * f + j, dg);
    store(dgate_up, i * 2 * f + f + j, du);
  }
}

// The same two kernels over rows (blockIdx.y, strided) and groups of four columns (x): no
// 64-bit division per element, 16-byte (f32) or 8-byte (bf16) accesses. For f a multiple of 4
// and buffers aligned to four elements.
template <typename InT, typename OutT>
__global__ void swiglu_forward4_kernel(const InT* gate_up, int64_t n, int64_t f4, OutT* out) {
  const int64_t j = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (j >= f4) return;
  for (int64_t i = blockIdx.y; i < n; i += gridDim.y) {
    const Vec4 g = load4(gate_up, i * 2 * f4 + j), u = load4(gate_up, i * 2 * f4 + f4 + j);
    store4(out, i * f4 + j,
           Vec4{silu_times(g.x, u.x), silu_times(g.y, u.y), silu_times(g.z, u.z),
                silu_times(g.w, u.w)});
  }
}

template <typename InT, typename OutT>
__global__ void swiglu_backward4_kernel(const InT* dout, const InT* gate_up, int64_t n,
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

// Calls fn with null pointers of the C++ types of (in, out): f32 or bf16 each.
template <typename Fn>
void dispatch_in_out(DType in, DType out, const char* op, Fn&& fn) {
  VACC_CHECK((in == DType::F32 || in == DType::BF16) && (out == DType::F32 || out == DType::BF16),
             op, ": inputs and outputs must be f32 or bf16, got ", dtype_name(in), " and ",
             dtype_name(out));
  auto with_out = [&](auto in_tag) {
    if (out == DType::F32)
      fn(in_tag, static_cast<float*>(nullptr));
    else
      fn(in_tag, static_cast<bf16*>(nullptr));
  };
  if (in == DType::F32)
    with_out(static_cast<const float*>(nullptr));
  else
    with_out(static_cast<const bf16*>(nullptr));
}

}  // namespace

void swiglu_forward(const void* gate_up, DType in_dtype, int64_t n, int64_t f, void* out,
                    DType out_dtype, cudaStream_t stream) {
  if (n == 0 || f == 0) return;
  dispatch_in_out(in_dtype, out_dtype, "swiglu_forward", [&](auto in_tag, auto out_tag) {
    using In = std::remove_const_t<std::remove_pointer_t<decltype(in_tag)>>;
    using Out = std::remove_pointer_t<decltype(out_tag)>;
    const In* gu = static_cast<const In*>(gate_up);
    Out* o = static_cast<Out*>(out);
    if (f % 4 == 0 && vec4_aligned(gu, sizeof(In)) && vec4_aligned(o, sizeof(Out)))
      swiglu_forward4_kernel<<<rows_by_groups(n, f / 4), kThreads, 0, stream>>>(gu, n, f / 4, o);
    else
      swiglu_forward_kernel<<<grid_for(n * f, kThreads), kThreads, 0, stream>>>(gu, n, f, o);
  });
  VACC_CUDA_CHECK_LAUNCH("swiglu_forward_kernel");
}

void swiglu_backward(const void* dout, const void* gate_up, DType in_dtype, int64_t n, int64_t f,
                     void* dgate_up, DType dgate_up_dtype, cudaStream_t stream) {
  if (n == 0 || f == 0) return;
  dispatch_in_out(in_dtype, dgate_up_dtype, "swiglu_backward", [&](auto in_tag, auto out_tag) {
    using In = std::remove_const_t<std::remove_pointer_t<decltype(in_tag)>>;
    using Out = std::remove_pointer_t<decltype(out_tag)>;
    const In* dy = static_cast<const In*>(dout);
    const In* gu = static_cast<const In*>(gate_up);
    Out* d = static_cast<Out*>(dgate_up);
    if (f % 4 == 0 && vec4_aligned(dy, sizeof(In)) && vec4_aligned(gu, sizeof(In)) &&
        vec4_aligned(d, sizeof(Out)))
      swiglu_backward4_kernel<<<rows_by_groups(n, f / 4), kThreads, 0, stream>>>(dy, gu, n, f / 4,
                                                                               d);
    else
      swiglu_backward_kernel<<<grid_for(n * f, kThreads), kThreads, 0, stream>>>(dy, gu, n, f, d);
  });
  VACC_CUDA_CHECK_LAUNCH("swiglu_backward_kernel");
}

}  // namespace vacc::cuda
