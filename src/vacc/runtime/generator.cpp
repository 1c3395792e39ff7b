#include "vacc/runtime/generator.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <utility>

#include "vacc/core/error.h"

namespace vacc {
namespace {

// Sorts (probability, token) pairs given in token order by falling probability, ties by token:
// a stable LSD radix sort on the probabilities' bits (non-negative doubles order as their bit
// patterns do), 11 bits a pass. A whole vocabulary's comparison sort took about 15 ms here.
template <typename Ranked>
void radix_sort_by_falling_probability(std::vector<Ranked>& items, std::vector<Ranked>& scratch) {
  constexpr int kBits = 11;
  constexpr size_t kBuckets = size_t(1) << kBits;
  auto key = [](const Ranked& r) {
    uint64_t bits;
    std::memcpy(&bits, &r.p, sizeof bits);
    return ~bits;  // falling probability: rising key
  };
  scratch.resize(items.size());
  std::vector<size_t> count(kBuckets);
  for (int shift = 0; shift < 64; shift += kBits) {
    std::fill(count.begin(), count.end(), 0);
    for (const Ranked& r : items) ++count[(key(r) >> shift) & (kBuckets - 1)];
    // Digits every item shares (the exponent's high bits of probabilities in (0, 1]) sort
    // nothing: no pass.
    if (std::find(count.begin(), count.end(), items.size()) != count.end()) continue;
    size_t start = 0;
    for (size_t& c : count) start += std::exchange(c, start);
    for (const Ranked& r : items) scratch[count[(key(r) >> shift) & (kBuckets - 1)]++] = r;
    items.swap(scratch);
  }
}

}  // namespace

int32_t argmax_token(const float* logits, int64_t vocab) {
  int64_t best = 0;
  for (int64_t i = 1; i < vocab; ++i)
    if (logits[i] > logits[best]) best = i;
  return int32_t(best);
}

int32_t TokenSampler::next(const float* logits, int64_t vocab) {
  VACC_CHECK(vocab > 0, "sampling from an empty vocabulary");
  const int32_t best = argmax_token(logits, vocab);
  const float max_logit = logits[best];
  VACC_CHECK(std::isfinite(max_logit), "the model produced non-finite logits (", max_logit, ")");
  if (!(temperature_ > 0.0f) || !(top_p_ > 0.0f)) return best;

  // softmax(logits / T), unnormalised, in double.
  probs_.resize(size_t(vocab));
  double total = 0.0;
  for (int64_t i = 0; i < vocab; ++i) {
    const double p = std::exp((double(logits[i]) - double(max_logit)) / double(temperature_));
    probs_[size_t(i)] = std::isnan(p) ? 0.0 : p;
    total += probs_[size_t(i)];
  }
  // A uniform number in [0, 1) from the top 53 bits.
  const double u = double(rng_() >> 11) * 0x1.0p-53;

  if (top_p_ >= 1.0f) {  // every token, in index order
    double target = u * total, cum = 0.0;
    for (int64_t i = 0; i < vocab; ++i) {
      cum += probs_[size_t(i)];
      if (cum > target) return int32_t(i);
    }
    return best;
  }
  // The nucleus: tokens by falling probability (ties by index) until the mass reaches top_p.
  // Sorting the whole vocabulary took 54 ms a token (151936 entries, bench/sampler_bench), while
  // a trained model's nucleus is a few dozen tokens: so only the `top` most likely are sorted,
  // the fewest whose mass (with a margin for the order of the sums) reaches top_p, found by
  // partial selection from 256 up. The walk below is the same as over the whole sorted
  // vocabulary: the same tokens for the same seed.
  const double mass = double(top_p_) * total;
  ranked_.resize(size_t(vocab));
  for (int64_t i = 0; i < vocab; ++i) ranked_[size_t(i)] = {probs_[size_t(i)], int32_t(i)};
  auto more_likely = [](const Ranked& a, const Ranked& b) {
    return a.p > b.p || (a.p == b.p && a.id < b.id);
  };
  size_t top = std::min<size_t>(256, ranked_.size());
  while (true) {
    if (top < ranked_.size()) {
      std::nth_element(ranked_.begin(), ranked_.begin() + std::ptrdiff_t(top), ranked_.end(),
                       more_likely);
      double top_mass = 0.0;
      for (size_t k = 0; k < top; ++k) top_mass += ranked_[k].p;
      if (top_mass < mass * (1.0 + 1e-9)) {
        // Not surely the whole nucleus: widen, at least 4 times, and as far as the mass still
        // missing suggests (the next tokens are no likelier than these: a nearly uniform
        // distribution goes to the whole vocabulary at once).
        const double suggested = double(top) * mass / std::max(top_mass, 1e-300) * 1.25;
        top = size_t(std::min(double(ranked_.size()), std::max(double(top) * 4.0, suggested)));
        // An eighth of the vocabulary or more: the whole one's radix sort is cheaper than
        // selecting and comparison-sorting that many.
        if (top >= ranked_.size() / 8) top = ranked_.size();
        continue;
      }
    }
    if (top < ranked_.size()) {
      std::sort(ranked_.begin(), ranked_.begin() + std::ptrdiff_t(top), more_likely);
    } else {  // the whole vocabulary: back in token order (ties by token), then by probability
      for (int64_t i = 0; i < vocab; ++i) ranked_[size_t(i)] = {probs_[size_t(i)], int32_t(i)};
      radix_sort_by_falling_probability(ranked_, ranked_scratch_);
    }
    double kept = 0.0;
    size_t n = 0;
    while (n < top && (n == 0 || kept < mass)) kept += ranked_[n++].p;
    if (kept < mass && top < ranked_.size()) {  // the sums' order mattered after all
      top = ranked_.size();
      continue;
    }
    const double target = u * kept;
    double cum = 0.0;
    for (size_t k = 0; k < n; ++k) {
      cum += ranked_[k].p;
      if (cum > target) return ranked_[k].id;
    }
    return ranked_[n - 1].id;
  }
}

std::vector<int32_t> generate(Transformer& model, const std::vector<int32_t>& prompt,
                              const GenerationOptions& options,
                              const std::function<void(int32_t)>& on_token) {
  const ModelConfig& config = model.config();
  const int64_t V = config.vocab_size, P = int64_t(prompt.size());
  VACC_CHECK(P > 0, "generate needs a prompt of at least one token");
  for (int64_t i = 0; i < P; ++i)
    VACC_CHECK(prompt[size_t(i)] >= 0 && prompt[size_t(i)] < V, "prompt token ", i, " is ",
               prompt[size_t(i)], ", outside the vocabulary of ", V, " tokens");
  int64_t limit = options.max_len > 0 ? options.max_len : config.max_position_embeddings;
  limit = std::min(limit, model.max_seq_len());
  VACC_CHECK(P < limit, "the prompt's ", P, " tokens leave no room for a new token within the ",
             "maximum sequence length of ", limit);
  const int64_t max_new = std::min(options.max_new_tokens, limit - P);
  std::vector<int32_t> out;
  if (max_new <= 0) return out;

  Backend& be = model.backend();
  // The last new token is never fed back, so the cache needs P + max_new - 1 positions.
  KvCache cache = model.make_kv_cache(P + max_new - 1);
  TokenSampler sampler(options.temperature, options.top_p, options.seed);
  std::vector<float> logits(static_cast<size_t>(V));

  Tensor ids = be.empty({P}, DType::I32, MemoryCategory::Buffers, "prompt ids");
  be.upload(prompt.data(), ids);
  be.download(model.decode(ids, cache), logits.data());
  Tensor one = be.empty({1}, DType::I32, MemoryCategory::Buffers, "next token id");
  while (true) {
    const int32_t token = sampler.next(logits.data(), V);
    if (std::find(options.stop_ids.begin(), options.stop_ids.end(), token) !=
        options.stop_ids.end())
      break;
    out.push_back(token);
    if (on_token) on_token(token);
    if (int64_t(out.size()) >= max_new) break;
    be.upload(&token, one);
    be.download(model.decode(one, cache), logits.data());
  }
  return out;
}

}  // namespace vacc
