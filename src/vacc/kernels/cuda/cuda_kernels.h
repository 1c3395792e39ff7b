// The CUDA kernels' launchers on raw device pointers, one .cu file per op beside this header
// (the matrix products are in matmul_cublaslt.h). CudaBackend (cuda_backend.cpp) checks the
// tensors' shapes and dtypes and calls these; see backend.h for what each op computes. Every
// launcher issues its work on `stream` and returns without waiting for it.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "vacc/core/dtype.h"

namespace vacc::cuda {

// Errors found by kernels (bad input that only the device sees) are written here, in device
// memory, and reported by CudaBackend at its next synchronising call. The first error wins.
struct DeviceError {
  int code;  // 0: none; see DeviceErrorCode
  int pad;
  long long a, b, c;
};
enum DeviceErrorCode : int { kNoError = 0, kRopePositionOutOfRange = 1, kDecodeCacheFull = 2 };

// ---- elementwise.cu ----
void convert(const void* src, DType src_dtype, void* dst, DType dst_dtype, int64_t n,
             cudaStream_t stream);
void fill(void* dst, DType dtype, float value, int64_t n, cudaStream_t stream);
void add(const float* a, const float* b, float* out, int64_t n, cudaStream_t stream);
void scale(float* x, float s, int64_t n, cudaStream_t stream);
// acc[0] += sum(x^2), summed in double in a fixed order (deterministic); `partials` is device
// scratch of at least kSumPartials doubles.
constexpr int kSumPartials = 1024;
void sum_of_squares(const float* x, int64_t n, float* acc, double* partials, cudaStream_t stream);
// out (N) += column sums of a (M, N), times b (M, N) and row_scale (M) where given: bias_backward
// (a = dy) and RMSNorm's weight gradient (dout * x * rstd). Each column is summed in a fixed
// order, by chunks of rows: `partials` is device scratch of column_sum_chunks(M) * N floats.
int64_t column_sum_chunks(int64_t M);
void column_sums(const float* a, const float* b, const float* row_scale, int64_t M, int64_t N,
                 float* partials, float* out, cudaStream_t stream);
// The second step of a kernel that leaves one row of column partial sums per block (RMSNorm's
// and RoPE's backward): out (N) += the column sums of those `blocks` rows, in a fixed order.
// `scratch` holds block_partials_floats(blocks, N) floats: the partial rows first, then
// column_sums' own.
int64_t block_partials_floats(int64_t blocks, int64_t N);
void add_block_partials(float* scratch, int64_t blocks, int64_t N, float* out,
                        cudaStream_t stream);
// out (M, N) += bias (N) broadcast over rows; out f32 or bf16.
void add_bias_rows(void* out, DType out_dtype, const float* bias, int64_t M, int64_t N,
                   cudaStream_t stream);
// out (M, N) = beta * out + bias (or 0 where bias is null): the product with K = 0.
void scale_add_bias(void* out, DType out_dtype, float beta, const float* bias, int64_t M,
                    int64_t N, cudaStream_t stream);

// ---- embedding.cu ----
void embedding_forward(const int32_t* ids, const float* table, int64_t vocab_start,
                       int64_t vocab_size, int64_t n, int64_t c, float* out, cudaStream_t stream);
// dtable rows += dout rows by token: a row's first occurrence adds its repeats in token order
// (the CPU's order; no atomics, the same bits on every run).
void embedding_backward(const int32_t* ids, const float* dout, int64_t vocab_start,
                        int64_t vocab_size, int64_t n, int64_t c, float* dtable,
                        cudaStream_t stream);

// ---- rmsnorm.cu ----
void rmsnorm_forward(const float* x, const float* weight, float eps, int64_t n, int64_t c,
                     void* out, DType out_dtype, float* rstd, cudaStream_t stream);
// dx = residual (null: 0) + the input gradient; dx_copy (null: none) the same in copy_dtype;
// dweight += the weight gradient. `scratch`: device scratch of
// rmsnorm_backward_scratch_floats(n, c) floats (the weight gradient's partial sums).
int64_t rmsnorm_backward_scratch_floats(int64_t n, int64_t c);
void rmsnorm_backward(const float* dout, const float* x, const float* weight, const float* rstd,
                      int64_t n, int64_t c, const float* residual, float* dx, void* dx_copy,
                      DType copy_dtype, float* dweight, float* scratch, cudaStream_t stream);

// ---- rope.cu ----
// Positions outside [0, max_positions) leave their row unchanged and set kRopePositionOutOfRange.
// x f32 or bf16 (x_dtype), in place; copy (null: none) receives the rows in copy_dtype.
void rope(void* x, DType x_dtype, int64_t n, int64_t row_width, const int32_t* positions,
          const float* cos, const float* sin, int64_t max_positions, int64_t num_heads,
          int64_t head_dim, bool inverse, void* copy, DType copy_dtype, DeviceError* error,
          cudaStream_t stream);
// RoPE's backward with the bias gradient in one pass (Backend::rope_backward_with_bias): dx f32
// rotated back into copy (f32 or bf16) where given, else in place; dbias += the column sums
// of the rotated rows. `scratch`: rope_backward_with_bias_scratch_floats(n, row_width) floats.
int64_t rope_backward_with_bias_scratch_floats(int64_t n, int64_t row_width);
void rope_backward_with_bias(float* dx, int64_t n, int64_t row_width, const int32_t* positions,
                             const float* cos, const float* sin, int64_t max_positions,
                             int64_t num_heads, int64_t head_dim, void* copy, DType copy_dtype,
                             float* dbias, float* scratch, DeviceError* error,
                             cudaStream_t stream);

// ---- swiglu.cu ----
// gate_up (and dout) f32 or bf16 (in_dtype); out / dgate_up f32 or bf16.
void swiglu_forward(const void* gate_up, DType in_dtype, int64_t n, int64_t f, void* out,
                    DType out_dtype, cudaStream_t stream);
void swiglu_backward(const void* dout, const void* gate_up, DType in_dtype, int64_t n, int64_t f,
                     void* dgate_up, DType dgate_up_dtype, cudaStream_t stream);

// ---- attention.cu ----
// The largest head_dim the attention kernels take.
constexpr int64_t kMaxHeadDim = 256;
// qkv (B*T, (Hq + 2 Hkv) D); out (B*T, Hq D) of out_dtype; lse (B, Hq, T).
void attention_forward(const float* qkv, int64_t batch, int64_t seq, int64_t q_heads,
                       int64_t kv_heads, int64_t head_dim, void* out, DType out_dtype, float* lse,
                       cudaStream_t stream);
// Bytes of device scratch attention_backward needs.
size_t attention_backward_scratch_bytes(int64_t batch, int64_t seq, int64_t q_heads,
                                        int64_t head_dim, DType io_dtype);
// dout and out (B*T, Hq D) of io_dtype; dqkv (B*T, (Hq + 2 Hkv) D) overwritten. `scratch` holds
// attention_backward_scratch_bytes (D_i = rowsum(dO * O), and dO in f32 when io is bf16).
void attention_backward(const void* dout, const float* qkv, const void* out, DType io_dtype,
                        const float* lse, int64_t batch, int64_t seq, int64_t q_heads,
                        int64_t kv_heads, int64_t head_dim, float* dqkv, void* scratch,
                        cudaStream_t stream);

// ---- attention_gemm.cu (the pieces of attention_gemm.cpp) ----
// q, k, v (B*Hq, T, d) bf16 from qkv (B*T, (Hq + 2 Hkv) d) f32; k and v repeat per q head.
void attention_pack_qkv(const float* qkv, int64_t B, int64_t T, int64_t Hq, int64_t Hkv,
                        int64_t d, void* q, void* k, void* v, cudaStream_t stream);
// p (rows, T) bf16 = causal softmax of the score rows s (rows, T) f32, row r being query r % T:
// exp(s - lse), zero above the diagonal. compute_lse: lse (rows) is computed and written; else
// the given one is used (the backward's recomputation).
void attention_causal_softmax(const float* s, int64_t T, int64_t rows, void* p, float* lse,
                              bool compute_lse, cudaStream_t stream);
// p_ds (rows, T) bf16: P in, dS = P (dP - D_row) out.
void attention_softmax_grad(void* p_ds, const float* dp, const float* D, int64_t T, int64_t rows,
                            cudaStream_t stream);
// dout_packed (B*Hq, T, d) bf16 from dout (B*T, Hq d); D (B*Hq*T) = rowsum(dO * O) per head.
void attention_pack_dout(const void* dout, const void* out, DType io_dtype, int64_t B, int64_t T,
                         int64_t Hq, int64_t d, void* dout_packed, float* D, cudaStream_t stream);
// out (B*T, Hq d) from o (B*Hq, T, d) f32.
void attention_unpack_out(const float* o, int64_t B, int64_t T, int64_t Hq, int64_t d, void* out,
                          DType out_dtype, cudaStream_t stream);
// dqkv (B*T, (Hq + 2 Hkv) d) from dq, dk, dv (B*Hq, T, d), summing each group's k and v.
void attention_unpack_grads(const float* dq, const float* dk, const float* dv, int64_t B,
                            int64_t T, int64_t Hq, int64_t Hkv, int64_t d, float* dqkv,
                            cudaStream_t stream);

// ---- argmax.cu ----
// out[r] = index of row r's largest value (lowest among equal ones; NaNs never win), or -1
// where it is not finite. x (rows, cols); one block a row.
void argmax_rows(const float* x, int64_t rows, int64_t cols, int32_t* out, cudaStream_t stream);

// ---- token_sampling.cu ----
// out[r] = the token drawn from row r of logits (rows, cols) by the rule of
// kernels/token_sampling_rule.h with the 64 random bits random_bits[r] (as cpu::sample_rows);
// the argmax where the temperature or top_p is 0 or less; -1 where the largest logit is not
// finite. scratch: sample_rows_scratch_bytes(rows, cols) bytes of device memory.
size_t sample_rows_scratch_bytes(int64_t rows, int64_t cols);
void sample_rows(const float* logits, int64_t rows, int64_t cols, const uint64_t* random_bits,
                 float temperature, float top_p, int32_t* out, void* scratch,
                 cudaStream_t stream);

// ---- attention_decode.cu ----
// positions (n_new, on the device): the new tokens' positions, past_len = positions[0]; new
// tokens that do not fit the caches' max_len rows are reported as kDecodeCacheFull.
void attention_decode(const float* qkv, int64_t n_new, int64_t q_heads, int64_t kv_heads,
                      int64_t head_dim, float* k_cache, float* v_cache, int64_t max_len,
                      const int32_t* positions, void* out, DType out_dtype, DeviceError* error,
                      cudaStream_t stream);

// ---- softmax_cross_entropy.cu (the per-row parts of classifier_cross_entropy.cpp) ----
// The logits chunk (R, V) is f32 or, in mixed precision, bf16 (logits_dtype); the gradients
// overwrite it in its dtype. For chunk row r (r < R), the input row rows[r] with label
// labels[rows[r]] (valid, not -100): row_loss[r] = logsumexp(logits row) - logit[label]; if
// want_grad, the row's gradient grad_scale * (softmax - onehot) overwrites the row.
void softmax_cross_entropy_rows(void* logits, DType logits_dtype, int64_t R, int64_t V,
                                const int32_t* rows, const int32_t* labels, bool want_grad,
                                float grad_scale, float* row_loss, cudaStream_t stream);
// Vocabulary-parallel pieces, the logits of a shard holding vocabulary rows [vocab_start,
// vocab_start + V): lse[rows[r]] = logsumexp of row r and target_logit[rows[r]] = the label's
// logit when it is in the shard, else 0.
void shard_logsumexp_rows(const void* logits, DType logits_dtype, int64_t R, int64_t V,
                          const int32_t* rows, const int32_t* labels, int64_t vocab_start,
                          float* lse, float* target_logit, cudaStream_t stream);
// Row r's gradient grad_scale * (exp(logit - lse_global[rows[r]]) - onehot(label in shard))
// overwrites the logits row.
void shard_softmax_grad_rows(void* logits, DType logits_dtype, int64_t R, int64_t V,
                             const int32_t* rows, const int32_t* labels, int64_t vocab_start,
                             const float* lse_global, float grad_scale, cudaStream_t stream);
// dst (R, C) = src rows rows[0..R) of (*, C); element size 2 or 4 bytes.
void gather_rows(const void* src, const int32_t* rows, int64_t R, int64_t C, size_t elem_size,
                 void* dst, cudaStream_t stream);
// dst rows rows[r] (of (*, C) f32) = src row r (R, C).
void scatter_rows(const float* src, const int32_t* rows, int64_t R, int64_t C, float* dst,
                  cudaStream_t stream);
// Rows i of x (N, C) f32 whose labels[i] == -100 are set to zero.
void zero_ignored_rows(float* x, const int32_t* labels, int64_t N, int64_t C, cudaStream_t stream);
// loss_sum[0] += float(sum of row_loss[0..m) in double, fixed order).
void add_loss_sum(const float* row_loss, int64_t m, float* loss_sum, cudaStream_t stream);

// ---- adamw.cu ----
void adamw_step(float* param, const float* grad, float* m, float* v, int64_t n, float lr,
                float beta1, float beta2, float eps, float weight_decay, int64_t step,
                float grad_scale, cudaStream_t stream);
// AdamW over pieces of segments of flat buffers, one block per piece (AdamWItem), in one launch:
// elements [start, start + count), with weight decay where `decay`. vec: every start and count
// is a multiple of 4 and the four buffers are 16-byte aligned (float4 loads).
struct AdamWItem {
  int64_t start;
  int32_t count;  // at most kAdamWItemElements
  int32_t decay;  // 1: weight_decay applies
};
constexpr int64_t kAdamWItemElements = 16384;
// param_copy (null: none; f32 or bf16 as copy_dtype) receives the updated parameters too.
void adamw_step_items(float* param, const float* grad, float* m, float* v,
                      const AdamWItem* items, int64_t num_items, bool vec, float lr, float beta1,
                      float beta2, float eps, float weight_decay, int64_t step, float grad_scale,
                      void* param_copy, DType copy_dtype, cudaStream_t stream);

}  // namespace vacc::cuda
