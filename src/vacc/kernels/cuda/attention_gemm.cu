// The element-wise and row-wise kernels of attention through batched matrix products
// (attention_gemm.cpp): packing Q, K, V (and dO) per head in bf16 for the tensor cores, the
// causal softmax of a block of score rows, its gradient, and unpacking the results into the
// fused (B*T, heads*head_dim) layouts.
#include "vacc/core/error.h"
#include "vacc/kernels/cuda/cuda_check.h"
#include "vacc/kernels/cuda/cuda_kernels.h"
#include "vacc/kernels/cuda/device_math.cuh"

namespace vacc::cuda {
namespace {

constexpr int kThreads = 256;

// q, k, v (B*Hq, T, d): q head h reads kv head h / group, so k and v repeat per q head.
__global__ void pack_qkv_kernel(const float* qkv, int64_t B, int64_t T, int64_t Hq, int64_t Hkv,
                                int64_t d, bf16* q, bf16* k, bf16* v) {
  const int64_t n = B * Hq * T * d, width = (Hq + 2 * Hkv) * d, group = Hq / Hkv;
  for (int64_t e = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; e < n;
       e += int64_t(gridDim.x) * blockDim.x) {
    const int64_t dd = e % d, t = (e / d) % T, bh = e / (d * T);
    const int64_t b = bh / Hq, h = bh % Hq, g = h / group;
    const float* row = qkv + (b * T + t) * width;
    q[e] = to_bf16(row[h * d + dd]);
    k[e] = to_bf16(row[(Hq + g) * d + dd]);
    v[e] = to_bf16(row[(Hq + Hkv + g) * d + dd]);
  }
}

// One block per score row r (query i = r % T): p_j = exp(s_j - lse) for j <= i, 0 after.
// compute_lse: lse = max + log(sum exp(s - max)) is computed and written; else it is read.
__global__ void causal_softmax_kernel(const float* s, int64_t T, int64_t rows, bf16* p,
                                      float* lse, bool compute_lse) {
  __shared__ float scratch[32];
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const int64_t i = r % T;
    const float* srow = s + r * T;
    bf16* prow = p + r * T;
    float l;
    if (compute_lse) {
      float m = kNegInf;
      for (int64_t j = threadIdx.x; j <= i; j += blockDim.x) m = fmaxf(m, srow[j]);
      m = block_max(m, scratch);
      float sum = 0.0f;
      for (int64_t j = threadIdx.x; j <= i; j += blockDim.x) sum += expf(srow[j] - m);
      sum = block_sum(sum, scratch);
      l = m + logf(sum);
      if (threadIdx.x == 0) lse[r] = l;
    } else {
      l = lse[r];
    }
    for (int64_t j = threadIdx.x; j < T; j += blockDim.x)
      prow[j] = to_bf16(j <= i ? expf(srow[j] - l) : 0.0f);
  }
}

// dS = P (dP - D_i), in place over P (zero above the diagonal, where P is).
__global__ void softmax_grad_kernel(bf16* p_ds, const float* dp, const float* D, int64_t T,
                                    int64_t rows) {
  const int64_t n = rows * T;
  for (int64_t e = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; e < n;
       e += int64_t(gridDim.x) * blockDim.x) {
    const int64_t r = e / T;
    p_ds[e] = to_bf16(load(p_ds, e) * (dp[e] - D[r]));
  }
}

// One warp per (b*Hq + h, t): D = dO . O over the head's d values; dO packed (B*Hq, T, d) bf16.
// D is formed from the bf16 dO that dP = dO V^T is formed from: dS = P (dP - D) is a small
// difference of large terms where a row attends to similar values, and a D from the unrounded
// dO leaves dO's rounding in it undamped (the q and k gradients of tests/reference's Qwen2 case
// were 3-10% from PyTorch's float64 with it, against 1-2% now and on the CPU).
template <typename IoT>
__global__ void pack_dout_kernel(const IoT* dout, const IoT* out, int64_t B, int64_t T,
                                 int64_t Hq, int64_t d, bf16* dout_packed, float* D) {
  const int lane = threadIdx.x & 31;
  const int64_t warps = int64_t(gridDim.x) * (blockDim.x / 32), rows = B * Hq * T;
  for (int64_t r = int64_t(blockIdx.x) * (blockDim.x / 32) + threadIdx.x / 32; r < rows;
       r += warps) {
    const int64_t t = r % T, bh = r / T, b = bh / Hq, h = bh % Hq;
    const int64_t base = (b * T + t) * Hq * d + h * d;
    float acc = 0.0f;
    for (int64_t e = lane; e < d; e += 32) {
      const float g = bf16_rounded(load(dout, base + e));
      acc += g * load(out, base + e);
      dout_packed[r * d + e] = to_bf16(g);
    }
    acc = warp_sum(acc);
    if (lane == 0) D[r] = acc;
  }
}

// out (B*T, Hq*d) from o (B*Hq, T, d).
template <typename OutT>
__global__ void unpack_out_kernel(const float* o, int64_t B, int64_t T, int64_t Hq, int64_t d,
                                  OutT* out) {
  const int64_t n = B * T * Hq * d;
  for (int64_t e = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; e < n;
       e += int64_t(gridDim.x) * blockDim.x) {
    const int64_t col = e % (Hq * d), bt = e / (Hq * d), b = bt / T, t = bt % T;
    const int64_t h = col / d, dd = col % d;
    store(out, e, o[((b * Hq + h) * T + t) * d + dd]);
  }
}

// dqkv (B*T, (Hq + 2 Hkv) d) from dq, dk, dv (B*Hq, T, d): a kv head's gradient sums those of
// the q heads of its group, in head order.
__global__ void unpack_grads_kernel(const float* dq, const float* dk, const float* dv, int64_t B,
                                    int64_t T, int64_t Hq, int64_t Hkv, int64_t d, float* dqkv) {
  const int64_t width = (Hq + 2 * Hkv) * d, n = B * T * width, group = Hq / Hkv;
  for (int64_t e = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; e < n;
       e += int64_t(gridDim.x) * blockDim.x) {
    const int64_t col = e % width, bt = e / width, b = bt / T, t = bt % T;
    const int64_t head = col / d, dd = col % d;
    if (head < Hq) {
      dqkv[e] = dq[((b * Hq + head) * T + t) * d + dd];
      continue;
    }
    const bool is_k = head < Hq + Hkv;
    const int64_t g = is_k ? head - Hq : head - Hq - Hkv;
    const float* src = is_k ? dk : dv;
    float acc = 0.0f;
    for (int64_t j = 0; j < group; ++j) acc += src[((b * Hq + g * group + j) * T + t) * d + dd];
    dqkv[e] = acc;
  }
}

}  // namespace

void attention_pack_qkv(const float* qkv, int64_t B, int64_t T, int64_t Hq, int64_t Hkv,
                        int64_t d, void* q, void* k, void* v, cudaStream_t stream) {
  pack_qkv_kernel<<<grid_for(B * Hq * T * d, kThreads), kThreads, 0, stream>>>(
      qkv, B, T, Hq, Hkv, d, static_cast<bf16*>(q), static_cast<bf16*>(k), static_cast<bf16*>(v));
  VACC_CUDA_CHECK_LAUNCH("pack_qkv_kernel");
}

void attention_causal_softmax(const float* s, int64_t T, int64_t rows, void* p, float* lse,
                              bool compute_lse, cudaStream_t stream) {
  const unsigned blocks = grid_for(rows, 1, 1 << 16);
  causal_softmax_kernel<<<blocks, kThreads, 0, stream>>>(s, T, rows, static_cast<bf16*>(p), lse,
                                                         compute_lse);
  VACC_CUDA_CHECK_LAUNCH("causal_softmax_kernel");
}

void attention_softmax_grad(void* p_ds, const float* dp, const float* D, int64_t T, int64_t rows,
                            cudaStream_t stream) {
  softmax_grad_kernel<<<grid_for(rows * T, kThreads), kThreads, 0, stream>>>(
      static_cast<bf16*>(p_ds), dp, D, T, rows);
  VACC_CUDA_CHECK_LAUNCH("softmax_grad_kernel");
}

void attention_pack_dout(const void* dout, const void* out, DType io_dtype, int64_t B, int64_t T,
                         int64_t Hq, int64_t d, void* dout_packed, float* D,
                         cudaStream_t stream) {
  const unsigned blocks = grid_for(B * Hq * T, kThreads / 32);
  bf16* packed = static_cast<bf16*>(dout_packed);
  if (io_dtype == DType::F32)
    pack_dout_kernel<<<blocks, kThreads, 0, stream>>>(static_cast<const float*>(dout),
                                                      static_cast<const float*>(out), B, T, Hq,
                                                      d, packed, D);
  else if (io_dtype == DType::BF16)
    pack_dout_kernel<<<blocks, kThreads, 0, stream>>>(static_cast<const bf16*>(dout),
                                                      static_cast<const bf16*>(out), B, T, Hq, d,
                                                      packed, D);
  else
    fail("attention_backward: out must be f32 or bf16, got ", dtype_name(io_dtype));
  VACC_CUDA_CHECK_LAUNCH("pack_dout_kernel");
}

void attention_unpack_out(const float* o, int64_t B, int64_t T, int64_t Hq, int64_t d, void* out,
                          DType out_dtype, cudaStream_t stream) {
  const unsigned blocks = grid_for(B * T * Hq * d, kThreads);
  if (out_dtype == DType::F32)
    unpack_out_kernel<<<blocks, kThreads, 0, stream>>>(o, B, T, Hq, d, static_cast<float*>(out));
  else if (out_dtype == DType::BF16)
    unpack_out_kernel<<<blocks, kThreads, 0, stream>>>(o, B, T, Hq, d, static_cast<bf16*>(out));
  else
    fail("attention_forward: out must be f32 or bf16, got ", dtype_name(out_dtype));
  VACC_CUDA_CHECK_LAUNCH("unpack_out_kernel");
}

void attention_unpack_grads(const float* dq, const float* dk, const float* dv, int64_t B,
                            int64_t T, int64_t Hq, int64_t Hkv, int64_t d, float* dqkv,
                            cudaStream_t stream) {
  unpack_grads_kernel<<<grid_for(B * T * (Hq + 2 * Hkv) * d, kThreads), kThreads, 0, stream>>>(
      dq, dk, dv, B, T, Hq, Hkv, d, dqkv);
  VACC_CUDA_CHECK_LAUNCH("unpack_grads_kernel");
}

}  // namespace vacc::cuda
