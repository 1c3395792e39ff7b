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

__global__ void __launch_bounds__(kThreads)
    softmax_cross_entropy_kernel(float* logits, int64_t V, const int32_t* rows,
                                 const int32_t* labels, bool want_grad, float grad_scale,
                                 bf16* dlogits_bf16, float* row_loss) {
  __shared__ float scratch[32];
  const int64_t r = blockIdx.x;
  float* lr = logits + r * V;
  const int32_t label = labels[rows[r]];
  float mx = kNegInf;
  for (int64_t j = threadIdx.x; j < V; j += blockDim.x) mx = fmaxf(mx, lr[j]);
  mx = block_max(mx, scratch);
  float sum = 0.0f;
  for (int64_t j = threadIdx.x; j < V; j += blockDim.x) sum += expf(lr[j] - mx);
  sum = block_sum(sum, scratch);
  const float label_logit = lr[label];  // read by every thread before any overwrites it
  if (threadIdx.x == 0) row_loss[r] = logf(sum) + mx - label_logit;
  if (!want_grad) return;
  __syncthreads();
  const float k = grad_scale / sum;
  for (int64_t j = threadIdx.x; j < V; j += blockDim.x) {
    float gj = expf(lr[j] - mx) * k;
    if (j == label) gj -= grad_scale;
    if (dlogits_bf16)
      dlogits_bf16[r * V + j] = to_bf16(gj);
    else
      lr[j] = gj;
  }
}

// Vocabulary shard, forward: lse and the label's logit (0 when outside the shard) of row r,
// written at its input row rows[r].
__global__ void __launch_bounds__(kThreads)
    shard_logsumexp_kernel(const float* logits, int64_t V, const int32_t* rows,
                           const int32_t* labels, int64_t vocab_start, float* lse,
                           float* target_logit) {
  __shared__ float scratch[32];
  const int64_t r = blockIdx.x;
  const float* lr = logits + r * V;
  const int64_t i = rows[r];
  float mx = kNegInf;
  for (int64_t j = threadIdx.x; j < V; j += blockDim.x) mx = fmaxf(mx, lr[j]);
  mx = block_max(mx, scratch);
  float sum = 0.0f;
  for (int64_t j = threadIdx.x; j < V; j += blockDim.x) sum += expf(lr[j] - mx);
  sum = block_sum(sum, scratch);
  if (threadIdx.x == 0) {
    const int64_t col = int64_t(labels[i]) - vocab_start;
    lse[i] = logf(sum) + mx;
    target_logit[i] = col >= 0 && col < V ? lr[col] : 0.0f;
  }
}

// Vocabulary shard, backward: dlogits = grad_scale * (exp(logit - lse_global) - onehot) for
// row r (input row rows[r]), in place (f32) or into dlogits_bf16.
__global__ void shard_softmax_grad_kernel(float* logits, int64_t V, const int32_t* rows,
                                          const int32_t* labels, int64_t vocab_start,
                                          const float* lse_global, float grad_scale,
                                          bf16* dlogits_bf16) {
  const int64_t r = blockIdx.x;
  float* lr = logits + r * V;
  const int64_t i = rows[r];
  const float g = lse_global[i];
  const int64_t col = int64_t(labels[i]) - vocab_start;
  for (int64_t j = threadIdx.x; j < V; j += blockDim.x) {
    float d = grad_scale * expf(lr[j] - g);
    if (j == col) d -= grad_scale;
    if (dlogits_bf16)
      dlogits_bf16[r * V + j] = to_bf16(d);
    else
      lr[j] = d;
  }
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

}  // namespace

void softmax_cross_entropy_rows(float* logits, int64_t R, int64_t V, const int32_t* rows,
                                const int32_t* labels, bool want_grad, float grad_scale,
                                bf16* dlogits_bf16, float* row_loss, cudaStream_t stream) {
  if (R == 0) return;
  softmax_cross_entropy_kernel<<<unsigned(R), kThreads, 0, stream>>>(
      logits, V, rows, labels, want_grad, grad_scale, dlogits_bf16, row_loss);
  VACC_CUDA_CHECK_LAUNCH("softmax_cross_entropy_kernel");
}

void shard_logsumexp_rows(const float* logits, int64_t R, int64_t V, const int32_t* rows,
                          const int32_t* labels, int64_t vocab_start, float* lse,
                          float* target_logit, cudaStream_t stream) {
  if (R == 0) return;
  shard_logsumexp_kernel<<<unsigned(R), kThreads, 0, stream>>>(logits, V, rows, labels,
                                                               vocab_start, lse, target_logit);
  VACC_CUDA_CHECK_LAUNCH("shard_logsumexp_kernel");
}

void shard_softmax_grad_rows(float* logits, int64_t R, int64_t V, const int32_t* rows,
                             const int32_t* labels, int64_t vocab_start, const float* lse_global,
                             float grad_scale, bf16* dlogits_bf16, cudaStream_t stream) {
  if (R == 0) return;
  shard_softmax_grad_kernel<<<unsigned(R), kThreads, 0, stream>>>(
      logits, V, rows, labels, vocab_start, lse_global, grad_scale, dlogits_bf16);
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
