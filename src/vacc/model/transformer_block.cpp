#include "vacc/model/transformer_block.h"

#include <string>

namespace vacc {
namespace {

constexpr auto kAct = MemoryCategory::Activations;
constexpr auto kBuf = MemoryCategory::Buffers;

// src in the compute dtype: src itself for f32, else converted into scratch.
const Tensor& as_compute(Backend& be, const Tensor& src, Tensor& scratch) {
  if (!scratch.defined() || src.dtype() == scratch.dtype()) return src;
  be.copy(src, scratch);
  return scratch;
}

// The tensors of BlockActivations, as bits of a mask.
enum ActivationPart : unsigned {
  kNorm1 = 1u << 0, kRstd1 = 1u << 1, kQkv = 1u << 2, kAttn = 1u << 3, kLse = 1u << 4,
  kH = 1u << 5, kNorm2 = 1u << 6, kRstd2 = 1u << 7, kGateUp = 1u << 8, kSwiglu = 1u << 9,
  kAttnC = 1u << 10, kAllParts = (1u << 11) - 1,
};

// What a layer keeps under `mode`; the rest is recomputed before its backward.
unsigned kept_parts(Recompute mode) {
  switch (mode) {
    case Recompute::None: return kAllParts;
    case Recompute::Selective: return kAllParts & ~(kQkv | kAttn | kAttnC | kLse);
    case Recompute::Full: return 0;
  }
  return kAllParts;
}

BlockActivations allocate_parts(Backend& be, const BlockGeometry& g, unsigned parts,
                                std::string_view prefix) {
  const int64_t N = g.tokens(), C = g.hidden, F = g.ffn;
  const AttentionShape& a = g.attention;
  BlockActivations act;
  auto make = [&](unsigned part, Tensor& t, Shape shape, DType dt, std::string_view what) {
    if (parts & part)
      t = be.empty(std::move(shape), dt, kAct, std::string(prefix) + std::string(what));
  };
  make(kNorm1, act.norm1, {N, C}, g.compute, "norm1");
  make(kRstd1, act.rstd1, {N}, DType::F32, "rstd1");
  // In the compute dtype, as the product writes it and RoPE rotates it in place (autocast's
  // bf16 q, k, v): attention's tensor-core kernels read it as it is, forward and backward.
  make(kQkv, act.qkv, {N, a.qkv_width()}, g.compute, "qkv");
  // f32 even in bf16 mode: attention backward's rowsum(dO * O) must see the O it computed
  // (with a bf16 O it amplifies rounding where values are alike).
  make(kAttn, act.attn, {N, a.q_heads * a.head_dim}, DType::F32, "attention output");
  // Its bf16 rounding, o_proj's operand forward and backward: the attention kernel writes it
  // beside the f32 output, in the same pass.
  if (g.compute != DType::F32)
    make(kAttnC, act.attn_c, {N, a.q_heads * a.head_dim}, g.compute, "attention output (bf16)");
  make(kLse, act.lse, {a.batch, a.q_heads, a.seq}, DType::F32, "attention lse");
  make(kH, act.h, {N, C}, DType::F32, "residual h");
  make(kNorm2, act.norm2, {N, C}, g.compute, "norm2");
  make(kRstd2, act.rstd2, {N}, DType::F32, "rstd2");
  // In the compute dtype, as the product writes it (PyTorch's autocast keeps it in bf16 too):
  // SwiGLU computes in f32 from it, and bf16 halves the largest activation a layer keeps.
  make(kGateUp, act.gate_up, {N, 2 * F}, g.compute, "gate_up");
  make(kSwiglu, act.act, {N, F}, g.compute, "swiglu output");
  return act;
}

// o_proj's operand: the attention output in the compute dtype.
const Tensor& o_proj_operand(const BlockActivations& act) {
  return act.attn_c.defined() ? act.attn_c : act.attn;
}

// out = residual + a @ weight^T: the add in the product's epilogue, or, under tensor
// parallelism, after the ranks' partial products are summed.
void add_projection(Backend& be, const Tensor& a, const Tensor& weight, const Tensor& residual,
                    BlockWorkspace& ws, Tensor& out, const TensorParallelHooks* hooks) {
  if (hooks && hooks->reduce_forward) {
    be.matmul(a, false, weight, true, ws.partial);
    hooks->reduce_forward(ws.partial);
    be.add(residual, ws.partial, out);
  } else {
    be.matmul_add(a, false, weight, true, residual, out);
  }
}

}  // namespace

BlockActivations BlockActivations::allocate(Backend& be, const BlockGeometry& g, Recompute mode) {
  return allocate_parts(be, g, kept_parts(mode), "");
}

BlockActivations BlockActivations::allocate_recomputed(Backend& be, const BlockGeometry& g,
                                                       Recompute mode) {
  return allocate_parts(be, g, kAllParts & ~kept_parts(mode), "recompute scratch: ");
}

BlockActivations BlockActivations::completed_by(const BlockActivations& scratch) const {
  BlockActivations out = *this;
  auto fill = [](Tensor& t, const Tensor& from) {
    if (!t.defined()) t = from;
  };
  fill(out.norm1, scratch.norm1);
  fill(out.rstd1, scratch.rstd1);
  fill(out.qkv, scratch.qkv);
  fill(out.attn, scratch.attn);
  fill(out.attn_c, scratch.attn_c);
  fill(out.lse, scratch.lse);
  fill(out.h, scratch.h);
  fill(out.norm2, scratch.norm2);
  fill(out.rstd2, scratch.rstd2);
  fill(out.gate_up, scratch.gate_up);
  fill(out.act, scratch.act);
  return out;
}

BlockWorkspace BlockWorkspace::allocate(Backend& be, const BlockGeometry& g) {
  const int64_t N = g.tokens(), C = g.hidden, F = g.ffn;
  const AttentionShape& a = g.attention;
  const bool mixed = g.compute != DType::F32;
  BlockWorkspace ws;
  ws.partial = be.empty({N, C}, DType::F32, kBuf, "partial sums");
  ws.dh = be.empty({N, C}, DType::F32, kBuf, "dh");
  ws.dnorm = be.empty({N, C}, DType::F32, kBuf, "dnorm");
  if (mixed) ws.dy_c = be.empty({N, C}, g.compute, kBuf, "dy (compute dtype)");
  ws.dact = be.empty({N, F}, g.compute, kBuf, "dact");  // SwiGLU's dout: gate_up's dtype
  ws.dgate_up = be.empty({N, 2 * F}, g.compute, kBuf, "dgate_up");
  ws.dattn = be.empty({N, a.q_heads * a.head_dim}, DType::F32, kBuf, "dattn");
  ws.dqkv = be.empty({N, a.qkv_width()}, DType::F32, kBuf, "dqkv");
  if (mixed) ws.dqkv_c = be.empty({N, a.qkv_width()}, g.compute, kBuf, "dqkv (compute dtype)");
  return ws;
}

void block_attention_forward(Backend& be, const BlockGeometry& g, const BlockWeights& w,
                             const Tensor& positions, const RopeTables& rope,
                             BlockActivations& act) {
  const AttentionShape& a = g.attention;
  be.matmul(act.norm1, false, w.qkv_weight, true, act.qkv, 1.0f, 0.0f,
            w.qkv_bias.defined() ? &w.qkv_bias : nullptr);
  be.rope(act.qkv, positions, rope.cos, rope.sin, a.q_heads + a.kv_heads, a.head_dim, false,
          nullptr);
  be.attention_forward(act.qkv, a, act.attn, act.lse,
                       act.attn_c.defined() ? &act.attn_c : nullptr);
}

void block_forward(Backend& be, const BlockGeometry& g, const BlockWeights& w, const Tensor& x,
                   const Tensor& positions, const RopeTables& rope, BlockActivations& act,
                   BlockWorkspace& ws, Tensor& out, const TensorParallelHooks* hooks) {
  // Attention: h = x + o_proj(attention(rope(qkv(norm1(x)))))
  be.rmsnorm_forward(x, w.input_norm, g.eps, act.norm1, act.rstd1);
  block_attention_forward(be, g, w, positions, rope, act);
  add_projection(be, o_proj_operand(act), w.o_proj, x, ws, act.h, hooks);
  // MLP: out = h + down(silu(gate(norm2(h))) * up(norm2(h)))
  be.rmsnorm_forward(act.h, w.post_norm, g.eps, act.norm2, act.rstd2);
  be.matmul(act.norm2, false, w.gate_up, true, act.gate_up);
  be.swiglu_forward(act.gate_up, act.act);
  add_projection(be, act.act, w.down_proj, act.h, ws, out, hooks);
}

void block_backward(Backend& be, const BlockGeometry& g, const BlockWeights& w, const Tensor& x,
                    const Tensor& positions, const RopeTables& rope, const BlockActivations& act,
                    const Tensor& dout, const Tensor* dout_c, BlockGrads& grads,
                    BlockWorkspace& ws, Tensor& dx, const TensorParallelHooks* hooks) {
  const AttentionShape& a = g.attention;
  // In mixed precision each norm's backward also writes its dx in bf16 (into ws.dy_c, once the
  // products before it are done with what it held): the operand of the products after it.
  Tensor* const dx_c = ws.dy_c.defined() ? &ws.dy_c : nullptr;
  // MLP backward.
  const Tensor& dy = dout_c ? *dout_c : as_compute(be, dout, ws.dy_c);
  be.matmul(dy, true, act.act, false, grads.down_proj, 1.0f, 1.0f);   // (C, F) += dy^T act
  be.matmul(dy, false, w.down_proj, false, ws.dact);                  // (N, F) = dy down
  be.swiglu_backward(ws.dact, act.gate_up, ws.dgate_up);
  be.matmul(ws.dgate_up, true, act.norm2, false, grads.gate_up, 1.0f, 1.0f);
  be.matmul(ws.dgate_up, false, w.gate_up, false, ws.dnorm);          // (N, C)
  if (hooks && hooks->reduce_backward) hooks->reduce_backward(ws.dnorm);
  // dh = dout (the residual path) + the norm's input gradient.
  be.rmsnorm_backward(ws.dnorm, act.h, w.post_norm, act.rstd2, &dout, ws.dh, dx_c,
                      grads.post_norm);

  // Attention backward.
  const Tensor& dh = dx_c ? *dx_c : ws.dh;
  be.matmul(dh, true, o_proj_operand(act), false, grads.o_proj, 1.0f, 1.0f);
  be.matmul(dh, false, w.o_proj, false, ws.dattn);                    // (N, Hq D)
  be.attention_backward(ws.dattn, act.qkv, act.attn, act.lse, a, ws.dqkv);
  // The inverse rotation also writes the products' bf16 operand (the bias takes the f32 one).
  // With a qkv bias its gradient comes from the same pass over the rows, and in mixed
  // precision the f32 rows are then not needed back.
  Tensor* const dqkv_c = ws.dqkv_c.defined() ? &ws.dqkv_c : nullptr;
  if (grads.qkv_bias.defined())
    be.rope_backward_with_bias(ws.dqkv, positions, rope.cos, rope.sin, a.q_heads + a.kv_heads,
                               a.head_dim, dqkv_c, grads.qkv_bias);
  else
    be.rope(ws.dqkv, positions, rope.cos, rope.sin, a.q_heads + a.kv_heads, a.head_dim, true,
            dqkv_c);
  const Tensor& dqkv = dqkv_c ? *dqkv_c : ws.dqkv;
  be.matmul(dqkv, true, act.norm1, false, grads.qkv_weight, 1.0f, 1.0f);
  be.matmul(dqkv, false, w.qkv_weight, false, ws.dnorm);
  if (hooks && hooks->reduce_backward) hooks->reduce_backward(ws.dnorm);
  be.rmsnorm_backward(ws.dnorm, x, w.input_norm, act.rstd1, &ws.dh, dx, dx_c, grads.input_norm);
}

}  // namespace vacc
