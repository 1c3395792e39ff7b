// Text generation: Transformer::decode runs new tokens over a KV cache with the op sequence of
// block_forward (attention over the cache instead of the sequence). A step of one token is a
// few hundred small ops, each a kernel launch on a GPU, whose work takes microseconds: the
// host's launches pace it. So with set_decode_graphs(true), on a backend with graphs, the
// single-token steps of a cache are captured once as a graph and replayed (one launch a
// token): their buffers live with the cache, and the new token's position is read on the
// device, the one thing that changes from step to step besides the token itself.
#include <cstdint>
#include <string>
#include <vector>

#include "vacc/core/error.h"
#include "vacc/kernels/graphed_regions.h"
#include "vacc/model/transformer.h"

namespace vacc {

// The tensors of one decode call for n new tokens.
struct DecodeBuffers {
  Tensor positions, x, h, norm, rstd, qkv, qkv_f32, attn, gate_up, act, logits;
};

// A cache's graphed single-token step (KvCache::decode_step).
struct DecodeStep {
  DecodeBuffers buffers;  // sized for one token, at fixed addresses
  // One region per ids tensor the steps read (a graph reads it by address).
  std::unique_ptr<GraphedRegions> graphs;
};

KvCache Transformer::make_kv_cache(int64_t max_len) {
  VACC_CHECK(max_len > 0 && max_len <= max_seq_len_, "a KV cache of ", max_len,
             " positions: the model has position tables for 1 to ", max_seq_len_);
  return KvCache(backend_, shard_.num_layers(), shard_.kv_heads * config_.head_dim, max_len);
}

DecodeBuffers Transformer::make_decode_buffers(int64_t n, int64_t logit_rows) {
  const BlockGeometry g = geometry(1, n);
  const AttentionShape& a = g.attention;
  const int64_t C = config_.hidden_size;
  auto buf = [&](Shape shape, DType dt, const char* what) {
    return backend_.empty(std::move(shape), dt, MemoryCategory::Buffers, what);
  };
  DecodeBuffers b;
  b.positions = buf({n}, DType::I32, "decode positions");
  b.x = buf({n, C}, DType::F32, "decode residual");
  b.h = buf({n, C}, DType::F32, "decode residual h");
  b.norm = buf({n, C}, compute_, "decode norm");
  b.rstd = buf({n}, DType::F32, "decode rstd");
  // qkv in the compute dtype as block_forward has it; the cache and attention_decode take f32,
  // which RoPE's copy gives (the same rounded values).
  b.qkv = buf({n, a.qkv_width()}, compute_, "decode qkv");
  b.qkv_f32 = compute_ == DType::F32 ? b.qkv : buf({n, a.qkv_width()}, DType::F32, "decode qkv (f32)");
  b.attn = buf({n, a.q_heads * a.head_dim}, compute_, "decode attention output");
  b.gate_up = buf({n, 2 * g.ffn}, compute_, "decode gate_up");  // as block_forward
  b.act = buf({n, g.ffn}, compute_, "decode swiglu output");
  b.logits = buf({logit_rows, config_.vocab_size}, DType::F32, "logits");
  return b;
}

// The op sequence of block_forward, with attention over the cache, then the final norm and
// the output projection of the last logit_rows rows. Device work only (b.positions already
// holds the new tokens' positions): a graph can hold it.
void Transformer::issue_decode(const Tensor& ids, KvCache& cache, DecodeBuffers& b) {
  const int64_t n = ids.numel(), L = shard_.num_layers();
  const BlockGeometry g = geometry(1, n);
  const AttentionShape& a = g.attention;
  store_->acquire(table_.embed_group(), Pass::Forward);
  backend_.embedding_forward(ids, master_view(table_.embed_tokens()), 0, b.x);
  store_->release(table_.embed_group(), Pass::Forward);
  for (int64_t l = 0; l < L; ++l) {
    const size_t group = table_.layer_group(l);
    store_->acquire(group, Pass::Forward);
    const BlockWeights w = layer_weights(l);
    backend_.rmsnorm_forward(b.x, w.input_norm, g.eps, b.norm, b.rstd);
    backend_.matmul(b.norm, false, w.qkv_weight, true, b.qkv, 1.0f, 0.0f,
                    w.qkv_bias.defined() ? &w.qkv_bias : nullptr);
    backend_.rope(b.qkv, b.positions, rope_.cos, rope_.sin, a.q_heads + a.kv_heads, a.head_dim,
                  false, compute_ == DType::F32 ? nullptr : &b.qkv_f32);
    backend_.attention_decode(b.qkv_f32, cache.keys(l), cache.values(l), b.positions, a, b.attn);
    backend_.matmul_add(b.attn, false, w.o_proj, true, b.x, b.h);
    backend_.rmsnorm_forward(b.h, w.post_norm, g.eps, b.norm, b.rstd);
    backend_.matmul(b.norm, false, w.gate_up, true, b.gate_up);
    backend_.swiglu_forward(b.gate_up, b.act);
    backend_.matmul_add(b.act, false, w.down_proj, true, b.h, b.x);
    store_->release(group, Pass::Forward);
  }
  const int64_t rows = b.logits.size(0);
  const Tensor last = b.x.rows(n - rows, n);
  Tensor final_norm = b.norm.rows(0, rows), final_rstd = b.rstd.rows(0, rows);
  acquire_head(Pass::Forward);
  backend_.rmsnorm_forward(last, master_view(table_.final_norm()), g.eps, final_norm, final_rstd);
  backend_.matmul(final_norm, false, compute_view(table_.lm_head()), true, b.logits);
  release_head(Pass::Forward);
}

Tensor Transformer::decode(const Tensor& ids, KvCache& cache, bool all_rows) {
  VACC_CHECK(shard_.has_embedding && shard_.has_head && shard_.q_heads == config_.num_heads &&
                 shard_.ffn_size == config_.intermediate_size && !shard_.vocab_parallel(config_),
             "decode needs the whole model on one device");
  VACC_CHECK(ids.defined() && ids.dim() == 1 && ids.dtype() == DType::I32 && ids.numel() > 0,
             "decode: ids must be a non-empty i32 vector, got ",
             ids.defined() ? ids.str() : "undefined");
  const int64_t n = ids.numel(), past = cache.length();
  const int64_t L = shard_.num_layers(), kv_width = shard_.kv_heads * config_.head_dim;
  VACC_CHECK(cache.num_layers() == L && cache.kv_width() == kv_width, "decode: the KV cache (",
             cache.num_layers(), " layers of width ", cache.kv_width(),
             ") was not made for this model (", L, " layers of width ", kv_width, ")");
  VACC_CHECK(n <= cache.remaining(), "decode: ", n, " new tokens after ", past,
             " do not fit the KV cache of ", cache.max_len(), " positions");
  VACC_CHECK(past + n <= max_seq_len_, "decode: position ", past + n - 1,
             " is beyond the model's maximum of ", max_seq_len_);

  if (n == 1 && decode_graphs_ && backend_.supports_graphs())
    return decode_graphed_step(ids, cache);

  DecodeBuffers b = make_decode_buffers(n, all_rows ? n : 1);
  std::vector<int32_t> pos_host(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) pos_host[size_t(i)] = int32_t(past + i);
  backend_.upload(pos_host.data(), b.positions);
  issue_decode(ids, cache, b);
  cache.advance(n);
  return b.logits;
}

// One token, as a graph (kernels/graphed_regions.h): eagerly the first time (its lazy set-up:
// the matrix library's plans for one row, kernel self-checks that read the device on the
// host), captured the second, replayed after. The graph reads `ids` by address: another ids
// tensor is another region. A failed capture is not an error: a warning, and the steps run
// eagerly from then on.
Tensor Transformer::decode_graphed_step(const Tensor& ids, KvCache& cache) {
  if (!cache.decode_step) {
    cache.decode_step = std::make_shared<DecodeStep>();
    cache.decode_step->buffers = make_decode_buffers(1, 1);
    cache.decode_step->graphs = std::make_unique<GraphedRegions>(backend_, "decode steps");
  }
  DecodeStep& step = *cache.decode_step;
  const int32_t position = int32_t(cache.length());
  backend_.upload(&position, step.buffers.positions);
  GraphedRegions& graphs = *step.graphs;
  const int64_t captured = graphs.captured(), replays = graphs.replays();
  graphs.run(int64_t(reinterpret_cast<intptr_t>(ids.data())),
             [&] { issue_decode(ids, cache, step.buffers); });
  decode_graphs_captured_ += graphs.captured() - captured;
  decode_graph_replays_ += graphs.replays() - replays;
  cache.advance(1);
  return step.buffers.logits;
}

}  // namespace vacc
