// Hugging Face checkpoint folders: what `save_pretrained` writes and `from_pretrained` reads.
//
//   config.json                    ModelConfig::to_json() + torch_dtype, transformers_version
//   generation_config.json         bos/eos token ids (when known)
//   model.safetensors              all weights, when they fit in one file of max_shard_bytes,
//   or model-0000K-of-0000M.safetensors + model.safetensors.index.json
//                                  ({"metadata": {"total_size": N}, "weight_map": {name: file}})
//   tokenizer.json, tokenizer_config.json, vocab.json, merges.txt, special_tokens_map.json
//                                  copied from a tokenizer folder (those present)
//
// Tensors carry the Hugging Face names ([out, in] weights, q/k/v and gate/up separate),
// in the order of the PyTorch module's state_dict; `lm_head.weight` is omitted when the
// embeddings are tied. Every safetensors file carries the metadata {"format": "pt"} that
// transformers requires.
//
// Loading: every checkpoint tensor of the ParameterTable must be present with its shape;
// F32, BF16, F16 (and F64) become f32. Only the files holding the table's tensors are
// opened and only its tensors read (through the memory map), so a rank holding a slice of
// the model reads only that slice. The checkpoint's *names* are checked against the whole
// model the config describes (cheap: the index or the headers): a tensor the model lacks
// (say a layer beyond num_hidden_layers) is an ERROR, because it means config.json and the
// weights disagree and training would silently drop weights. Two kinds are tolerated and
// ignored: `lm_head.weight` when the embeddings are tied (some exporters write it), and
// `*.rotary_emb.inv_freq` buffers (older Llama exports). When both model.safetensors and
// an index exist, model.safetensors is read, as transformers does.
//
// Saving never damages an existing folder: every file is first written complete into a
// staging folder DIR/.vacc-save.tmp (safetensors files themselves through tmp + rename),
// and only when all are written are they renamed into DIR (weights, then the index, then
// the config and tokenizer files). After that, files of the previous save that this one
// did not write are removed: shards of another shard count, model.safetensors or the index
// when the layout changed, and tokenizer files when no tokenizer was given — the folder
// then describes exactly what was saved. If anything fails before the renames, DIR is left
// as it was (and the staging folder removed).
//
// Tensor-parallel shards (ModelShard::tensor_parallel: a table whose entries hold some
// heads, FFN columns or vocabulary rows) load their slices: the file's tensor must have the
// piece's full_shape, and only the piece's rows (or, for o_proj and down_proj, columns) are
// read. Saving needs the whole model's table; a runtime saving from tensor-parallel ranks
// assembles each tensor from the ranks' pieces with place_checkpoint_piece
// (parameter_table.h) inside its HfTensorSource.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "vacc/core/dtype.h"
#include "vacc/core/tensor.h"
#include "vacc/kernels/backend.h"
#include "vacc/model/model_config.h"
#include "vacc/model/parameter_table.h"

namespace vacc {

// The transformers version written into config.json and generation_config.json.
inline constexpr const char* kTransformersVersion = "4.44.0";
// The default largest shard (transformers' save_pretrained default).
inline constexpr size_t kDefaultMaxShardBytes = 5'000'000'000;

// DIR/config.json as a ModelConfig (vacc::Error naming the file for an unknown
// architecture, a missing field, bad JSON).
ModelConfig load_hf_config(const std::string& dir);

// Reads the checkpoint tensors of `table` from the folder into flat_params_f32 (an f32
// tensor laid out by `table`); see the top of this file. progress: a bar over the shards
// on stderr. Throws vacc::Error naming the file and tensor on any problem.
void load_hf_checkpoint(const std::string& dir, Backend& backend, const ModelConfig& config,
                        const ParameterTable& table, Tensor& flat_params_f32, bool progress);
// The same for a rank's shard: flat_params_f32 holds elements [range.begin, range.end) of
// the table's layout, and only the tensors overlapping the range are read.
void load_hf_checkpoint(const std::string& dir, Backend& backend, const ModelConfig& config,
                        const ParameterTable& table, Tensor& flat_params_f32, bool progress,
                        FlatRange range);

// A tensor of the checkpoint: its Hugging Face name and full shape.
struct HfTensorInfo {
  std::string name;
  Shape shape;
};

// The whole model's checkpoint tensors in state_dict order (lm_head omitted when tied).
std::vector<HfTensorInfo> hf_checkpoint_tensors(const ModelConfig& config);

// The shard of each tensor (0-based), given the tensors' sizes in bytes: tensors in order,
// a new shard begun when the next tensor would take the current one over max_shard_bytes;
// a tensor larger than the limit gets a shard of its own (transformers' rule).
std::vector<int> assign_shards(const std::vector<uint64_t>& tensor_bytes, uint64_t max_shard_bytes);

struct HfSaveOptions {
  DType dtype = DType::F32;  // F32 or BF16
  size_t max_shard_bytes = kDefaultMaxShardBytes;
  std::string tokenizer_dir;  // empty: no tokenizer
  bool progress = false;      // a bar over the shards written, on stderr
};

// Produces the f32 values of one checkpoint tensor into `out` (numel(shape) floats).
// Called once per tensor, in hf_checkpoint_tensors() order, one shard at a time.
using HfTensorSource = std::function<void(const HfTensorInfo& tensor, float* out)>;

// Writes the folder, pulling the weights from `source`: at most one shard's data is held
// in memory at a time (plus one tensor in f32 when saving BF16).
void write_hf_checkpoint(const std::string& dir, const ModelConfig& config,
                         const HfTensorSource& source, const HfSaveOptions& options);

// Writes only config.json, generation_config.json and the tokenizer files (no weights; any
// weight files of an earlier save are removed, so the folder does not pair a new config
// with old weights): a model for planning.
void write_hf_config_only(const std::string& dir, const ModelConfig& config,
                          const HfSaveOptions& options);

// Saves the parameters (an f32 tensor laid out by `table`, which must hold the whole
// model) as a Hugging Face folder; see the top of this file.
void save_hf_checkpoint(const std::string& dir, Backend& backend, const ModelConfig& config,
                        const ParameterTable& table, const Tensor& flat_params_f32,
                        DType save_dtype, size_t max_shard_bytes, const std::string& tokenizer_dir);

// Writes a freshly initialised model (initialize_parameters' values for `seed`) without
// ever holding the whole model: the embedding, each layer and the head are initialised
// piece by piece (the counter-based initialisation gives every piece the values the whole
// model would get) and written one shard at a time. The files are byte for byte those of
// initialize_parameters + save_hf_checkpoint.
void write_initialized_hf_checkpoint(const std::string& dir, const ModelConfig& config,
                                     uint64_t seed, const HfSaveOptions& options);

// Host memory write_initialized_hf_checkpoint needs at its peak (bytes), and the bytes it
// writes to disk (weights only), for checking against what the machine has.
size_t initialized_checkpoint_peak_memory(const ModelConfig& config, const HfSaveOptions& options);
uint64_t hf_checkpoint_weight_bytes(const ModelConfig& config, DType dtype);

}  // namespace vacc
