#include "vacc/model/parameter_table.h"

#include <algorithm>

#include "vacc/core/error.h"

namespace vacc {

size_t ParameterTable::add(std::string name, Shape shape, bool decay) {
  ParameterEntry e{std::move(name), std::move(shape), total_, decay};
  // Keep every entry 16-element aligned (64 bytes in f32) for vector loads.
  total_ += (e.numel() + 15) / 16 * 16;
  entries_.push_back(std::move(e));
  return entries_.size() - 1;
}

namespace {

void check_shard(const ModelConfig& c, const ModelShard& s) {
  auto range_ok = [](int64_t begin, int64_t size, int64_t total) {
    return begin >= 0 && size > 0 && begin + size <= total;
  };
  VACC_CHECK(0 <= s.layer_begin && s.layer_begin <= s.layer_end && s.layer_end <= c.num_layers,
             "model shard: layers [", s.layer_begin, ", ", s.layer_end,
             ") are not a range of the model's ", c.num_layers, " layers");
  VACC_CHECK(range_ok(s.q_head_begin, s.q_heads, c.num_heads) &&
                 range_ok(s.kv_head_begin, s.kv_heads, c.num_kv_heads) &&
                 s.q_heads % s.kv_heads == 0,
             "model shard: q heads [", s.q_head_begin, ", +", s.q_heads, ") and kv heads [",
             s.kv_head_begin, ", +", s.kv_heads, ") do not fit the model's ", c.num_heads,
             " and ", c.num_kv_heads, " heads");
  VACC_CHECK(range_ok(s.ffn_begin, s.ffn_size, c.intermediate_size), "model shard: FFN columns [",
             s.ffn_begin, ", +", s.ffn_size, ") do not fit the model's ", c.intermediate_size);
  VACC_CHECK(range_ok(s.vocab_begin, s.vocab_size, c.vocab_size), "model shard: vocabulary rows [",
             s.vocab_begin, ", +", s.vocab_size, ") do not fit the model's ", c.vocab_size);
  VACC_CHECK(s.tp_size >= 1 && s.kv_replicas >= 1 && s.tp_size % s.kv_replicas == 0,
             "model shard: kv_replicas ", s.kv_replicas, " does not divide tp=", s.tp_size);
}

}  // namespace

ParameterTable::ParameterTable(const ModelConfig& c, const ModelShard& s) {
  check_shard(c, s);
  const int64_t C = c.hidden_size, D = c.head_dim;
  const int64_t q_rows = s.q_heads * D, kv_rows = s.kv_heads * D, F = s.ffn_size;
  const int64_t q0 = s.q_head_begin * D, kv0 = s.kv_head_begin * D;
  const int64_t V = s.vocab_size;
  // The piece of checkpoint tensor `name` (whole shape `full`) at `offset` in entry e: rows
  // from row_begin, columns from col_begin, `replicas` tp ranks holding the same piece.
  auto piece = [&](std::string name, size_t e, int64_t offset, Shape shape, Shape full,
                   int64_t row_begin, int64_t col_begin, int replicas) {
    checkpoint_.push_back({std::move(name), e, offset, std::move(shape), std::move(full),
                           row_begin, col_begin, replicas});
  };
  // An entry that is one whole checkpoint tensor (every tp rank holds it).
  auto whole = [&](size_t e) {
    piece(entries_[e].name, e, 0, entries_[e].shape, entries_[e].shape, 0, 0, s.tp_size);
  };
  // Closes the group begun at `start`.
  auto close_group = [&](int64_t start) {
    groups_.push_back({start, total_ - start});
    return groups_.size() - 1;
  };
  if (s.has_embedding) {
    embed_ = add("model.embed_tokens.weight", {V, C}, true);
    piece(entries_[embed_].name, embed_, 0, {V, C}, {c.vocab_size, C}, s.vocab_begin, 0, 1);
    embed_group_ = close_group(0);
  }
  first_layer_group_ = groups_.size();
  for (int64_t l = s.layer_begin; l < s.layer_end; ++l) {
    const int64_t group_start = total_;
    const std::string p = "model.layers." + std::to_string(l) + ".";
    LayerEntries le{};
    le.input_norm = add(p + "input_layernorm.weight", {C}, false);
    whole(le.input_norm);
    le.qkv_weight = add(p + "self_attn.qkv_proj.weight", {q_rows + 2 * kv_rows, C}, true);
    piece(p + "self_attn.q_proj.weight", le.qkv_weight, 0, {q_rows, C}, {c.q_width(), C}, q0, 0, 1);
    piece(p + "self_attn.k_proj.weight", le.qkv_weight, q_rows * C, {kv_rows, C},
          {c.kv_width(), C}, kv0, 0, s.kv_replicas);
    piece(p + "self_attn.v_proj.weight", le.qkv_weight, (q_rows + kv_rows) * C, {kv_rows, C},
          {c.kv_width(), C}, kv0, 0, s.kv_replicas);
    if (s.kv_replicas > 1) {
      const int64_t w = entries_[le.qkv_weight].offset;
      kv_replica_ranges_.push_back({w + q_rows * C, w + (q_rows + 2 * kv_rows) * C});
    }
    le.has_qkv_bias = c.attention_bias;
    if (c.attention_bias) {
      le.qkv_bias = add(p + "self_attn.qkv_proj.bias", {q_rows + 2 * kv_rows}, false);
      piece(p + "self_attn.q_proj.bias", le.qkv_bias, 0, {q_rows}, {c.q_width()}, q0, 0, 1);
      piece(p + "self_attn.k_proj.bias", le.qkv_bias, q_rows, {kv_rows}, {c.kv_width()}, kv0, 0,
            s.kv_replicas);
      piece(p + "self_attn.v_proj.bias", le.qkv_bias, q_rows + kv_rows, {kv_rows}, {c.kv_width()},
            kv0, 0, s.kv_replicas);
      if (s.kv_replicas > 1) {
        const int64_t b = entries_[le.qkv_bias].offset;
        kv_replica_ranges_.push_back({b + q_rows, b + q_rows + 2 * kv_rows});
      }
    } else {
      le.qkv_bias = npos;
    }
    le.o_proj = add(p + "self_attn.o_proj.weight", {C, q_rows}, true);
    piece(entries_[le.o_proj].name, le.o_proj, 0, {C, q_rows}, {C, c.q_width()}, 0, q0, 1);
    le.post_norm = add(p + "post_attention_layernorm.weight", {C}, false);
    whole(le.post_norm);
    le.gate_up = add(p + "mlp.gate_up_proj.weight", {2 * F, C}, true);
    const int64_t I = c.intermediate_size;
    piece(p + "mlp.gate_proj.weight", le.gate_up, 0, {F, C}, {I, C}, s.ffn_begin, 0, 1);
    piece(p + "mlp.up_proj.weight", le.gate_up, F * C, {F, C}, {I, C}, s.ffn_begin, 0, 1);
    le.down_proj = add(p + "mlp.down_proj.weight", {C, F}, true);
    piece(entries_[le.down_proj].name, le.down_proj, 0, {C, F}, {C, I}, 0, s.ffn_begin, 1);
    layers_.push_back(le);
    close_group(group_start);
  }
  if (s.has_head) {
    const int64_t group_start = total_;
    final_norm_ = add("model.norm.weight", {C}, false);
    whole(final_norm_);
    if (c.tie_word_embeddings && s.has_embedding) {
      lm_head_ = embed_;
    } else {
      lm_head_ = add("lm_head.weight", {V, C}, true);
      // A tied head on a stage without the embedding still keeps the checkpoint's name.
      piece(c.tie_word_embeddings ? "model.embed_tokens.weight" : "lm_head.weight", lm_head_, 0,
            {V, C}, {c.vocab_size, C}, s.vocab_begin, 0, 1);
    }
    head_group_ = close_group(group_start);
  }
}

Tensor ParameterTable::view_in_group(const Tensor& group_flat, size_t g, size_t i) const {
  VACC_CHECK(g < groups_.size() && i < entries_.size(), "parameter group ", g, " / entry ", i,
             " out of range");
  const ParameterEntry& e = entries_[i];
  VACC_CHECK(e.offset >= groups_[g].offset && e.offset + e.numel() <= groups_[g].end(),
             "parameter ", e.name, " is not in group ", g);
  return group_flat.view(e.offset - groups_[g].offset, e.shape);
}

size_t ParameterTable::group_of_entry(size_t i) const {
  VACC_CHECK(i < entries_.size(), "parameter index ", i, " out of range");
  for (size_t g = 0; g < groups_.size(); ++g)
    if (entries_[i].offset >= groups_[g].offset && entries_[i].offset < groups_[g].end()) return g;
  fail("parameter ", entries_[i].name, " belongs to no group");
}

size_t ParameterTable::find(const std::string& name) const {
  for (size_t i = 0; i < entries_.size(); ++i)
    if (entries_[i].name == name) return i;
  fail("no parameter named ", name, " in this model shard");
}

Tensor ParameterTable::view(const Tensor& flat, size_t i) const {
  VACC_CHECK(i < entries_.size(), "parameter index ", i, " out of range");
  return flat.view(entries_[i].offset, entries_[i].shape);
}

void place_checkpoint_piece(const CheckpointTensor& piece, const float* values, float* full) {
  const int64_t rows = piece.numel() / std::max<int64_t>(1, piece.cols()), cols = piece.cols();
  for (int64_t i = 0; i < rows; ++i)
    std::copy(values + i * cols, values + (i + 1) * cols, full + piece.full_index(i * cols));
}

void extract_checkpoint_piece(const CheckpointTensor& piece, const float* full, float* values) {
  const int64_t rows = piece.numel() / std::max<int64_t>(1, piece.cols()), cols = piece.cols();
  for (int64_t i = 0; i < rows; ++i) {
    const float* src = full + piece.full_index(i * cols);
    std::copy(src, src + cols, values + i * cols);
  }
}

}  // namespace vacc
