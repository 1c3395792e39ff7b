// One decoder layer (pre-norm attention + SwiGLU MLP) of a shard: the shard's attention
// heads and FFN columns. Plain functions over explicit tensors, llm.c style; no
// communication here. Where a tensor-parallel run must sum partial results across devices
// the caller's hooks are invoked: after o_proj and down_proj in forward, and on the input
// gradients of the qkv and gate_up products in backward.
#pragma once

#include <functional>

#include "vacc/kernels/backend.h"
#include "vacc/model/recompute.h"

namespace vacc {

struct BlockGeometry {
  AttentionShape attention;  // the shard's heads; batch and seq of the micro-batch
  int64_t hidden = 0;        // C
  int64_t ffn = 0;           // F: the shard's FFN columns
  float eps = 1e-6f;
  DType compute = DType::F32;  // dtype of matrix-product operands
  int64_t tokens() const { return attention.batch * attention.seq; }
};

// Matrices in the compute dtype; norms and bias f32. qkv_bias may be undefined.
struct BlockWeights {
  Tensor input_norm, qkv_weight, qkv_bias, o_proj, post_norm, gate_up, down_proj;
};

// Gradients of BlockWeights, f32, accumulated (+=).
using BlockGrads = BlockWeights;

// What forward keeps for backward (N = batch*seq tokens).
struct BlockActivations {
  Tensor norm1;        // (N, C) compute dtype: input of the qkv product
  Tensor rstd1;        // (N)
  Tensor qkv;          // (N, W) compute dtype, after RoPE
  Tensor attn;         // (N, Hq*D) f32: attention output (o_proj's operand in f32)
  Tensor attn_c;       // (N, Hq*D) compute (only for bf16): o_proj's operand, attn rounded
  Tensor lse;          // (B, Hq, T)
  Tensor h;            // (N, C) f32: residual after attention
  Tensor norm2;        // (N, C) compute dtype
  Tensor rstd2;        // (N)
  Tensor gate_up;      // (N, 2F) compute dtype
  Tensor act;          // (N, F) compute dtype: input of down_proj

  // The tensors a layer keeps between forward and backward under `mode`: all of them for
  // None; all but qkv, attn (and attn_c) and lse for Selective; none for Full (undefined
  // tensors).
  static BlockActivations allocate(Backend& be, const BlockGeometry& g,
                                   Recompute mode = Recompute::None);
  // The tensors `mode` recomputes (the complement of allocate's), for one scratch shared by
  // every layer ("recompute scratch" activations): qkv, attn(_c), lse for Selective; all for
  // Full; none for None.
  static BlockActivations allocate_recomputed(Backend& be, const BlockGeometry& g, Recompute mode);
  // These tensors, with each undefined one taken from `scratch`.
  BlockActivations completed_by(const BlockActivations& scratch) const;
};

// Scratch space reused by every layer (not kept between layers).
struct BlockWorkspace {
  Tensor partial;    // (N, C) f32: o_proj / down_proj output before the ranks' sum (TP only)
  Tensor dh;         // (N, C) f32
  Tensor dnorm;      // (N, C) f32
  Tensor dy_c;       // (N, C) compute (only for bf16): dout, dh, then dx (block_backward)
  Tensor dact;       // (N, F) f32
  Tensor dgate_up;   // (N, 2F) compute
  Tensor dattn;      // (N, Hq*D) f32
  Tensor dqkv;       // (N, W) f32
  Tensor dqkv_c;     // (N, W) compute (only for bf16)

  static BlockWorkspace allocate(Backend& be, const BlockGeometry& g);
};

struct RopeTables {
  Tensor cos, sin;  // (max_positions, head_dim/2) f32
};

// The tensor-parallel communication the model asks for; each is in place over the tp ranks
// and every rank of the group calls it at the same point.
struct TensorParallelHooks {
  // Sums partial (N, C) outputs: o_proj and down_proj products, and the vocabulary-parallel
  // embedding (rows of ids outside a rank's vocabulary are zero there).
  std::function<void(Tensor&)> reduce_forward;
  // Sums partial (N, C) input gradients: of the qkv and gate_up products, and of the
  // vocabulary-parallel output head.
  std::function<void(Tensor&)> reduce_backward;
  // Vocabulary-parallel cross-entropy (the model's vocabulary split over the tp ranks):
  // combine_logsumexp turns each rank's per-row log-sum-exp lse_r (N) f32 into the global
  // log(sum over ranks of exp(lse_r)), the same on every rank; reduce_sum sums an (N) f32
  // tensor (the label logits) over the ranks.
  std::function<void(Tensor&)> combine_logsumexp;
  std::function<void(Tensor&)> reduce_sum;
};

// out (N, C) = the layer applied to x (N, C). out may not alias x.
void block_forward(Backend& be, const BlockGeometry& g, const BlockWeights& w, const Tensor& x,
                   const Tensor& positions, const RopeTables& rope, BlockActivations& act,
                   BlockWorkspace& ws, Tensor& out, const TensorParallelHooks* hooks = nullptr);

// The attention internals of block_forward, from act.norm1 (written by block_forward's input
// norm): act.qkv = norm1 qkv_weight^T (+ bias) with RoPE, act.attn and act.lse = attention.
// block_forward runs it; selective recomputation reruns it before block_backward, so the
// recomputed tensors are bitwise those of the forward pass.
void block_attention_forward(Backend& be, const BlockGeometry& g, const BlockWeights& w,
                             const Tensor& positions, const RopeTables& rope,
                             BlockActivations& act);

// dx (N, C) = gradient w.r.t. x given dout w.r.t. the output; grads accumulate. dx may
// alias dout. dout_c is dout in the compute dtype where the caller has it (null: converted
// here). In mixed precision, block_backward leaves dx in the compute dtype in ws.dy_c: the
// dout_c of the layer below, which may then pass &ws.dy_c.
void block_backward(Backend& be, const BlockGeometry& g, const BlockWeights& w, const Tensor& x,
                    const Tensor& positions, const RopeTables& rope, const BlockActivations& act,
                    const Tensor& dout, const Tensor* dout_c, BlockGrads& grads,
                    BlockWorkspace& ws, Tensor& dx, const TensorParallelHooks* hooks = nullptr);

}  // namespace vacc
