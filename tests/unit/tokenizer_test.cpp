// Tokenizer on small hand-made tokenizer.json files: merge order (rank, then leftmost), the
// merge formats, the Qwen pre-tokenizer's whitespace rules, GPT-2 style ByteLevel, ignore_merges,
// added tokens (longest match, special, lstrip / rstrip / single_word / normalized), NFC,
// decoding (skip_special_tokens, invalid UTF-8), eos_id, and errors for bad folders and files.
// The conformance test against Hugging Face itself is tests/reference/hf_tokenize.js.
#include "vacc/io/tokenizer.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "vacc/core/error.h"
#include "vacc/io/bpe_byte_level.h"
#include "vacc/io/bpe_utf8.h"

namespace vacc {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;
using Ids = std::vector<int32_t>;

const char* kQwenRegex =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| "
    "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|"
    "\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

// The byte-level form of raw bytes ("Ġab" for " ab").
std::string bl(const std::string& bytes) {
  return bpe::bytes_to_byte_level(bytes);
}

class TokenizerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("vacc_tokenizer_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    // Ids 0..255: the single bytes. Then the merged tokens, in the order they are added.
    for (int b = 0; b < 256; ++b) vocab_[bl(std::string(1, char(b)))] = b;
  }
  void TearDown() override { fs::remove_all(dir_); }

  // Adds a vocabulary entry (raw bytes) and returns its id.
  int32_t token(const std::string& bytes) {
    const std::string key = bl(bytes);
    if (!vocab_.contains(key)) vocab_[key] = 256 + int32_t(vocab_.size()) - 256;
    return vocab_[key].get<int32_t>();
  }
  // Adds the merge a + b (raw bytes; both and their concatenation get vocabulary entries).
  void merge(const std::string& a, const std::string& b) {
    token(a);
    token(b);
    token(a + b);
    merges_.push_back(json::array({bl(a), bl(b)}));
  }
  // Adds an added token with the id Hugging Face gives it (the next after the vocabulary's
  // entries) and returns that id. Call after the merges.
  int32_t added(const std::string& content, bool special, json flags = json::object()) {
    const auto id = int32_t(vocab_.size() + added_.size());
    json t = {{"id", id},        {"content", content},  {"single_word", false}, {"lstrip", false},
              {"rstrip", false}, {"normalized", false}, {"special", special}};
    t.update(flags);
    added_.push_back(t);
    return id;
  }
  json spec() const {
    return {{"version", "1.0"},
            {"added_tokens", added_},
            {"normalizer", {{"type", "NFC"}}},
            {"pre_tokenizer",
             {{"type", "Sequence"},
              {"pretokenizers",
               {{{"type", "Split"},
                 {"pattern", {{"Regex", kQwenRegex}}},
                 {"behavior", "Isolated"},
                 {"invert", false}},
                {{"type", "ByteLevel"},
                 {"add_prefix_space", false},
                 {"trim_offsets", false},
                 {"use_regex", false}}}}}},
            {"post_processor", nullptr},
            {"decoder", {{"type", "ByteLevel"}}},
            {"model",
             {{"type", "BPE"},
              {"dropout", nullptr},
              {"unk_token", nullptr},
              {"ignore_merges", false},
              {"vocab", vocab_},
              {"merges", merges_}}}};
  }
  void write(const std::string& name, const std::string& text) {
    std::ofstream(dir_ / name, std::ios::binary) << text;
  }
  Tokenizer load(const json& s) {
    write("tokenizer.json", s.dump());
    return Tokenizer::load(dir_.string());
  }
  Tokenizer load() { return load(spec()); }
  // Expects loading to throw a vacc::Error whose message contains each of `parts`.
  void expect_load_error(const std::vector<std::string>& parts) {
    try {
      Tokenizer::load(dir_.string());
      FAIL() << "no error";
    } catch (const Error& e) {
      for (const std::string& p : parts) {
        EXPECT_NE(std::string(e.what()).find(p), std::string::npos)
            << "message \"" << e.what() << "\" lacks \"" << p << "\"";
      }
    }
  }

  fs::path dir_;
  json vocab_ = json::object();
  json merges_ = json::array();
  json added_ = json::array();
};

Ids bytes_of(const std::string& s) {
  Ids ids;
  for (char c : s) ids.push_back(uint8_t(c));
  return ids;
}

TEST_F(TokenizerTest, MergesApplyLowestRankFirst) {
  merge("b", "c");   // rank 0
  merge("a", "b");   // rank 1
  merge("a", "bc");  // rank 2
  const Tokenizer t = load();
  // b+c (rank 0) wins over a+b (rank 1), then a+bc.
  EXPECT_EQ(t.encode("abc"), Ids({token("abc")}));
  EXPECT_EQ(t.encode("ab"), Ids({token("ab")}));
  EXPECT_EQ(t.encode("abd"), Ids({token("ab"), 'd'}));
}

TEST_F(TokenizerTest, HigherRankMergeLosesEvenWhenLeftmost) {
  merge("a", "b");  // rank 0
  merge("b", "c");  // rank 1: never applies to "abc", whose b is taken first
  const Tokenizer t = load();
  EXPECT_EQ(t.encode("abc"), Ids({token("ab"), 'c'}));
  EXPECT_EQ(t.encode("bc"), Ids({token("bc")}));
}

TEST_F(TokenizerTest, TiesGoToTheLeftmostPair) {
  merge("a", "a");
  const Tokenizer t = load();
  EXPECT_EQ(t.encode("aaa"), Ids({token("aa"), 'a'}));
  EXPECT_EQ(t.encode("aaaa"), Ids({token("aa"), token("aa")}));
  EXPECT_EQ(t.encode("aaaaa"), Ids({token("aa"), token("aa"), 'a'}));
}

TEST_F(TokenizerTest, MergesOfMergedTokens) {
  merge("a", "a");
  merge("aa", "aa");
  const Tokenizer t = load();
  EXPECT_EQ(t.encode("aaaa"), Ids({token("aaaa")}));
  EXPECT_EQ(t.encode("aaaaaa"), Ids({token("aaaa"), token("aa")}));
}

TEST_F(TokenizerTest, MergesWrittenAsStrings) {
  merge("b", "c");
  merge("a", "bc");
  json s = spec();
  s["model"]["merges"] = json::array({bl("b") + " " + bl("c"), bl("a") + " " + bl("bc")});
  const Tokenizer t = load(s);
  EXPECT_EQ(t.encode("abc"), Ids({token("abc")}));
}

TEST_F(TokenizerTest, WhitespaceRunsFollowTheQwenRegex) {
  merge(" ", " ");
  merge(" ", "b");
  const Tokenizer t = load();
  // "a", "  ", " b": the last space of a run goes with the word after it.
  EXPECT_EQ(t.encode("a   b"), Ids({'a', token("  "), token(" b")}));
  // Trailing whitespace stays whole; newlines split from letters.
  EXPECT_EQ(t.encode("b  "), Ids({'b', token("  ")}));
  EXPECT_EQ(t.encode("b\n\nb"), Ids({'b', '\n', '\n', 'b'}));
  // Digits one by one.
  EXPECT_EQ(t.encode("123"), Ids({'1', '2', '3'}));
}

TEST_F(TokenizerTest, ContractionsAreCaseInsensitive) {
  merge("'", "T");
  merge("'", "t");
  const Tokenizer t = load();
  EXPECT_EQ(t.encode("DON'T"), Ids({'D', 'O', 'N', token("'T")}));
  EXPECT_EQ(t.encode("don't"), Ids({'d', 'o', 'n', token("'t")}));
}

TEST_F(TokenizerTest, Gpt2StyleByteLevelWithPrefixSpace) {
  merge(" ", "a");
  merge(" a", "b");
  json s = spec();
  s["pre_tokenizer"] = {{"type", "ByteLevel"}, {"add_prefix_space", true}, {"use_regex", true}};
  s["normalizer"] = nullptr;
  const Tokenizer t = load(s);
  EXPECT_EQ(t.encode("ab ab"), Ids({token(" ab"), token(" ab")}));
}

TEST_F(TokenizerTest, IgnoreMergesEmitsVocabularyWordsWhole) {
  const int32_t xyz = token("xyz");  // no merge builds it
  json s = spec();
  EXPECT_EQ(load(s).encode("xyz"), Ids({'x', 'y', 'z'}));
  s["model"]["ignore_merges"] = true;
  EXPECT_EQ(load(s).encode("xyz"), Ids({xyz}));
}

TEST_F(TokenizerTest, AddedTokensAreMatchedFirstLongestMatch) {
  merge("a", "b");
  const int32_t end = added("<|end|>", true);
  const int32_t end_bang = added("<|end|>!", true);
  const int32_t x = added("<x>", false);
  const Tokenizer t = load();
  EXPECT_EQ(t.encode("ab<|end|>ab"), Ids({token("ab"), end, token("ab")}));
  EXPECT_EQ(t.encode("ab<|end|>!"), Ids({token("ab"), end_bang}));
  EXPECT_EQ(t.encode("<x><|end|><x>"), Ids({x, end, x}));
  EXPECT_EQ(t.encode("<|end"), bytes_of("<|end"));
  EXPECT_EQ(t.token_id("<|end|>"), end);
  EXPECT_EQ(t.token_id(bl("ab")), token("ab"));
  EXPECT_EQ(t.token_id("nope"), std::nullopt);
  EXPECT_EQ(t.vocab_size(), x + 1);
}

TEST_F(TokenizerTest, AddedTokenIdsAreAssignedAsHuggingFaceDoes) {
  // The file's ids are not used: a token already in the vocabulary keeps its vocabulary id,
  // a new one gets the next id after the vocabulary's entries.
  added_.push_back({{"id", 500}, {"content", "<new>"}, {"special", true}});
  added_.push_back({{"id", 501}, {"content", bl("q")}, {"special", false}, {"normalized", false}});
  const Tokenizer t = load();
  EXPECT_EQ(t.token_id("<new>"), 256);
  EXPECT_EQ(t.encode("a<new>q"), Ids({'a', 256, 'q'}));
  EXPECT_EQ(t.vocab_size(), 257);
}

TEST_F(TokenizerTest, AddedTokenStripAndSingleWordFlags) {
  const int32_t l = added("<L>", true, {{"lstrip", true}});
  const int32_t r = added("<R>", true, {{"rstrip", true}});
  const int32_t cat = added("cat", false, {{"single_word", true}});
  const Tokenizer t = load();
  EXPECT_EQ(t.encode("a  <L>b"), Ids({'a', l, 'b'}));
  EXPECT_EQ(t.encode("a<R> \t b"), Ids({'a', r, 'b'}));
  EXPECT_EQ(t.encode("x <L> <L>"), Ids({'x', l, l}));
  EXPECT_EQ(t.encode("<R>  <L>"), Ids({r, l}));  // the spaces went to <R>
  EXPECT_EQ(t.encode("cat"), Ids({cat}));
  EXPECT_EQ(t.encode("a cat."), Ids({'a', ' ', cat, '.'}));
  EXPECT_EQ(t.encode("concat"), bytes_of("concat"));
  EXPECT_EQ(t.encode("cat_"), bytes_of("cat_"));
  EXPECT_EQ(t.encode("cat1"), bytes_of("cat1"));
  EXPECT_EQ(t.encode("\xC3\xA9"
                     "cat"),
            bytes_of("\xC3\xA9"
                     "cat"));
}

TEST_F(TokenizerTest, NormalizedAddedTokensMatchAfterNfc) {
  const int32_t e = added("\xC3\xA9X", false, {{"normalized", true}});   // éX, precomposed
  const int32_t n = added("\xC3\xB1X", false, {{"normalized", false}});  // ñX, raw text only
  const Tokenizer t = load();
  EXPECT_EQ(t.encode("e\xCC\x81X"), Ids({e}));                // e + U+0301 + X
  EXPECT_EQ(t.encode("n\xCC\x83X"), Ids({0xC3, 0xB1, 'X'}));  // NFC gives ñX, but too late
  EXPECT_EQ(t.encode("\xC3\xB1X"), Ids({n}));
}

TEST_F(TokenizerTest, NfcNormalisation) {
  const Tokenizer t = load();
  EXPECT_EQ(t.encode("cafe\xCC\x81"), t.encode("caf\xC3\xA9"));
  EXPECT_EQ(t.decode(t.encode("cafe\xCC\x81")), "caf\xC3\xA9");
  EXPECT_EQ(t.encode("\xE2\x84\xAB"), t.encode("\xC3\x85"));  // Angstrom sign -> Å
}

TEST_F(TokenizerTest, InvalidUtf8InputIsReplaced) {
  const Tokenizer t = load();
  EXPECT_EQ(t.encode("a\xFF"
                     "b"),
            t.encode("a\xEF\xBF\xBD"
                     "b"));
}

TEST_F(TokenizerTest, Decode) {
  merge("a", "b");
  const int32_t end = added("<|end|>", true);
  added("<x>", false);
  const Tokenizer t = load();
  const std::string text = "ab <|end|> <x> \xE4\xBD\xA0\xE5\xA5\xBD\n";
  EXPECT_EQ(t.decode(t.encode(text)), text);
  EXPECT_EQ(t.decode(t.encode(text), /*skip_special_tokens=*/true),
            "ab  <x> \xE4\xBD\xA0\xE5\xA5\xBD\n");
  // Bytes that are not UTF-8 become U+FFFD, one per maximal invalid subpart.
  EXPECT_EQ(t.decode({0xE4, 'a'}),
            "\xEF\xBF\xBD"
            "a");
  EXPECT_EQ(t.decode({0xE4, 0xBD, 'a'}),
            "\xEF\xBF\xBD"
            "a");
  EXPECT_EQ(t.decode({0xFF, 0xFE}), "\xEF\xBF\xBD\xEF\xBF\xBD");
  EXPECT_EQ(t.decode({0xE4, 0xBD, 0xA0}), "\xE4\xBD\xA0");
  // Unknown ids are skipped.
  EXPECT_EQ(t.decode({'a', 99999, -1, 'b'}), "ab");
  // Pieces are raw bytes, so streamed pieces concatenate to the text.
  EXPECT_EQ(t.id_to_piece(0xE4), "\xE4");
  EXPECT_EQ(t.id_to_piece(token("ab")), "ab");
  EXPECT_EQ(t.id_to_piece(end), "<|end|>");
}

TEST_F(TokenizerTest, Utf8LossyMatchesRust) {
  EXPECT_EQ(bpe::utf8_lossy("\xF0\x90\x80"), "\xEF\xBF\xBD");  // truncated 4-byte
  EXPECT_EQ(bpe::utf8_lossy("\xED\xA0\x80"), "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD");  // surrogate
  EXPECT_EQ(bpe::utf8_lossy("\xC0\xAF"), "\xEF\xBF\xBD\xEF\xBF\xBD");                  // overlong
  EXPECT_EQ(bpe::utf8_lossy("a\xE2\x82"
                            "b"),
            "a\xEF\xBF\xBD"
            "b");
}

TEST_F(TokenizerTest, ConcurrentEncodesAgree) {
  merge("a", "b");
  merge("ab", "c");
  merge(" ", "ab");
  merge("c", "c");
  const Tokenizer t = load();
  std::vector<std::string> texts;
  std::mt19937 rng(7);
  for (int i = 0; i < 400; ++i) {
    std::string s;
    for (int k = int(rng() % 40); k > 0; --k) s += "abc \n\xC3\xA9"[rng() % 7];
    texts.push_back(bpe::utf8_lossy(s));
  }
  std::vector<Ids> expected;
  for (const std::string& s : texts) expected.push_back(t.encode(s));
  std::vector<std::thread> threads;
  std::atomic<int> mismatches{0};
  for (int th = 0; th < 4; ++th) {
    threads.emplace_back([&, th] {
      for (int round = 0; round < 5; ++round) {
        for (size_t i = th; i < texts.size(); i += 1 + th) {
          if (t.encode(texts[i]) != expected[i]) ++mismatches;
        }
      }
    });
  }
  for (std::thread& th : threads) th.join();
  EXPECT_EQ(mismatches.load(), 0);
}

TEST_F(TokenizerTest, EosToken) {
  const int32_t eot = added("<|endoftext|>", true);
  const int32_t im_end = added("<|im_end|>", true);
  const json s = spec();
  EXPECT_EQ(load(s).eos_id(), eot);  // no tokenizer_config.json
  write("tokenizer_config.json", R"({"eos_token": "<|im_end|>"})");
  EXPECT_EQ(load(s).eos_id(), im_end);
  write("tokenizer_config.json", R"({"eos_token": {"content": "<|endoftext|>", "special": true}})");
  EXPECT_EQ(load(s).eos_id(), eot);
  write("tokenizer_config.json", R"({"eos_token": "<missing>"})");
  write("tokenizer.json", s.dump());
  expect_load_error({"tokenizer_config.json", "<missing>"});
  write("tokenizer_config.json", R"({"eos_token": )");
  expect_load_error({"tokenizer_config.json", "malformed JSON"});
}

TEST_F(TokenizerTest, NoEosWithoutEndOfText) {
  EXPECT_EQ(load().eos_id(), std::nullopt);
}

TEST_F(TokenizerTest, MissingFolderOrFile) {
  try {
    Tokenizer::load((dir_ / "nowhere").string());
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("nowhere/tokenizer.json"), std::string::npos) << e.what();
  }
  expect_load_error({"tokenizer.json", "not found"});
}

TEST_F(TokenizerTest, MalformedJson) {
  write("tokenizer.json", R"({"model": {"type": "BPE", "vocab": {)");
  expect_load_error({(dir_ / "tokenizer.json").string(), "malformed JSON"});
}

TEST_F(TokenizerTest, UnsupportedParts) {
  json s = spec();
  s["model"]["type"] = "WordPiece";
  write("tokenizer.json", s.dump());
  expect_load_error({"tokenizer.json", "unsupported model type", "WordPiece"});

  s = spec();
  s["pre_tokenizer"] = {{"type", "Metaspace"}, {"replacement", "_"}};
  write("tokenizer.json", s.dump());
  expect_load_error({"tokenizer.json", "unsupported pre_tokenizer", "Metaspace"});

  s = spec();
  s["normalizer"] = {{"type", "Lowercase"}};
  write("tokenizer.json", s.dump());
  expect_load_error({"tokenizer.json", "unsupported normalizer", "Lowercase"});

  s = spec();
  s["decoder"] = {{"type", "WordPiece"}};
  write("tokenizer.json", s.dump());
  expect_load_error({"tokenizer.json", "unsupported decoder"});

  s = spec();
  s["model"]["merges"] = json::array({json::array({"q", "zz"})});
  write("tokenizer.json", s.dump());
  expect_load_error({"tokenizer.json", "merge", "zz", "not in the vocab"});

  s = spec();
  s["model"]["vocab"] = json::array();
  write("tokenizer.json", s.dump());
  expect_load_error({"tokenizer.json", "vocab"});

  s = spec();
  s["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = "(unclosed";
  write("tokenizer.json", s.dump());
  expect_load_error({"tokenizer.json", "regex"});
}

}  // namespace
}  // namespace vacc
