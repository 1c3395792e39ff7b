#include "vacc/runtime/generator.h"

#include <algorithm>
#include <cmath>

#include "vacc/core/error.h"
#include "vacc/kernels/cpu/cpu_kernels.h"

namespace vacc {
namespace {

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

void check_generation_options(const GenerationOptions& o) {
  VACC_CHECK(std::isfinite(o.temperature), "the sampling temperature must be a finite number ",
             "(0 or less: greedy), not ", o.temperature);
  VACC_CHECK(!std::isnan(o.top_p), "top_p must be a number (0 or less: greedy; 1 or more: ",
             "every token), not ", o.top_p);
  VACC_CHECK(o.max_new_tokens >= 0, "the number of new tokens must not be negative, got ",
             o.max_new_tokens);
}

int32_t TokenSampler::next(const float* logits, int64_t vocab) {
  VACC_CHECK(vocab > 0, "sampling from an empty vocabulary");
  const uint64_t bits = greedy() ? 0 : next_bits();
  int32_t token = -1;
  cpu::sample_rows(logits, 1, vocab, &bits, temperature_, top_p_, &token);
  return finite_or_error(token);
}

std::vector<int32_t> generate(Transformer& model, const std::vector<int32_t>& prompt,
                              const GenerationOptions& options,
                              const std::function<void(int32_t)>& on_token) {
  check_generation_options(options);
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
  // The token is drawn on the device (Backend::sample_rows): a token reads back its id, not the
  // logits row, and a sampled one uploads its 64 random bits.
  TokenSampler sampler(options.temperature, options.top_p, options.seed);
  Tensor bits = be.empty({1, 2}, DType::I32, MemoryCategory::Buffers, "random bits");
  Tensor picked = be.empty({1}, DType::I32, MemoryCategory::Buffers, "picked token id");
  auto pick = [&](const Tensor& last_logits) {
    if (!sampler.greedy()) {
      const uint64_t word = sampler.next_bits();
      be.upload(&word, bits);
    }
    be.sample_rows(last_logits, bits, sampler.temperature(), sampler.top_p(), picked);
    int32_t token = 0;
    be.download(picked, &token);
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
