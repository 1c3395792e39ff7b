#include "vacc/kernels/cuda/attention_gemm.h"

#include <algorithm>
#include <cmath>

#include "vacc/kernels/cuda/cuda_kernels.h"

#ifndef VACC_ATTENTION_CHUNK_BYTES
#define VACC_ATTENTION_CHUNK_BYTES (int64_t(128) << 20)
#endif

namespace vacc::cuda {
namespace {

constexpr int64_t kChunkBytes = VACC_ATTENTION_CHUNK_BYTES;

// How many (sequence, head) pairs share one block of score matrices.
int64_t heads_per_chunk(int64_t heads, int64_t seq) {
  return std::clamp<int64_t>(kChunkBytes / (seq * seq * 4), 1, heads);
}

// The packed per-head operands of one call, bf16 (B*Hq, T, d) each.
struct Packed {
  Tensor q, k, v;
  Packed(CudaContext& ctx, const Tensor& qkv, int64_t B, int64_t T, int64_t Hq, int64_t Hkv,
         int64_t d)
      : q(ctx.scratch({B * Hq * T, d}, DType::BF16, "attention q (per head)")),
        k(ctx.scratch({B * Hq * T, d}, DType::BF16, "attention k (per head)")),
        v(ctx.scratch({B * Hq * T, d}, DType::BF16, "attention v (per head)")) {
    attention_pack_qkv(qkv.data_as<float>(), B, T, Hq, Hkv, d, q.data(), k.data(), v.data(),
                       ctx.stream());
  }
};

// The address `elements` into t.
char* at(const Tensor& t, int64_t elements) {
  return static_cast<char*>(t.data()) + elements * int64_t(dtype_size(t.dtype()));
}

// The two shapes of product per head: (T, d) by (T, d) into a (T, T) block (Q K^T, dO V^T),
// and a (T, T) block by (T, d) into (T, d) (P V, P^T dO, dS K, dS^T Q).
CublasLtMatmul::Batch into_block(int64_t n, int64_t T, int64_t d) {
  return {n, T * d, T * d, T * T};
}
CublasLtMatmul::Batch from_block(int64_t n, int64_t T, int64_t d) {
  return {n, T * T, T * d, T * d};
}

// S (n, T, T) = scale * Q K^T for the heads [h0, h0 + n).
void scores(CudaContext& ctx, const Packed& p, int64_t h0, int64_t n, int64_t T, int64_t d,
            float scale, Tensor& s) {
  ctx.gemm_batched(at(p.q, h0 * T * d), false, at(p.k, h0 * T * d), true, s.data(), T, T, d,
                   into_block(n, T, d), DType::BF16, DType::F32, scale, 0.0f);
}

}  // namespace

void attention_gemm_forward(CudaContext& ctx, const Tensor& qkv, int64_t B, int64_t T, int64_t Hq,
                            int64_t Hkv, int64_t d, Tensor& out, Tensor& lse) {
  if (B * T == 0) return;
  const int64_t heads = B * Hq, chunk = heads_per_chunk(heads, T);
  const float scale = 1.0f / std::sqrt(float(d));
  Packed p(ctx, qkv, B, T, Hq, Hkv, d);
  Tensor o = ctx.scratch({heads * T, d}, DType::F32, "attention out (per head)");
  Tensor s = ctx.scratch({chunk * T, T}, DType::F32, "attention scores");
  Tensor prob = ctx.scratch({chunk * T, T}, DType::BF16, "attention probabilities");
  for (int64_t h0 = 0; h0 < heads; h0 += chunk) {
    const int64_t n = std::min(chunk, heads - h0);
    scores(ctx, p, h0, n, T, d, scale, s);
    attention_causal_softmax(s.data_as<float>(), T, n * T, prob.data(),
                             lse.data_as<float>() + h0 * T, true, ctx.stream());
    ctx.gemm_batched(prob.data(), false, at(p.v, h0 * T * d), false, at(o, h0 * T * d), T, d, T,
                     from_block(n, T, d), DType::BF16, DType::F32, 1.0f, 0.0f);
  }
  attention_unpack_out(o.data_as<float>(), B, T, Hq, d, out.data(), out.dtype(), ctx.stream());
}

void attention_gemm_backward(CudaContext& ctx, const Tensor& dout, const Tensor& qkv,
                             const Tensor& out, const Tensor& lse, int64_t B, int64_t T,
                             int64_t Hq, int64_t Hkv, int64_t d, Tensor& dqkv) {
  if (B * T == 0) return;
  const int64_t heads = B * Hq, chunk = heads_per_chunk(heads, T);
  const float scale = 1.0f / std::sqrt(float(d));
  Packed p(ctx, qkv, B, T, Hq, Hkv, d);
  Tensor dO = ctx.scratch({heads * T, d}, DType::BF16, "attention dout (per head)");
  Tensor D = ctx.scratch({heads * T}, DType::F32, "attention rowsum(dO O)");
  attention_pack_dout(dout.data(), out.data(), out.dtype(), B, T, Hq, d, dO.data(),
                      D.data_as<float>(), ctx.stream());
  Tensor dq = ctx.scratch({heads * T, d}, DType::F32, "attention dq (per head)");
  Tensor dk = ctx.scratch({heads * T, d}, DType::F32, "attention dk (per head)");
  Tensor dv = ctx.scratch({heads * T, d}, DType::F32, "attention dv (per head)");
  Tensor s = ctx.scratch({chunk * T, T}, DType::F32, "attention scores / dP");
  Tensor prob = ctx.scratch({chunk * T, T}, DType::BF16, "attention probabilities / dS");
  for (int64_t h0 = 0; h0 < heads; h0 += chunk) {
    const int64_t n = std::min(chunk, heads - h0), off = h0 * T * d;
    scores(ctx, p, h0, n, T, d, scale, s);
    attention_causal_softmax(s.data_as<float>(), T, n * T, prob.data(),
                             lse.data_as<float>() + h0 * T, false, ctx.stream());
    // dV = P^T dO
    ctx.gemm_batched(prob.data(), true, at(dO, off), false, at(dv, off), T, d, T,
                     from_block(n, T, d), DType::BF16, DType::F32, 1.0f, 0.0f);
    // dP = dO V^T (over the scores)
    ctx.gemm_batched(at(dO, off), false, at(p.v, off), true, s.data(), T, T, d,
                     into_block(n, T, d), DType::BF16, DType::F32, 1.0f, 0.0f);
    attention_softmax_grad(prob.data(), s.data_as<float>(), D.data_as<float>() + h0 * T, T,
                           n * T, ctx.stream());
    // dQ = dS K scale; dK = dS^T Q scale
    ctx.gemm_batched(prob.data(), false, at(p.k, off), false, at(dq, off), T, d, T,
                     from_block(n, T, d), DType::BF16, DType::F32, scale, 0.0f);
    ctx.gemm_batched(prob.data(), true, at(p.q, off), false, at(dk, off), T, d, T,
                     from_block(n, T, d), DType::BF16, DType::F32, scale, 0.0f);
  }
  attention_unpack_grads(dq.data_as<float>(), dk.data_as<float>(), dv.data_as<float>(), B, T, Hq,
                         Hkv, d, dqkv.data_as<float>(), ctx.stream());
}

}  // namespace vacc::cuda
