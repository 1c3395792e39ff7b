// The BPE model of a byte-level tokenizer.json ("model": {"type": "BPE", ...}): the vocabulary,
// the merges (as "a b" strings or [a, b] pairs, rank = position), and the merge loop of Hugging
// Face's BPE (lowest rank first, leftmost on ties), with ignore_merges (a pre-token that is a
// vocabulary entry is emitted whole) and a cache of pre-token -> ids. It works on raw bytes:
// vocabulary entries are converted from the byte-level alphabet once, at load.
#pragma once

#include <cstdint>
#include <memory>
#include <nlohmann/json_fwd.hpp>
#include <optional>
#include <shared_mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace vacc::bpe {

class BpeModel {
 public:
  // From the "model" value. `file` names tokenizer.json in errors.
  static BpeModel from_json(const nlohmann::json& spec, const std::string& file);
  BpeModel(BpeModel&&) noexcept;
  BpeModel& operator=(BpeModel&&) noexcept;
  ~BpeModel();

  // Appends the ids of one pre-token (raw bytes, not empty) to `out`. Thread-safe.
  void encode(std::string_view pre_token, std::vector<int32_t>& out) const;

  // The id of a vocabulary entry written in the byte-level alphabet ("Ġworld").
  std::optional<int32_t> token_to_id(std::string_view token) const;
  // The vocabulary entry of an id (byte-level alphabet), or nullptr when there is none.
  const std::string* id_to_token(int32_t id) const;
  // Number of vocabulary entries.
  int32_t vocab_count() const { return int32_t(vocab_.size()); }
  // Largest id in the vocabulary, -1 when it is empty.
  int32_t max_id() const { return int32_t(id_to_token_.size()) - 1; }

 private:
  BpeModel() = default;
  struct StringHash {
    using is_transparent = void;
    size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
  };
  using StringMap = std::unordered_map<std::string, int32_t, StringHash, std::equal_to<>>;

  // Open-addressing map (a, b) -> (rank, merged id).
  struct MergeTable {
    struct Slot {
      uint64_t key = ~uint64_t(0);
      int32_t rank = 0;
      int32_t merged = 0;
    };
    std::vector<Slot> slots;
    uint64_t mask = 0;
    void reserve(size_t n);
    void insert(int32_t a, int32_t b, int32_t rank, int32_t merged);
    const Slot* find(int32_t a, int32_t b) const;
  };

  StringMap vocab_;                       // byte-level string -> id
  std::vector<std::string> id_to_token_;  // id -> byte-level string ("" when unused)
  std::vector<uint8_t> id_used_;
  int32_t byte_id_[256];   // id of each single byte, -1 when absent
  StringMap bytes_vocab_;  // raw bytes -> id (only with ignore_merges)
  MergeTable merges_;
  bool ignore_merges_ = false;
  int32_t unk_id_ = -1;
  bool fuse_unk_ = false;

  struct Cache {
    std::shared_mutex mutex;
    std::unordered_map<std::string, std::vector<int32_t>, StringHash, std::equal_to<>> map;
  };
  std::unique_ptr<Cache> cache_ = std::make_unique<Cache>();

  void merge_word(std::string_view bytes, std::vector<int32_t>& out) const;
};

}  // namespace vacc::bpe
