// Text generation with a KV cache: the prompt is run through the model once, then one new
// token at a time, each picked from the last logits greedily or by temperature + nucleus
// (top-p) sampling with a seeded random generator.
#pragma once

#include <cstdint>
#include <functional>
#include <random>
#include <vector>

#include "vacc/model/transformer.h"

namespace vacc {

struct GenerationOptions {
  int64_t max_new_tokens = 128;
  // Logits are divided by the temperature before the softmax; 0 (or less) picks the most
  // likely token (greedy, deterministic).
  float temperature = 0.7f;
  // Nucleus sampling: only the most likely tokens whose probabilities add up to top_p (at
  // least one token) can be drawn; 1 or more keeps every token, a tiny value is greedy.
  float top_p = 0.9f;
  uint64_t seed = 0;
  // Generation stops when one of these is drawn (it is neither returned nor streamed).
  std::vector<int32_t> stop_ids;
  // The longest sequence, prompt and new tokens together; 0: the model config's
  // max_position_embeddings. Never more than the Transformer's max_seq_len().
  int64_t max_len = 0;
};

// Throws vacc::Error naming the option where the options make no sampling: a temperature that
// is not a finite number, a top_p that is NaN, a negative max_new_tokens.
void check_generation_options(const GenerationOptions& options);

// Picks the next token from a row of logits on the host, by the rule every backend's
// sample_rows follows (kernels/token_sampling_rule.h): the same seed and logits give the same
// tokens on every machine, and on a GPU wherever its weights agree with the host's. The random
// numbers are std::mt19937_64's words, one a sampled token.
class TokenSampler {
 public:
  TokenSampler(float temperature, float top_p, uint64_t seed)
      : temperature_(temperature), top_p_(top_p), rng_(seed) {}
  int32_t next(const float* logits, int64_t vocab);
  // Whether next() picks the most likely token (a temperature or top_p of 0 or less): it then
  // draws no random bits.
  bool greedy() const { return !(temperature_ > 0.0f) || !(top_p_ > 0.0f); }
  // The random bits of the next sampled token, as next() draws them (for Backend::sample_rows).
  uint64_t next_bits() { return rng_(); }
  float temperature() const { return temperature_; }
  float top_p() const { return top_p_; }

 private:
  float temperature_, top_p_;
  std::mt19937_64 rng_;
};

// The index of the largest logit (the lowest index among equal ones; NaNs never win), or -1
// where it is not finite (cpu::argmax_rows of one row).
int32_t argmax_token(const float* logits, int64_t vocab);

// Continues `prompt` (token ids, at least one) and returns the new tokens (the prompt not
// included). Stops after max_new_tokens, at a stop id, or when the sequence reaches the
// maximum length. on_token (if set) is called with each new token as soon as it is picked.
// Throws vacc::Error for an empty prompt, ids outside the vocabulary, or a prompt that
// leaves no room for a new token.
std::vector<int32_t> generate(Transformer& model, const std::vector<int32_t>& prompt,
                              const GenerationOptions& options,
                              const std::function<void(int32_t)>& on_token = {});

}  // namespace vacc
