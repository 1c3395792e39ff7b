// SftDataset: a JSONL fine-tuning data set (sft_example.h formats) turned into fixed-length
// token sequences, served as TokenBatch global batches in a shuffled order per epoch.
//
// Construction reads the file once through JsonlIndex (memory-mapped, never copied whole),
// tokenizes every line once (lines in parallel on the OpenMP threads, results kept in file
// order) and keeps only the token ids (4 bytes + 1 flag byte per token),
// so data sets up to ~100M tokens are fine; the file is not held afterwards.
//
// Sequences and labels (the Hugging Face causal-LM convention). A sequence holds real tokens
// x_0..x_{n-1} (n <= seq_len) followed by padding. In the batch ids[t] = x_t and
//   labels[t] = x_{t+1} when token t+1 is learnt, else kIgnoreLabel (-100),
// with -100 at the last real token and on padding, so the mean loss over counted labels is
// Hugging Face's loss with labels = input_ids (which shifts inside). For pre-tokenized lines
// with "labels" (unshifted, HF style), labels[t] = given_labels[t+1].
//   pack = false: one example per sequence, padded to seq_len with pad_id. Longer examples are
//                 cut to their first seq_len tokens (truncate) or are an error naming the line.
//   pack = true:  the examples, each followed by eos (unless it already ends with eos), are
//                 concatenated in file order and cut into seq_len chunks; an example may span
//                 chunks (truncate does not apply); the last chunk is padded. Each chunk is
//                 a sequence of its own: its last token has no label, as when HF's
//                 group_texts chunks are trained with labels = input_ids.
//
// Order: epoch e visits the training sequences in a permutation that is a pure function of
// (seed, e) and the number of sequences (or in order when shuffle is false); a batch running
// past the end of an epoch continues with the next epoch's order, so batches are always full.
//
// Evaluation split: eval_count records, or eval_fraction of them (rounded, at least 1), are
// held out: records spaced evenly through the file (record j of the split is number
// floor((j + 1/2) * records / count)), the same whatever the seed. They are turned into
// sequences the same way and served in file order. A record is a non-blank line.
//
// Bad lines (not JSON, missing keys, wrong types, an id outside the vocabulary) are a
// vacc::Error "FILE, line N: what is wrong"; with skip_bad_lines they are skipped, counted
// (skipped_lines()) and the first few messages kept (skipped_line_messages()).
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "vacc/io/chat_template.h"
#include "vacc/io/sft_example.h"
#include "vacc/io/token_batch.h"

namespace vacc {

class Tokenizer;

struct DatasetOptions {
  int64_t seq_len = 1024;               // tokens per sequence
  SftFormat format = SftFormat::kAuto;  // kAuto: detected per line by its keys
  bool mask_prompt = false;       // false: every token learnt (the tutorials' script); true: only
                                  // responses (alpaca output + eos, chat assistant turns)
  bool pack = false;              // false: one padded example per sequence; true: packed chunks
  bool truncate = true;           // (pack = false) cut long examples; false: a too-long example is
                                  // an error naming its line
  bool shuffle = true;            // a seeded permutation per epoch; false: file order
  uint64_t seed = 0;              // of the shuffle
  double eval_fraction = 0;       // held-out fraction of the records, in [0, 1)
  int64_t eval_count = 0;         // or this many records (not both)
  bool skip_bad_lines = false;    // true: skip and count bad lines instead of failing
  int64_t vocab_size = 0;         // ids must be below this; 0: the tokenizer's vocab_size()
                                  // (without a tokenizer: only >= 0 is checked)
  std::optional<int32_t> eos_id;  // default: the tokenizer's eos_id(), else <|endoftext|>
  std::optional<int32_t> pad_id;  // default: <|endoftext|>, else the eos id, else 0
  // Put first in a chat whose first message is not a system message; empty: none.
  std::string default_system_message = std::string(kQwenDefaultSystemMessage);
};

class SftDataset {
 public:
  // Reads and tokenizes `path`. `tokenizer` may be null when every line is pre-tokenized
  // ("input_ids"); it is used only during construction. Throws vacc::Error naming the file
  // (and line) for unreadable files, bad lines (unless skipped), bad options, or a data set
  // left with no training sequence.
  SftDataset(const std::string& path, const Tokenizer* tokenizer, DatasetOptions options);
  SftDataset(SftDataset&&) noexcept;
  SftDataset& operator=(SftDataset&&) noexcept;
  ~SftDataset();

  const DatasetOptions& options() const { return options_; }
  int64_t seq_len() const { return options_.seq_len; }
  int32_t pad_id() const { return pad_id_; }
  std::optional<int32_t> eos_id() const { return eos_id_; }

  int64_t train_sequences() const { return int64_t(train_.sequences.size()); }
  int64_t eval_sequences() const { return int64_t(eval_.sequences.size()); }
  int64_t train_examples() const { return train_.examples; }
  int64_t eval_examples() const { return eval_.examples; }
  // Real (non-padding) tokens in the training sequences.
  int64_t train_tokens() const { return train_.real_tokens; }
  int64_t eval_tokens() const { return eval_.real_tokens; }
  // Examples cut to seq_len (pack = false, truncate = true).
  int64_t truncated_examples() const { return truncated_; }
  // Bad lines skipped (skip_bad_lines), and the messages of the first few of them.
  int64_t skipped_lines() const { return skipped_; }
  const std::vector<std::string>& skipped_line_messages() const { return skipped_messages_; }

  // Sequences [first_sequence, first_sequence + batch_size) of epoch `epoch`'s order
  // (continuing into the following epochs past the end): a batch of batch_size x seq_len.
  TokenBatch train_batch(int64_t epoch, int64_t first_sequence, int64_t batch_size) const;
  // Evaluation sequences [first, first + count), in file order.
  TokenBatch eval_batch(int64_t first, int64_t count) const;
  // The index of the training sequence at `position` of epoch `epoch`'s order.
  int64_t train_sequence_at(int64_t epoch, int64_t position) const;

  // One line for logs: records, examples, sequences, tokens, truncated and skipped lines.
  std::string summary() const;

 private:
  struct Span {
    int64_t begin = 0, length = 0;  // tokens [begin, begin + length) of the part
  };
  // The training or the evaluation examples.
  struct Part {
    std::vector<int32_t> tokens;
    std::vector<uint8_t> learnt;                  // 1: the token's HF label is not -100
    std::unordered_map<int64_t, int32_t> custom;  // HF label where it is not the token itself
    std::vector<Span> sequences;
    int64_t examples = 0, real_tokens = 0;
  };
  struct PermutationCache;

  void add_example(Part& part, const SftExample& ex, int64_t line);
  void cut_sequences(Part& part) const;
  void fill_row(const Part& part, int64_t sequence, int32_t* ids, int32_t* labels) const;
  std::shared_ptr<const std::vector<int64_t>> permutation(int64_t epoch) const;

  DatasetOptions options_;
  std::string path_;
  int64_t records_ = 0;
  int32_t pad_id_ = 0;
  std::optional<int32_t> eos_id_;
  Part train_, eval_;
  int64_t truncated_ = 0, skipped_ = 0;
  std::vector<std::string> skipped_messages_;
  std::unique_ptr<PermutationCache> cache_;
};

}  // namespace vacc
