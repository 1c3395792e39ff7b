// Tokenizer: the pipeline of Hugging Face tokenizers for byte-level BPE tokenizer.json files.
//   encode: added tokens split out of the raw text (non-normalized ones), the normalizer (NFC)
//           on the rest, added tokens split out of the normalised text (normalized ones), the
//           pre-tokenizer (Split regexes, ByteLevel), then the BPE model on each pre-token.
//   decode: ids -> tokens -> bytes (byte-level decoder) -> UTF-8, invalid sequences replaced
//           by U+FFFD.
// The post-processor is not applied (encode() is Hugging Face's encode with
// add_special_tokens=False; for Qwen2/Qwen3 the two are the same).
#include "vacc/io/tokenizer.h"

#include <algorithm>
#include <deque>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <unordered_map>
#include <unordered_set>

#include "vacc/core/error.h"
#include "vacc/core/logging.h"
#include "vacc/io/bpe_added_tokens.h"
#include "vacc/io/bpe_byte_level.h"
#include "vacc/io/bpe_model.h"
#include "vacc/io/bpe_normalizer.h"
#include "vacc/io/bpe_pre_tokenizer.h"
#include "vacc/io/bpe_utf8.h"

namespace vacc {

namespace {

using json = nlohmann::json;
namespace fs = std::filesystem;

json read_json(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail(path.string(), ": cannot open");
  std::ostringstream buffer;
  buffer << in.rdbuf();
  try {
    return json::parse(buffer.str());
  } catch (const json::exception& e) {
    fail(path.string(), ": malformed JSON: ", e.what());
  }
}

bool flag(const json& spec, const char* key, bool fallback) {
  const auto it = spec.find(key);
  if (it == spec.end() || it->is_null()) return fallback;
  return it->get<bool>();
}

}  // namespace

struct Tokenizer::Impl {
  std::string file;  // tokenizer.json, for messages
  bpe::Normalizer normalizer = bpe::Normalizer::none();
  std::optional<bpe::PreTokenizer> pre_tokenizer;
  std::optional<bpe::BpeModel> model;
  std::unordered_map<std::string, int32_t> added_by_content;
  bpe::AddedTokenMatcher raw_matcher;         // added tokens with normalized = false
  bpe::AddedTokenMatcher normalized_matcher;  // added tokens with normalized = true
  std::vector<std::string> id_bytes;          // id -> decoder output bytes
  std::vector<uint8_t> id_known;
  std::vector<uint8_t> id_special;
  int64_t vocab_size = 0;
  std::optional<int32_t> eos;

  void encode_plain(std::string_view text, std::vector<int32_t>& ids) const;
};

Tokenizer::Tokenizer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Tokenizer::~Tokenizer() = default;
Tokenizer::Tokenizer(Tokenizer&&) noexcept = default;
Tokenizer& Tokenizer::operator=(Tokenizer&&) noexcept = default;

Tokenizer Tokenizer::load(const std::string& dir) {
  const fs::path path = fs::path(dir) / "tokenizer.json";
  if (!fs::is_regular_file(path)) {
    fail("tokenizer: ", path.string(),
         " not found (the tokenizer folder must hold a Hugging Face tokenizer.json)");
  }
  const std::string file = path.string();
  const json spec = read_json(path);
  auto impl = std::make_unique<Impl>();
  impl->file = file;
  try {
    if (!spec.is_object()) fail(file, ": not a JSON object");
    impl->normalizer = bpe::Normalizer::from_json(spec.value("normalizer", json()), file);
    impl->pre_tokenizer = bpe::PreTokenizer::from_json(spec.value("pre_tokenizer", json()), file);
    impl->model = bpe::BpeModel::from_json(spec.value("model", json()), file);
    const json decoder = spec.value("decoder", json());
    if (!decoder.is_object() || decoder.value("type", "") != "ByteLevel") {
      fail(file, ": unsupported decoder ", decoder.dump(),
           " (vacc supports the ByteLevel decoder of byte-level BPE)");
    }

    // Added tokens. Hugging Face does not take their ids from the file: a token whose content
    // is already known (an earlier added token, or a vocabulary entry) keeps that id, and a new
    // one gets the next id after the vocabulary's entries (it warns when this differs from the
    // file; so does vacc). For real tokenizer files the two always agree.
    std::vector<bpe::AddedToken> added;  // one per distinct content, the last flags winning
    std::unordered_set<std::string> special_contents;
    const json added_spec = spec.value("added_tokens", json::array());
    if (!added_spec.is_array()) fail(file, ": \"added_tokens\" is not an array");
    int32_t next_id = impl->model->vocab_count();
    for (const json& t : added_spec) {
      if (!t.is_object() || !t.contains("content") || !t["content"].is_string()) {
        fail(file, ": an added_tokens entry lacks a string \"content\"");
      }
      bpe::AddedToken token;
      token.content = t["content"].get<std::string>();
      if (bpe::utf8_valid_prefix(token.content) != token.content.size()) {
        fail(file, ": an added token is not valid UTF-8");
      }
      token.special = flag(t, "special", false);
      token.single_word = flag(t, "single_word", false);
      token.lstrip = flag(t, "lstrip", false);
      token.rstrip = flag(t, "rstrip", false);
      token.normalized = flag(t, "normalized", !token.special);
      if (token.content.empty()) continue;  // Hugging Face ignores empty tokens
      if (token.special) special_contents.insert(token.content);
      const auto known = impl->added_by_content.find(token.content);
      if (known != impl->added_by_content.end()) {
        token.id = known->second;
        for (bpe::AddedToken& a : added)
          if (a.content == token.content) a = token;
      } else {
        const auto in_vocab = impl->model->token_to_id(token.content);
        token.id = in_vocab ? *in_vocab : next_id++;
        impl->added_by_content[token.content] = token.id;
        added.push_back(token);
      }
      if (t.contains("id") && t["id"].is_number_integer() && t["id"].get<int64_t>() != token.id) {
        log_warn(detail::concat(file, ": added token \"", token.content, "\" has id ",
                                t["id"].get<int64_t>(), " in the file but gets id ", token.id,
                                ", as in Hugging Face tokenizers"));
      }
    }
    std::vector<bpe::AddedToken> raw, normalized;
    std::vector<std::string> raw_patterns, normalized_patterns;
    // Special tokens first, as Hugging Face orders its matching set.
    std::stable_partition(added.begin(), added.end(),
                          [](const bpe::AddedToken& t) { return t.special; });
    for (const bpe::AddedToken& t : added) {
      if (t.normalized) {
        normalized.push_back(t);
        normalized_patterns.push_back(impl->normalizer.apply(t.content));
      } else {
        raw.push_back(t);
        raw_patterns.push_back(t.content);
      }
    }
    impl->raw_matcher = bpe::AddedTokenMatcher(std::move(raw), raw_patterns);
    impl->normalized_matcher = bpe::AddedTokenMatcher(std::move(normalized), normalized_patterns);

    // Decoding tables: added tokens take precedence over the model's vocabulary.
    int32_t max_id = impl->model->max_id();
    for (const bpe::AddedToken& t : added) max_id = std::max(max_id, t.id);
    impl->vocab_size = int64_t(max_id) + 1;
    impl->id_bytes.assign(size_t(impl->vocab_size), std::string());
    impl->id_known.assign(size_t(impl->vocab_size), 0);
    impl->id_special.assign(size_t(impl->vocab_size), 0);
    for (int32_t id = 0; id <= impl->model->max_id(); ++id) {
      if (const std::string* token = impl->model->id_to_token(id)) {
        impl->id_bytes[size_t(id)] = bpe::byte_level_decode_token(*token);
        impl->id_known[size_t(id)] = 1;
        impl->id_special[size_t(id)] = special_contents.count(*token) ? 1 : 0;
      }
    }
    for (const bpe::AddedToken& t : added) {
      impl->id_bytes[size_t(t.id)] = bpe::byte_level_decode_token(t.content);
      impl->id_known[size_t(t.id)] = 1;
      impl->id_special[size_t(t.id)] = special_contents.count(t.content) ? 1 : 0;
    }
  } catch (const json::exception& e) {
    fail(file, ": unexpected content: ", e.what());
  }

  // The end-of-sequence token.
  Tokenizer tokenizer(std::move(impl));
  const fs::path config_path = fs::path(dir) / "tokenizer_config.json";
  std::optional<std::string> eos_text;
  if (fs::is_regular_file(config_path)) {
    const json config = read_json(config_path);
    const json eos = config.is_object() ? config.value("eos_token", json()) : json();
    if (eos.is_string()) {
      eos_text = eos.get<std::string>();
    } else if (eos.is_object() && eos.contains("content") && eos["content"].is_string()) {
      eos_text = eos["content"].get<std::string>();
    } else if (!eos.is_null()) {
      fail(config_path.string(), ": \"eos_token\" is neither a string nor {\"content\": ...}");
    }
    if (eos_text) {
      tokenizer.impl_->eos = tokenizer.token_id(*eos_text);
      if (!tokenizer.impl_->eos) {
        fail(config_path.string(), ": eos_token \"", *eos_text, "\" is not in the vocabulary");
      }
    }
  }
  if (!eos_text) tokenizer.impl_->eos = tokenizer.token_id("<|endoftext|>");
  return tokenizer;
}

void Tokenizer::Impl::encode_plain(std::string_view text, std::vector<int32_t>& ids) const {
  std::string normalized_storage;
  std::string_view normalized = text;
  if (normalizer.active()) {
    normalized_storage = normalizer.apply(text);
    normalized = normalized_storage;
  }
  std::vector<bpe::TextPiece> pieces;
  if (normalized_matcher.empty()) {
    pieces.push_back({0, normalized.size(), -1});
  } else {
    normalized_matcher.split(normalized, pieces);
  }
  std::vector<std::string_view> pre_tokens;
  std::deque<std::string> storage;
  for (const bpe::TextPiece& piece : pieces) {
    if (piece.id >= 0) {
      ids.push_back(piece.id);
      continue;
    }
    pre_tokens.clear();
    pre_tokenizer->split(normalized.substr(piece.begin, piece.end - piece.begin), pre_tokens,
                         storage);
    for (std::string_view pre_token : pre_tokens) model->encode(pre_token, ids);
  }
}

std::vector<int32_t> Tokenizer::encode(std::string_view text) const {
  std::string repaired;
  if (bpe::utf8_valid_prefix(text) != text.size()) {
    repaired = bpe::utf8_lossy(text);
    text = repaired;
  }
  std::vector<int32_t> ids;
  ids.reserve(text.size() / 3 + 4);
  std::vector<bpe::TextPiece> pieces;
  impl_->raw_matcher.split(text, pieces);
  for (const bpe::TextPiece& piece : pieces) {
    if (piece.id >= 0) {
      ids.push_back(piece.id);
    } else {
      impl_->encode_plain(text.substr(piece.begin, piece.end - piece.begin), ids);
    }
  }
  return ids;
}

std::string Tokenizer::decode(const std::vector<int32_t>& ids, bool skip_special_tokens) const {
  std::string bytes;
  for (int32_t id : ids) {
    if (id < 0 || id >= impl_->vocab_size || !impl_->id_known[size_t(id)]) continue;
    if (skip_special_tokens && impl_->id_special[size_t(id)]) continue;
    bytes += impl_->id_bytes[size_t(id)];
  }
  return bpe::utf8_lossy(bytes);
}

int64_t Tokenizer::vocab_size() const {
  return impl_->vocab_size;
}

std::optional<int32_t> Tokenizer::token_id(std::string_view token) const {
  const auto it = impl_->added_by_content.find(std::string(token));
  if (it != impl_->added_by_content.end()) return it->second;
  return impl_->model->token_to_id(token);
}

std::optional<int32_t> Tokenizer::eos_id() const {
  return impl_->eos;
}

std::string Tokenizer::id_to_piece(int32_t id) const {
  if (id < 0 || id >= impl_->vocab_size || !impl_->id_known[size_t(id)]) return {};
  return impl_->id_bytes[size_t(id)];
}

}  // namespace vacc
