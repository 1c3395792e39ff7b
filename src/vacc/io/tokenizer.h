// Tokenizer: Hugging Face tokenizer.json byte-level BPE (the Qwen2 / Llama-3 family), encoding
// exactly as the Hugging Face tokenizers library does: added/special tokens matched verbatim
// first, NFC normalisation, the Split regex pre-tokenizer, the byte-to-unicode mapping, and
// merges by rank.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace vacc {

class Tokenizer {
 public:
  // Reads DIR/tokenizer.json (and DIR/tokenizer_config.json when present, for the eos token).
  // Throws vacc::Error naming the file when it is missing or malformed.
  static Tokenizer load(const std::string& dir);
  ~Tokenizer();
  Tokenizer(Tokenizer&&) noexcept;
  Tokenizer& operator=(Tokenizer&&) noexcept;

  // Thread-safe. Invalid UTF-8 in `text` is first replaced by U+FFFD. No post-processor
  // tokens (BOS) are added.
  std::vector<int32_t> encode(std::string_view text) const;
  // Unknown ids are skipped, as Hugging Face does; invalid UTF-8 becomes U+FFFD.
  std::string decode(const std::vector<int32_t>& ids, bool skip_special_tokens = false) const;

  int64_t vocab_size() const;  // largest id + 1, added tokens included
  std::optional<int32_t> token_id(std::string_view token) const;
  // The end-of-sequence token (tokenizer_config.json eos_token, else <|endoftext|>), if any.
  std::optional<int32_t> eos_id() const;
  // The text of a single token id (after byte-level decoding), for streaming output: its raw
  // bytes, which may be part of a UTF-8 character that the next pieces complete (so that the
  // pieces of a sequence, concatenated, give its text). Empty for an unknown id.
  std::string id_to_piece(int32_t id) const;

  struct Impl;

 private:
  explicit Tokenizer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace vacc
