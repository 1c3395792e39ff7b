// Causal attention of new tokens over a KV cache (text generation), on the GPU. First the new
// tokens' k and v heads are appended to the caches; then one block per (new token, q head)
// streams the visible cache rows in chunks of 128 keys with an online softmax (f32): each
// thread scores one key of the chunk, the block finds the chunk's max and sum, and the threads
// then accumulate the chunk's value rows over the head's dimensions.
#include "vacc/core/error.h"
#include "vacc/kernels/cuda/cuda_check.h"
#include "vacc/kernels/cuda/cuda_kernels.h"
#include "vacc/kernels/cuda/device_math.cuh"

namespace vacc::cuda {
namespace {

constexpr int kThreads = 128;  // keys per chunk
constexpr int kDimsPerThread = int((kMaxHeadDim + kThreads - 1) / kThreads);

// past_len is the first new token's position, read here rather than passed from the host so
// that a graph of a decode step replays at any position. Whether the new tokens fit the
// cache: true, or (append_kv_kernel's first block reports it) false.
__device__ bool fits_cache(const int32_t* positions, int64_t n_new, int64_t max_len,
                           int64_t* past_len) {
  *past_len = positions[0];
  return *past_len >= 0 && *past_len + n_new <= max_len;
}

// Rows past_len + i of k_cache and v_cache = new token i's k and v heads. A row of qkv holds
// the q heads in [0, q_width), the k heads in [q_width, q_width + kv_width), then the v heads.
__global__ void append_kv_kernel(const float* qkv, int64_t width, int64_t q_width,
                                 int64_t kv_width, float* k_cache, float* v_cache,
                                 const int32_t* positions, int64_t n_new, int64_t max_len,
                                 DeviceError* error) {
  int64_t past_len = 0;
  if (!fits_cache(positions, n_new, max_len, &past_len)) {
    if (blockIdx.x == 0 && threadIdx.x == 0 &&
        atomicCAS(&error->code, kNoError, kDecodeCacheFull) == kNoError) {
      error->a = n_new;
      error->b = past_len;
      error->c = max_len;
    }
    return;
  }
  const int64_t i = blockIdx.x;
  const float* row = qkv + i * width;
  float* krow = k_cache + (past_len + i) * kv_width;
  float* vrow = v_cache + (past_len + i) * kv_width;
  for (int64_t c = threadIdx.x; c < kv_width; c += blockDim.x) {
    krow[c] = row[q_width + c];
    vrow[c] = row[q_width + kv_width + c];
  }
}

template <typename OutT>
__global__ void __launch_bounds__(kThreads)
    attention_decode_kernel(const float* qkv, int64_t width, int Hq, int Hkv, int D, float scale,
                            const float* k_cache, const float* v_cache,
                            const int32_t* positions, int64_t n_new, int64_t max_len, OutT* out) {
  int64_t past_len = 0;
  if (!fits_cache(positions, n_new, max_len, &past_len)) return;  // reported by append_kv
  __shared__ float q[kMaxHeadDim];
  __shared__ float p[kThreads];
  __shared__ float scratch[32];
  const int h = blockIdx.x;
  const int64_t i = blockIdx.y;
  const int g = h / (Hq / Hkv);
  const int64_t kv_width = int64_t(Hkv) * D;
  const float* kb = k_cache + int64_t(g) * D;
  const float* vb = v_cache + int64_t(g) * D;
  const int64_t nkeys = past_len + i + 1;  // causal: keys [0, past_len + i]
  for (int d = threadIdx.x; d < D; d += blockDim.x) q[d] = qkv[i * width + int64_t(h) * D + d] * scale;
  __syncthreads();

  float m = kNegInf, l = 0.0f, acc[kDimsPerThread];
#pragma unroll
  for (int k = 0; k < kDimsPerThread; ++k) acc[k] = 0.0f;

  for (int64_t c0 = 0; c0 < nkeys; c0 += kThreads) {
    const int64_t j = c0 + threadIdx.x;
    float s = kNegInf;
    if (j < nkeys) {
      const float* krow = kb + j * kv_width;
      s = 0.0f;
      for (int d = 0; d < D; ++d) s += q[d] * krow[d];
    }
    const float m_new = fmaxf(m, block_max(s, scratch));  // finite: key c0 <= past_len + i
    const float pj = s == kNegInf ? 0.0f : expf(s - m_new);
    p[threadIdx.x] = pj;
    const float alpha = m == kNegInf ? 0.0f : expf(m - m_new);
    l = l * alpha + block_sum(pj, scratch);  // synchronises: p is complete
    m = m_new;
    const int64_t chunk = nkeys - c0 < kThreads ? nkeys - c0 : kThreads;
#pragma unroll
    for (int k = 0; k < kDimsPerThread; ++k) {
      const int d = threadIdx.x + k * kThreads;
      if (d < D) {
        float a = acc[k] * alpha;
        for (int64_t t = 0; t < chunk; ++t) a += p[t] * vb[(c0 + t) * kv_width + d];
        acc[k] = a;
      }
    }
    __syncthreads();  // p is read before the next chunk overwrites it
  }

  const float inv = 1.0f / l;
#pragma unroll
  for (int k = 0; k < kDimsPerThread; ++k) {
    const int d = threadIdx.x + k * kThreads;
    if (d < D) store(out, i * int64_t(Hq) * D + int64_t(h) * D + d, acc[k] * inv);
  }
}

}  // namespace

void attention_decode(const float* qkv, int64_t n_new, int64_t q_heads, int64_t kv_heads,
                      int64_t head_dim, float* k_cache, float* v_cache, int64_t max_len,
                      const int32_t* positions, void* out, DType out_dtype, DeviceError* error,
                      cudaStream_t stream) {
  VACC_CHECK(head_dim > 0 && head_dim <= kMaxHeadDim, "attention_decode: head_dim ", head_dim,
             " is not supported by the CUDA kernels (at most ", kMaxHeadDim, ")");
  if (n_new == 0) return;
  VACC_CHECK(n_new <= 65535, "attention_decode: at most 65535 new tokens per call, got ", n_new);
  const int64_t D = head_dim, width = (q_heads + 2 * kv_heads) * D;
  append_kv_kernel<<<unsigned(n_new), 256, 0, stream>>>(qkv, width, q_heads * D, kv_heads * D,
                                                        k_cache, v_cache, positions, n_new,
                                                        max_len, error);
  VACC_CUDA_CHECK_LAUNCH("append_kv_kernel");
  const dim3 grid{unsigned(q_heads), unsigned(n_new)};
  const float scale = 1.0f / sqrtf(float(D));
  if (out_dtype == DType::F32)
    attention_decode_kernel<<<grid, kThreads, 0, stream>>>(
        qkv, width, int(q_heads), int(kv_heads), int(D), scale, k_cache, v_cache, positions,
        n_new, max_len, static_cast<float*>(out));
  else if (out_dtype == DType::BF16)
    attention_decode_kernel<<<grid, kThreads, 0, stream>>>(
        qkv, width, int(q_heads), int(kv_heads), int(D), scale, k_cache, v_cache, positions,
        n_new, max_len, static_cast<bf16*>(out));
  else
    fail("attention_decode: out must be f32 or bf16, got ", dtype_name(out_dtype));
  VACC_CUDA_CHECK_LAUNCH("attention_decode_kernel");
}

}  // namespace vacc::cuda
