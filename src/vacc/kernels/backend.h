// The kernel interface: every operation the model and optimizer need, over Tensors.
// One implementation per device kind (cpu/, later cuda/); the same tests run against each.
//
// Conventions (llm.c's): shapes are written in comments as (rows, cols); matrices are
// row-major and contiguous. Parameter gradients ACCUMULATE (+=); activation gradients
// OVERWRITE unless an `accumulate` flag says otherwise. Operations are issued in order on
// the backend's stream and may run asynchronously: call synchronize() before reading a
// clock, and download() before reading values on the host.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "vacc/core/device_allocator.h"
#include "vacc/core/error.h"
#include "vacc/core/tensor.h"
#include "vacc/kernels/tensor_checks.h"

namespace vacc {

// Geometry of a causal self-attention call on a fused QKV activation.
// qkv is (batch*seq, (q_heads + 2*kv_heads) * head_dim): each row holds the token's q heads,
// then its k heads, then its v heads. q head h uses kv head h / (q_heads / kv_heads).
// `compute` is the precision the caller trains in: BF16 (mixed precision) lets a backend round
// q, k, v (and dO) to bf16 for its matrix units, as it does the other products' inputs; with
// F32 attention is computed in f32 from the f32 qkv. The CPU backend computes in f32 always.
struct AttentionShape {
  int64_t batch = 1, seq = 1, q_heads = 1, kv_heads = 1, head_dim = 1;
  DType compute = DType::F32;
  int64_t qkv_width() const { return (q_heads + 2 * kv_heads) * head_dim; }
  // Throws vacc::Error unless the sizes are positive and q_heads a multiple of kv_heads.
  void check() const {
    VACC_CHECK(batch > 0 && seq > 0 && q_heads > 0 && kv_heads > 0 && head_dim > 0 &&
                   q_heads % kv_heads == 0,
               "attention: q_heads (", q_heads, ") must be a positive multiple of kv_heads (",
               kv_heads, ")");
  }
};

// Elements [offset, offset + numel) of flat optimizer buffers (one parameter tensor, or its part
// in a shard); decay says whether AdamWParams::weight_decay applies (norms and biases: no).
struct AdamWSegment {
  int64_t offset = 0, numel = 0;
  bool decay = true;
  bool operator==(const AdamWSegment&) const = default;
};

struct AdamWParams {
  float lr = 1e-3f, beta1 = 0.9f, beta2 = 0.999f, eps = 1e-8f, weight_decay = 0.0f;
  int64_t step = 1;        // 1-based, for bias correction
  float grad_scale = 1.0f; // gradients are multiplied by this first (global-norm clipping)
};

// Operations recorded by Backend::capture_graph, issued again by replay().
class OpGraph {
 public:
  virtual ~OpGraph() = default;
  // Issues the recorded operations on the backend's stream, after everything issued before
  // (asynchronously, like any op): one launch for the whole region.
  virtual void replay() = 0;
};

class Backend {
 public:
  virtual ~Backend() = default;

  virtual Device device() const = 0;
  virtual DeviceAllocator& allocator() = 0;
  virtual std::string name() const = 0;
  // Waits until every operation issued so far has finished.
  virtual void synchronize() = 0;
  // What the backend chose by timing on its device so far (the CUDA backend: cuBLASLt's
  // algorithm for each product shape), as a line for the log; "" when nothing.
  virtual std::string tuning_summary() const { return {}; }

  Tensor empty(Shape shape, DType dtype, MemoryCategory category, std::string_view what) {
    return Tensor(allocator(), std::move(shape), dtype, category, what);
  }
  Tensor zeros(Shape shape, DType dtype, MemoryCategory category, std::string_view what) {
    Tensor t = empty(std::move(shape), dtype, category, what);
    fill(t, 0.0f);
    return t;
  }

  // ---- graphs ----
  // Whether capture_graph works here: the CUDA backend's graphs issue a region's few hundred
  // kernels with one launch where each would cost the host some microseconds.
  virtual bool supports_graphs() const { return false; }
  // Calls issue(), recording the operations it issues instead of running them, and returns
  // them as a graph; nothing runs until replay(). Each replay reads the tensors' memory as it
  // is then, with the addresses, sizes and scalar arguments of the capture: the caller replays
  // only a region whose host code would issue exactly the same operations again. Inside issue()
  // nothing may copy between host and device or wait for the device (upload, download,
  // synchronize): that throws, naming the op, and the capture is abandoned. Memory allocated or
  // freed inside stays reserved for graphs while any of them lives. A graph must not outlive
  // its backend.
  virtual std::unique_ptr<OpGraph> capture_graph(const std::function<void()>& issue) {
    (void)issue;
    fail("backend ", name(), " cannot capture graphs");
  }

  // ---- data movement ----
  // Copies dst.nbytes() bytes from host memory (same dtype as dst) into dst.
  virtual void upload(const void* host, Tensor& dst) = 0;
  // Copies src into host memory (src.nbytes() bytes); waits for pending work first.
  virtual void download(const Tensor& src, void* host) = 0;
  // dst = src, converting between f32 and bf16 as needed (same numel).
  virtual void copy(const Tensor& src, Tensor& dst) = 0;
  virtual void fill(Tensor& dst, float value) = 0;

  // ---- element-wise and reductions (f32 unless stated) ----
  // out = a + b (out may be a or b).
  virtual void add(const Tensor& a, const Tensor& b, Tensor& out) = 0;
  // x *= s
  virtual void scale(Tensor& x, float s) = 0;
  // acc[0] += sum(x^2) over all elements of x (acc is f32 (1)).
  virtual void sum_of_squares(const Tensor& x, Tensor& acc) = 0;

  // ---- matrix products ----
  // out (M, N) = alpha * op(a) @ op(b) + beta * out  (+ bias (N) broadcast over rows).
  // op(a) is (M, K): a is (M, K), or (K, M) when trans_a. op(b) is (K, N): b is (K, N), or
  // (N, K) when trans_b. a and b are both f32 or both bf16; out is f32 (or bf16, beta 0).
  // Accumulation is always in f32.
  virtual void matmul(const Tensor& a, bool trans_a, const Tensor& b, bool trans_b, Tensor& out,
                      float alpha = 1.0f, float beta = 0.0f, const Tensor* bias = nullptr) = 0;
  // out (M, N) f32 = op(a) @ op(b) + addend (M, N) f32: a product with the residual add in its
  // epilogue (one pass over the rows where matmul then add take three). addend may be out.
  // Here a copy and a matmul with beta 1; a GPU backend reads addend in the product's epilogue.
  virtual void matmul_add(const Tensor& a, bool trans_a, const Tensor& b, bool trans_b,
                          const Tensor& addend, Tensor& out) {
    checks::expect_shape("matmul_add", "addend", addend, out.shape());
    checks::expect_dtype("matmul_add", "addend", addend, DType::F32);
    checks::expect_dtype("matmul_add", "out", out, DType::F32);
    if (addend.data() != out.data()) copy(addend, out);
    matmul(a, trans_a, b, trans_b, out, 1.0f, 1.0f);
  }
  // dbias (N) += column sums of dy (M, N).
  virtual void bias_backward(const Tensor& dy, Tensor& dbias) = 0;

  // ---- transformer ops ----
  // out (N, C) = table[ids - vocab_start]; ids outside [vocab_start, vocab_start + V) give
  // zero rows (a vocabulary-parallel shard of the table). ids is i32 (N), table (V, C).
  virtual void embedding_forward(const Tensor& ids, const Tensor& table, int64_t vocab_start,
                                 Tensor& out) = 0;
  // dtable (V, C) += scatter of dout (N, C) by ids (rows outside the shard skipped).
  virtual void embedding_backward(const Tensor& ids, const Tensor& dout, int64_t vocab_start,
                                  Tensor& dtable) = 0;

  // out (N, C) = x / rms(x) * weight; rstd (N) = 1 / sqrt(mean(x^2) + eps). Statistics in f32;
  // x is f32, out f32 or bf16.
  virtual void rmsnorm_forward(const Tensor& x, const Tensor& weight, float eps, Tensor& out,
                               Tensor& rstd) = 0;
  // dx (N, C) = residual + the input gradient (residual null: the gradient alone); dweight (C)
  // += its gradient. residual and dout may each be dx itself. If dx_copy is given (dx's shape,
  // f32 or bf16), it receives the same dx in its own dtype: the residual stream's gradient and
  // the next products' bf16 operand from one pass, with no copy or conversion after it.
  virtual void rmsnorm_backward(const Tensor& dout, const Tensor& x, const Tensor& weight,
                                const Tensor& rstd, const Tensor* residual, Tensor& dx,
                                Tensor* dx_copy, Tensor& dweight) = 0;

  // Rotary embedding, rotate-half form, in place on the first num_heads heads of every row of
  // x (N, row_width) (f32, or bf16 computed in f32 and rounded). Token n is at position
  // positions[n] (i32 (N)); cos and sin are (max_positions, head_dim/2) tables. inverse=true
  // applies the transposed rotation (the backward pass). If copy is given (x's shape, f32 or
  // bf16), it receives the whole rows as x then holds them, in its own dtype: the backward's
  // bf16 operand of the qkv products with no conversion pass.
  virtual void rope(Tensor& x, const Tensor& positions, const Tensor& cos, const Tensor& sin,
                    int64_t num_heads, int64_t head_dim, bool inverse, Tensor* copy) = 0;
  // RoPE's backward after a product with a bias (the qkv bias): rope(dx, ..., inverse = true,
  // copy), then dbias (row_width, f32) += the column sums of dx's rotated rows (f32). Where copy
  // is given it is the result: a backend may then leave dx's rows as they were, and callers read
  // only copy and dbias. This default runs the two ops in turn; the CUDA backend does both in
  // one pass that reads dx once and, with a copy, writes only the copy.
  virtual void rope_backward_with_bias(Tensor& dx, const Tensor& positions, const Tensor& cos,
                                       const Tensor& sin, int64_t num_heads, int64_t head_dim,
                                       Tensor* copy, Tensor& dbias) {
    rope(dx, positions, cos, sin, num_heads, head_dim, true, copy);
    bias_backward(dx, dbias);
  }

  // gate_up (N, 2F) holds gate in columns [0, F) and up in [F, 2F); out (N, F) =
  // silu(gate) * up, computed in f32. gate_up f32 or bf16; out f32 or bf16.
  virtual void swiglu_forward(const Tensor& gate_up, Tensor& out) = 0;
  // dgate_up (N, 2F) = gradient of both halves (overwrites); dout has gate_up's dtype;
  // dgate_up f32 or bf16.
  virtual void swiglu_backward(const Tensor& dout, const Tensor& gate_up, Tensor& dgate_up) = 0;

  // Causal softmax(q k^T / sqrt(head_dim)) v over each sequence of the batch, tiled with an
  // online softmax (no (seq, seq) matrix for all heads at once).
  // qkv (B*T, qkv_width) f32, or bf16 (mixed precision: q, k and v as the products' inputs are,
  // computed from in f32 where a backend has no bf16 route); out (B*T, q_heads*head_dim) f32 or
  // bf16;
  // lse f32 (B, q_heads, T) = log-sum-exp of each score row, saved for backward. out_copy (null:
  // none) receives out in its own dtype as well, rounded from the same values (mixed precision
  // keeps an f32 out for the backward and a bf16 one for the o_proj products).
  virtual void attention_forward(const Tensor& qkv, const AttentionShape& shape, Tensor& out,
                                 Tensor& lse, Tensor* out_copy) = 0;
  // dqkv f32 (B*T, qkv_width) = gradient w.r.t. qkv (overwrites), recomputing the scores; qkv
  // f32 or bf16 as in attention_forward.
  virtual void attention_backward(const Tensor& dout, const Tensor& qkv, const Tensor& out,
                                  const Tensor& lse, const AttentionShape& shape,
                                  Tensor& dqkv) = 0;

  // Attention of new tokens over a KV cache, for one sequence (text generation). qkv f32
  // (n_new, qkv_width) holds the new tokens after RoPE (shape: batch 1, seq = n_new), and
  // positions i32 (n_new) their positions past_len + i, as RoPE read them: past_len is
  // positions[0], read on the device (so that a graph of a decode step replays for any
  // position). Their k and v heads are written into rows [past_len, past_len + n_new) of
  // k_cache and v_cache (f32 (max_len, kv_heads*head_dim) each; rows [0, past_len) hold the
  // earlier tokens). Then new token i attends causally to rows [0, past_len + i], q head h
  // using kv head h / (q_heads / kv_heads) as in attention_forward. out (n_new,
  // q_heads*head_dim) f32 or bf16. New tokens that do not fit the cache are an error (on a
  // GPU reported by the next synchronize or download, as RoPE's positions are).
  virtual void attention_decode(const Tensor& qkv, Tensor& k_cache, Tensor& v_cache,
                                const Tensor& positions, const AttentionShape& shape,
                                Tensor& out) = 0;

  // out i32 (rows) = the index of the largest value of each row of x f32 (rows, cols), the
  // lowest among equal ones (NaNs never win); -1 where that value is not finite (a row of NaNs
  // or -inf, or a +inf in it). Greedy decoding reads one id a token instead of the logits row.
  virtual void argmax_rows(const Tensor& x, Tensor& out) = 0;
  // out i32 (rows) = a token drawn from each row of logits f32 (rows, cols) at `temperature`
  // within the nucleus `top_p` (1 or more: every token), by the rule of
  // kernels/token_sampling_rule.h, which every backend follows so that they draw alike;
  // random_bits i32 (rows, 2) holds each row's 64 random bits, the low word first. A
  // temperature or top_p of 0 or less picks the argmax (as argmax_rows; random_bits unread);
  // -1 where the largest logit is not finite. Sampling then reads back one id a token.
  virtual void sample_rows(const Tensor& logits, const Tensor& random_bits, float temperature,
                           float top_p, Tensor& out) = 0;

  // Output projection fused with cross-entropy, in row chunks: logits = x (N, C) @ weight^T
  // (V, C) are never materialised for all N rows. labels i32 (N); label -100 is ignored.
  // loss_sum f32 (1) += sum over counted rows of -log softmax(logits)[label].
  // If dx is given, dx (N, C) = grad_scale * dloss/dx (overwrites); if dweight is given,
  // dweight (V, C) += grad_scale * dloss/dweight. x and weight both f32 or both bf16.
  virtual void classifier_cross_entropy(const Tensor& x, const Tensor& weight,
                                        const Tensor& labels, float grad_scale, Tensor& loss_sum,
                                        Tensor* dx, Tensor* dweight) = 0;

  // Vocabulary-parallel cross-entropy: weight (V_shard, C) holds vocabulary rows
  // [vocab_start, vocab_start + V_shard) of the output projection; each tensor-parallel rank
  // runs these on its shard, and the caller combines the ranks' results. Row-chunked like
  // classifier_cross_entropy (the (N, V_shard) logits are never all held); labels i32 (N),
  // -100 ignored; x and weight both f32 or both bf16.
  //
  // Forward: for each counted row, lse (N) f32 = log-sum-exp of the shard's logits x @
  // weight^T, and target_logit (N) f32 = the logit of the label when the label is in the
  // shard, else 0. Ignored rows give 0 and 0. (Overwrites both.) The loss of a row is then
  // log(sum over ranks of exp(lse_r)) - (sum over ranks of target_logit_r).
  virtual void classifier_logsumexp(const Tensor& x, const Tensor& weight, int64_t vocab_start,
                                    const Tensor& labels, Tensor& lse, Tensor& target_logit) {
    fail("classifier_logsumexp is not implemented on backend ", name());
  }
  // Backward, given lse_global (N) f32: the log-sum-exp over the WHOLE vocabulary (every
  // rank's). dlogits = grad_scale * (exp(logits - lse_global) - onehot(label) where the label
  // is in the shard), zero for ignored rows. If dx is given, dx (N, C) = dlogits @ weight (this
  // shard's partial input gradient; overwrites; the caller sums it over the ranks); if dweight
  // is given, dweight (V_shard, C) += dlogits^T @ x.
  virtual void classifier_cross_entropy_backward(const Tensor& x, const Tensor& weight,
                                                 int64_t vocab_start, const Tensor& labels,
                                                 const Tensor& lse_global, float grad_scale,
                                                 Tensor* dx, Tensor* dweight) {
    fail("classifier_cross_entropy_backward is not implemented on backend ", name());
  }

  // ---- optimizer ----
  // AdamW with decoupled weight decay and bias correction on f32 tensors of equal numel:
  // g = grad * grad_scale; m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2;
  // param -= lr * (m_hat / (sqrt(v_hat) + eps) + weight_decay * param).
  virtual void adamw_step(Tensor& param, const Tensor& grad, Tensor& m, Tensor& v,
                          const AdamWParams& p) = 0;
  // adamw_step on each segment of flat buffers of equal numel (segments in order, not
  // overlapping), weight decay only where the segment asks for it; elements outside every
  // segment are untouched. If param_copy is given (param's numel, f32 or bf16), each segment's
  // updated parameters are written there too, in its dtype: the products' bf16 weights with no
  // conversion pass after the step. Here one adamw_step (and copy) per segment; a GPU backend
  // does them all in one launch (a model has a few hundred parameter tensors, many small).
  virtual void adamw_step_segments(Tensor& param, const Tensor& grad, Tensor& m, Tensor& v,
                                   const std::vector<AdamWSegment>& segments,
                                   const AdamWParams& p, Tensor* param_copy) {
    checks::expect_adamw("adamw_step_segments", param, grad, m, v, param_copy);
    for (const AdamWSegment& s : segments) {
      AdamWParams sp = p;
      if (!s.decay) sp.weight_decay = 0.0f;
      Tensor ps = param.view(s.offset, {s.numel}), ms = m.view(s.offset, {s.numel}),
             vs = v.view(s.offset, {s.numel});
      adamw_step(ps, grad.view(s.offset, {s.numel}), ms, vs, sp);
      if (param_copy) {
        Tensor cs = param_copy->view(s.offset, {s.numel});
        copy(ps, cs);
      }
    }
  }
};

// The backend for a device ("cpu:0"). num_threads 0 means every core.
std::unique_ptr<Backend> make_cpu_backend(size_t memory_budget_bytes = DeviceAllocator::kUnlimited,
                                          int num_threads = 0);

}  // namespace vacc
