#include "vacc/model/parameter_table.h"

#include "vacc/core/error.h"

namespace vacc {

size_t ParameterTable::add(std::string name, Shape shape, bool decay) {
  ParameterEntry e{std::move(name), std::move(shape), total_, decay};
  // Keep every entry 16-element aligned (64 bytes in f32) for vector loads.
  total_ += (e.numel() + 15) / 16 * 16;
  entries_.push_back(std::move(e));
  return entries_.size() - 1;
}

ParameterTable::ParameterTable(const ModelConfig& c, const ModelShard& s) {
  const int64_t C = c.hidden_size, D = c.head_dim;
  const int64_t q_rows = s.q_heads * D, kv_rows = s.kv_heads * D, F = s.ffn_size;
  auto whole = [&](size_t e) {
    checkpoint_.push_back({entries_[e].name, e, 0, entries_[e].shape});
  };
  // Closes the group begun at `start`.
  auto close_group = [&](int64_t start) {
    groups_.push_back({start, total_ - start});
    return groups_.size() - 1;
  };
  if (s.has_embedding) {
    embed_ = add("model.embed_tokens.weight", {c.vocab_size, C}, true);
    whole(embed_);
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
    checkpoint_.push_back({p + "self_attn.q_proj.weight", le.qkv_weight, 0, {q_rows, C}});
    checkpoint_.push_back({p + "self_attn.k_proj.weight", le.qkv_weight, q_rows * C, {kv_rows, C}});
    checkpoint_.push_back(
        {p + "self_attn.v_proj.weight", le.qkv_weight, (q_rows + kv_rows) * C, {kv_rows, C}});
    le.has_qkv_bias = c.attention_bias;
    if (c.attention_bias) {
      le.qkv_bias = add(p + "self_attn.qkv_proj.bias", {q_rows + 2 * kv_rows}, false);
      checkpoint_.push_back({p + "self_attn.q_proj.bias", le.qkv_bias, 0, {q_rows}});
      checkpoint_.push_back({p + "self_attn.k_proj.bias", le.qkv_bias, q_rows, {kv_rows}});
      checkpoint_.push_back(
          {p + "self_attn.v_proj.bias", le.qkv_bias, q_rows + kv_rows, {kv_rows}});
    } else {
      le.qkv_bias = npos;
    }
    le.o_proj = add(p + "self_attn.o_proj.weight", {C, q_rows}, true);
    whole(le.o_proj);
    le.post_norm = add(p + "post_attention_layernorm.weight", {C}, false);
    whole(le.post_norm);
    le.gate_up = add(p + "mlp.gate_up_proj.weight", {2 * F, C}, true);
    checkpoint_.push_back({p + "mlp.gate_proj.weight", le.gate_up, 0, {F, C}});
    checkpoint_.push_back({p + "mlp.up_proj.weight", le.gate_up, F * C, {F, C}});
    le.down_proj = add(p + "mlp.down_proj.weight", {C, F}, true);
    whole(le.down_proj);
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
      lm_head_ = add("lm_head.weight", {c.vocab_size, C}, true);
      // A tied head on a stage without the embedding still keeps the checkpoint's name.
      checkpoint_.push_back({c.tie_word_embeddings ? "model.embed_tokens.weight" : "lm_head.weight",
                             lm_head_, 0, entries_[lm_head_].shape});
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

}  // namespace vacc
