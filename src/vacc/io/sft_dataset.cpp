#include "vacc/io/sft_dataset.h"

#include <algorithm>
#include <cmath>
#include <deque>
#include <mutex>
#include <sstream>
#include <utility>

#include "vacc/core/error.h"
#include "vacc/io/jsonl_index.h"
#include "vacc/io/tokenizer.h"

namespace vacc {

namespace {

constexpr size_t kKeptSkipMessages = 10;

uint64_t splitmix64(uint64_t& state) {
  uint64_t z = (state += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

// A uniform integer in [0, bound) (bound > 0), without modulo bias (Lemire's method).
uint64_t uniform_below(uint64_t& state, uint64_t bound) {
  unsigned __int128 m = (unsigned __int128)splitmix64(state) * bound;
  uint64_t low = uint64_t(m);
  if (low < bound) {
    const uint64_t threshold = (0 - bound) % bound;
    while (low < threshold) {
      m = (unsigned __int128)splitmix64(state) * bound;
      low = uint64_t(m);
    }
  }
  return uint64_t(m >> 64);
}

// Which records are held out for evaluation: `count` of `records`, evenly spaced.
std::vector<uint8_t> eval_selection(int64_t records, int64_t count) {
  std::vector<uint8_t> held(size_t(records), 0);
  for (int64_t j = 0; j < count; ++j) {
    const unsigned __int128 num = (unsigned __int128)(2 * j + 1) * uint64_t(records);
    held[size_t(num / (unsigned __int128)(2 * count))] = 1;
  }
  return held;
}

}  // namespace

struct SftDataset::PermutationCache {
  std::mutex mutex;
  std::deque<std::pair<int64_t, std::shared_ptr<const std::vector<int64_t>>>> recent;
};

SftDataset::SftDataset(const std::string& path, const Tokenizer* tokenizer, DatasetOptions options)
    : options_(std::move(options)), path_(path), cache_(std::make_unique<PermutationCache>()) {
  const DatasetOptions& o = options_;
  VACC_CHECK(o.seq_len > 0, "data set ", path, ": the sequence length must be positive, not ",
             o.seq_len);
  VACC_CHECK(o.eval_fraction >= 0 && o.eval_fraction < 1, "data set ", path,
             ": the evaluation fraction must be in [0, 1), not ", o.eval_fraction);
  VACC_CHECK(o.eval_count >= 0, "data set ", path, ": the evaluation count must be >= 0, not ",
             o.eval_count);
  VACC_CHECK(o.eval_fraction == 0 || o.eval_count == 0, "data set ", path,
             ": give an evaluation fraction or an evaluation count, not both");

  // Special ids: options first, then the tokenizer.
  std::optional<int32_t> endoftext;
  int64_t vocab = o.vocab_size;
  if (tokenizer) {
    endoftext = tokenizer->token_id("<|endoftext|>");
    if (vocab == 0) vocab = tokenizer->vocab_size();
  }
  eos_id_ = o.eos_id;
  if (!eos_id_ && tokenizer) eos_id_ = tokenizer->eos_id();
  if (!eos_id_) eos_id_ = endoftext;
  pad_id_ = o.pad_id ? *o.pad_id : endoftext ? *endoftext : eos_id_ ? *eos_id_ : 0;
  VACC_CHECK(!o.pack || eos_id_.has_value(), "data set ", path,
             ": packing separates examples with an end-of-sequence token; set the eos id or "
             "give a tokenizer that has one");
  if (vocab > 0) {
    VACC_CHECK(pad_id_ >= 0 && pad_id_ < vocab, "data set ", path, ": the pad id ", pad_id_,
               " is outside the vocabulary (size ", vocab, ")");
    VACC_CHECK(!eos_id_ || (*eos_id_ >= 0 && *eos_id_ < vocab), "data set ", path, ": the eos id ",
               *eos_id_, " is outside the vocabulary (size ", vocab, ")");
  }

  SftExampleOptions eo;
  eo.format = o.format;
  eo.mask_prompt = o.mask_prompt;
  eo.default_system_message = o.default_system_message;
  eo.eos_id = eos_id_;
  eo.vocab_size = vocab;

  JsonlIndex file(path);
  records_ = file.size();
  int64_t held_out = o.eval_count;
  if (o.eval_fraction > 0)
    held_out = std::max<int64_t>(1, std::llround(o.eval_fraction * double(records_)));
  VACC_CHECK(held_out == 0 || held_out < records_, "data set ", path, " has ", records_,
             " records: too few to hold out ", held_out, " for evaluation and train on the rest");
  const std::vector<uint8_t> held = eval_selection(records_, held_out);

  // Lines are parsed and tokenized in parallel, a block at a time, and added in file order
  // (so the first bad line is the one reported, whatever the thread count).
  struct Parsed {
    SftExample example;
    enum { kGood, kBadLine, kError } status = kGood;
    std::string message;
  };
  constexpr int64_t kBlock = 4096;
  std::vector<Parsed> parsed(size_t(std::min(records_, kBlock)));
  for (int64_t start = 0; start < records_; start += kBlock) {
    const int64_t count = std::min(kBlock, records_ - start);
#pragma omp parallel for schedule(dynamic, 16)
    for (int64_t k = 0; k < count; ++k) {
      Parsed& p = parsed[size_t(k)];
      p.status = Parsed::kGood;
      try {
        p.example = parse_sft_example(file.record(start + k), tokenizer, eo);
      } catch (const BadLineError& e) {
        p.status = Parsed::kBadLine;
        p.message = e.what();
      } catch (const std::exception& e) {
        p.status = Parsed::kError;
        p.message = e.what();
      }
    }
    for (int64_t k = 0; k < count; ++k) {
      const int64_t r = start + k;
      Parsed& p = parsed[size_t(k)];
      const int64_t line = file.line_number(r);
      if (p.status == Parsed::kError || (p.status == Parsed::kBadLine && !o.skip_bad_lines))
        fail(path, ", line ", line, ": ", p.message);
      if (p.status == Parsed::kBadLine) {
        ++skipped_;
        if (skipped_messages_.size() < kKeptSkipMessages)
          skipped_messages_.push_back(detail::concat(path, ", line ", line, ": ", p.message));
        continue;
      }
      add_example(held[size_t(r)] ? eval_ : train_, p.example, line);
    }
  }
  cut_sequences(train_);
  cut_sequences(eval_);
  VACC_CHECK(
      !train_.sequences.empty(), "data set ", path, " has no training examples (", records_,
      " records", skipped_ ? detail::concat(", ", skipped_, " bad lines skipped") : std::string(),
      held_out ? detail::concat(", ", held_out, " held out for evaluation") : std::string(), ")");
}

SftDataset::SftDataset(SftDataset&&) noexcept = default;
SftDataset& SftDataset::operator=(SftDataset&&) noexcept = default;
SftDataset::~SftDataset() = default;

void SftDataset::add_example(Part& part, const SftExample& ex, int64_t line) {
  int64_t n = int64_t(ex.ids.size());
  if (!options_.pack && n > options_.seq_len) {
    VACC_CHECK(options_.truncate, path_, ", line ", line, ": the example has ", n,
               " tokens, more than the sequence length ", options_.seq_len,
               " (truncate it, pack the examples, or use longer sequences)");
    n = options_.seq_len;
    ++truncated_;
  }
  const int64_t begin = int64_t(part.tokens.size());
  for (int64_t t = 0; t < n; ++t) {
    const int32_t id = ex.ids[size_t(t)], label = ex.labels[size_t(t)];
    part.tokens.push_back(id);
    part.learnt.push_back(label != kIgnoreLabel);
    if (label != kIgnoreLabel && label != id) part.custom.emplace(begin + t, label);
  }
  if (options_.pack && ex.ids.back() != *eos_id_) {
    part.tokens.push_back(*eos_id_);
    part.learnt.push_back(part.learnt.back());  // learnt when the example's end is
  }
  if (!options_.pack) part.sequences.push_back({begin, n});
  ++part.examples;
}

void SftDataset::cut_sequences(Part& part) const {
  const int64_t total = int64_t(part.tokens.size());
  part.real_tokens = total;
  if (!options_.pack) return;
  for (int64_t b = 0; b < total; b += options_.seq_len)
    part.sequences.push_back({b, std::min(options_.seq_len, total - b)});
}

void SftDataset::fill_row(const Part& part, int64_t sequence, int32_t* ids, int32_t* labels) const {
  const Span s = part.sequences[size_t(sequence)];
  const int64_t seq = options_.seq_len;
  for (int64_t t = 0; t < seq; ++t) {
    ids[t] = t < s.length ? part.tokens[size_t(s.begin + t)] : pad_id_;
    labels[t] = kIgnoreLabel;
  }
  for (int64_t t = 0; t + 1 < s.length; ++t) {
    const int64_t next = s.begin + t + 1;
    if (!part.learnt[size_t(next)]) continue;
    if (!part.custom.empty()) {
      auto it = part.custom.find(next);
      if (it != part.custom.end()) {
        labels[t] = it->second;
        continue;
      }
    }
    labels[t] = part.tokens[size_t(next)];
  }
}

std::shared_ptr<const std::vector<int64_t>> SftDataset::permutation(int64_t epoch) const {
  std::lock_guard<std::mutex> lock(cache_->mutex);
  for (const auto& [e, perm] : cache_->recent)
    if (e == epoch) return perm;
  const int64_t n = train_sequences();
  auto perm = std::make_shared<std::vector<int64_t>>(size_t(n));
  for (int64_t i = 0; i < n; ++i) (*perm)[size_t(i)] = i;
  uint64_t state = options_.seed;
  state = splitmix64(state) ^ (uint64_t(epoch) * 0xd1342543de82ef95ull + 0x2545f4914f6cdd1dull);
  for (int64_t i = n - 1; i > 0; --i)  // Fisher-Yates
    std::swap((*perm)[size_t(i)], (*perm)[uniform_below(state, uint64_t(i) + 1)]);
  cache_->recent.emplace_back(epoch, perm);
  if (cache_->recent.size() > 2) cache_->recent.pop_front();
  return perm;
}

int64_t SftDataset::train_sequence_at(int64_t epoch, int64_t position) const {
  VACC_CHECK(epoch >= 0 && position >= 0, "data set ", path_, ": epoch ", epoch, " and position ",
             position, " must be >= 0");
  const int64_t n = train_sequences();
  epoch += position / n;
  position %= n;
  if (!options_.shuffle) return position;
  return (*permutation(epoch))[size_t(position)];
}

TokenBatch SftDataset::train_batch(int64_t epoch, int64_t first_sequence,
                                   int64_t batch_size) const {
  VACC_CHECK(batch_size > 0, "data set ", path_, ": a batch needs at least one sequence, not ",
             batch_size);
  VACC_CHECK(epoch >= 0 && first_sequence >= 0, "data set ", path_, ": epoch ", epoch,
             " and first sequence ", first_sequence, " must be >= 0");
  TokenBatch b;
  b.batch = batch_size;
  b.seq = options_.seq_len;
  b.ids.resize(size_t(b.batch * b.seq));
  b.labels.resize(b.ids.size());
  const int64_t n = train_sequences();
  std::shared_ptr<const std::vector<int64_t>> perm;
  int64_t perm_epoch = -1;
  for (int64_t j = 0; j < batch_size; ++j) {
    const int64_t pos = first_sequence + j;
    const int64_t e = epoch + pos / n, i = pos % n;
    int64_t sequence = i;
    if (options_.shuffle) {
      if (e != perm_epoch) {
        perm = permutation(e);
        perm_epoch = e;
      }
      sequence = (*perm)[size_t(i)];
    }
    fill_row(train_, sequence, &b.ids[size_t(j * b.seq)], &b.labels[size_t(j * b.seq)]);
  }
  return b;
}

TokenBatch SftDataset::eval_batch(int64_t first, int64_t count) const {
  VACC_CHECK(first >= 0 && count > 0 && first + count <= eval_sequences(), "data set ", path_,
             ": evaluation sequences [", first, ", ", first + count, ") outside the ",
             eval_sequences(), " there are");
  TokenBatch b;
  b.batch = count;
  b.seq = options_.seq_len;
  b.ids.resize(size_t(b.batch * b.seq));
  b.labels.resize(b.ids.size());
  for (int64_t j = 0; j < count; ++j)
    fill_row(eval_, first + j, &b.ids[size_t(j * b.seq)], &b.labels[size_t(j * b.seq)]);
  return b;
}

std::string SftDataset::summary() const {
  std::ostringstream s;
  s << path_ << ": " << records_ << " records -> " << train_examples() << " training examples ("
    << train_sequences() << " sequences of " << options_.seq_len << ", " << train_tokens()
    << " tokens" << (options_.pack ? ", packed" : "") << ")";
  if (eval_examples() > 0)
    s << ", " << eval_examples() << " evaluation examples (" << eval_sequences() << " sequences)";
  if (truncated_ > 0) s << ", " << truncated_ << " truncated";
  if (skipped_ > 0) s << ", " << skipped_ << " bad lines skipped";
  return s.str();
}

}  // namespace vacc
