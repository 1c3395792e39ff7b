// The per-row kernels of the chunked classifier + cross-entropy and of its vocabulary-parallel
// pieces (classifier_cross_entropy.cpp does the products): one block per logits row computes
// its max, sum of exponentials, loss or log-sum-exp, and gradient; helpers gather and scatter
// the chunk's rows and sum the row losses in a fixed order.
#include "vacc/kernels/cuda/cuda_check.h"
#include "vacc/kernels/cuda/cuda_kernels.h"
#include "vacc/kernels/cuda/device_math.cuh"

namespace vacc::cuda {
namespace {

constexpr int kThreads = 512;

// A logits row's max and sum of exp(x - max), to every thread of the block, in ONE read of the
// row: each thread keeps a running (max, sum) and rescales its sum when its max grows; the
// block then rescales every thread's sum to the block's max. Rows of a multiple of 4 elements
// at a 4-element boundary (the usual vocabulary) are read four at a time (16-byte f32, 8-byte
// bf16). T: float (f32 products) or bf16 (mixed precision: the logits as the product wrote them).
struct RowStats {
  float max, sum;
};
template <typename T>
__device__ __forceinline__ bool vec4_row(const T* row, int64_t V) {
  return V % 4 == 0 && reinterpret_cast<uintptr_t>(row) % (4 * sizeof(T)) == 0;
}
__device__ __forceinline__ void running_add(float x, float& m, float& s) {
  if (x > m) {
    s = s * expf(m - x) + 1.0f;  // m = -inf at first: 0 * 0 + 1
    m = x;
  } else {
    s += expf(x - m);
  }
}
template <typename T>
__device__ RowStats row_softmax_stats(const T* row, int64_t V, float* scratch) {
  float m = kNegInf, s = 0.0f;
  if (vec4_row(row, V)) {
    for (int64_t j = threadIdx.x; j < V / 4; j += blockDim.x) {
      const Vec4 q = load4(row, j);
      running_add(q.x, m, s);
      running_add(q.y, m, s);
      running_add(q.z, m, s);
      running_add(q.w, m, s);
    }
  } else {
    for (int64_t j = threadIdx.x; j < V; j += blockDim.x) running_add(load(row, j), m, s);
  }
  const float mx = block_max(m, scratch);
  const float sum = block_sum(s > 0.0f ? s * expf(m - mx) : 0.0f, scratch);
  return {mx, sum};
}

// Overwrites every element of a row with g(j, logit_j) (rounded to T): each element is read
// once and written once, four at a time where the row allows it.
template <typename T, typename Grad>
__device__ __forceinline__ void write_row_gradient(T* row, int64_t V, Grad g) {
  if (vec4_row(row, V)) {
    for (int64_t j = threadIdx.x; j < V / 4; j += blockDim.x) {
      const Vec4 q = load4(row, j);
      store4(row, j,
             Vec4{g(4 * j, q.x), g(4 * j + 1, q.y), g(4 * j + 2, q.z), g(4 * j + 3, q.w)});
    }
    return;
  }
  for (int64_t j = threadIdx.x; j < V; j += blockDim.x) store(row, j, g(j, load(row, j)));
}

template <typename T>
__global__ void __launch_bounds__(kThreads)
    softmax_cross_entropy_kernel(T* logits, int64_t V, const int32_t* rows,
                                 const int32_t* labels, bool want_grad, float grad_scale,
                                 float* row_loss) {
  __shared__ float scratch[32];
  const int64_t r = blockIdx.x;
  T* lr = logits + r * V;
  const int32_t label = labels[rows[r]];
  const float label_logit = load(lr, label);  // read by every thread before any overwrites it
  const RowStats st = row_softmax_stats(lr, V, scratch);
  if (threadIdx.x == 0) row_loss[r] = logf(st.sum) + st.max - label_logit;
  if (!want_grad) return;
  __syncthreads();  // every thread has read the label's logit
  const float mx = st.max, k = grad_scale / st.sum;
  write_row_gradient(lr, V, [=](int64_t j, float x) {
    const float gj = expf(x - mx) * k;
    return j == label ? gj - grad_scale : gj;
  });
}

// Vocabulary shard, forward: lse and the label's logit (0 when outside the shard) of row r,
// written at its input row rows[r].
template <typename T>
__global__ void __launch_bounds__(kThreads)
    shard_logsumexp_kernel(const T* logits, int64_t V, const int32_t* rows,
                           const int32_t* labels, int64_t vocab_start, float* lse,
                           float* target_logit) {
  __shared__ float scratch[32];
  const int64_t r = blockIdx.x;
  const T* lr = logits + r * V;
  const int64_t i = rows[r];
  const RowStats st = row_softmax_stats(lr, V, scratch);
  if (threadIdx.x == 0) {
    const int64_t col = int64_t(labels[i]) - vocab_start;
    lse[i] = logf(st.sum) + st.max;
    target_logit[i] = col >= 0 && col < V ? load(lr, col) : 0.0f;
  }
}

// Vocabulary shard, backward: dlogits = grad_scale * (exp(logit - lse_global) - onehot) for
// row r (input row rows[r]), in place.
template <typename T>
__global__ void __launch_bounds__(kThreads)
    shard_softmax_grad_kernel(T* logits, int64_t V, const int32_t* rows, const int32_t* labels,
                              int64_t vocab_start, const float* lse_global, float grad_scale) {
  const int64_t r = blockIdx.x;
  const int64_t i = rows[r];
  const float g = lse_global[i];
  const int64_t col = int64_t(labels[i]) - vocab_start;
  write_row_gradient(logits + r * V, V, [=](int64_t j, float x) {
    const float d = grad_scale * expf(x - g);
    return j == col ? d - grad_scale : d;
  });
}

template <typename T>
__global__ void gather_rows_kernel(const T* src, const int32_t* rows, int64_t C, T* dst) {
  const int64_t r = blockIdx.x;
  const T* s = src + int64_t(rows[r]) * C;
  T* d = dst + r * C;
  for (int64_t j = threadIdx.x; j < C; j += blockDim.x) d[j] = s[j];
}

__global__ void scatter_rows_kernel(const float* src, const int32_t* rows, int64_t C, float* dst) {
  const int64_t r = blockIdx.x;
  const float* s = src + r * C;
  float* d = dst + int64_t(rows[r]) * C;
  for (int64_t j = threadIdx.x; j < C; j += blockDim.x) d[j] = s[j];
}

__global__ void zero_ignored_rows_kernel(float* x, const int32_t* labels, int64_t C) {
  const int64_t i = blockIdx.x;
  if (labels[i] != -100) return;
  for (int64_t j = threadIdx.x; j < C; j += blockDim.x) x[i * C + j] = 0.0f;
}

__global__ void add_loss_sum_kernel(const float* row_loss, int64_t m, float* loss_sum) {
  __shared__ double scratch[32];
  double s = 0.0;
  for (int64_t i = threadIdx.x; i < m; i += blockDim.x) s += double(row_loss[i]);
  s = block_sum(s, scratch);
  if (threadIdx.x == 0) loss_sum[0] += float(s);
}

// Calls fn with the logits chunk as float* or bf16* (its dtype).
template <typename Fn>
void with_logits_type(void* logits, DType dtype, Fn&& fn) {
  if (dtype == DType::BF16)
    fn(static_cast<bf16*>(logits));
  else
    fn(static_cast<float*>(logits));
}

}  // namespace

void softmax_cross_entropy_rows(void* logits, DType logits_dtype, int64_t R, int64_t V,
                                const int32_t* rows, const int32_t* labels, bool want_grad,
                                float grad_scale, float* row_loss, cudaStream_t stream) {
  if (R == 0) return;
  with_logits_type(logits, logits_dtype, [&](auto* l) {
    softmax_cross_entropy_kernel<<<unsigned(R), kThreads, 0, stream>>>(
        l, V, rows, labels, want_grad, grad_scale, row_loss);
  });
  VACC_CUDA_CHECK_LAUNCH("softmax_cross_entropy_kernel");
}

void shard_logsumexp_rows(const void* logits, DType logits_dtype, int64_t R, int64_t V,
                          const int32_t* rows, const int32_t* labels, int64_t vocab_start,
                          float* lse, float* target_logit, cudaStream_t stream) {
  if (R == 0) return;
  with_logits_type(const_cast<void*>(logits), logits_dtype, [&](auto* l) {
    shard_logsumexp_kernel<<<unsigned(R), kThreads, 0, stream>>>(l, V, rows, labels,
                                                                 vocab_start, lse, target_logit);
  });
  VACC_CUDA_CHECK_LAUNCH("shard_logsumexp_kernel");
}

void shard_softmax_grad_rows(void* logits, DType logits_dtype, int64_t R, int64_t V,
                             const int32_t* rows, const int32_t* labels, int64_t vocab_start,
                             const float* lse_global, float grad_scale, cudaStream_t stream) {
  if (R == 0) return;
  with_logits_type(logits, logits_dtype, [&](auto* l) {
    shard_softmax_grad_kernel<<<unsigned(R), kThreads, 0, stream>>>(
        l, V, rows, labels, vocab_start, lse_global, grad_scale);
  });
  VACC_CUDA_CHECK_LAUNCH("shard_softmax_grad_kernel");
}

void gather_rows(const void* src, const int32_t* rows, int64_t R, int64_t C, size_t elem_size,
                 void* dst, cudaStream_t stream) {
  if (R == 0 || C == 0) return;
  if (elem_size == 2)
    gather_rows_kernel<<<unsigned(R), 256, 0, stream>>>(static_cast<const uint16_t*>(src), rows, C,
                                                        static_cast<uint16_t*>(dst));
  else
    gather_rows_kernel<<<unsigned(R), 256, 0, stream>>>(static_cast<const float*>(src), rows, C,
                                                        static_cast<float*>(dst));
  VACC_CUDA_CHECK_LAUNCH("gather_rows_kernel");
}

void scatter_rows(const float* src, const int32_t* rows, int64_t R, int64_t C, float* dst,
                  cudaStream_t stream) {
  if (R == 0 || C == 0) return;
  scatter_rows_kernel<<<unsigned(R), 256, 0, stream>>>(src, rows, C, dst);
  VACC_CUDA_CHECK_LAUNCH("scatter_rows_kernel");
}

void zero_ignored_rows(float* x, const int32_t* labels, int64_t N, int64_t C, cudaStream_t stream) {
  if (N == 0 || C == 0) return;
  zero_ignored_rows_kernel<<<unsigned(N), 256, 0, stream>>>(x, labels, C);
  VACC_CUDA_CHECK_LAUNCH("zero_ignored_rows_kernel");
}

void add_loss_sum(const float* row_loss, int64_t m, float* loss_sum, cudaStream_t stream) {
  if (m == 0) return;
  add_loss_sum_kernel<<<1, 1024, 0, stream>>>(row_loss, m, loss_sum);
  VACC_CUDA_CHECK_LAUNCH("add_loss_sum_kernel");
}

}  // namespace vacc::cuda
