#include "vacc/io/bpe_normalizer.h"

#include <utf8proc.h>

#include <cstdlib>
#include <nlohmann/json.hpp>

#include "vacc/core/error.h"

namespace vacc::bpe {

std::string nfc_normalize(std::string_view text) {
  // Text with no byte >= 0xCC cannot change: every code point below U+0300 is a starter that
  // no NFC composition or singleton mapping touches... except for a few in U+0000..U+02FF that
  // combine with a following mark, and those marks start at U+0300 (lead byte 0xCC).
  bool may_change = false;
  for (char c : text) {
    if (uint8_t(c) >= 0xCC) {
      may_change = true;
      break;
    }
  }
  if (!may_change) return std::string(text);
  utf8proc_uint8_t* out = nullptr;
  const utf8proc_ssize_t n = utf8proc_map(reinterpret_cast<const utf8proc_uint8_t*>(text.data()),
                                          utf8proc_ssize_t(text.size()), &out,
                                          utf8proc_option_t(UTF8PROC_STABLE | UTF8PROC_COMPOSE));
  if (n < 0) fail("tokenizer: NFC normalisation failed: ", utf8proc_errmsg(n));
  std::string result(reinterpret_cast<const char*>(out), size_t(n));
  std::free(out);
  return result;
}

Normalizer Normalizer::from_json(const nlohmann::json& spec, const std::string& file) {
  if (spec.is_null()) return none();
  if (!spec.is_object() || !spec.contains("type") || !spec["type"].is_string()) {
    fail(file, ": \"normalizer\" is not an object with a \"type\"");
  }
  const std::string type = spec["type"].get<std::string>();
  if (type == "NFC") return nfc();
  if (type == "Sequence") {
    const auto it = spec.find("normalizers");
    if (it == spec.end() || !it->is_array()) {
      fail(file, ": normalizer Sequence has no \"normalizers\" array");
    }
    bool any = false;
    for (const auto& item : *it) any = from_json(item, file).active() || any;
    return Normalizer(any);
  }
  fail(file, ": unsupported normalizer \"", type,
       "\" (vacc supports NFC, a Sequence of NFC, or none)");
}

std::string Normalizer::apply(std::string_view text) const {
  return nfc_ ? nfc_normalize(text) : std::string(text);
}

}  // namespace vacc::bpe
