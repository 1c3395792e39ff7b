// The tokenizer.json "normalizer" of byte-level BPE tokenizers: none, or Unicode NFC (alone
// or inside a "Sequence"), applied with utf8proc. Other normalizers are rejected at load.
#pragma once

#include <nlohmann/json_fwd.hpp>
#include <string>
#include <string_view>

namespace vacc::bpe {

class Normalizer {
 public:
  // From the "normalizer" value (null allowed). `file` names tokenizer.json in errors.
  static Normalizer from_json(const nlohmann::json& spec, const std::string& file);
  // A normalizer that does nothing, or NFC.
  static Normalizer none() { return Normalizer(false); }
  static Normalizer nfc() { return Normalizer(true); }

  bool active() const { return nfc_; }
  // `text` (valid UTF-8) normalised; text that is already normalised comes back unchanged.
  std::string apply(std::string_view text) const;

 private:
  explicit Normalizer(bool nfc) : nfc_(nfc) {}
  bool nfc_ = false;
};

// Unicode NFC of valid UTF-8 text.
std::string nfc_normalize(std::string_view text);

}  // namespace vacc::bpe
