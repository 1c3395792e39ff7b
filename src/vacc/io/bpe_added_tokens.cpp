#include "vacc/io/bpe_added_tokens.h"

#include <utf8proc.h>

#include <algorithm>

#include "vacc/io/bpe_utf8.h"

namespace vacc::bpe {

namespace {

// Rust's char::is_whitespace / regex \s: the Unicode White_Space property.
bool is_white_space(char32_t c) {
  return (c >= 0x09 && c <= 0x0D) || c == 0x20 || c == 0x85 || c == 0xA0 || c == 0x1680 ||
         (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F ||
         c == 0x3000;
}

// Rust regex \w: Alphabetic, marks, decimal digits, connector punctuation, join controls.
bool is_word_char(char32_t c) {
  if (c < 0x80) {
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
  }
  if (c == 0x200C || c == 0x200D) return true;
  switch (utf8proc_category(utf8proc_int32_t(c))) {
    case UTF8PROC_CATEGORY_LU:
    case UTF8PROC_CATEGORY_LL:
    case UTF8PROC_CATEGORY_LT:
    case UTF8PROC_CATEGORY_LM:
    case UTF8PROC_CATEGORY_LO:
    case UTF8PROC_CATEGORY_MN:
    case UTF8PROC_CATEGORY_MC:
    case UTF8PROC_CATEGORY_ME:
    case UTF8PROC_CATEGORY_ND:
    case UTF8PROC_CATEGORY_NL:
    case UTF8PROC_CATEGORY_PC:
      return true;
    default:
      return false;
  }
}

// The code point that ends at text[end) (end > 0).
char32_t last_char(std::string_view text, size_t end) {
  size_t start = end - 1;
  while (start > 0 && (uint8_t(text[start]) & 0xC0) == 0x80) --start;
  size_t len = 0;
  return utf8_next(text, start, &len);
}

}  // namespace

AddedTokenMatcher::AddedTokenMatcher(std::vector<AddedToken> tokens,
                                     const std::vector<std::string>& patterns)
    : tokens_(std::move(tokens)) {
  trie_.emplace_back();
  for (size_t t = 0; t < tokens_.size(); ++t) {
    const std::string& p = patterns[t];
    if (p.empty()) continue;
    first_byte_[uint8_t(p[0])] = true;
    int32_t node = 0;
    for (char c : p) {
      int32_t next = child(node, uint8_t(c));
      if (next < 0) {
        next = int32_t(trie_.size());
        trie_[node].next.emplace_back(uint8_t(c), next);
        trie_.emplace_back();
      }
      node = next;
    }
    if (trie_[node].token < 0) trie_[node].token = int32_t(t);  // first of duplicates wins
  }
}

int32_t AddedTokenMatcher::child(int32_t node, uint8_t b) const {
  for (const auto& [byte, next] : trie_[node].next)
    if (byte == b) return next;
  return -1;
}

int32_t AddedTokenMatcher::longest_at(std::string_view text, size_t pos, size_t* length) const {
  int32_t node = 0;
  int32_t best = -1;
  for (size_t i = pos; i < text.size(); ++i) {
    node = child(node, uint8_t(text[i]));
    if (node < 0) break;
    if (trie_[node].token >= 0) {
      best = trie_[node].token;
      *length = i + 1 - pos;
    }
  }
  return best;
}

void AddedTokenMatcher::split(std::string_view text, std::vector<TextPiece>& out) const {
  size_t start_offset = 0;  // end of the last piece emitted
  if (!tokens_.empty()) {
    size_t pos = 0;
    while (pos < text.size()) {
      if (!first_byte_[uint8_t(text[pos])]) {
        ++pos;
        continue;
      }
      size_t length = 0;
      const int32_t t = longest_at(text, pos, &length);
      if (t < 0) {
        ++pos;
        continue;
      }
      size_t start = pos;
      size_t stop = pos + length;
      pos = stop;  // matches never overlap, whatever happens to this one
      const AddedToken& token = tokens_[t];
      if (token.single_word) {
        const bool start_space = start == 0 || !is_word_char(last_char(text, start));
        size_t len = 0;
        const bool stop_space = stop == text.size() || !is_word_char(utf8_next(text, stop, &len));
        if (!start_space || !stop_space) continue;
      }
      if (token.lstrip) {
        size_t new_start = start;
        while (new_start > 0 && is_white_space(last_char(text, new_start))) {
          size_t s = new_start - 1;
          while (s > 0 && (uint8_t(text[s]) & 0xC0) == 0x80) --s;
          new_start = s;
        }
        start = std::max(new_start, start_offset);
      }
      if (token.rstrip) {
        while (stop < text.size()) {
          size_t len = 0;
          if (!is_white_space(utf8_next(text, stop, &len))) break;
          stop += len;
        }
      }
      if (start_offset < start) out.push_back({start_offset, start, -1});
      out.push_back({start, stop, token.id});
      start_offset = stop;
    }
  }
  if (start_offset < text.size()) out.push_back({start_offset, text.size(), -1});
}

}  // namespace vacc::bpe
