#include "vacc/io/bpe_pre_tokenizer.h"

#include <nlohmann/json.hpp>
#include <utility>

#include "vacc/core/error.h"

namespace vacc::bpe {

namespace {

using json = nlohmann::json;

bool flag(const json& spec, const char* key, bool fallback) {
  const auto it = spec.find(key);
  return it == spec.end() || it->is_null() ? fallback : it->get<bool>();
}

}  // namespace

PreTokenizer PreTokenizer::from_json(const json& spec, const std::string& file) {
  if (spec.is_null()) {
    fail(file, ": no pre_tokenizer; vacc supports byte-level BPE (a ByteLevel pre-tokenizer)");
  }
  std::vector<const json*> items;
  if (spec.is_object() && spec.value("type", "") == "Sequence") {
    const auto it = spec.find("pretokenizers");
    if (it == spec.end() || !it->is_array()) {
      fail(file, ": pre_tokenizer Sequence has no \"pretokenizers\" array");
    }
    for (const auto& item : *it) items.push_back(&item);
  } else {
    items.push_back(&spec);
  }
  PreTokenizer result;
  bool byte_level = false;
  for (const json* item : items) {
    if (!item->is_object() || !item->contains("type") || !(*item)["type"].is_string()) {
      fail(file, ": a pre_tokenizer entry is not an object with a \"type\"");
    }
    const std::string type = (*item)["type"].get<std::string>();
    if (byte_level) {
      fail(file, ": unsupported pre_tokenizer: \"", type,
           "\" after ByteLevel (vacc needs ByteLevel to be the last step)");
    }
    if (type == "Split") {
      const auto pattern = item->find("pattern");
      if (pattern == item->end() || !pattern->is_object()) {
        fail(file, ": Split pre_tokenizer without a \"pattern\" object");
      }
      std::string text;
      bool literal = false;
      if (pattern->contains("Regex")) {
        text = (*pattern)["Regex"].get<std::string>();
      } else if (pattern->contains("String")) {
        text = (*pattern)["String"].get<std::string>();
        literal = true;
      } else {
        fail(file, ": Split pre_tokenizer pattern is neither Regex nor String");
      }
      const std::string name = item->value("behavior", "Isolated");
      Behavior behavior;
      if (name == "Isolated")
        behavior = Behavior::Isolated;
      else if (name == "Removed")
        behavior = Behavior::Removed;
      else if (name == "MergedWithPrevious")
        behavior = Behavior::MergedWithPrevious;
      else if (name == "MergedWithNext")
        behavior = Behavior::MergedWithNext;
      else if (name == "Contiguous")
        behavior = Behavior::Contiguous;
      else
        fail(file, ": unsupported Split behavior \"", name, "\"");
      result.steps_.push_back(SplitStep{Regex(text, literal, file + " (Split pre_tokenizer)"),
                                        behavior, flag(*item, "invert", false)});
    } else if (type == "ByteLevel") {
      byte_level = true;
      result.add_prefix_space_ = flag(*item, "add_prefix_space", true);
      result.gpt2_regex_ = flag(*item, "use_regex", true);
    } else {
      fail(file, ": unsupported pre_tokenizer \"", type,
           "\" (vacc supports Split and ByteLevel, for byte-level BPE)");
    }
  }
  if (!byte_level) {
    fail(file, ": unsupported pre_tokenizer: no ByteLevel step (vacc supports byte-level BPE)");
  }
  return result;
}

void PreTokenizer::apply_split(const Regex& regex, Behavior behavior, bool invert,
                               std::string_view piece, std::vector<std::string_view>& out) {
  // Hugging Face's NormalizedString::split: the matches and the gaps between them, in order,
  // each flagged as a match (flipped by invert), then merged according to the behaviour.
  struct Part {
    size_t begin, end;
    bool match;
  };
  std::vector<Part> parts;
  size_t prev = 0;
  regex.for_each_match(piece, [&](size_t b, size_t e) {
    if (prev != b) parts.push_back({prev, b, invert});
    parts.push_back({b, e, !invert});
    prev = e;
  });
  if (prev != piece.size()) parts.push_back({prev, piece.size(), invert});

  auto emit = [&](size_t b, size_t e) {
    if (e > b) out.push_back(piece.substr(b, e - b));
  };
  switch (behavior) {
    case Behavior::Isolated:
      for (const Part& p : parts) emit(p.begin, p.end);
      break;
    case Behavior::Removed:
      for (const Part& p : parts)
        if (!p.match) emit(p.begin, p.end);
      break;
    case Behavior::Contiguous:
    case Behavior::MergedWithPrevious: {
      std::vector<std::pair<size_t, size_t>> merged;
      bool previous_match = false;
      for (const Part& p : parts) {
        const bool join = behavior == Behavior::Contiguous ? p.match == previous_match
                                                           : p.match && !previous_match;
        if (join && !merged.empty())
          merged.back().second = p.end;
        else
          merged.emplace_back(p.begin, p.end);
        previous_match = p.match;
      }
      for (const auto& [b, e] : merged) emit(b, e);
      break;
    }
    case Behavior::MergedWithNext: {
      std::vector<std::pair<size_t, size_t>> merged;  // built right to left
      bool previous_match = false;
      for (auto it = parts.rbegin(); it != parts.rend(); ++it) {
        if (it->match && !previous_match && !merged.empty())
          merged.back().first = it->begin;
        else
          merged.emplace_back(it->begin, it->end);
        previous_match = it->match;
      }
      for (auto it = merged.rbegin(); it != merged.rend(); ++it) emit(it->first, it->second);
      break;
    }
  }
}

void PreTokenizer::split(std::string_view text, std::vector<std::string_view>& out,
                         std::deque<std::string>& storage) const {
  if (text.empty()) return;
  std::vector<std::string_view> pieces{text};
  std::vector<std::string_view> next;
  for (const SplitStep& step : steps_) {
    next.clear();
    for (std::string_view piece : pieces) {
      apply_split(step.regex, step.behavior, step.invert, piece, next);
    }
    pieces.swap(next);
  }
  for (std::string_view piece : pieces) {
    if (add_prefix_space_ && piece.front() != ' ') {
      std::string& prefixed = storage.emplace_back(1, ' ');
      prefixed.append(piece.data(), piece.size());
      piece = prefixed;
    }
    if (gpt2_regex_) {
      apply_split(gpt2_, Behavior::Isolated, false, piece, out);
    } else {
      out.push_back(piece);
    }
  }
}

}  // namespace vacc::bpe
