// ModelShard: which part of a model one device holds. A contiguous range of layers
// (pipeline stage), and within each layer a range of attention heads and FFN columns, and a
// range of the vocabulary for the embedding and the output head (tensor-parallel shard). The
// model code runs any shard; the runtime decides the split.
#pragma once

#include <cstdint>
#include <vector>

#include "vacc/model/model_config.h"

namespace vacc {

struct ModelShard {
  int64_t layer_begin = 0, layer_end = 0;  // layers [begin, end)
  bool has_embedding = true;               // the first stage embeds tokens
  bool has_head = true;                    // the last stage: final norm, output projection, loss
  int64_t q_head_begin = 0, q_heads = 0;   // attention heads of this shard
  int64_t kv_head_begin = 0, kv_heads = 0; // their key/value heads
  int64_t ffn_begin = 0, ffn_size = 0;     // FFN (intermediate) columns of this shard
  // Rows [vocab_begin, vocab_begin + vocab_size) of the embedding and the output head
  // (the whole model: [0, V)).
  int64_t vocab_begin = 0, vocab_size = 0;
  // This shard's place among the tensor-parallel ranks (0 of 1 without tensor parallelism).
  int tp_rank = 0, tp_size = 1;
  // How many tp ranks hold this shard's key/value heads: 1 when the kv heads are split,
  // tp / num_kv_heads when they are replicated (fewer kv heads than tp ranks). The replicas
  // are the tp ranks kv_replica_group(); their k/v weight and bias gradients are partial sums
  // that the runtime must all-reduce among them (ParameterTable::kv_replica_ranges()).
  int kv_replicas = 1;

  int64_t num_layers() const { return layer_end - layer_begin; }
  int64_t vocab_end() const { return vocab_begin + vocab_size; }
  // True when the embedding / head hold only part of the vocabulary (vocabulary-parallel
  // embedding and cross-entropy, with the tensor-parallel hooks).
  bool vocab_parallel(const ModelConfig& c) const { return vocab_begin != 0 || vocab_size != c.vocab_size; }
  // The tp ranks (in [0, tp_size)) holding the same kv heads as this one, in order; just
  // tp_rank when the kv heads are split.
  std::vector<int> kv_replica_group() const {
    std::vector<int> ranks;
    const int first = tp_rank / kv_replicas * kv_replicas;
    for (int r = first; r < first + kv_replicas; ++r) ranks.push_back(r);
    return ranks;
  }

  // The whole model on one device.
  static ModelShard whole(const ModelConfig& c) {
    return ModelShard{0,    c.num_layers, true, true, 0, c.num_heads, 0, c.num_kv_heads, 0,
                      c.intermediate_size, 0, c.vocab_size, 0, 1, 1};
  }

  // Tensor-parallel rank tp_rank of tp_size (Megatron style) of the layers [layer_begin,
  // layer_end): the q heads split evenly (num_heads % tp_size == 0); the kv heads split evenly
  // when num_kv_heads % tp_size == 0, else replicated (tp_size % num_kv_heads == 0: each rank
  // holds the one kv head its q heads use); the FFN columns split evenly (intermediate_size %
  // tp_size == 0); the vocabulary in contiguous ranges of ceil(V / tp_size) (the last rank's
  // smaller). Throws vacc::Error naming the sizes when the split is impossible.
  static ModelShard tensor_parallel(const ModelConfig& c, int64_t layer_begin, int64_t layer_end,
                                    bool has_embedding, bool has_head, int tp_rank, int tp_size);
};

}  // namespace vacc
