// UTF-8 helpers for the tokenizer: reading and writing code points, and repairing invalid
// byte sequences the way Rust's String::from_utf8_lossy does (each maximal invalid subpart
// becomes one U+FFFD), which is what Hugging Face tokenizers' byte-level decoder returns.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace vacc::bpe {

// The code point starting at s[i] and its length in bytes; s must be valid UTF-8 there.
char32_t utf8_next(std::string_view s, size_t i, size_t* length);

// Appends the UTF-8 encoding of `c` to `out`.
void utf8_append(std::string& out, char32_t c);

// Length in bytes of the valid UTF-8 prefix of `s` (s.size() when all of it is valid).
size_t utf8_valid_prefix(std::string_view s);

// `s` with every maximal invalid subpart replaced by U+FFFD (Rust's from_utf8_lossy).
std::string utf8_lossy(std::string_view s);

}  // namespace vacc::bpe
