#include "vacc/io/sft_example.h"

#include <limits>
#include <nlohmann/json.hpp>
#include <utility>

#include "vacc/io/tokenizer.h"

namespace vacc {

namespace {

using nlohmann::json;

[[noreturn]] void bad(const std::string& what) {
  throw BadLineError(what);
}

// The value of a key that must be present.
const json& required(const json& object, const char* key) {
  auto it = object.find(key);
  if (it == object.end()) bad(detail::concat("missing key \"", key, "\""));
  return *it;
}

const std::string& string_value(const json& value, const std::string& what) {
  if (!value.is_string()) bad(detail::concat(what, " is ", value.type_name(), ", not a string"));
  return value.get_ref<const std::string&>();
}

// A token id (or label) from JSON: an integer in int32 range.
int32_t id_value(const json& value, const std::string& what) {
  if (!value.is_number_integer())
    bad(detail::concat(what, " is ", value.is_number() ? "a fraction" : value.type_name(),
                       ", not an integer"));
  if (value.is_number_unsigned()) {
    const uint64_t v = value.get<uint64_t>();
    if (v > uint64_t(std::numeric_limits<int32_t>::max()))
      bad(detail::concat(what, " = ", v, " does not fit a 32-bit token id"));
    return int32_t(v);
  }
  const int64_t v = value.get<int64_t>();
  if (v < std::numeric_limits<int32_t>::min() || v > std::numeric_limits<int32_t>::max())
    bad(detail::concat(what, " = ", v, " does not fit a 32-bit token id"));
  return int32_t(v);
}

void check_id(int32_t id, int64_t vocab_size, const std::string& what) {
  if (id < 0) bad(detail::concat(what, " = ", id, " is negative"));
  if (vocab_size > 0 && id >= vocab_size)
    bad(detail::concat(what, " = ", id, " is outside the vocabulary (size ", vocab_size, ")"));
}

SftFormat detect(const json& object) {
  if (object.contains("input_ids")) return SftFormat::kTokens;
  if (object.contains("messages")) return SftFormat::kChat;
  if (object.contains("instruction")) return SftFormat::kAlpaca;
  if (object.contains("text")) return SftFormat::kText;
  bad("no known keys: expected \"input_ids\" (tokens), \"messages\" (chat), "
      "\"instruction\" + \"output\" (alpaca) or \"text\"");
}

SftExample tokens_example(const json& object, const SftExampleOptions& options) {
  SftExample ex;
  ex.format = SftFormat::kTokens;
  const json& ids = required(object, "input_ids");
  if (!ids.is_array()) bad(detail::concat("\"input_ids\" is ", ids.type_name(), ", not an array"));
  if (ids.empty()) bad("\"input_ids\" is empty");
  ex.ids.reserve(ids.size());
  for (size_t t = 0; t < ids.size(); ++t) {
    const std::string what = detail::concat("input_ids[", t, "]");
    const int32_t id = id_value(ids[t], what);
    check_id(id, options.vocab_size, what);
    ex.ids.push_back(id);
  }
  auto labels = object.find("labels");
  if (labels == object.end() || labels->is_null()) {
    ex.labels = ex.ids;
    return ex;
  }
  if (!labels->is_array())
    bad(detail::concat("\"labels\" is ", labels->type_name(), ", not an array"));
  if (labels->size() != ids.size())
    bad(detail::concat("\"labels\" has ", labels->size(), " entries but \"input_ids\" has ",
                       ids.size(), " (labels are unshifted: one per input id)"));
  ex.labels.reserve(ids.size());
  for (size_t t = 0; t < labels->size(); ++t) {
    const std::string what = detail::concat("labels[", t, "]");
    const int32_t label = id_value((*labels)[t], what);
    if (label != kIgnoreLabel) check_id(label, options.vocab_size, what);
    ex.labels.push_back(label);
  }
  return ex;
}

// Tokenizes (text, learnt) pieces: at once when nothing is masked, piece by piece otherwise.
void tokenize_pieces(const std::vector<ChatSegment>& pieces, const Tokenizer& tokenizer,
                     bool mask_prompt, SftExample& ex) {
  if (!mask_prompt) {
    std::string text;
    for (const ChatSegment& p : pieces) text += p.text;
    ex.ids = tokenizer.encode(text);
    ex.labels = ex.ids;
    return;
  }
  for (const ChatSegment& p : pieces) {
    std::vector<int32_t> ids = tokenizer.encode(p.text);
    ex.ids.insert(ex.ids.end(), ids.begin(), ids.end());
    if (p.assistant) {
      ex.labels.insert(ex.labels.end(), ids.begin(), ids.end());
    } else {
      ex.labels.insert(ex.labels.end(), ids.size(), kIgnoreLabel);
    }
  }
}

std::vector<ChatSegment> text_pieces(const json& object, SftFormat format,
                                     const SftExampleOptions& options) {
  switch (format) {
    case SftFormat::kAlpaca: {
      const std::string& instruction =
          string_value(required(object, "instruction"), "\"instruction\"");
      std::string input;
      auto it = object.find("input");
      if (it != object.end() && !it->is_null()) input = string_value(*it, "\"input\"");
      const std::string& output = string_value(required(object, "output"), "\"output\"");
      return {{alpaca_prompt(instruction, input), false}, {output, true}};
    }
    case SftFormat::kText:
      return {{string_value(required(object, "text"), "\"text\""), true}};
    case SftFormat::kChat: {
      const json& messages = required(object, "messages");
      if (!messages.is_array())
        bad(detail::concat("\"messages\" is ", messages.type_name(), ", not an array"));
      if (messages.empty()) bad("\"messages\" is empty");
      std::vector<ChatMessage> chat;
      chat.reserve(messages.size());
      for (size_t i = 0; i < messages.size(); ++i) {
        const json& m = messages[i];
        const std::string where = detail::concat("messages[", i, "]");
        if (!m.is_object()) bad(detail::concat(where, " is ", m.type_name(), ", not an object"));
        auto role = m.find("role");
        if (role == m.end()) bad(detail::concat(where, " has no \"role\""));
        auto content = m.find("content");
        if (content == m.end()) bad(detail::concat(where, " has no \"content\""));
        ChatMessage msg{string_value(*role, where + ".role"),
                        string_value(*content, where + ".content")};
        if (msg.role.empty()) bad(detail::concat(where, ".role is empty"));
        chat.push_back(std::move(msg));
      }
      return render_chatml_segments(chat, options.default_system_message, false);
    }
    default:
      fail("internal: no text pieces for format ", sft_format_name(format));
  }
}

}  // namespace

std::string_view sft_format_name(SftFormat format) {
  switch (format) {
    case SftFormat::kAuto:
      return "auto";
    case SftFormat::kAlpaca:
      return "alpaca";
    case SftFormat::kChat:
      return "chat";
    case SftFormat::kText:
      return "text";
    case SftFormat::kTokens:
      return "tokens";
  }
  return "?";
}

SftFormat parse_sft_format(std::string_view name) {
  for (SftFormat f : {SftFormat::kAuto, SftFormat::kAlpaca, SftFormat::kChat, SftFormat::kText,
                      SftFormat::kTokens})
    if (sft_format_name(f) == name) return f;
  fail("unknown data format \"", name, "\": expected auto, alpaca, chat, text or tokens");
}

std::string alpaca_prompt(std::string_view instruction, std::string_view input) {
  std::string out;
  if (input.empty()) {
    out =
        "Below is an instruction that describes a task. Write a response that appropriately "
        "completes the request.\n\n### Instruction:\n";
    out += instruction;
  } else {
    out =
        "Below is an instruction that describes a task, paired with an input that provides "
        "further context. Write a response that appropriately completes the request.\n\n"
        "### Instruction:\n";
    out += instruction;
    out += "\n\n### Input:\n";
    out += input;
  }
  out += "\n\n### Response:\n";
  return out;
}

SftExample parse_sft_example(std::string_view line, const Tokenizer* tokenizer,
                             const SftExampleOptions& options) {
  json object;
  try {
    object = json::parse(line.begin(), line.end());
  } catch (const json::parse_error& e) {
    bad(detail::concat("not valid JSON (at byte ", e.byte, ")"));
  }
  if (!object.is_object()) bad(detail::concat("a JSON ", object.type_name(), ", not an object"));

  const SftFormat format = options.format == SftFormat::kAuto ? detect(object) : options.format;
  if (format == SftFormat::kTokens) return tokens_example(object, options);

  const std::vector<ChatSegment> pieces = text_pieces(object, format, options);
  VACC_CHECK(tokenizer != nullptr, "the ", sft_format_name(format),
             " format needs a tokenizer (only pre-tokenized \"input_ids\" lines do not)");
  SftExample ex;
  ex.format = format;
  tokenize_pieces(pieces, *tokenizer, options.mask_prompt, ex);
  if (format != SftFormat::kChat) {
    VACC_CHECK(options.eos_id.has_value(), "the ", sft_format_name(format),
               " format ends every example with an end-of-sequence token, and the tokenizer "
               "names none (set the eos id)");
    ex.ids.push_back(*options.eos_id);
    ex.labels.push_back(*options.eos_id);
  }
  if (ex.ids.empty()) bad("the example has no tokens");
  for (size_t t = 0; t < ex.ids.size(); ++t)
    check_id(ex.ids[t], options.vocab_size, detail::concat("token ", t, " (id)"));
  return ex;
}

}  // namespace vacc
