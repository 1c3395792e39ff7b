#include "vacc/model/model_shard.h"

#include <algorithm>

#include "vacc/core/error.h"

namespace vacc {

ModelShard ModelShard::tensor_parallel(const ModelConfig& c, int64_t layer_begin,
                                       int64_t layer_end, bool has_embedding, bool has_head,
                                       int tp_rank, int tp_size) {
  VACC_CHECK(tp_size >= 1 && tp_rank >= 0 && tp_rank < tp_size, "tensor parallelism: rank ",
             tp_rank, " of tp=", tp_size, " is not a rank of the group");
  VACC_CHECK(0 <= layer_begin && layer_begin <= layer_end && layer_end <= c.num_layers,
             "tensor parallelism: layers [", layer_begin, ", ", layer_end,
             ") are not a range of the model's ", c.num_layers, " layers");
  const int64_t tp = tp_size, r = tp_rank;
  VACC_CHECK(c.num_heads % tp == 0, "tp=", tp, " does not divide the ", c.num_heads,
             " attention heads");
  VACC_CHECK(c.num_kv_heads % tp == 0 || tp % c.num_kv_heads == 0, "tp=", tp,
             " neither divides the ", c.num_kv_heads, " key/value heads nor is a multiple of them ",
             "(each rank's query heads must share one key/value head)");
  VACC_CHECK(c.intermediate_size % tp == 0, "tp=", tp, " does not divide the ",
             c.intermediate_size, " FFN columns (intermediate_size)");
  const int64_t vocab_chunk = (c.vocab_size + tp - 1) / tp;
  VACC_CHECK((tp - 1) * vocab_chunk < c.vocab_size, "tp=", tp, " leaves a rank without any of the ",
             c.vocab_size, " vocabulary rows (ranges of ", vocab_chunk, ")");

  ModelShard s = whole(c);
  s.layer_begin = layer_begin;
  s.layer_end = layer_end;
  s.has_embedding = has_embedding;
  s.has_head = has_head;
  s.tp_rank = tp_rank;
  s.tp_size = tp_size;
  s.q_heads = c.num_heads / tp;
  s.q_head_begin = r * s.q_heads;
  if (c.num_kv_heads % tp == 0) {
    s.kv_heads = c.num_kv_heads / tp;
    s.kv_head_begin = r * s.kv_heads;
    s.kv_replicas = 1;
  } else {
    s.kv_replicas = int(tp / c.num_kv_heads);
    s.kv_heads = 1;
    s.kv_head_begin = r / s.kv_replicas;
  }
  s.ffn_size = c.intermediate_size / tp;
  s.ffn_begin = r * s.ffn_size;
  s.vocab_begin = r * vocab_chunk;
  s.vocab_size = std::min(vocab_chunk, c.vocab_size - s.vocab_begin);
  return s;
}

}  // namespace vacc
