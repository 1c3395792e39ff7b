// The byte-level alphabet of GPT-2 style BPE (Hugging Face's ByteLevel pre-tokenizer and
// decoder): every byte 0..255 is shown as one printable code point (printable Latin-1 bytes
// as themselves, the others as U+0100 + n), so vocabulary entries are readable strings.
// vacc tokenizes raw bytes and converts vocabulary entries to bytes once, at load time.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace vacc::bpe {

// The code point that stands for byte `b`.
char32_t byte_level_char(uint8_t b);

// The byte that code point `c` stands for, or -1 when `c` is not in the byte-level alphabet.
int byte_level_byte(char32_t c);

// The bytes a vocabulary entry stands for; nullopt when one of its characters is not in the
// byte-level alphabet. `token` must be valid UTF-8.
std::optional<std::string> byte_level_to_bytes(std::string_view token);

// What Hugging Face's ByteLevel decoder produces for one token before UTF-8 repair: its
// bytes when every character is in the alphabet, else the token's own UTF-8 bytes.
std::string byte_level_decode_token(std::string_view token);

// Raw bytes shown in the byte-level alphabet (the form vocabulary entries are written in).
std::string bytes_to_byte_level(std::string_view bytes);

}  // namespace vacc::bpe
