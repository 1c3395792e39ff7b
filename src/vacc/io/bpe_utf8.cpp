#include "vacc/io/bpe_utf8.h"

#include <cstdint>

namespace vacc::bpe {

char32_t utf8_next(std::string_view s, size_t i, size_t* length) {
  const auto b0 = uint8_t(s[i]);
  if (b0 < 0x80) {
    *length = 1;
    return b0;
  }
  if (b0 < 0xE0) {
    *length = 2;
    return (char32_t(b0 & 0x1F) << 6) | (uint8_t(s[i + 1]) & 0x3F);
  }
  if (b0 < 0xF0) {
    *length = 3;
    return (char32_t(b0 & 0x0F) << 12) | (char32_t(uint8_t(s[i + 1]) & 0x3F) << 6) |
           (uint8_t(s[i + 2]) & 0x3F);
  }
  *length = 4;
  return (char32_t(b0 & 0x07) << 18) | (char32_t(uint8_t(s[i + 1]) & 0x3F) << 12) |
         (char32_t(uint8_t(s[i + 2]) & 0x3F) << 6) | (uint8_t(s[i + 3]) & 0x3F);
}

void utf8_append(std::string& out, char32_t c) {
  if (c < 0x80) {
    out += char(c);
  } else if (c < 0x800) {
    out += char(0xC0 | (c >> 6));
    out += char(0x80 | (c & 0x3F));
  } else if (c < 0x10000) {
    out += char(0xE0 | (c >> 12));
    out += char(0x80 | ((c >> 6) & 0x3F));
    out += char(0x80 | (c & 0x3F));
  } else {
    out += char(0xF0 | (c >> 18));
    out += char(0x80 | ((c >> 12) & 0x3F));
    out += char(0x80 | ((c >> 6) & 0x3F));
    out += char(0x80 | (c & 0x3F));
  }
}

namespace {

bool is_continuation(uint8_t b) {
  return (b & 0xC0) == 0x80;
}

// Scans one character at s[i]. Returns true when it is valid (then *end is past it); false
// when invalid (then *end is past its maximal invalid subpart, which is at least one byte).
// The rules are Rust's core::str::Utf8Chunks (and the Unicode "maximal subpart" practice).
bool scan_char(std::string_view s, size_t i, size_t* end) {
  const size_t n = s.size();
  const auto b0 = uint8_t(s[i]);
  if (b0 < 0x80) {
    *end = i + 1;
    return true;
  }
  size_t j = i + 1;
  auto at = [&](size_t k) -> int { return k < n ? int(uint8_t(s[k])) : -1; };
  if (b0 >= 0xC2 && b0 <= 0xDF) {
    if (at(j) >= 0 && is_continuation(uint8_t(at(j)))) {
      *end = j + 1;
      return true;
    }
    *end = j;
    return false;
  }
  if (b0 >= 0xE0 && b0 <= 0xEF) {
    const int b1 = at(j);
    bool ok = false;
    if (b1 >= 0) {
      if (b0 == 0xE0)
        ok = b1 >= 0xA0 && b1 <= 0xBF;
      else if (b0 == 0xED)
        ok = b1 >= 0x80 && b1 <= 0x9F;
      else
        ok = b1 >= 0x80 && b1 <= 0xBF;
    }
    if (!ok) {
      *end = j;
      return false;
    }
    ++j;
    if (at(j) < 0 || !is_continuation(uint8_t(at(j)))) {
      *end = j;
      return false;
    }
    *end = j + 1;
    return true;
  }
  if (b0 >= 0xF0 && b0 <= 0xF4) {
    const int b1 = at(j);
    bool ok = false;
    if (b1 >= 0) {
      if (b0 == 0xF0)
        ok = b1 >= 0x90 && b1 <= 0xBF;
      else if (b0 == 0xF4)
        ok = b1 >= 0x80 && b1 <= 0x8F;
      else
        ok = b1 >= 0x80 && b1 <= 0xBF;
    }
    if (!ok) {
      *end = j;
      return false;
    }
    ++j;
    for (int k = 0; k < 2; ++k, ++j) {
      if (at(j) < 0 || !is_continuation(uint8_t(at(j)))) {
        *end = j;
        return false;
      }
    }
    *end = j;
    return true;
  }
  *end = j;  // 0x80..0xC1, 0xF5..0xFF: never valid
  return false;
}

}  // namespace

size_t utf8_valid_prefix(std::string_view s) {
  size_t i = 0;
  const size_t n = s.size();
  while (i < n) {
    // ASCII runs, eight bytes at a time.
    while (i + 8 <= n) {
      uint64_t word = 0;
      for (int k = 0; k < 8; ++k) word |= uint64_t(uint8_t(s[i + k])) << (8 * k);
      if (word & 0x8080808080808080ull) break;
      i += 8;
    }
    if (i >= n) break;
    size_t end = 0;
    if (!scan_char(s, i, &end)) return i;
    i = end;
  }
  return n;
}

std::string utf8_lossy(std::string_view s) {
  size_t valid = utf8_valid_prefix(s);
  if (valid == s.size()) return std::string(s);
  std::string out(s.substr(0, valid));
  size_t i = valid;
  while (i < s.size()) {
    size_t end = 0;
    if (scan_char(s, i, &end)) {
      out.append(s.data() + i, end - i);
    } else {
      out += "\xEF\xBF\xBD";
    }
    i = end;
  }
  return out;
}

}  // namespace vacc::bpe
