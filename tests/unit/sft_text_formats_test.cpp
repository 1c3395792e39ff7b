// Fine-tuning data in the text formats (alpaca, chat, text) through a real tokenizer: a tiny
// byte-level BPE tokenizer.json written by the test (the Qwen2 pre-tokenizer, a handful of
// merges, the added tokens <|endoftext|>, <|im_start|>, <|im_end|>). Checks the token ids and
// the shifted, masked labels of each format, and that the demo's instruction data loads.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "vacc/core/error.h"
#include "vacc/io/chat_template.h"
#include "vacc/io/jsonl_index.h"
#include "vacc/io/sft_dataset.h"
#include "vacc/io/sft_example.h"
#include "vacc/io/tokenizer.h"

namespace vacc {
namespace {

namespace fs = std::filesystem;
using Ids = std::vector<int32_t>;
constexpr int32_t I = kIgnoreLabel;

// Ids of the tiny tokenizer: bytes are 0..255 (id = byte value), then the merges, then the
// added tokens.
constexpr int32_t kHello = 260, kSpaceWor = 263;
constexpr int32_t kEndOfText = 267, kImStart = 268, kImEnd = 269, kVocab = 270;

// GPT-2's byte-to-unicode map: printable bytes stand for themselves, the others for 256 + n.
std::string byte_char(int b) {
  static const std::vector<std::string> table = [] {
    std::vector<int> code(256, -1);
    for (int c = '!'; c <= '~'; ++c) code[size_t(c)] = c;
    for (int c = 0xA1; c <= 0xAC; ++c) code[size_t(c)] = c;
    for (int c = 0xAE; c <= 0xFF; ++c) code[size_t(c)] = c;
    int n = 0;
    for (int c = 0; c < 256; ++c)
      if (code[size_t(c)] < 0) code[size_t(c)] = 256 + n++;
    std::vector<std::string> out;
    for (int cp : code) {
      std::string s;
      if (cp < 0x80) {
        s += char(cp);
      } else {  // all below 0x800: two UTF-8 bytes
        s += char(0xC0 | (cp >> 6));
        s += char(0x80 | (cp & 0x3F));
      }
      out.push_back(s);
    }
    return out;
  }();
  return table[size_t(b)];
}

void write_tiny_tokenizer(const fs::path& dir, const std::string& eos_token) {
  using nlohmann::json;
  fs::create_directories(dir);
  json vocab = json::object();
  for (int b = 0; b < 256; ++b) vocab[byte_char(b)] = b;
  const std::string sp = byte_char(' '), nl = byte_char('\n');
  const std::vector<std::pair<std::string, std::string>> merges = {
      {sp, "t"},  {"h", "e"},       {"l", "l"}, {"he", "ll"}, {"hell", "o"}, {sp, "w"},
      {"o", "r"}, {sp + "w", "or"}, {"#", "#"}, {"##", "#"},  {nl, nl}};
  json merge_list = json::array();
  int32_t id = 256;
  for (const auto& [a, b] : merges) {
    vocab[a + b] = id++;
    merge_list.push_back(a + " " + b);
  }
  json added = json::array();
  for (const char* t : {"<|endoftext|>", "<|im_start|>", "<|im_end|>"})
    added.push_back({{"id", id++},
                     {"content", t},
                     {"single_word", false},
                     {"lstrip", false},
                     {"rstrip", false},
                     {"normalized", false},
                     {"special", true}});
  const json byte_level = {{"type", "ByteLevel"},
                           {"add_prefix_space", false},
                           {"trim_offsets", false},
                           {"use_regex", false}};
  const std::string regex =
      R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
  const json tokenizer = {{"version", "1.0"},
                          {"truncation", nullptr},
                          {"padding", nullptr},
                          {"added_tokens", added},
                          {"normalizer", {{"type", "NFC"}}},
                          {"pre_tokenizer",
                           {{"type", "Sequence"},
                            {"pretokenizers", json::array({{{"type", "Split"},
                                                            {"pattern", {{"Regex", regex}}},
                                                            {"behavior", "Isolated"},
                                                            {"invert", false}},
                                                           byte_level})}}},
                          {"post_processor", byte_level},
                          {"decoder", byte_level},
                          {"model",
                           {{"type", "BPE"},
                            {"dropout", nullptr},
                            {"unk_token", nullptr},
                            {"continuing_subword_prefix", ""},
                            {"end_of_word_suffix", ""},
                            {"fuse_unk", false},
                            {"byte_fallback", false},
                            {"ignore_merges", false},
                            {"vocab", vocab},
                            {"merges", merge_list}}}};
  std::ofstream(dir / "tokenizer.json") << tokenizer.dump(2);
  if (!eos_token.empty())
    std::ofstream(dir / "tokenizer_config.json") << json{{"eos_token", eos_token}}.dump();
}

class SftTextFormatsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("vacc_sft_text_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    write_tiny_tokenizer(dir_ / "tok", "");
    tokenizer_ = std::make_unique<Tokenizer>(Tokenizer::load((dir_ / "tok").string()));
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::string write(const std::vector<nlohmann::json>& lines) {
    std::string path = (dir_ / "data.jsonl").string();
    std::ofstream out(path, std::ios::binary);
    for (const auto& l : lines) out << l.dump() << "\n";
    return path;
  }

  static DatasetOptions options(int64_t seq_len, bool mask_prompt) {
    DatasetOptions o;
    o.seq_len = seq_len;
    o.mask_prompt = mask_prompt;
    o.shuffle = false;
    return o;
  }

  Ids encode(const std::string& text) const { return tokenizer_->encode(text); }

  // The batch row a sequence of tokens and HF-style (unshifted) labels should give.
  static std::pair<Ids, Ids> expected_row(const Ids& tokens, const Ids& hf_labels, int64_t seq,
                                          int32_t pad) {
    Ids ids(size_t(seq), pad), labels(size_t(seq), I);
    for (size_t t = 0; t < tokens.size(); ++t) ids[t] = tokens[t];
    for (size_t t = 0; t + 1 < tokens.size(); ++t) labels[t] = hf_labels[t + 1];
    return {ids, labels};
  }

  static Ids concat(std::initializer_list<Ids> parts) {
    Ids out;
    for (const Ids& p : parts) out.insert(out.end(), p.begin(), p.end());
    return out;
  }

  fs::path dir_;
  std::unique_ptr<Tokenizer> tokenizer_;
};

TEST_F(SftTextFormatsTest, TinyTokenizerEncodesAsExpected) {
  EXPECT_EQ(tokenizer_->vocab_size(), kVocab);
  EXPECT_EQ(tokenizer_->eos_id(), kEndOfText);
  EXPECT_EQ(encode("hello"), (Ids{kHello}));
  EXPECT_EQ(encode("hello world"), (Ids{kHello, kSpaceWor, 'l', 'd'}));
  EXPECT_EQ(encode("<|im_start|>user\nhello<|im_end|>"),
            (Ids{kImStart, 'u', 's', 'e', 'r', '\n', kHello, kImEnd}));
}

TEST_F(SftTextFormatsTest, AlpacaUnmaskedLearnsEveryToken) {
  const std::string path = write({{{"instruction", "hello"}, {"output", "hello world"}}});
  SftDataset d(path, tokenizer_.get(), options(256, false));
  EXPECT_EQ(d.pad_id(), kEndOfText);
  const Ids tokens = concat({encode(alpaca_prompt("hello", "") + "hello world"), {kEndOfText}});
  auto [ids, labels] = expected_row(tokens, tokens, 256, kEndOfText);
  TokenBatch b = d.train_batch(0, 0, 1);
  EXPECT_EQ(b.ids, ids);
  EXPECT_EQ(b.labels, labels);
  EXPECT_EQ(b.counted_tokens(), int64_t(tokens.size()) - 1);
}

TEST_F(SftTextFormatsTest, AlpacaMaskedLearnsOutputAndEos) {
  const std::string path =
      write({{{"instruction", "Reverse the word."}, {"input", "hello"}, {"output", "olleh"}},
             {{"instruction", "hello"}, {"input", ""}, {"output", "world"}}});
  SftDataset d(path, tokenizer_.get(), options(256, true));
  TokenBatch b = d.train_batch(0, 0, 2);
  {
    const Ids prompt = encode(alpaca_prompt("Reverse the word.", "hello"));
    const Ids response = concat({encode("olleh"), {kEndOfText}});
    const Ids tokens = concat({prompt, response});
    const Ids hf = concat({Ids(prompt.size(), I), response});
    auto [ids, labels] = expected_row(tokens, hf, 256, kEndOfText);
    EXPECT_EQ(b.slice(0, 1).ids, ids);
    EXPECT_EQ(b.slice(0, 1).labels, labels);
    EXPECT_EQ(b.slice(0, 1).counted_tokens(), int64_t(response.size()));
  }
  {
    // An empty input uses the prompt without "### Input:".
    const Ids prompt = encode(alpaca_prompt("hello", ""));
    const Ids response = concat({encode("world"), {kEndOfText}});
    auto [ids, labels] = expected_row(concat({prompt, response}),
                                      concat({Ids(prompt.size(), I), response}), 256, kEndOfText);
    EXPECT_EQ(b.slice(1, 2).ids, ids);
    EXPECT_EQ(b.slice(1, 2).labels, labels);
  }
}

TEST_F(SftTextFormatsTest, ChatIsRenderedWithChatMl) {
  const nlohmann::json line = {{"messages",
                                {{{"role", "user"}, {"content", "hello"}},
                                 {{"role", "assistant"}, {"content", "hello world"}}}}};
  const std::vector<ChatMessage> chat = {{"user", "hello"}, {"assistant", "hello world"}};
  const std::string path = write({line});
  {
    SftDataset d(path, tokenizer_.get(), options(512, false));
    const Ids tokens = encode(render_chatml(chat));  // no eos added: turns end with <|im_end|>
    auto [ids, labels] = expected_row(tokens, tokens, 512, kEndOfText);
    TokenBatch b = d.train_batch(0, 0, 1);
    EXPECT_EQ(b.ids, ids);
    EXPECT_EQ(b.labels, labels);
  }
  {
    SftDataset d(path, tokenizer_.get(), options(512, true));
    Ids tokens, hf;
    for (const ChatSegment& s : render_chatml_segments(chat)) {
      const Ids piece = encode(s.text);
      tokens.insert(tokens.end(), piece.begin(), piece.end());
      for (int32_t id : piece) hf.push_back(s.assistant ? id : I);
    }
    auto [ids, labels] = expected_row(tokens, hf, 512, kEndOfText);
    TokenBatch b = d.train_batch(0, 0, 1);
    EXPECT_EQ(b.ids, ids);
    EXPECT_EQ(b.labels, labels);
    // Only the assistant's content and its <|im_end|> are learnt.
    Ids learnt;
    for (int32_t l : b.labels)
      if (l != I) learnt.push_back(l);
    EXPECT_EQ(learnt, concat({encode("hello world"), {kImEnd}}));
  }
}

TEST_F(SftTextFormatsTest, TextGetsEosAndFormatsMixInOneFile) {
  const std::string path = write({{{"text", "hello world"}},
                                  {{"input_ids", {1, 2, 3}}},
                                  {{"instruction", "hello"}, {"output", "world"}}});
  SftDataset d(path, tokenizer_.get(), options(64, true));
  EXPECT_EQ(d.train_examples(), 3);
  TokenBatch b = d.train_batch(0, 0, 3);
  const Ids text = concat({encode("hello world"), {kEndOfText}});
  auto [ids, labels] = expected_row(text, text, 64, kEndOfText);  // all of a text is learnt
  EXPECT_EQ(b.slice(0, 1).ids, ids);
  EXPECT_EQ(b.slice(0, 1).labels, labels);
  EXPECT_EQ(Ids(b.ids.begin() + 64, b.ids.begin() + 67), (Ids{1, 2, 3}));
  // Ids beyond the tokenizer's vocabulary are bad lines.
  const std::string bad = write({{{"input_ids", {1, kVocab}}}});
  EXPECT_THROW(SftDataset(bad, tokenizer_.get(), options(64, false)), Error);
}

TEST_F(SftTextFormatsTest, EosComesFromTokenizerConfig) {
  write_tiny_tokenizer(dir_ / "tok2", "<|im_end|>");
  Tokenizer tok = Tokenizer::load((dir_ / "tok2").string());
  const std::string path = write({{{"text", "hello"}}});
  SftDataset d(path, &tok, options(4, false));
  EXPECT_EQ(d.eos_id(), kImEnd);
  EXPECT_EQ(d.pad_id(), kEndOfText);
  TokenBatch b = d.train_batch(0, 0, 1);
  EXPECT_EQ(b.ids, (Ids{kHello, kImEnd, kEndOfText, kEndOfText}));
  EXPECT_EQ(b.labels, (Ids{kImEnd, I, I, I}));
}

TEST_F(SftTextFormatsTest, DemoInstructionsLoad) {
  const fs::path path =
      fs::path(__FILE__).parent_path() / ".." / ".." / "examples" / "data" / "instructions.jsonl";
  DatasetOptions o = options(512, true);
  o.eval_count = 10;
  SftDataset d(path.string(), tokenizer_.get(), o);
  EXPECT_EQ(d.skipped_lines(), 0);
  EXPECT_EQ(d.truncated_examples(), 0);
  EXPECT_EQ(d.eval_examples(), 10);
  EXPECT_EQ(d.train_examples() + d.eval_examples(), JsonlIndex(path.string()).size());
  TokenBatch b = d.train_batch(0, 0, d.train_sequences());
  for (int64_t i = 0; i < b.batch; ++i) EXPECT_GT(b.slice(i, i + 1).counted_tokens(), 0) << i;
}

}  // namespace
}  // namespace vacc
