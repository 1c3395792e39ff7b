#include "vacc/io/bpe_model.h"

#include <algorithm>
#include <bit>
#include <mutex>
#include <nlohmann/json.hpp>
#include <queue>

#include "vacc/core/error.h"
#include "vacc/io/bpe_byte_level.h"
#include "vacc/io/bpe_utf8.h"

namespace vacc::bpe {

namespace {

using json = nlohmann::json;

// Pre-tokens at least this long are not cached (Hugging Face uses the same bound).
constexpr size_t kMaxCachedLength = 256;
// The cache is emptied when it reaches this many entries.
constexpr size_t kCacheCapacity = 1 << 17;

uint64_t pair_key(int32_t a, int32_t b) {
  return (uint64_t(uint32_t(a)) << 32) | uint32_t(b);
}

uint64_t mix(uint64_t x) {
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdull;
  x ^= x >> 33;
  return x;
}

}  // namespace

void BpeModel::MergeTable::reserve(size_t n) {
  const size_t capacity = std::bit_ceil(std::max<size_t>(16, n * 2));
  slots.assign(capacity, Slot{});
  mask = capacity - 1;
}

void BpeModel::MergeTable::insert(int32_t a, int32_t b, int32_t rank, int32_t merged) {
  const uint64_t key = pair_key(a, b);
  for (uint64_t i = mix(key) & mask;; i = (i + 1) & mask) {
    Slot& s = slots[i];
    if (s.key == key || s.key == ~uint64_t(0)) {
      s = Slot{key, rank, merged};  // a repeated pair keeps its last rank, as in Hugging Face
      return;
    }
  }
}

const BpeModel::MergeTable::Slot* BpeModel::MergeTable::find(int32_t a, int32_t b) const {
  const uint64_t key = pair_key(a, b);
  for (uint64_t i = mix(key) & mask;; i = (i + 1) & mask) {
    const Slot& s = slots[i];
    if (s.key == key) return &s;
    if (s.key == ~uint64_t(0)) return nullptr;
  }
}

BpeModel::BpeModel(BpeModel&&) noexcept = default;
BpeModel& BpeModel::operator=(BpeModel&&) noexcept = default;
BpeModel::~BpeModel() = default;

BpeModel BpeModel::from_json(const json& spec, const std::string& file) {
  if (!spec.is_object()) fail(file, ": \"model\" is missing or not an object");
  const std::string type = spec.value("type", "BPE");
  if (type != "BPE") {
    fail(file, ": unsupported model type \"", type, "\" (vacc supports byte-level BPE)");
  }
  if (spec.contains("dropout") && !spec["dropout"].is_null() &&
      spec["dropout"].get<double>() != 0.0) {
    fail(file, ": unsupported BPE option: dropout (only deterministic BPE is supported)");
  }
  for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"}) {
    if (spec.contains(key) && spec[key].is_string() && !spec[key].get<std::string>().empty()) {
      fail(file, ": unsupported BPE option: ", key, " (byte-level BPE does not use it)");
    }
  }

  BpeModel m;
  const auto vocab = spec.find("vocab");
  if (vocab == spec.end() || !vocab->is_object()) fail(file, ": model has no \"vocab\" object");
  m.vocab_.reserve(vocab->size());
  int32_t max_id = -1;
  for (const auto& [token, id_value] : vocab->items()) {
    if (!id_value.is_number_integer() || id_value.get<int64_t>() < 0 ||
        id_value.get<int64_t>() > INT32_MAX) {
      fail(file, ": vocab entry \"", token, "\" has an invalid id");
    }
    const auto id = int32_t(id_value.get<int64_t>());
    m.vocab_[token] = id;
    max_id = std::max(max_id, id);
  }
  m.id_to_token_.assign(size_t(max_id + 1), std::string());
  m.id_used_.assign(size_t(max_id + 1), 0);
  for (const auto& [token, id] : m.vocab_) {
    m.id_to_token_[size_t(id)] = token;
    m.id_used_[size_t(id)] = 1;
  }

  m.ignore_merges_ = spec.value("ignore_merges", false);
  if (m.ignore_merges_) {
    m.bytes_vocab_.reserve(m.vocab_.size());
    for (const auto& [token, id] : m.vocab_) {
      if (auto bytes = byte_level_to_bytes(token)) m.bytes_vocab_.emplace(std::move(*bytes), id);
    }
  }

  if (spec.contains("unk_token") && spec["unk_token"].is_string()) {
    const auto unk = m.vocab_.find(spec["unk_token"].get<std::string>());
    if (unk == m.vocab_.end()) {
      fail(file, ": unk_token \"", spec["unk_token"].get<std::string>(), "\" is not in the vocab");
    }
    m.unk_id_ = unk->second;
  }
  m.fuse_unk_ = spec.value("fuse_unk", false);
  const bool byte_fallback = spec.value("byte_fallback", false);
  for (int b = 0; b < 256; ++b) {
    std::string ch;
    utf8_append(ch, byte_level_char(uint8_t(b)));
    const auto it = m.vocab_.find(ch);
    m.byte_id_[b] = it == m.vocab_.end() ? -1 : it->second;
    if (m.byte_id_[b] < 0 && byte_fallback) {
      fail(file,
           ": unsupported BPE option: byte_fallback with a vocab lacking byte-level "
           "characters");
    }
  }

  const auto merges = spec.find("merges");
  if (merges == spec.end() || !merges->is_array()) fail(file, ": model has no \"merges\" array");
  m.merges_.reserve(merges->size());
  int32_t rank = 0;
  for (const auto& merge : *merges) {
    std::string a, b;
    if (merge.is_string()) {
      const std::string& s = merge.get_ref<const std::string&>();
      const size_t space = s.find(' ');
      if (space == std::string::npos) fail(file, ": merge \"", s, "\" is not of the form \"a b\"");
      a = s.substr(0, space);
      b = s.substr(space + 1);
    } else if (merge.is_array() && merge.size() == 2 && merge[0].is_string() &&
               merge[1].is_string()) {
      a = merge[0].get<std::string>();
      b = merge[1].get<std::string>();
    } else {
      fail(file, ": merge number ", rank, " is neither \"a b\" nor [\"a\", \"b\"]");
    }
    const auto ia = m.vocab_.find(a);
    const auto ib = m.vocab_.find(b);
    const auto ij = m.vocab_.find(a + b);
    for (const auto& [it, name] : {std::pair{ia, a}, std::pair{ib, b}, std::pair{ij, a + b}}) {
      if (it == m.vocab_.end())
        fail(file, ": merge \"", a, " ", b, "\": \"", name, "\" is not in the vocab");
    }
    m.merges_.insert(ia->second, ib->second, rank, ij->second);
    ++rank;
  }
  return m;
}

std::optional<int32_t> BpeModel::token_to_id(std::string_view token) const {
  const auto it = vocab_.find(token);
  if (it == vocab_.end()) return std::nullopt;
  return it->second;
}

const std::string* BpeModel::id_to_token(int32_t id) const {
  if (id < 0 || size_t(id) >= id_to_token_.size() || !id_used_[size_t(id)]) return nullptr;
  return &id_to_token_[size_t(id)];
}

void BpeModel::merge_word(std::string_view bytes, std::vector<int32_t>& out) const {
  struct Symbol {
    int32_t id;
    int32_t prev;
    int32_t next;
    int32_t length;  // bytes covered; 0 once merged into the symbol on its left
  };
  struct Candidate {
    int32_t rank;
    int32_t pos;
    int32_t merged;
    bool operator>(const Candidate& o) const {
      return rank != o.rank ? rank > o.rank : pos > o.pos;
    }
  };
  thread_local std::vector<Symbol> symbols;
  thread_local std::vector<Candidate> heap;
  symbols.clear();
  heap.clear();

  // One symbol per byte; bytes missing from the vocab become the unknown token (fused when
  // fuse_unk) or, without one, are dropped, as Hugging Face does.
  bool pending_unk = false;
  int32_t pending_length = 0;
  auto add = [&](int32_t id, int32_t length) {
    const auto n = int32_t(symbols.size());
    symbols.push_back(Symbol{id, n - 1, -1, length});
    if (n > 0) symbols[size_t(n - 1)].next = n;
  };
  for (char c : bytes) {
    const int32_t id = byte_id_[uint8_t(c)];
    if (id >= 0) {
      if (pending_unk) add(unk_id_, pending_length);
      pending_unk = false;
      add(id, 1);
    } else if (unk_id_ >= 0) {
      if (pending_unk && fuse_unk_) {
        ++pending_length;
      } else {
        if (pending_unk) add(unk_id_, pending_length);
        pending_unk = true;
        pending_length = 1;
      }
    }
  }
  if (pending_unk) add(unk_id_, pending_length);

  const auto greater = std::greater<Candidate>();
  for (size_t i = 0; i + 1 < symbols.size(); ++i) {
    if (const auto* s = merges_.find(symbols[i].id, symbols[i + 1].id)) {
      heap.push_back(Candidate{s->rank, int32_t(i), s->merged});
    }
  }
  std::make_heap(heap.begin(), heap.end(), greater);
  while (!heap.empty()) {
    std::pop_heap(heap.begin(), heap.end(), greater);
    const Candidate top = heap.back();
    heap.pop_back();
    Symbol& left = symbols[size_t(top.pos)];
    if (left.length == 0 || left.next < 0) continue;
    Symbol& right = symbols[size_t(left.next)];
    const auto* current = merges_.find(left.id, right.id);
    if (current == nullptr || current->merged != top.merged) continue;  // stale candidate
    left.id = top.merged;
    left.length += right.length;
    right.length = 0;
    left.next = right.next;
    if (left.next >= 0) symbols[size_t(left.next)].prev = top.pos;
    if (left.prev >= 0) {
      if (const auto* s = merges_.find(symbols[size_t(left.prev)].id, left.id)) {
        heap.push_back(Candidate{s->rank, left.prev, s->merged});
        std::push_heap(heap.begin(), heap.end(), greater);
      }
    }
    if (left.next >= 0) {
      if (const auto* s = merges_.find(left.id, symbols[size_t(left.next)].id)) {
        heap.push_back(Candidate{s->rank, top.pos, s->merged});
        std::push_heap(heap.begin(), heap.end(), greater);
      }
    }
  }
  for (const Symbol& s : symbols)
    if (s.length > 0) out.push_back(s.id);
}

void BpeModel::encode(std::string_view pre_token, std::vector<int32_t>& out) const {
  if (pre_token.empty()) return;
  if (ignore_merges_) {
    const auto it = bytes_vocab_.find(pre_token);
    if (it != bytes_vocab_.end()) {
      out.push_back(it->second);
      return;
    }
  }
  if (pre_token.size() == 1 && byte_id_[uint8_t(pre_token[0])] >= 0) {
    out.push_back(byte_id_[uint8_t(pre_token[0])]);
    return;
  }
  const bool cacheable = pre_token.size() < kMaxCachedLength;
  if (cacheable) {
    std::shared_lock lock(cache_->mutex);
    const auto it = cache_->map.find(pre_token);
    if (it != cache_->map.end()) {
      out.insert(out.end(), it->second.begin(), it->second.end());
      return;
    }
  }
  const size_t first = out.size();
  merge_word(pre_token, out);
  if (cacheable) {
    std::unique_lock lock(cache_->mutex);
    if (cache_->map.size() >= kCacheCapacity) cache_->map.clear();
    cache_->map.emplace(std::string(pre_token),
                        std::vector<int32_t>(out.begin() + std::ptrdiff_t(first), out.end()));
  }
}

}  // namespace vacc::bpe
