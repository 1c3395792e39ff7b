// `vacc tokenize --tokenizer DIR [--jsonl] [--decode]`: text to token ids with a Hugging Face
// tokenizer.json, as Hugging Face tokenizers encodes it.
//   plain:            all of stdin is one text; prints its ids separated by spaces.
//   --jsonl:          each stdin line is {"text": "..."}; writes {"ids": [...]} lines in order
//                     (blank lines are skipped; a bad line is an error naming its number).
//   --decode:         the reverse: ids (whitespace-separated, or {"ids": [...]} lines with
//                     --jsonl, giving {"text": "..."} lines) to text.
#include <cstdio>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "vacc/cli/commands.h"
#include "vacc/core/error.h"
#include "vacc/io/tokenizer.h"

namespace vacc::cli {
namespace {

using json = nlohmann::json;

struct TokenizeArgs {
  std::string tokenizer;
  bool jsonl = false;
  bool decode = false;
  bool skip_special_tokens = false;
};

std::string read_stdin() {
  std::string data;
  char buffer[1 << 16];
  size_t n;
  while ((n = std::fread(buffer, 1, sizeof buffer, stdin)) > 0) data.append(buffer, n);
  VACC_CHECK(!std::ferror(stdin), "vacc tokenize: cannot read stdin");
  return data;
}

// Buffered stdout; fails on a write error (a closed pipe, a full disk).
class Output {
 public:
  void add(std::string_view s) {
    buffer_ += s;
    if (buffer_.size() >= (1 << 16)) flush();
  }
  void flush() {
    if (!buffer_.empty() &&
        std::fwrite(buffer_.data(), 1, buffer_.size(), stdout) != buffer_.size()) {
      fail("vacc tokenize: cannot write to stdout");
    }
    buffer_.clear();
    VACC_CHECK(std::fflush(stdout) == 0, "vacc tokenize: cannot write to stdout");
  }

 private:
  std::string buffer_;
};

void append_ids(std::string& out, const std::vector<int32_t>& ids, char separator) {
  for (size_t i = 0; i < ids.size(); ++i) {
    if (i > 0) out += separator;
    out += std::to_string(ids[i]);
  }
}

// Calls on_line(number, line) for each line of `data` that is not blank (numbers from 1).
template <typename F>
void for_each_line(std::string_view data, F on_line) {
  size_t number = 0;
  size_t start = 0;
  while (start < data.size()) {
    size_t end = data.find('\n', start);
    if (end == std::string_view::npos) end = data.size();
    std::string_view line = data.substr(start, end - start);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    ++number;
    if (line.find_first_not_of(" \t") != std::string_view::npos) on_line(number, line);
    start = end + 1;
  }
}

json parse_line(size_t number, std::string_view line) {
  try {
    return json::parse(line);
  } catch (const json::exception& e) {
    fail("stdin line ", number, ": not valid JSON: ", e.what());
  }
}

std::vector<int32_t> ids_of(const json& value, const std::string& where) {
  VACC_CHECK(value.is_array(), where, ": \"ids\" must be an array of integers");
  std::vector<int32_t> ids;
  ids.reserve(value.size());
  for (const json& id : value) {
    VACC_CHECK(
        id.is_number_integer() && id.get<int64_t>() >= INT32_MIN && id.get<int64_t>() <= INT32_MAX,
        where, ": \"ids\" must be an array of integers");
    ids.push_back(int32_t(id.get<int64_t>()));
  }
  return ids;
}

void run_tokenize(const TokenizeArgs& a) {
  const Tokenizer tokenizer = Tokenizer::load(a.tokenizer);
  const std::string input = read_stdin();
  Output out;
  std::string line_out;
  if (!a.decode && a.jsonl) {
    for_each_line(input, [&](size_t number, std::string_view line) {
      const json record = parse_line(number, line);
      VACC_CHECK(record.is_object() && record.contains("text") && record["text"].is_string(),
                 "stdin line ", number, ": expected an object with a string \"text\"");
      line_out = "{\"ids\":[";
      append_ids(line_out, tokenizer.encode(record["text"].get_ref<const std::string&>()), ',');
      line_out += "]}\n";
      out.add(line_out);
    });
  } else if (!a.decode) {
    append_ids(line_out, tokenizer.encode(input), ' ');
    line_out += '\n';
    out.add(line_out);
  } else if (a.jsonl) {
    for_each_line(input, [&](size_t number, std::string_view line) {
      const json record = parse_line(number, line);
      const std::string where = "stdin line " + std::to_string(number);
      VACC_CHECK(record.is_object() && record.contains("ids"), where,
                 ": expected an object with \"ids\"");
      const std::string text =
          tokenizer.decode(ids_of(record["ids"], where), a.skip_special_tokens);
      out.add(json{{"text", text}}.dump() + "\n");
    });
  } else {
    std::vector<int32_t> ids;
    size_t i = 0;
    while (i < input.size()) {
      const size_t begin = input.find_first_not_of(" \t\r\n", i);
      if (begin == std::string::npos) break;
      size_t end = input.find_first_of(" \t\r\n", begin);
      if (end == std::string::npos) end = input.size();
      const std::string word = input.substr(begin, end - begin);
      size_t used = 0;
      long long id = 0;
      try {
        id = std::stoll(word, &used);
      } catch (const std::exception&) {
        used = 0;
      }
      VACC_CHECK(used == word.size() && id >= INT32_MIN && id <= INT32_MAX, "stdin: \"", word,
                 "\" is not a token id");
      ids.push_back(int32_t(id));
      i = end;
    }
    out.add(tokenizer.decode(ids, a.skip_special_tokens));
  }
  out.flush();
}

}  // namespace

void add_tokenize_command(CLI::App& app) {
  auto args = std::make_shared<TokenizeArgs>();
  CLI::App* cmd = app.add_subcommand(
      "tokenize",
      "Text on stdin to token ids (or ids to text with --decode), as Hugging Face "
      "tokenizers does");
  cmd->add_option("--tokenizer", args->tokenizer,
                  "Folder with tokenizer.json (and tokenizer_config.json)")
      ->required();
  cmd->add_flag("--jsonl", args->jsonl,
                "stdin lines are {\"text\": ...}; write {\"ids\": [...]} lines (with --decode, the "
                "reverse)");
  cmd->add_flag("--decode", args->decode, "Decode ids to text instead");
  cmd->add_flag("--skip-special-tokens", args->skip_special_tokens,
                "With --decode: leave special tokens out of the text");
  cmd->callback([args] { run_tokenize(*args); });
}

}  // namespace vacc::cli
