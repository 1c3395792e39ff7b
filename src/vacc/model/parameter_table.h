// ParameterTable: the parameters of a model shard as a table of named entries laid out in
// one flat buffer (llm.c's layout). Parameters, gradients, optimizer moments and the bf16
// compute copy all share the layout, so an optimizer, a gradient reduction or a checkpoint
// writer is a loop over the table.
//
// Per layer the q, k and v projections are fused into one (q_rows + 2 kv_rows, C) matrix
// and gate/up into one (2F, C) matrix, so each is one matrix product; the Hugging Face
// tensors (q_proj, k_proj, ...) are contiguous row ranges of the fused entries.
#pragma once

#include <string>
#include <vector>

#include "vacc/core/tensor.h"
#include "vacc/model/model_config.h"
#include "vacc/model/model_shard.h"

namespace vacc {

struct ParameterEntry {
  std::string name;      // e.g. "model.layers.3.self_attn.qkv_proj.weight"
  Shape shape;
  int64_t offset = 0;    // first element in the flat buffer
  bool weight_decay = true;  // matrices decay; norms and biases do not
  int64_t numel() const { return shape_numel(shape); }
};

// A Hugging Face checkpoint tensor, or the shard's piece of it, inside an entry: elements
// [offset, offset + numel(shape)) of entry `entry`, row-major with `shape`. The piece is the
// block of rows [row_begin, row_begin + shape[0]) and columns [col_begin, col_begin +
// shape[1]) of the whole tensor of shape full_shape (a 1-D piece: elements [row_begin,
// row_begin + shape[0])). A tensor-parallel shard holds row slices of q/k/v, gate/up, their
// biases, the embedding and lm_head; column slices of o_proj and down_proj; norms whole.
struct CheckpointTensor {
  std::string name;  // e.g. "model.layers.3.self_attn.k_proj.weight"
  size_t entry = 0;
  int64_t offset = 0;
  Shape shape;       // the piece
  Shape full_shape;  // the checkpoint's tensor
  int64_t row_begin = 0, col_begin = 0;
  // How many tp ranks hold this same piece: 1 for a split tensor, tp_size for a whole one
  // (norms), ModelShard::kv_replicas for replicated k/v heads. (1 without tensor parallelism.)
  int replicas = 1;

  int64_t numel() const { return shape_numel(shape); }
  bool is_whole() const { return shape == full_shape; }
  // Columns of the piece and of the whole tensor (1 for a 1-D tensor).
  int64_t cols() const { return shape.size() == 2 ? shape[1] : 1; }
  int64_t full_cols() const { return full_shape.size() == 2 ? full_shape[1] : 1; }
  // The index in the whole tensor (row-major) of element i of the piece.
  int64_t full_index(int64_t i) const {
    return (row_begin + i / cols()) * full_cols() + col_begin + i % cols();
  }
};

// Writes a piece's values (numel(piece.shape) floats, row-major) into their place in `full`,
// a host buffer holding the whole tensor (numel(piece.full_shape) floats): how a saver
// assembles a checkpoint tensor from the tensor-parallel ranks' pieces.
void place_checkpoint_piece(const CheckpointTensor& piece, const float* values, float* full);
// The inverse: copies the piece's values out of the whole tensor.
void extract_checkpoint_piece(const CheckpointTensor& piece, const float* full, float* values);

// A contiguous range of the flat layout whose parameters are used together: the embedding,
// one layer, or the head (final norm and an untied lm_head). A runtime that shards the
// parameters (ZeRO-3) materialises one group at a time.
struct ParameterGroup {
  int64_t offset = 0, numel = 0;
  int64_t end() const { return offset + numel; }
};

// Elements [begin, end) of a table's flat layout: the part of the parameters a rank holds.
struct FlatRange {
  int64_t begin = 0, end = 0;
  int64_t numel() const { return end - begin; }
  bool contains(int64_t b, int64_t e) const { return begin <= b && e <= end; }
};

// Indices of one layer's entries in the table.
struct LayerEntries {
  size_t input_norm, qkv_weight, qkv_bias, o_proj, post_norm, gate_up, down_proj;
  bool has_qkv_bias;
};

class ParameterTable {
 public:
  ParameterTable(const ModelConfig& config, const ModelShard& shard);

  const std::vector<ParameterEntry>& entries() const { return entries_; }
  const std::vector<CheckpointTensor>& checkpoint_tensors() const { return checkpoint_; }
  const ParameterEntry& entry(size_t i) const { return entries_[i]; }
  int64_t total_numel() const { return total_; }
  size_t find(const std::string& name) const;  // throws vacc::Error if absent

  // Entry indices; embed/final_norm/lm_head are npos where the shard lacks them.
  static constexpr size_t npos = ~size_t{0};
  size_t embed_tokens() const { return embed_; }
  size_t final_norm() const { return final_norm_; }
  size_t lm_head() const { return lm_head_; }  // == embed_tokens() when tied
  const LayerEntries& layer(int64_t local_index) const { return layers_[size_t(local_index)]; }

  // The view of entry i inside a flat tensor laid out by this table.
  Tensor view(const Tensor& flat, size_t i) const;
  // The view of entry i inside a tensor that holds only group g (laid out from its offset).
  Tensor view_in_group(const Tensor& group_flat, size_t g, size_t i) const;

  // Groups in order of use by forward: the embedding (if any), the layers, the head (if any).
  const std::vector<ParameterGroup>& groups() const { return groups_; }
  size_t embed_group() const { return embed_group_; }  // npos without embedding
  size_t head_group() const { return head_group_; }    // npos without head
  size_t layer_group(int64_t local_index) const { return first_layer_group_ + size_t(local_index); }
  // The group whose range holds entry i.
  size_t group_of_entry(size_t i) const;
  FlatRange whole() const { return {0, total_}; }

  // With replicated key/value heads (ModelShard::kv_replicas > 1): the ranges of the flat
  // layout holding the k and v rows of each layer's qkv weight and bias (one range per
  // entry, in layout order). Their gradients are partial on each replica: the runtime sums
  // them over the tp ranks of ModelShard::kv_replica_group() (after each backward, before
  // the optimizer or any data-parallel reduction). Empty when the kv heads are split.
  // Each range lies inside one layer's group, at the same offset from the group's start on
  // every replica (the layer groups of all tp ranks have one layout; the flat offsets
  // themselves differ where the ranks' vocabulary ranges, and so their embeddings, differ).
  const std::vector<FlatRange>& kv_replica_ranges() const { return kv_replica_ranges_; }

 private:
  size_t add(std::string name, Shape shape, bool decay);

  std::vector<ParameterEntry> entries_;
  std::vector<CheckpointTensor> checkpoint_;
  std::vector<LayerEntries> layers_;
  size_t embed_ = npos, final_norm_ = npos, lm_head_ = npos;
  int64_t total_ = 0;
  std::vector<ParameterGroup> groups_;
  size_t embed_group_ = npos, head_group_ = npos, first_layer_group_ = 0;
  std::vector<FlatRange> kv_replica_ranges_;
};

}  // namespace vacc
