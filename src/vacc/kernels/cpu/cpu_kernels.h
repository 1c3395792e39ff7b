// The CPU kernels on raw host pointers, one file per op beside this header. CpuBackend
// (cpu_backend.cpp) checks the tensors' shapes and dtypes and calls these; see backend.h
// for what each op computes. All of them are multi-threaded with OpenMP; called from inside
// an OpenMP parallel region they run on the calling thread only.
#pragma once

#include <cstdint>

#include "vacc/core/dtype.h"

namespace vacc::cpu {

// ---- matmul_onednn.cpp ----
// out (M, N) = alpha * op(a) @ op(b) + beta * out (+ bias (N)); a and b have dtype in_dtype
// (F32 or BF16), out has out_dtype. Leading dimensions are the natural (contiguous) ones.
void matmul(const void* a, bool trans_a, const void* b, bool trans_b, void* out, int64_t M,
            int64_t N, int64_t K, DType in_dtype, DType out_dtype, float alpha, float beta,
            const float* bias);

// ---- elementwise.cpp ----
void convert(const void* src, DType src_dtype, void* dst, DType dst_dtype, int64_t n);
void fill(void* dst, DType dtype, float value, int64_t n);
void add(const float* a, const float* b, float* out, int64_t n);
void scale(float* x, float s, int64_t n);
double sum_of_squares(const float* x, int64_t n);
void bias_backward(const float* dy, float* dbias, int64_t M, int64_t N);

// ---- embedding.cpp ----
void embedding_forward(const int32_t* ids, const float* table, int64_t vocab_start,
                       int64_t vocab_size, int64_t n, int64_t c, float* out);
void embedding_backward(const int32_t* ids, const float* dout, int64_t vocab_start,
                        int64_t vocab_size, int64_t n, int64_t c, float* dtable);

// ---- rmsnorm.cpp ----
void rmsnorm_forward(const float* x, const float* weight, float eps, int64_t n, int64_t c,
                     void* out, DType out_dtype, float* rstd);
// dx = residual (null: 0) + the input gradient; dx_copy (null: none) the same in copy_dtype.
void rmsnorm_backward(const float* dout, const float* x, const float* weight, const float* rstd,
                      int64_t n, int64_t c, const float* residual, float* dx, void* dx_copy,
                      DType copy_dtype, float* dweight);

// ---- rope.cpp ----
// x f32 or bf16 (x_dtype), in place; copy (null: none) receives the rows in copy_dtype.
void rope(void* x, DType x_dtype, int64_t n, int64_t row_width, const int32_t* positions,
          const float* cos, const float* sin, int64_t max_positions, int64_t num_heads,
          int64_t head_dim, bool inverse, void* copy, DType copy_dtype);

// ---- swiglu.cpp ----
// gate_up (and dout) f32 or bf16 (in_dtype); out / dgate_up f32 or bf16.
void swiglu_forward(const void* gate_up, DType in_dtype, int64_t n, int64_t f, void* out,
                    DType out_dtype);
void swiglu_backward(const void* dout, const void* gate_up, DType in_dtype, int64_t n, int64_t f,
                     void* dgate_up, DType dgate_up_dtype);

// ---- attention.cpp ----
// qkv (B*T, (Hq + 2 Hkv) D); out (B*T, Hq D) of out_dtype; lse (B, Hq, T).
void attention_forward(const float* qkv, int64_t batch, int64_t seq, int64_t q_heads,
                       int64_t kv_heads, int64_t head_dim, void* out, DType out_dtype, float* lse);
// dout and out (B*T, Hq D) of io_dtype; dqkv (B*T, (Hq + 2 Hkv) D) overwritten.
void attention_backward(const void* dout, const float* qkv, const void* out, DType io_dtype,
                        const float* lse, int64_t batch, int64_t seq, int64_t q_heads,
                        int64_t kv_heads, int64_t head_dim, float* dqkv);

// ---- argmax.cpp ----
// out[r] = index of row r's largest value (lowest among equal ones; NaNs never win), or -1
// where it is not finite. x (rows, cols).
void argmax_rows(const float* x, int64_t rows, int64_t cols, int32_t* out);

// ---- token_sampling.cpp ----
// weights[i] = exp((logits[i] - max_logit) / temperature) in float (fast_exp, about 1 ulp),
// 0 where that is below exp(-87) or the logit is NaN: the rule's weights
// (kernels/token_sampling_rule.h).
void token_weights(const float* logits, int64_t cols, float max_logit, float temperature,
                   float* weights);
// out[r] = the token drawn from row r of logits (rows, cols) by the rule of
// kernels/token_sampling_rule.h with the 64 random bits random_bits[r]; the argmax where the
// temperature or top_p is 0 or less (random_bits unread); -1 where the largest logit is not
// finite.
void sample_rows(const float* logits, int64_t rows, int64_t cols, const uint64_t* random_bits,
                 float temperature, float top_p, int32_t* out);

// ---- attention_decode.cpp ----
// One sequence's n_new tokens over its KV cache: qkv (n_new, (Hq + 2 Hkv) D) after RoPE; the
// new k and v rows are written to rows [past_len, past_len + n_new) of k_cache and v_cache
// (each (max_len, Hkv D)); out (n_new, Hq D) of out_dtype, token i attending to cache rows
// [0, past_len + i].
void attention_decode(const float* qkv, int64_t n_new, int64_t q_heads, int64_t kv_heads,
                      int64_t head_dim, float* k_cache, float* v_cache, int64_t past_len, void* out,
                      DType out_dtype);

// ---- classifier_cross_entropy.cpp ----
// x (N, C) and weight (V, C) of in_dtype; labels (N). Returns the summed loss over rows whose
// label is not -100. dx (N, C) overwritten if non-null; dweight (V, C) accumulated if non-null.
double classifier_cross_entropy(const void* x, const void* weight, DType in_dtype,
                                const int32_t* labels, int64_t n, int64_t c, int64_t v,
                                float grad_scale, float* dx, float* dweight);

// Vocabulary-parallel pieces (see Backend::classifier_logsumexp and
// classifier_cross_entropy_backward): weight (v, C) holds vocabulary rows [vocab_start,
// vocab_start + v). lse and target_logit (N) overwritten (0 for ignored rows); dx (N, C)
// overwritten if non-null; dweight (v, C) accumulated if non-null.
void classifier_logsumexp(const void* x, const void* weight, DType in_dtype,
                          const int32_t* labels, int64_t n, int64_t c, int64_t v,
                          int64_t vocab_start, float* lse, float* target_logit);
void classifier_cross_entropy_backward(const void* x, const void* weight, DType in_dtype,
                                       const int32_t* labels, int64_t n, int64_t c, int64_t v,
                                       int64_t vocab_start, const float* lse_global,
                                       float grad_scale, float* dx, float* dweight);

// ---- adamw.cpp ----
// copy (null: none) receives the updated parameters in copy_dtype.
void adamw_step(float* param, const float* grad, float* m, float* v, int64_t n, float lr,
                float beta1, float beta2, float eps, float weight_decay, int64_t step,
                float grad_scale, void* copy = nullptr, DType copy_dtype = DType::F32);

}  // namespace vacc::cpu
