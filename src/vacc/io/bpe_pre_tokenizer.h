// The tokenizer.json "pre_tokenizer" of byte-level BPE tokenizers: a ByteLevel step, alone or
// last in a "Sequence" after any number of "Split" steps. Split cuts each piece with a regex
// (or a literal string) under one of Hugging Face's delimiter behaviours; ByteLevel optionally
// prepends a space and cuts with the GPT-2 regex. The byte-to-character mapping itself is left
// to the BPE model, which works on raw bytes.
#pragma once

#include <deque>
#include <nlohmann/json_fwd.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "vacc/io/bpe_regex.h"

namespace vacc::bpe {

class PreTokenizer {
 public:
  // From the "pre_tokenizer" value. `file` names tokenizer.json in errors.
  static PreTokenizer from_json(const nlohmann::json& spec, const std::string& file);

  // Appends the pre-tokens of `text` (valid UTF-8) to `out`, in order. Pre-tokens are views of
  // `text`, or of strings appended to `storage` when a space had to be prepended.
  void split(std::string_view text, std::vector<std::string_view>& out,
             std::deque<std::string>& storage) const;

 private:
  enum class Behavior { Removed, Isolated, MergedWithPrevious, MergedWithNext, Contiguous };
  struct SplitStep {
    Regex regex;
    Behavior behavior;
    bool invert;
  };
  std::vector<SplitStep> steps_;
  bool add_prefix_space_ = false;
  bool gpt2_regex_ = false;  // ByteLevel use_regex
  Regex gpt2_{"'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+",
              false, "the GPT-2 byte-level regex"};

  static void apply_split(const Regex& regex, Behavior behavior, bool invert,
                          std::string_view piece, std::vector<std::string_view>& out);
};

}  // namespace vacc::bpe
