// Fine-tuning data sets on pre-tokenized data (no tokenizer needed): padding and label
// alignment, packing boundaries, masking through labels, truncation, the per-epoch shuffle,
// the evaluation split, and bad lines (an error naming the file and line, or skipped and
// counted). Also the JSONL index, ChatML rendering and the Alpaca prompt, exactly.
#include "vacc/io/sft_dataset.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <vector>

#include "vacc/core/error.h"
#include "vacc/io/chat_template.h"
#include "vacc/io/jsonl_index.h"
#include "vacc/io/sft_example.h"

namespace vacc {
namespace {

namespace fs = std::filesystem;
using Ids = std::vector<int32_t>;
constexpr int32_t I = kIgnoreLabel;

class SftDatasetTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("vacc_sft_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  // Writes the text as a file and returns its path.
  std::string write(const std::string& text, const std::string& name = "data.jsonl") {
    std::string path = (dir_ / name).string();
    std::ofstream(path, std::ios::binary) << text;
    return path;
  }
  // One {"input_ids": ...} line per sequence of ids.
  std::string write_ids(const std::vector<Ids>& examples, const std::string& name = "data.jsonl") {
    std::string text;
    for (const Ids& ids : examples) text += nlohmann::json{{"input_ids", ids}}.dump() + "\n";
    return write(text, name);
  }

  static DatasetOptions options(int64_t seq_len) {
    DatasetOptions o;
    o.seq_len = seq_len;
    o.vocab_size = 100;
    o.shuffle = false;
    return o;
  }

  static Ids row(const std::vector<int32_t>& v, const TokenBatch& b, int64_t i) {
    return Ids(v.begin() + i * b.seq, v.begin() + (i + 1) * b.seq);
  }

  // Expects building the data set to throw a vacc::Error naming the file and containing every
  // one of `parts`.
  static void expect_error(const std::string& path, const DatasetOptions& o,
                           const std::vector<std::string>& parts) {
    try {
      SftDataset d(path, nullptr, o);
      FAIL() << "building " << path << " did not fail";
    } catch (const Error& e) {
      const std::string msg = e.what();
      EXPECT_NE(msg.find(path), std::string::npos) << "message does not name the file: " << msg;
      for (const std::string& p : parts)
        EXPECT_NE(msg.find(p), std::string::npos) << "message lacks \"" << p << "\": " << msg;
    }
  }

  fs::path dir_;
};

TEST_F(SftDatasetTest, PaddedSequencesHaveShiftedLabels) {
  DatasetOptions o = options(5);
  SftDataset d(write_ids({{5, 6, 7}, {8, 9, 10, 11, 12}}), nullptr, o);
  ASSERT_EQ(d.train_sequences(), 2);
  EXPECT_EQ(d.pad_id(), 0);  // no tokenizer, no eos: 0
  TokenBatch b = d.train_batch(0, 0, 2);
  EXPECT_EQ(b.batch, 2);
  EXPECT_EQ(b.seq, 5);
  // labels[t] is the target of ids[t]; none at the last real token nor on padding.
  EXPECT_EQ(row(b.ids, b, 0), (Ids{5, 6, 7, 0, 0}));
  EXPECT_EQ(row(b.labels, b, 0), (Ids{6, 7, I, I, I}));
  EXPECT_EQ(row(b.ids, b, 1), (Ids{8, 9, 10, 11, 12}));
  EXPECT_EQ(row(b.labels, b, 1), (Ids{9, 10, 11, 12, I}));
  EXPECT_EQ(b.counted_tokens(), 6);
  EXPECT_EQ(d.train_tokens(), 8);

  o.pad_id = 99;
  SftDataset p(write_ids({{5, 6, 7}}, "p.jsonl"), nullptr, o);
  TokenBatch pb = p.train_batch(0, 0, 1);
  EXPECT_EQ(pb.ids, (Ids{5, 6, 7, 99, 99}));
  EXPECT_EQ(pb.labels, (Ids{6, 7, I, I, I}));

  // The eos id pads when no pad id is given.
  o.pad_id.reset();
  o.eos_id = 2;
  SftDataset e(write_ids({{5}}, "e.jsonl"), nullptr, o);
  EXPECT_EQ(e.pad_id(), 2);
  EXPECT_EQ(e.train_batch(0, 0, 1).ids, (Ids{5, 2, 2, 2, 2}));
  EXPECT_EQ(e.train_batch(0, 0, 1).labels, (Ids{I, I, I, I, I}));
}

TEST_F(SftDatasetTest, TruncationCutsLongExamples) {
  DatasetOptions o = options(4);
  o.truncate = true;
  SftDataset d(write_ids({{1, 2, 3, 4, 5, 6}, {7, 8}}), nullptr, o);
  EXPECT_EQ(d.truncated_examples(), 1);
  TokenBatch b = d.train_batch(0, 0, 2);
  EXPECT_EQ(row(b.ids, b, 0), (Ids{1, 2, 3, 4}));
  EXPECT_EQ(row(b.labels, b, 0), (Ids{2, 3, 4, I}));  // as HF with truncation=True
  EXPECT_EQ(row(b.ids, b, 1), (Ids{7, 8, 0, 0}));
}

TEST_F(SftDatasetTest, TooLongExampleIsAnErrorWithoutTruncation) {
  DatasetOptions o = options(4);
  o.truncate = false;
  const std::string path = write_ids({{7, 8}, {1, 2, 3, 4, 5, 6}});
  expect_error(path, o, {"line 2", "6 tokens", "4"});
  // Exactly seq_len tokens fit.
  SftDataset d(write_ids({{1, 2, 3, 4}}, "fits.jsonl"), nullptr, o);
  EXPECT_EQ(d.train_batch(0, 0, 1).labels, (Ids{2, 3, 4, I}));
}

TEST_F(SftDatasetTest, PackingSeparatesExamplesWithEosAndCutsChunks) {
  DatasetOptions o = options(4);
  o.pack = true;
  o.eos_id = 2;
  // The third example already ends with eos: no second one is added.
  SftDataset d(write_ids({{5, 6, 7}, {8, 9}, {10, 11, 12, 2}}), nullptr, o);
  // Stream: 5 6 7 2 | 8 9 2 10 | 11 12 2 -> three chunks, the last padded.
  ASSERT_EQ(d.train_sequences(), 3);
  EXPECT_EQ(d.train_tokens(), 11);
  TokenBatch b = d.train_batch(0, 0, 3);
  EXPECT_EQ(row(b.ids, b, 0), (Ids{5, 6, 7, 2}));
  EXPECT_EQ(row(b.labels, b, 0), (Ids{6, 7, 2, I}));
  EXPECT_EQ(row(b.ids, b, 1), (Ids{8, 9, 2, 10}));
  EXPECT_EQ(row(b.labels, b, 1), (Ids{9, 2, 10, I}));
  EXPECT_EQ(row(b.ids, b, 2), (Ids{11, 12, 2, 2}));  // padded with eos (no other pad id)
  EXPECT_EQ(row(b.labels, b, 2), (Ids{12, 2, I, I}));

  // Long examples span chunks in packed mode; truncate does not apply.
  o.truncate = false;
  SftDataset l(write_ids({{1, 3, 4, 5, 6, 7, 8, 9, 10}}, "long.jsonl"), nullptr, o);
  EXPECT_EQ(l.train_sequences(), 3);  // 10 tokens with the eos
  EXPECT_EQ(l.truncated_examples(), 0);

  // Packing needs an eos id.
  o.eos_id.reset();
  expect_error(write_ids({{5}}, "noeos.jsonl"), o, {"eos"});
}

TEST_F(SftDatasetTest, GivenLabelsMaskTokensAndAreShifted) {
  DatasetOptions o = options(6);
  const std::string path = write(R"({"input_ids": [5, 6, 7, 8], "labels": [-100, -100, 7, 8]})"
                                 "\n"
                                 R"({"input_ids": [5, 6, 7], "labels": [-100, 42, 7]})"
                                 "\n"
                                 R"({"input_ids": [5, 6, 7], "labels": null})"
                                 "\n");
  SftDataset d(path, nullptr, o);
  TokenBatch b = d.train_batch(0, 0, 3);
  // HF labels [-100, -100, 7, 8] shifted: labels[t] = given[t + 1].
  EXPECT_EQ(row(b.ids, b, 0), (Ids{5, 6, 7, 8, 0, 0}));
  EXPECT_EQ(row(b.labels, b, 0), (Ids{I, 7, 8, I, I, I}));
  // A label other than the token itself is kept.
  EXPECT_EQ(row(b.labels, b, 1), (Ids{42, 7, I, I, I, I}));
  EXPECT_EQ(row(b.labels, b, 2), (Ids{6, 7, I, I, I, I}));

  // Packed: the eos after an example is learnt only when the example's end is.
  o.pack = true;
  o.eos_id = 2;
  o.seq_len = 8;
  SftDataset p(write(R"({"input_ids": [5, 6], "labels": [-100, 6]})"
                     "\n"
                     R"({"input_ids": [7, 8], "labels": [7, -100]})"
                     "\n",
                     "packed.jsonl"),
               nullptr, o);
  TokenBatch pb = p.train_batch(0, 0, 1);
  EXPECT_EQ(pb.ids, (Ids{5, 6, 2, 7, 8, 2, 2, 2}));
  EXPECT_EQ(pb.labels, (Ids{6, 2, 7, I, I, I, I, I}));
}

TEST_F(SftDatasetTest, ShuffleIsAPureFunctionOfSeedAndEpoch) {
  std::vector<Ids> examples;
  for (int32_t i = 0; i < 40; ++i) examples.push_back({i + 3, 1});
  const std::string path = write_ids(examples);
  DatasetOptions o = options(2);
  o.shuffle = true;
  o.seed = 1234;
  SftDataset a(path, nullptr, o), b(path, nullptr, o);
  auto first_ids = [](const TokenBatch& batch) {
    Ids v;
    for (int64_t i = 0; i < batch.batch; ++i) v.push_back(batch.ids[size_t(i * batch.seq)]);
    return v;
  };
  const Ids e0 = first_ids(a.train_batch(0, 0, 40));
  const Ids e1 = first_ids(a.train_batch(1, 0, 40));
  EXPECT_EQ(e0, first_ids(b.train_batch(0, 0, 40)));  // same (seed, epoch): same order
  EXPECT_EQ(e1, first_ids(b.train_batch(1, 0, 40)));
  EXPECT_EQ(e0, first_ids(a.train_batch(0, 0, 40)));  // and again (cached or not)
  EXPECT_NE(e0, e1);                                  // epochs differ
  Ids sorted = e0;
  std::sort(sorted.begin(), sorted.end());
  for (int32_t i = 0; i < 40; ++i) EXPECT_EQ(sorted[size_t(i)], i + 3);  // a permutation
  Ids in_order;
  for (int32_t i = 0; i < 40; ++i) in_order.push_back(i + 3);
  EXPECT_NE(e0, in_order);

  // Batches cut anywhere agree with the whole epoch, and run on into the next epoch.
  const Ids part = first_ids(a.train_batch(0, 10, 5));
  EXPECT_EQ(part, Ids(e0.begin() + 10, e0.begin() + 15));
  const Ids wrap = first_ids(a.train_batch(0, 38, 4));
  EXPECT_EQ(wrap, (Ids{e0[38], e0[39], e1[0], e1[1]}));
  EXPECT_EQ(first_ids(a.train_batch(0, 40, 2)), (Ids{e1[0], e1[1]}));
  EXPECT_EQ(a.train_sequence_at(1, 7) + 3, e1[7]);

  // Another seed, another order.
  o.seed = 1235;
  SftDataset c(path, nullptr, o);
  EXPECT_NE(e0, first_ids(c.train_batch(0, 0, 40)));

  // No shuffle: file order in every epoch.
  o.shuffle = false;
  SftDataset s(path, nullptr, o);
  EXPECT_EQ(first_ids(s.train_batch(3, 0, 40)), in_order);
}

TEST_F(SftDatasetTest, EvaluationSplitIsDisjointFromTraining) {
  std::vector<Ids> examples;
  for (int32_t i = 0; i < 20; ++i) examples.push_back({i + 10, 1});
  const std::string path = write_ids(examples);
  auto collect = [](const TokenBatch& b, std::set<int32_t>& out) {
    for (int64_t i = 0; i < b.batch; ++i) out.insert(b.ids[size_t(i * b.seq)]);
  };
  DatasetOptions o = options(2);
  o.shuffle = true;
  o.eval_count = 5;
  SftDataset d(path, nullptr, o);
  EXPECT_EQ(d.eval_sequences(), 5);
  EXPECT_EQ(d.train_sequences(), 15);
  EXPECT_EQ(d.eval_examples(), 5);
  std::set<int32_t> train, eval;
  collect(d.train_batch(0, 0, 15), train);
  collect(d.eval_batch(0, 5), eval);
  EXPECT_EQ(train.size(), 15u);
  EXPECT_EQ(eval.size(), 5u);
  for (int32_t id : eval) EXPECT_EQ(train.count(id), 0u) << id;
  // Evenly spaced records 2, 6, 10, 14, 18, in file order.
  EXPECT_EQ(eval, (std::set<int32_t>{12, 16, 20, 24, 28}));
  EXPECT_EQ(d.eval_batch(1, 1).ids[0], 16);
  // Every epoch draws from the training part only.
  std::set<int32_t> train1;
  collect(d.train_batch(1, 0, 15), train1);
  EXPECT_EQ(train1, train);

  // The same records whatever the seed; a fraction gives the same split.
  o.seed = 99;
  o.eval_count = 0;
  o.eval_fraction = 0.25;
  SftDataset f(path, nullptr, o);
  std::set<int32_t> eval_f;
  collect(f.eval_batch(0, f.eval_sequences()), eval_f);
  EXPECT_EQ(eval_f, eval);

  EXPECT_THROW(d.eval_batch(4, 2), Error);
  o.eval_count = 3;
  expect_error(path, o, {"not both"});
  o.eval_fraction = 0;
  o.eval_count = 20;
  expect_error(path, o, {"20"});
}

TEST_F(SftDatasetTest, BadLinesNameTheFileAndLine) {
  DatasetOptions o = options(8);
  const std::string good = R"({"input_ids": [1, 2, 3]})";
  struct Case {
    std::string line, expect;
  };
  const std::vector<Case> cases = {
      {R"({"input_ids": [1, 2,)", "not valid JSON"},
      {R"(not json at all)", "not valid JSON"},
      {R"([1, 2, 3])", "not an object"},
      {R"({"ids": [1, 2, 3]})", "no known keys"},
      {R"({"input_ids": "1 2 3"})", "input_ids"},
      {R"({"input_ids": [1, "2", 3]})", "input_ids[1]"},
      {R"({"input_ids": [1, 2.5, 3]})", "input_ids[1]"},
      {R"({"input_ids": []})", "empty"},
      {R"({"input_ids": [1, 100, 3]})", "vocabulary"},
      {R"({"input_ids": [1, -5, 3]})", "negative"},
      {R"({"input_ids": [1, 2, 3], "labels": [1, 2]})", "labels"},
      {R"({"input_ids": [1, 2, 3], "labels": [1, 200, 3]})", "labels[1]"},
      {R"({"input_ids": [1, 2, 3], "labels": "x"})", "labels"},
      {R"({"messages": "hello"})", "messages"},
      {R"({"messages": [{"role": "user"}]})", "content"},
      {R"({"instruction": "Say hi"})", "\"output\""},
      {R"({"instruction": "Say hi", "output": 7})", "\"output\""},
      {R"({"text": ["a"]})", "\"text\""},
  };
  for (size_t i = 0; i < cases.size(); ++i) {
    // A blank line still counts for line numbers: the bad line is line 4.
    const std::string path = write(good + "\n" + good + "\n\n" + cases[i].line + "\n" + good + "\n",
                                   "bad" + std::to_string(i) + ".jsonl");
    SCOPED_TRACE(cases[i].line);
    expect_error(path, o, {"line 4", cases[i].expect});
  }

  // A format forced on a line that lacks its key.
  o.format = SftFormat::kTokens;
  expect_error(write(good + "\n" + R"({"text": "hello"})" + "\n", "forced.jsonl"), o,
               {"line 2", "\"input_ids\""});
}

TEST_F(SftDatasetTest, SkippedBadLinesAreCounted) {
  DatasetOptions o = options(4);
  o.skip_bad_lines = true;
  const std::string path = write(
      "{\"input_ids\": [1, 2]}\n"
      "{oops\n"
      "{\"input_ids\": [3, 4]}\n"
      "{\"input_ids\": [5, 500]}\n"
      "{\"input_ids\": [6, 7]}\n");
  SftDataset d(path, nullptr, o);
  EXPECT_EQ(d.skipped_lines(), 2);
  EXPECT_EQ(d.train_examples(), 3);
  ASSERT_EQ(d.skipped_line_messages().size(), 2u);
  EXPECT_NE(d.skipped_line_messages()[0].find("line 2"), std::string::npos);
  EXPECT_NE(d.skipped_line_messages()[1].find("line 4"), std::string::npos);
  EXPECT_NE(d.summary().find("2 bad lines skipped"), std::string::npos) << d.summary();
  TokenBatch b = d.train_batch(0, 0, 3);
  EXPECT_EQ(b.ids, (Ids{1, 2, 0, 0, 3, 4, 0, 0, 6, 7, 0, 0}));

  // Skipping does not hide a configuration error: a text line with no tokenizer.
  expect_error(write("{\"input_ids\": [1, 2]}\n{\"text\": \"hello\"}\n", "text.jsonl"), o,
               {"line 2", "tokenizer"});
  // Nor a data set left empty.
  expect_error(write("{oops\n\n", "empty.jsonl"), o, {"no training examples", "1 bad lines"});
}

TEST_F(SftDatasetTest, FileErrors) {
  expect_error((dir_ / "missing.jsonl").string(), options(4), {"cannot open"});
  expect_error(write("", "empty.jsonl"), options(4), {"no training examples"});
  DatasetOptions o = options(0);
  expect_error(write_ids({{1}}, "zero.jsonl"), o, {"sequence length"});
}

TEST(JsonlIndexTest, RecordsSkipBlankLinesAndLineEndings) {
  const std::string path =
      (fs::temp_directory_path() / ("vacc_jsonl_index_" + std::to_string(::getpid()) + ".jsonl"))
          .string();
  std::ofstream(path, std::ios::binary)
      << "\xEF\xBB\xBF{\"a\": 1}\r\n\r\n  \n{\"b\": 2}\n{\"c\": 3}";
  {
    JsonlIndex index(path);
    ASSERT_EQ(index.size(), 3);
    EXPECT_EQ(index.record(0), "{\"a\": 1}");
    EXPECT_EQ(index.line_number(0), 1);
    EXPECT_EQ(index.record(1), "{\"b\": 2}");
    EXPECT_EQ(index.line_number(1), 4);
    EXPECT_EQ(index.record(2), "{\"c\": 3}");  // no newline at the end
    EXPECT_EQ(index.line_number(2), 5);
    JsonlIndex moved = std::move(index);
    EXPECT_EQ(moved.record(2), "{\"c\": 3}");
    EXPECT_THROW(moved.record(3), Error);
  }
  fs::remove(path);
}

TEST(ChatTemplateTest, RendersChatMlExactly) {
  const std::vector<ChatMessage> chat = {{"user", "What is 2+2?"}, {"assistant", "4"}};
  EXPECT_EQ(render_chatml(chat),
            "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful "
            "assistant.<|im_end|>\n"
            "<|im_start|>user\nWhat is 2+2?<|im_end|>\n"
            "<|im_start|>assistant\n4<|im_end|>\n");
  // A system message of its own replaces the default one.
  const std::vector<ChatMessage> with_system = {{"system", "Be brief."}, {"user", "Hi"}};
  EXPECT_EQ(render_chatml(with_system, kQwenDefaultSystemMessage, true),
            "<|im_start|>system\nBe brief.<|im_end|>\n"
            "<|im_start|>user\nHi<|im_end|>\n"
            "<|im_start|>assistant\n");
  EXPECT_EQ(render_chatml({{"user", "Hi"}}, "", false), "<|im_start|>user\nHi<|im_end|>\n");

  // Segments: the assistant's content and <|im_end|> are the learnt pieces.
  const std::vector<ChatSegment> segments = render_chatml_segments(
      {{"user", "Hi"}, {"assistant", "Hello!"}, {"user", "Bye"}, {"assistant", "Bye."}}, "", false);
  ASSERT_EQ(segments.size(), 5u);
  EXPECT_EQ(segments[0].text, "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
  EXPECT_FALSE(segments[0].assistant);
  EXPECT_EQ(segments[1].text, "Hello!<|im_end|>");
  EXPECT_TRUE(segments[1].assistant);
  EXPECT_EQ(segments[2].text, "\n<|im_start|>user\nBye<|im_end|>\n<|im_start|>assistant\n");
  EXPECT_EQ(segments[3].text, "Bye.<|im_end|>");
  EXPECT_EQ(segments[4].text, "\n");
  std::string joined;
  for (const ChatSegment& s : segments) joined += s.text;
  EXPECT_EQ(joined,
            render_chatml(
                {{"user", "Hi"}, {"assistant", "Hello!"}, {"user", "Bye"}, {"assistant", "Bye."}},
                "", false));
}

TEST(AlpacaPromptTest, MatchesTheStanfordAlpacaTemplate) {
  EXPECT_EQ(alpaca_prompt("Add 2 and 3.", ""),
            "Below is an instruction that describes a task. Write a response that appropriately "
            "completes the request.\n\n### Instruction:\nAdd 2 and 3.\n\n### Response:\n");
  EXPECT_EQ(alpaca_prompt("Reverse the word.", "cat"),
            "Below is an instruction that describes a task, paired with an input that provides "
            "further context. Write a response that appropriately completes the request.\n\n"
            "### Instruction:\nReverse the word.\n\n### Input:\ncat\n\n### Response:\n");
  EXPECT_EQ(parse_sft_format("alpaca"), SftFormat::kAlpaca);
  EXPECT_EQ(sft_format_name(SftFormat::kTokens), "tokens");
  EXPECT_THROW(parse_sft_format("csv"), Error);
}

// The demo's instruction data: every line an alpaca object with string fields.
TEST(DemoDataTest, InstructionsAreWellFormedAlpaca) {
  const fs::path path =
      fs::path(__FILE__).parent_path() / ".." / ".." / "examples" / "data" / "instructions.jsonl";
  ASSERT_TRUE(fs::exists(path)) << path;
  JsonlIndex index(path.string());
  EXPECT_GE(index.size(), 150);
  std::set<std::string> instructions;
  for (int64_t i = 0; i < index.size(); ++i) {
    SCOPED_TRACE(index.line_number(i));
    const nlohmann::json j = nlohmann::json::parse(index.record(i));
    ASSERT_TRUE(j.is_object());
    ASSERT_TRUE(j.contains("instruction") && j["instruction"].is_string());
    ASSERT_TRUE(j.contains("output") && j["output"].is_string());
    if (j.contains("input")) {
      ASSERT_TRUE(j["input"].is_string());
    }
    EXPECT_FALSE(j["output"].get<std::string>().empty());
    instructions.insert(j["instruction"].get<std::string>() + "\x1f" +
                        j.value("input", std::string()));
  }
  EXPECT_EQ(int64_t(instructions.size()), index.size()) << "duplicate examples";
}

}  // namespace
}  // namespace vacc
