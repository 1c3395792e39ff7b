// Added tokens (tokenizer.json "added_tokens": special tokens such as <|im_start|>, and
// ordinary ones such as <think>) found verbatim in text before the rest of tokenization, as
// Hugging Face's AddedVocabulary does: leftmost-longest non-overlapping matches, then the
// single_word, lstrip and rstrip rules applied to each match.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace vacc::bpe {

struct AddedToken {
  int32_t id = 0;
  std::string content;
  bool special = false;
  bool single_word = false;
  bool lstrip = false;
  bool rstrip = false;
  bool normalized = false;
};

// A piece of text: either plain text (id < 0) or an added token (id >= 0) covering the bytes
// [begin, end) (which include the whitespace an lstrip/rstrip token absorbs).
struct TextPiece {
  size_t begin = 0;
  size_t end = 0;
  int32_t id = -1;
};

class AddedTokenMatcher {
 public:
  AddedTokenMatcher() = default;
  // Matches `patterns[i]` (the token's content, normalised for normalized tokens) as `tokens[i]`.
  AddedTokenMatcher(std::vector<AddedToken> tokens, const std::vector<std::string>& patterns);

  bool empty() const { return tokens_.empty(); }
  // Cuts `text` (valid UTF-8) into plain and added-token pieces, in order; empty plain pieces
  // are left out.
  void split(std::string_view text, std::vector<TextPiece>& out) const;

 private:
  struct Node {
    std::vector<std::pair<uint8_t, int32_t>> next;  // byte -> node
    int32_t token = -1;                             // index into tokens_ when a pattern ends here
  };
  std::vector<AddedToken> tokens_;
  std::vector<Node> trie_;
  bool first_byte_[256] = {};

  int32_t child(int32_t node, uint8_t b) const;
  // The longest pattern starting at text[pos]: its token index and length; -1 when none.
  int32_t longest_at(std::string_view text, size_t pos, size_t* length) const;
};

}  // namespace vacc::bpe
