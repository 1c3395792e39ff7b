#include "vacc/runtime/hf_checkpoint.h"

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <future>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <regex>
#include <set>
#include <thread>
#include <tuple>

#include "vacc/core/error.h"
#include "vacc/core/json_file.h"
#include "vacc/core/progress_bar.h"
#include "vacc/io/safetensors.h"
#include "vacc/model/initialization.h"

namespace vacc {
namespace {

namespace fs = std::filesystem;

constexpr const char* kSingleFile = "model.safetensors";
constexpr const char* kIndexFile = "model.safetensors.index.json";
constexpr const char* kStagingDir = ".vacc-save.tmp";
const char* const kTokenizerFiles[] = {"tokenizer.json", "tokenizer_config.json", "vocab.json",
                                       "merges.txt", "special_tokens_map.json"};

std::string quoted(const std::string& s) {
  return "\"" + s + "\"";
}

std::string in_dir(const std::string& dir, const std::string& name) {
  return (fs::path(dir) / name).string();
}

bool starts_with(const std::string& s, const std::string& prefix) {
  return s.compare(0, prefix.size(), prefix) == 0;
}

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() &&
         s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

std::string shard_file_name(int k, int m) {
  char name[64];
  std::snprintf(name, sizeof name, "model-%05d-of-%05d.safetensors", k, m);
  return name;
}

bool is_shard_file_name(const std::string& name) {
  static const std::regex pattern(R"(model-\d{5}-of-\d{5}\.safetensors)");
  return std::regex_match(name, pattern);
}

// The position of a checkpoint tensor in the PyTorch module's state_dict: the embedding,
// the layers in order (attention q, k, v, o with each weight before its bias; the MLP's
// gate, up, down; then the two norms, as Qwen2DecoderLayer / LlamaDecoderLayer register
// them), the final norm, lm_head.
std::tuple<int, int64_t, int> state_dict_order(const std::string& name) {
  static const char* const kLayerOrder[] = {
      "self_attn.q_proj.weight", "self_attn.q_proj.bias",   "self_attn.k_proj.weight",
      "self_attn.k_proj.bias",   "self_attn.v_proj.weight", "self_attn.v_proj.bias",
      "self_attn.o_proj.weight", "mlp.gate_proj.weight",    "mlp.up_proj.weight",
      "mlp.down_proj.weight",    "input_layernorm.weight",  "post_attention_layernorm.weight"};
  if (name == "model.embed_tokens.weight") return {0, 0, 0};
  const std::string layers = "model.layers.";
  if (starts_with(name, layers)) {
    size_t dot = name.find('.', layers.size());
    int64_t layer = std::stoll(name.substr(layers.size(), dot - layers.size()));
    const std::string rest = name.substr(dot + 1);
    int rank = 99;
    for (int i = 0; i < int(std::size(kLayerOrder)); ++i)
      if (rest == kLayerOrder[i]) rank = i;
    return {1, layer, rank};
  }
  if (name == "model.norm.weight") return {2, 0, 0};
  if (name == "lm_head.weight") return {3, 0, 0};
  return {4, 0, 0};
}

// Checkpoint tensors that may be in a file without being part of the model.
bool ignorable_tensor(const std::string& name, const ModelConfig& config) {
  if (name == "lm_head.weight" && config.tie_word_embeddings) return true;
  return ends_with(name, ".rotary_emb.inv_freq");
}

std::string describe(const ModelConfig& c) {
  return detail::concat(c.architecture, " with ", c.num_layers, " layers, hidden ", c.hidden_size,
                        ", vocabulary ", c.vocab_size,
                        c.tie_word_embeddings ? ", tied embeddings" : "");
}

// ---------------------------------------------------------------------------------------
// Loading

// Copies one checkpoint tensor from the file into its place in the flat parameters.
// The part of checkpoint tensor ct inside `range` of the flat layout: [lo, hi), empty if
// lo >= hi.
std::pair<int64_t, int64_t> overlap(const CheckpointTensor& ct, const ParameterTable& table,
                                    FlatRange range) {
  const int64_t start = table.entry(ct.entry).offset + ct.offset;
  return {std::max(start, range.begin), std::min(start + shape_numel(ct.shape), range.end)};
}

void read_tensor(const SafetensorsFile& file, const SafetensorsEntry& e, const CheckpointTensor& ct,
                 const ParameterTable& table, Backend& backend, Tensor& flat, FlatRange range,
                 std::vector<float>& host) {
  VACC_CHECK(e.shape == ct.full_shape, file.path(), ": tensor ", quoted(ct.name), " has shape ",
             shape_str(e.shape), " but the model (config.json) needs ", shape_str(ct.full_shape));
  VACC_CHECK(e.dtype == "F32" || e.dtype == "BF16" || e.dtype == "F16" || e.dtype == "F64",
             file.path(), ": tensor ", quoted(ct.name), " has dtype ", e.dtype,
             "; expected a floating-point tensor (F32, BF16 or F16)");
  const auto [lo, hi] = overlap(ct, table, range);
  const int64_t start = table.entry(ct.entry).offset + ct.offset;
  // Elements [first, end) of the piece (the tensor itself, or a tensor-parallel slice of its
  // rows or columns): a run of whole rows of the file is contiguous; a column slice is read
  // row by row.
  const int64_t first = lo - start, end = hi - start, cols = ct.cols();
  host.resize(size_t(end - first));
  if (cols == ct.full_cols()) {
    file.read_f32(e, ct.full_index(first), end - first, host.data());
  } else {
    for (int64_t i = first; i < end;) {
      const int64_t row_end = std::min(end, (i / cols + 1) * cols);
      file.read_f32(e, ct.full_index(i), row_end - i, host.data() + (i - first));
      i = row_end;
    }
  }
  Tensor dst = flat.view(lo - range.begin, {hi - lo});
  backend.upload(host.data(), dst);
}

// Checks the checkpoint's tensor names against the whole model: each name must belong to
// the model (or be ignorable), and every tensor of the model must be there.
// `file_of(name)` names the file a tensor was found in (for messages); `listing` the file
// that lists the names (the single file, or the index).
template <typename FileOf>
void check_names(const std::vector<std::string>& names, FileOf file_of, const std::string& listing,
                 const ModelConfig& config) {
  std::map<std::string, Shape> expected;
  for (HfTensorInfo& t : hf_checkpoint_tensors(config)) expected[t.name] = std::move(t.shape);
  std::set<std::string> present;
  for (const std::string& name : names) {
    if (!expected.count(name)) {
      if (ignorable_tensor(name, config)) continue;
      fail(file_of(name), ": tensor ", quoted(name), " is not part of the model that ",
           "config.json describes (", describe(config), "); config.json and the weights disagree");
    }
    present.insert(name);
  }
  for (const HfTensorInfo& t : hf_checkpoint_tensors(config))
    VACC_CHECK(present.count(t.name), listing, ": missing tensor ", quoted(t.name), " (shape ",
               shape_str(t.shape), ") of the model that config.json describes (", describe(config),
               ")");
}

struct Index {
  std::map<std::string, std::string> file_of;  // tensor name -> file name in the folder
};

Index read_index(const std::string& path) {
  nlohmann::json j = read_json_file(path);
  VACC_CHECK(j.is_object() && j.contains("weight_map") && j["weight_map"].is_object(), path,
             ": expected {\"metadata\": {...}, \"weight_map\": {tensor: file}}");
  Index index;
  for (auto it = j["weight_map"].begin(); it != j["weight_map"].end(); ++it) {
    VACC_CHECK(it.value().is_string(), path, ": weight_map entry for tensor ", quoted(it.key()),
               " must be a file name, got ", it.value().dump());
    const std::string file = it.value().get<std::string>();
    const fs::path p(file);
    bool escapes = p.is_absolute() || file.empty();
    for (const fs::path& part : p)
      if (part == "..") escapes = true;
    VACC_CHECK(!escapes, path, ": weight_map maps tensor ", quoted(it.key()), " to ", quoted(file),
               ", which is not a file inside the folder");
    index.file_of[it.key()] = file;
  }
  return index;
}

// ---------------------------------------------------------------------------------------
// Saving

void write_text_file(const std::string& path, const std::string& text) {
  {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    VACC_CHECK(out.good(), "cannot write ", path);
    out << text;
    out.flush();
    VACC_CHECK(out.good(), "cannot write ", path, " (disk full?)");
  }
}

nlohmann::json config_json(const ModelConfig& config, DType dtype) {
  nlohmann::json j = config.to_json();
  j["torch_dtype"] = dtype == DType::BF16 ? "bfloat16" : "float32";
  j["transformers_version"] = kTransformersVersion;
  auto add = [&](const char* key, const nlohmann::json& value) {
    if (!j.contains(key)) j[key] = value;
  };
  add("attention_dropout", 0.0);
  add("use_cache", true);
  if (config.model_type == "qwen2") {
    add("use_sliding_window", false);
    add("sliding_window", config.max_position_embeddings);
    add("max_window_layers", config.num_layers);
  } else if (config.model_type == "llama") {
    add("mlp_bias", false);
    add("pretraining_tp", 1);
  } else if (config.model_type == "mistral") {
    add("sliding_window", nullptr);
  }
  return j;
}

nlohmann::json generation_config_json(const ModelConfig& config) {
  nlohmann::json j{{"_from_model_config", true}, {"transformers_version", kTransformersVersion}};
  if (config.bos_token_id >= 0) j["bos_token_id"] = config.bos_token_id;
  if (config.eos_token_id >= 0) j["eos_token_id"] = config.eos_token_id;
  return j;
}

bool managed_weight_file(const std::string& name) {
  return name == kSingleFile || name == kIndexFile || is_shard_file_name(name);
}

bool managed_tokenizer_file(const std::string& name) {
  for (const char* t : kTokenizerFiles)
    if (name == t) return true;
  return false;
}

// Writes the folder: weights from `source` (none when null), config, tokenizer; see the
// header for the staging and renaming.
void write_folder(const std::string& dir, const ModelConfig& config, const HfTensorSource* source,
                  const HfSaveOptions& options) {
  VACC_CHECK(options.dtype == DType::F32 || options.dtype == DType::BF16,
             "a checkpoint is saved in f32 or bf16, not ", dtype_name(options.dtype));
  VACC_CHECK(options.max_shard_bytes > 0, "the largest shard size must be positive");
  VACC_CHECK(!dir.empty(), "no folder given to save the model in");
  const fs::path folder(dir);
  std::error_code ec;
  const bool existed = fs::exists(folder, ec);
  VACC_CHECK(!existed || fs::is_directory(folder, ec), dir,
             " exists and is not a folder; a model is saved as a folder");
  if (!existed) {
    fs::create_directories(folder, ec);
    VACC_CHECK(!ec, "cannot create the folder ", dir, ": ", ec.message());
  }
  if (!options.tokenizer_dir.empty()) {
    const std::string tokenizer_json = in_dir(options.tokenizer_dir, "tokenizer.json");
    VACC_CHECK(fs::is_regular_file(tokenizer_json, ec), "the tokenizer folder ",
               options.tokenizer_dir, " has no tokenizer.json (", tokenizer_json, ")");
  }

  const fs::path staging = folder / kStagingDir;
  fs::remove_all(staging, ec);  // what a failed earlier save left
  fs::create_directory(staging, ec);
  VACC_CHECK(!ec, "cannot create the staging folder ", staging.string(), ": ", ec.message());

  std::vector<std::string> written;  // file names, in the order they are moved into place
  try {
    if (source) {
      const std::vector<HfTensorInfo> tensors = hf_checkpoint_tensors(config);
      const size_t element = dtype_size(options.dtype);
      std::vector<uint64_t> bytes;
      for (const HfTensorInfo& t : tensors)
        bytes.push_back(uint64_t(shape_numel(t.shape)) * element);
      const std::vector<int> shard_of = assign_shards(bytes, options.max_shard_bytes);
      const int shards = shard_of.empty() ? 1 : shard_of.back() + 1;
      const std::string dtype = safetensors_dtype(options.dtype);
      nlohmann::json weight_map = nlohmann::json::object();
      uint64_t total_size = 0;
      ProgressBar bar("Writing checkpoint shards", shards, "shards", options.progress);
      std::vector<float> values_f32;
      size_t next = 0;
      for (int s = 0; s < shards; ++s) {
        const std::string name = shards == 1 ? kSingleFile : shard_file_name(s + 1, shards);
        size_t first = next;
        uint64_t shard_bytes = 0;
        while (next < tensors.size() && shard_of[next] == s) shard_bytes += bytes[next++];
        std::unique_ptr<unsigned char[]> buffer(
            new unsigned char[std::max<uint64_t>(shard_bytes, 1)]);
        std::vector<SafetensorsTensorData> data;
        uint64_t offset = 0;
        for (size_t i = first; i < next; ++i) {
          const HfTensorInfo& t = tensors[i];
          unsigned char* dst = buffer.get() + offset;
          if (options.dtype == DType::F32) {
            (*source)(t, reinterpret_cast<float*>(dst));
          } else {
            values_f32.resize(size_t(shape_numel(t.shape)));
            (*source)(t, values_f32.data());
            for (size_t k = 0; k < values_f32.size(); ++k) {
              const bf16 b = float_to_bf16(values_f32[k]);
              std::memcpy(dst + 2 * k, &b.bits, 2);
            }
          }
          data.push_back({t.name, dtype, t.shape, dst});
          weight_map[t.name] = name;
          offset += bytes[i];
        }
        write_safetensors((staging / name).string(), data, {{"format", "pt"}});
        total_size += shard_bytes;
        written.push_back(name);
        bar.advance();
      }
      if (shards > 1) {
        nlohmann::json index{{"metadata", {{"total_size", total_size}}},
                             {"weight_map", weight_map}};
        write_text_file((staging / kIndexFile).string(), index.dump(2) + "\n");
        written.push_back(kIndexFile);
      }
    }
    write_text_file((staging / "config.json").string(),
                    config_json(config, options.dtype).dump(2) + "\n");
    written.push_back("config.json");
    write_text_file((staging / "generation_config.json").string(),
                    generation_config_json(config).dump(2) + "\n");
    written.push_back("generation_config.json");
    if (!options.tokenizer_dir.empty()) {
      for (const char* name : kTokenizerFiles) {
        const fs::path from = fs::path(options.tokenizer_dir) / name;
        if (!fs::is_regular_file(from, ec)) continue;
        fs::copy_file(from, staging / name, fs::copy_options::overwrite_existing, ec);
        VACC_CHECK(!ec, "cannot copy ", from.string(), " into ", dir, ": ", ec.message());
        written.push_back(name);
      }
    }
  } catch (...) {
    fs::remove_all(staging, ec);
    if (!existed) fs::remove(folder, ec);  // only if still empty
    try {
      throw;
    } catch (const std::bad_alloc&) {
      fail("saving ", dir, ": out of memory while building a shard in memory; lower the ",
           "largest shard size (", options.max_shard_bytes, " bytes)");
    }
  }

  // Everything is written: move it into place. The weights first, then the files a
  // previous save left that the new weights replace (model.safetensors wins over an index
  // when both exist, as in transformers, so a stale one must not outlive the switch), then
  // the config and tokenizer files and the stale tokenizer files.
  const std::set<std::string> now(written.begin(), written.end());
  auto move_into_place = [&](bool weights) {
    for (const std::string& name : written) {
      if (managed_weight_file(name) != weights) continue;
      fs::rename(staging / name, folder / name, ec);
      VACC_CHECK(!ec, "cannot move ", (staging / name).string(), " to ", (folder / name).string(),
                 ": ", ec.message());
    }
  };
  auto remove_stale = [&](bool (*managed)(const std::string&)) {
    std::vector<fs::path> stale;
    for (const fs::directory_entry& entry : fs::directory_iterator(folder, ec)) {
      const std::string name = entry.path().filename().string();
      if (!now.count(name) && managed(name) && entry.is_regular_file(ec))
        stale.push_back(entry.path());
    }
    for (const fs::path& p : stale) fs::remove(p, ec);
  };
  move_into_place(true);
  remove_stale(managed_weight_file);
  move_into_place(false);
  remove_stale(managed_tokenizer_file);
  fs::remove_all(staging, ec);
}

// The pieces write_initialized_hf_checkpoint initialises, in the order the checkpoint's
// tensors need them: the embedding (with the final norm when tied, which shares its table
// with the head), each layer, the head (untied).
struct PieceSpec {
  std::string key;
  ModelShard shard;
  uint64_t bytes = 0;  // the piece's f32 parameters
};

std::string piece_key(const ModelConfig& config, const std::string& name) {
  if (name == "model.embed_tokens.weight" ||
      (config.tie_word_embeddings && (name == "model.norm.weight" || name == "lm_head.weight")))
    return "embedding";
  if (starts_with(name, "model.layers."))
    return "layer " + std::to_string(std::get<1>(state_dict_order(name)));
  return "head";
}

std::vector<PieceSpec> piece_sequence(const ModelConfig& config) {
  std::vector<PieceSpec> out;
  std::set<std::string> seen;
  for (const HfTensorInfo& t : hf_checkpoint_tensors(config)) {
    const std::string key = piece_key(config, t.name);
    if (!seen.insert(key).second) continue;
    ModelShard shard = ModelShard::whole(config);
    if (key == "embedding") {
      shard.layer_begin = shard.layer_end = 0;
      shard.has_embedding = true;
      shard.has_head = config.tie_word_embeddings;
    } else if (key == "head") {
      shard.layer_begin = shard.layer_end = config.num_layers;
      shard.has_embedding = false;
      shard.has_head = true;
    } else {
      shard.layer_begin = std::get<1>(state_dict_order(t.name));
      shard.layer_end = shard.layer_begin + 1;
      shard.has_embedding = shard.has_head = false;
    }
    const uint64_t bytes = uint64_t(ParameterTable(config, shard).total_numel()) * 4;
    out.push_back({key, shard, bytes});
  }
  return out;
}

// How many pieces are initialised at once (one per thread, at most 8, and no more than
// ~4 GiB of pieces in flight).
size_t prefetch_window(const std::vector<PieceSpec>& pieces) {
  uint64_t largest = 1;
  for (const PieceSpec& p : pieces) largest = std::max(largest, p.bytes);
  const size_t threads = std::clamp<size_t>(std::thread::hardware_concurrency(), 1, 8);
  return std::clamp<size_t>(size_t((uint64_t(4) << 30) / largest), 1, threads);
}

// Host bytes of the pieces alive at once: a window of consecutive pieces, plus a tied
// embedding kept for the final norm.
uint64_t pieces_peak_bytes(const ModelConfig& config) {
  const std::vector<PieceSpec> pieces = piece_sequence(config);
  const size_t window = prefetch_window(pieces);
  uint64_t peak = 0;
  for (size_t k = 0; k < pieces.size(); ++k) {
    uint64_t alive = 0;
    for (size_t j = k; j < std::min(pieces.size(), k + window); ++j) alive += pieces[j].bytes;
    if (config.tie_word_embeddings && k >= window) alive += pieces[0].bytes;
    peak = std::max(peak, alive);
  }
  return peak;
}

// Initialises the model piece by piece for write_initialized_hf_checkpoint: each piece with
// initialize_parameters on a ParameterTable of just that piece (the counter-based values do
// not depend on the split), the next few in parallel threads while the current one is
// written.
class PieceInitializer {
 public:
  PieceInitializer(const ModelConfig& config, uint64_t seed)
      : config_(config),
        seed_(seed),
        backend_(make_cpu_backend()),
        sequence_(piece_sequence(config)),
        window_(prefetch_window(sequence_)) {
    for (size_t i = 0; i < sequence_.size(); ++i) position_[sequence_[i].key] = i;
  }

  void produce(const HfTensorInfo& t, float* out) {
    const Piece& piece = piece_for(piece_key(config_, t.name));
    auto it = piece.index.find(t.name);
    VACC_CHECK(it != piece.index.end(), "internal: tensor ", t.name,
               " is not in its initialisation piece");
    const CheckpointTensor& ct = piece.table->checkpoint_tensors()[it->second];
    VACC_CHECK(ct.shape == t.shape, "internal: tensor ", t.name, " has shape ", shape_str(ct.shape),
               " in its piece, ", shape_str(t.shape), " in the checkpoint");
    backend_->download(piece.flat.view(piece.table->entry(ct.entry).offset + ct.offset, ct.shape),
                       out);
  }

 private:
  struct Piece {
    std::unique_ptr<ParameterTable> table;
    Tensor flat;
    std::map<std::string, size_t> index;  // checkpoint name -> index in the table's list
  };
  using PieceFuture = std::shared_future<std::shared_ptr<Piece>>;

  std::shared_ptr<Piece> make_piece(const PieceSpec& spec) const {
    auto p = std::make_shared<Piece>();
    p->table = std::make_unique<ParameterTable>(config_, spec.shard);
    p->flat = backend_->empty({p->table->total_numel()}, DType::F32, MemoryCategory::Parameters,
                              "initialisation of " + spec.key);
    initialize_parameters(*backend_, config_, *p->table, seed_, p->flat);
    for (size_t i = 0; i < p->table->checkpoint_tensors().size(); ++i)
      p->index[p->table->checkpoint_tensors()[i].name] = i;
    return p;
  }

  const Piece& piece_for(const std::string& key) {
    auto pos = position_.find(key);
    VACC_CHECK(pos != position_.end(), "internal: no initialisation piece ", key);
    const size_t k = pos->second;
    if (k == 0 && kept_embedding_) return *kept_embedding_;
    // Start pieces k .. k + window - 1 (those not started yet), drop the finished ones.
    for (size_t j = std::max(k, next_launch_); j < std::min(sequence_.size(), k + window_); ++j) {
      const PieceSpec spec = sequence_[j];
      running_[j] =
          std::async(std::launch::async, [this, spec] { return make_piece(spec); }).share();
      next_launch_ = j + 1;
    }
    for (auto it = running_.begin(); it != running_.end() && it->first < k;)
      it = running_.erase(it);
    auto it = running_.find(k);
    VACC_CHECK(it != running_.end(), "internal: initialisation piece ", key,
               " requested out of order");
    std::shared_ptr<Piece> piece = it->second.get();  // rethrows the piece's error
    // A tied embedding stays for the final norm, which comes after the layers.
    if (k == 0 && config_.tie_word_embeddings) kept_embedding_ = piece;
    return *piece;
  }

  const ModelConfig& config_;
  uint64_t seed_;
  std::unique_ptr<Backend> backend_;
  std::vector<PieceSpec> sequence_;
  size_t window_;
  std::map<std::string, size_t> position_;
  std::map<size_t, PieceFuture> running_;
  size_t next_launch_ = 0;
  std::shared_ptr<Piece> kept_embedding_;
};

}  // namespace

ModelConfig load_hf_config(const std::string& dir) {
  std::error_code ec;
  VACC_CHECK(fs::is_directory(dir, ec), dir, ": no such model folder");
  return ModelConfig::from_file(in_dir(dir, "config.json"));
}

std::vector<HfTensorInfo> hf_checkpoint_tensors(const ModelConfig& config) {
  const ParameterTable table(config, ModelShard::whole(config));
  std::vector<HfTensorInfo> out;
  for (const CheckpointTensor& ct : table.checkpoint_tensors()) out.push_back({ct.name, ct.shape});
  std::stable_sort(out.begin(), out.end(), [](const HfTensorInfo& a, const HfTensorInfo& b) {
    return state_dict_order(a.name) < state_dict_order(b.name);
  });
  return out;
}

std::vector<int> assign_shards(const std::vector<uint64_t>& tensor_bytes,
                               uint64_t max_shard_bytes) {
  std::vector<int> shard(tensor_bytes.size());
  int current = 0;
  uint64_t used = 0;
  bool empty = true;
  for (size_t i = 0; i < tensor_bytes.size(); ++i) {
    const uint64_t b = tensor_bytes[i];
    if (!empty && (used + b > max_shard_bytes || b > max_shard_bytes)) {
      ++current;
      used = 0;
      empty = true;
    }
    shard[i] = current;
    used += b;
    empty = false;
    if (b > max_shard_bytes) used = max_shard_bytes + 1;  // nothing joins an oversized tensor
  }
  return shard;
}

void load_hf_checkpoint(const std::string& dir, Backend& backend, const ModelConfig& config,
                        const ParameterTable& table, Tensor& flat, bool progress) {
  load_hf_checkpoint(dir, backend, config, table, flat, progress, table.whole());
}

void load_hf_checkpoint(const std::string& dir, Backend& backend, const ModelConfig& config,
                        const ParameterTable& table, Tensor& flat, bool progress,
                        FlatRange range) {
  VACC_CHECK(flat.dtype() == DType::F32 && flat.numel() >= range.numel(), "loading ", dir,
             ": the parameters must be an f32 tensor of at least ", range.numel(),
             " elements, got ", flat.str());
  // The checkpoint tensors this range holds (some or all of their elements).
  std::vector<const CheckpointTensor*> wanted;
  for (const CheckpointTensor& ct : table.checkpoint_tensors()) {
    const auto [lo, hi] = overlap(ct, table, range);
    if (lo < hi) wanted.push_back(&ct);
  }
  std::error_code ec;
  VACC_CHECK(fs::is_directory(dir, ec), dir, ": no such model folder");
  const std::string single = in_dir(dir, kSingleFile);
  const std::string index_path = in_dir(dir, kIndexFile);
  std::vector<float> host;

  if (fs::exists(single, ec)) {
    ProgressBar bar("Loading checkpoint shards", 1, "shards", progress);
    const SafetensorsFile file = SafetensorsFile::open(single);
    std::vector<std::string> names;
    for (const SafetensorsEntry& e : file.tensors()) names.push_back(e.name);
    check_names(
        names, [&](const std::string&) { return single; }, single, config);
    for (const CheckpointTensor* ct : wanted)
      read_tensor(file, file.at(ct->name), *ct, table, backend, flat, range, host);
    bar.advance();
    return;
  }
  VACC_CHECK(fs::exists(index_path, ec), dir, ": no ", kSingleFile, " and no ", kIndexFile,
             " (not a Hugging Face safetensors checkpoint folder)");

  const Index index = read_index(index_path);
  std::vector<std::string> names;
  for (const auto& [name, file] : index.file_of) names.push_back(name);
  check_names(
      names, [&](const std::string& name) { return in_dir(dir, index.file_of.at(name)); },
      index_path, config);
  for (const auto& [name, file] : index.file_of) {
    if (ignorable_tensor(name, config)) continue;
    VACC_CHECK(fs::is_regular_file(in_dir(dir, file), ec), index_path, ": tensor ", quoted(name),
               " is in ", file, ", but ", in_dir(dir, file), " does not exist");
  }

  // The files holding this table's tensors, in name order, each opened once.
  std::map<std::string, std::vector<const CheckpointTensor*>> by_file;
  for (const CheckpointTensor* ct : wanted) by_file[index.file_of.at(ct->name)].push_back(ct);
  ProgressBar bar("Loading checkpoint shards", int64_t(by_file.size()), "shards", progress);
  for (const auto& [file_name, cts] : by_file) {
    const SafetensorsFile file = SafetensorsFile::open(in_dir(dir, file_name));
    for (const CheckpointTensor* ct : cts) {
      const SafetensorsEntry* e = file.find(ct->name);
      VACC_CHECK(e, file.path(), ": no tensor ", quoted(ct->name), ", though ", kIndexFile,
                 " places it in this file");
      read_tensor(file, *e, *ct, table, backend, flat, range, host);
    }
    bar.advance();
  }
}

void write_hf_checkpoint(const std::string& dir, const ModelConfig& config,
                         const HfTensorSource& source, const HfSaveOptions& options) {
  write_folder(dir, config, &source, options);
}

void write_hf_config_only(const std::string& dir, const ModelConfig& config,
                          const HfSaveOptions& options) {
  write_folder(dir, config, nullptr, options);
}

void save_hf_checkpoint(const std::string& dir, Backend& backend, const ModelConfig& config,
                        const ParameterTable& table, const Tensor& flat, DType save_dtype,
                        size_t max_shard_bytes, const std::string& tokenizer_dir) {
  VACC_CHECK(flat.dtype() == DType::F32 && flat.numel() >= table.total_numel(), "saving ", dir,
             ": the parameters must be an f32 tensor of at least ", table.total_numel(),
             " elements, got ", flat.str());
  std::map<std::string, const CheckpointTensor*> by_name;
  for (const CheckpointTensor& ct : table.checkpoint_tensors()) by_name[ct.name] = &ct;
  const std::vector<HfTensorInfo> tensors = hf_checkpoint_tensors(config);
  VACC_CHECK(by_name.size() == tensors.size(), "saving ", dir,
             ": the parameter table holds a part of the model (", by_name.size(), " of ",
             tensors.size(), " checkpoint tensors); saving needs the whole model");
  for (const HfTensorInfo& t : tensors) {
    auto it = by_name.find(t.name);
    VACC_CHECK(it != by_name.end() && it->second->shape == t.shape, "saving ", dir,
               ": the parameter table does not hold tensor ", t.name, " of shape ",
               shape_str(t.shape), "; saving needs the whole model");
  }
  HfSaveOptions options;
  options.dtype = save_dtype;
  options.max_shard_bytes = max_shard_bytes;
  options.tokenizer_dir = tokenizer_dir;
  const HfTensorSource source = [&](const HfTensorInfo& t, float* out) {
    const CheckpointTensor& ct = *by_name.at(t.name);
    backend.download(flat.view(table.entry(ct.entry).offset + ct.offset, ct.shape), out);
  };
  write_folder(dir, config, &source, options);
}

void write_initialized_hf_checkpoint(const std::string& dir, const ModelConfig& config,
                                     uint64_t seed, const HfSaveOptions& options) {
  PieceInitializer pieces(config, seed);
  write_hf_checkpoint(
      dir, config, [&](const HfTensorInfo& t, float* out) { pieces.produce(t, out); }, options);
}

uint64_t hf_checkpoint_weight_bytes(const ModelConfig& config, DType dtype) {
  uint64_t total = 0;
  for (const HfTensorInfo& t : hf_checkpoint_tensors(config))
    total += uint64_t(shape_numel(t.shape)) * dtype_size(dtype);
  return total;
}

size_t initialized_checkpoint_peak_memory(const ModelConfig& config, const HfSaveOptions& options) {
  const std::vector<HfTensorInfo> tensors = hf_checkpoint_tensors(config);
  std::vector<uint64_t> bytes;
  uint64_t largest = 0, largest_in_layer = 0;  // f32 bytes
  for (const HfTensorInfo& t : tensors) {
    const uint64_t n = uint64_t(shape_numel(t.shape));
    bytes.push_back(n * dtype_size(options.dtype));
    largest = std::max(largest, n * 4);
    if (starts_with(t.name, "model.layers.")) largest_in_layer = std::max(largest_in_layer, n * 4);
  }
  const std::vector<int> shard_of = assign_shards(bytes, options.max_shard_bytes);
  std::map<int, uint64_t> shard_bytes;
  for (size_t i = 0; i < bytes.size(); ++i) shard_bytes[shard_of[i]] += bytes[i];
  uint64_t biggest_shard = 0;
  for (const auto& [s, b] : shard_bytes) biggest_shard = std::max(biggest_shard, b);
  const uint64_t pieces = pieces_peak_bytes(config);
  // Plus initialize_parameters' host copy of one tensor in each thread initialising a piece
  // (one of them perhaps the embedding, the others layers), and the f32 copy of a tensor
  // being converted to bf16.
  const uint64_t threads = prefetch_window(piece_sequence(config));
  return size_t(pieces + biggest_shard + 2 * largest + (threads - 1) * largest_in_layer);
}

}  // namespace vacc
