#include "vacc/runtime/generator.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <utility>

#include "vacc/core/error.h"
#include "vacc/kernels/cpu/cpu_kernels.h"
#include "vacc/kernels/cpu/fast_exp.h"

namespace vacc {
namespace {

// Sorts (weight, token) pairs given in token order by falling weight, ties by token: a stable
// LSD radix sort on the weights' bits (non-negative floats order as their bit patterns do), 11
// bits a pass. A whole vocabulary's comparison sort took about 15 ms here.
template <typename Ranked>
void radix_sort_by_falling_weight(std::vector<Ranked>& items, std::vector<Ranked>& scratch) {
  constexpr int kBits = 11;
  constexpr size_t kBuckets = size_t(1) << kBits;
  auto key = [](const Ranked& r) {
    uint32_t bits;
    std::memcpy(&bits, &r.p, sizeof bits);
    return ~bits;  // falling weight: rising key
  };
  scratch.resize(items.size());
  std::vector<size_t> count(kBuckets);
  for (int shift = 0; shift < 32; shift += kBits) {
    std::fill(count.begin(), count.end(), 0);
    for (const Ranked& r : items) ++count[(key(r) >> shift) & (kBuckets - 1)];
    // A digit every item shares sorts nothing: no pass.
    if (std::find(count.begin(), count.end(), items.size()) != count.end()) continue;
    size_t start = 0;
    for (size_t& c : count) start += std::exchange(c, start);
    for (const Ranked& r : items) scratch[count[(key(r) >> shift) & (kBuckets - 1)]++] = r;
    items.swap(scratch);
  }
}

// The sum in double, in four interleaved partial sums (a fixed order: the same total on every
// run; one running sum waits on each addition's latency).
double sum_in_double(const std::vector<float>& values) {
  double part[4] = {0.0, 0.0, 0.0, 0.0};
  const size_t n = values.size(), whole = n - n % 4;
  for (size_t i = 0; i < whole; i += 4)
    for (size_t k = 0; k < 4; ++k) part[k] += double(values[i + k]);
  for (size_t i = whole; i < n; ++i) part[0] += double(values[i]);
  return (part[0] + part[1]) + (part[2] + part[3]);
}

// The greedy token, or an error where the largest logit is not finite (a NaN or infinite model).
int32_t finite_or_error(int32_t best) {
  VACC_CHECK(best >= 0, "the model produced non-finite logits (their largest is not finite)");
  return best;
}

}  // namespace

int32_t argmax_token(const float* logits, int64_t vocab) {
  int32_t best = -1;
  cpu::argmax_rows(logits, 1, vocab, &best);
  return best;
}

void token_weights(const float* logits, int64_t vocab, float max_logit, float temperature,
                   float* weights) {
  const float inverse = 1.0f / temperature;
  // Plain arithmetic and a select: a SIMD loop (libm's exp in double took 1.3 ms a token over
  // Qwen's 151936 tokens). A NaN logit fails the comparison and weighs nothing.
  for (int64_t i = 0; i < vocab; ++i) {
    const float x = (logits[i] - max_logit) * inverse;
    weights[i] = x >= -87.0f ? cpu::fast_exp(x) : 0.0f;
  }
}

int32_t TokenSampler::next(const float* logits, int64_t vocab) {
  VACC_CHECK(vocab > 0, "sampling from an empty vocabulary");
  const int32_t best = finite_or_error(argmax_token(logits, vocab));
  const float max_logit = logits[best];
  if (greedy()) return best;

  weights_.resize(size_t(vocab));
  token_weights(logits, vocab, max_logit, temperature_, weights_.data());
  const double total = sum_in_double(weights_);
  // A uniform number in [0, 1) from the top 53 bits.
  const double u = double(rng_() >> 11) * 0x1.0p-53;

  if (top_p_ >= 1.0f) {  // every token, in index order
    double target = u * total, cum = 0.0;
    for (int64_t i = 0; i < vocab; ++i) {
      cum += weights_[size_t(i)];
      if (cum > target) return int32_t(i);
    }
    return best;
  }
  // The nucleus: tokens by falling weight (ties by index) until the mass reaches top_p. Tokens
  // of weight at most `light` weigh at most vocab * light = (1 - top_p) / 2 of the total
  // together, so the nucleus lies among the heavier ones: a trained model's logits have a few
  // hundred of those in 151936 (the rest is never copied, selected or sorted).
  const double mass = double(top_p_) * total;
  const float light = float((1.0 - double(top_p_)) * total / double(vocab) * 0.5);
  const int32_t token = draw_from_nucleus(light, mass, u);
  return token >= 0 ? token : draw_from_nucleus(-1.0f, mass, u);
}

int32_t TokenSampler::draw_from_nucleus(float light, double mass, double u) {
  auto collect = [&] {  // the candidates, in token order
    ranked_.clear();
    for (size_t i = 0; i < weights_.size(); ++i)
      if (weights_[i] > light) ranked_.push_back({weights_[i], int32_t(i)});
  };
  collect();
  // The walk below is the same as over the whole vocabulary sorted, so the candidates must
  // surely hold the nucleus (with a margin for the order of the sums).
  double candidates_mass = 0.0;
  for (const Ranked& r : ranked_) candidates_mass += r.p;
  if (light >= 0.0f && candidates_mass < mass * (1.0 + 1e-9)) return -1;

  // Sorting all candidates is needless where the nucleus is a few dozen of them: only the
  // `top` most likely are sorted, the fewest whose mass (with the margin) reaches top_p, found
  // by partial selection from 256 up.
  auto more_likely = [](const Ranked& a, const Ranked& b) {
    return a.p > b.p || (a.p == b.p && a.id < b.id);
  };
  // No weight exceeds 1 (the most likely token's), so the nucleus has at least `mass` tokens.
  size_t top = std::min(ranked_.size(), std::max<size_t>(256, size_t(mass)));
  if (top >= ranked_.size() / 8) top = ranked_.size();  // see below
  bool in_token_order = true;
  while (true) {
    if (top < ranked_.size()) {
      in_token_order = false;
      std::nth_element(ranked_.begin(), ranked_.begin() + std::ptrdiff_t(top), ranked_.end(),
                       more_likely);
      double top_mass = 0.0;
      for (size_t k = 0; k < top; ++k) top_mass += ranked_[k].p;
      if (top_mass < mass * (1.0 + 1e-9)) {
        // Not surely the whole nucleus: widen, at least 4 times, and as far as the mass still
        // missing suggests (the next tokens are no likelier than these: a nearly uniform
        // distribution goes to all candidates at once).
        const double suggested = double(top) * mass / std::max(top_mass, 1e-300) * 1.25;
        top = size_t(std::min(double(ranked_.size()), std::max(double(top) * 4.0, suggested)));
        // An eighth of the candidates or more: their radix sort is cheaper than selecting and
        // comparison-sorting that many.
        if (top >= ranked_.size() / 8) top = ranked_.size();
        continue;
      }
    }
    if (top < ranked_.size()) {
      std::sort(ranked_.begin(), ranked_.begin() + std::ptrdiff_t(top), more_likely);
    } else {  // all candidates: in token order (ties by token), then by weight
      if (!in_token_order) collect();
      radix_sort_by_falling_weight(ranked_, ranked_scratch_);
      in_token_order = false;
    }
    double kept = 0.0;
    size_t n = 0;
    while (n < top && (n == 0 || kept < mass)) kept += ranked_[n++].p;
    if (kept < mass) {  // the sums' order mattered after all
      if (top < ranked_.size()) {
        top = ranked_.size();
        continue;
      }
      if (light >= 0.0f) return -1;
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
  // Greedy decoding takes the argmax on the device and reads back one id, not the logits row.
  const bool greedy = sampler.greedy();
  std::vector<float> logits(greedy ? 0 : static_cast<size_t>(V));
  Tensor best = be.empty({1}, DType::I32, MemoryCategory::Buffers, "greedy token id");
  auto pick = [&](const Tensor& last_logits) {
    if (!greedy) {
      be.download(last_logits, logits.data());
      return sampler.next(logits.data(), V);
    }
    be.argmax_rows(last_logits, best);
    int32_t token = 0;
    be.download(best, &token);
    return finite_or_error(token);
  };

  Tensor ids = be.empty({P}, DType::I32, MemoryCategory::Buffers, "prompt ids");
  be.upload(prompt.data(), ids);
  int32_t token = pick(model.decode(ids, cache));
  Tensor one = be.empty({1}, DType::I32, MemoryCategory::Buffers, "next token id");
  while (true) {
    if (std::find(options.stop_ids.begin(), options.stop_ids.end(), token) !=
        options.stop_ids.end())
      break;
    out.push_back(token);
    if (on_token) on_token(token);
    if (int64_t(out.size()) >= max_new) break;
    be.upload(&token, one);
    token = pick(model.decode(one, cache));
  }
  return out;
}

}  // namespace vacc
