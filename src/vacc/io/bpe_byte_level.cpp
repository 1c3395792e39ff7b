#include "vacc/io/bpe_byte_level.h"

#include <array>

#include "vacc/io/bpe_utf8.h"

namespace vacc::bpe {

namespace {

struct Tables {
  std::array<char32_t, 256> byte_to_char{};
  std::array<int16_t, 324> char_to_byte{};  // every byte-level code point is below 0x144
  Tables() {
    char_to_byte.fill(-1);
    auto printable = [](int b) {
      return (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
    };
    int n = 0;
    for (int b = 0; b < 256; ++b) {
      byte_to_char[b] = printable(b) ? char32_t(b) : char32_t(256 + n++);
      char_to_byte[byte_to_char[b]] = int16_t(b);
    }
  }
};

const Tables& tables() {
  static const Tables t;
  return t;
}

}  // namespace

char32_t byte_level_char(uint8_t b) {
  return tables().byte_to_char[b];
}

int byte_level_byte(char32_t c) {
  return c < tables().char_to_byte.size() ? tables().char_to_byte[c] : -1;
}

std::optional<std::string> byte_level_to_bytes(std::string_view token) {
  std::string out;
  out.reserve(token.size());
  for (size_t i = 0; i < token.size();) {
    size_t len = 0;
    const int b = byte_level_byte(utf8_next(token, i, &len));
    if (b < 0) return std::nullopt;
    out += char(b);
    i += len;
  }
  return out;
}

std::string byte_level_decode_token(std::string_view token) {
  auto bytes = byte_level_to_bytes(token);
  return bytes ? std::move(*bytes) : std::string(token);
}

std::string bytes_to_byte_level(std::string_view bytes) {
  std::string out;
  out.reserve(bytes.size() * 2);
  for (char c : bytes) utf8_append(out, byte_level_char(uint8_t(c)));
  return out;
}

}  // namespace vacc::bpe
