// ModelShard: which part of a model one device holds. A contiguous range of layers
// (pipeline stage), and within each layer a range of attention heads and FFN columns
// (tensor-parallel shard). The model code runs any shard; the runtime decides the split.
#pragma once

#include <cstdint>

#include "vacc/model/model_config.h"

namespace vacc {

struct ModelShard {
  int64_t layer_begin = 0, layer_end = 0;  // layers [begin, end)
  bool has_embedding = true;               // the first stage embeds tokens
  bool has_head = true;                    // the last stage: final norm, output projection, loss
  int64_t q_head_begin = 0, q_heads = 0;   // attention heads of this shard
  int64_t kv_head_begin = 0, kv_heads = 0; // their key/value heads
  int64_t ffn_begin = 0, ffn_size = 0;     // FFN (intermediate) columns of this shard

  int64_t num_layers() const { return layer_end - layer_begin; }

  // The whole model on one device.
  static ModelShard whole(const ModelConfig& c) {
    return ModelShard{0, c.num_layers, true, true, 0, c.num_heads, 0, c.num_kv_heads, 0,
                      c.intermediate_size};
  }
};

}  // namespace vacc
