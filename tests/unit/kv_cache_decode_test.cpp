// Text generation with a KV cache: the attention_decode kernel against attention_forward on
// the same data; Transformer::decode (prompt at once, then chunks and single tokens) against
// Transformer::logits on the whole sequence, f32 and bf16; and the generator: greedy equals
// the argmax chain of full recomputation, seeded sampling repeats, top-p behaves.
#include <algorithm>
#include <cmath>
#include <limits>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "test_util.h"
#include "vacc/kernels/cpu/cpu_kernels.h"
#include "vacc/model/initialization.h"
#include "vacc/model/kv_cache.h"
#include "vacc/model/transformer.h"
#include "vacc/runtime/generator.h"

namespace vacc::test {
namespace {

// ---------------------------------------------------------------- the kernel

struct DecodeCase {
  int64_t seq, prefill, q_heads, kv_heads, head_dim;
  std::string str() const {
    return "T=" + std::to_string(seq) + " prefill=" + std::to_string(prefill) +
           " Hq=" + std::to_string(q_heads) + " Hkv=" + std::to_string(kv_heads) +
           " D=" + std::to_string(head_dim);
  }
};

// Runs the kernel over a sequence in steps: `prefill` tokens at once, then a chunk of 3 (new
// tokens attending to cached ones and to each other), then one token at a time. Returns the
// (T, Hq D) outputs; the caches are left in k_cache / v_cache.
std::vector<float> decode_in_steps(Backend& be, const DecodeCase& c, const Tensor& qkv,
                                   Tensor& k_cache, Tensor& v_cache, DType out_dtype) {
  const int64_t HD = c.q_heads * c.head_dim;
  std::vector<float> out(size_t(c.seq * HD));
  int64_t past = 0;
  while (past < c.seq) {
    const int64_t n = std::min(c.seq - past, past == 0 ? c.prefill : (past == c.prefill ? 3 : 1));
    AttentionShape s{1, n, c.q_heads, c.kv_heads, c.head_dim};
    Tensor o = be.empty({n, HD}, out_dtype, MemoryCategory::Buffers, "decode out");
    be.attention_decode(qkv.rows(past, past + n), k_cache, v_cache, decode_positions(be, past, n),
                        s, o);
    std::vector<float> h = to_host(be, o);
    std::copy(h.begin(), h.end(), out.begin() + past * HD);
    past += n;
  }
  return out;
}

TEST(AttentionDecode, MatchesCausalAttentionForward) {
  auto be = make_cpu_backend();
  const std::vector<DecodeCase> cases = {
      {37, 13, 3, 3, 12},  // GQA ratio 1, odd head count
      {37, 13, 9, 3, 8},   // ratio 3
      {41, 1, 6, 2, 64},   // ratio 3, prompt of one token, usual head_dim
      {20, 20, 5, 5, 16},  // the whole sequence as one prefill
      {33, 7, 15, 5, 10},  // ratio 3, 15 heads, head_dim not a multiple of 8
  };
  for (const DecodeCase& c : cases) {
    AttentionShape full{1, c.seq, c.q_heads, c.kv_heads, c.head_dim};
    const int64_t W = full.qkv_width(), KW = c.kv_heads * c.head_dim;
    std::vector<float> host = random_vector(size_t(c.seq * W), 11 + uint64_t(c.seq), -2.0f, 2.0f);
    Tensor qkv = to_device(*be, host, {c.seq, W});
    Tensor want =
        be->empty({c.seq, c.q_heads * c.head_dim}, DType::F32, MemoryCategory::Buffers, "want");
    Tensor lse = be->empty({1, c.q_heads, c.seq}, DType::F32, MemoryCategory::Buffers, "lse");
    be->attention_forward(qkv, full, want, lse, nullptr);
    const std::vector<float> ref = to_host(*be, want);

    for (DType dt : {DType::F32, DType::BF16}) {
      const int64_t max_len = c.seq + 5;
      Tensor kc = be->zeros({max_len, KW}, DType::F32, MemoryCategory::Buffers, "k cache");
      Tensor vc = be->zeros({max_len, KW}, DType::F32, MemoryCategory::Buffers, "v cache");
      std::vector<float> got = decode_in_steps(*be, c, qkv, kc, vc, dt);
      if (dt == DType::F32)
        expect_close(got, ref, 1e-5, 1e-6, c.str() + " f32");
      else  // one bf16 rounding of the f32 result
        expect_close(got, ref, 1.0 / 128, 1e-6, c.str() + " bf16");

      // The caches hold the k and v heads of every token, in order; the spare rows untouched.
      std::vector<float> k = to_host(*be, kc), v = to_host(*be, vc);
      std::vector<float> want_k(k.size(), 0.0f), want_v(v.size(), 0.0f);
      for (int64_t t = 0; t < c.seq; ++t)
        for (int64_t j = 0; j < KW; ++j) {
          want_k[size_t(t * KW + j)] = host[size_t(t * W + c.q_heads * c.head_dim + j)];
          want_v[size_t(t * KW + j)] =
              host[size_t(t * W + (c.q_heads + c.kv_heads) * c.head_dim + j)];
        }
      EXPECT_EQ(k, want_k) << c.str();
      EXPECT_EQ(v, want_v) << c.str();
    }
  }
}

TEST(AttentionDecode, RejectsWhatDoesNotFit) {
  auto be = make_cpu_backend();
  AttentionShape s{1, 4, 6, 2, 8};
  Tensor qkv = be->zeros({4, s.qkv_width()}, DType::F32, MemoryCategory::Buffers, "qkv");
  Tensor kc = be->zeros({10, 16}, DType::F32, MemoryCategory::Buffers, "k");
  Tensor vc = be->zeros({10, 16}, DType::F32, MemoryCategory::Buffers, "v");
  Tensor out = be->zeros({4, 48}, DType::F32, MemoryCategory::Buffers, "out");
  EXPECT_NO_THROW(be->attention_decode(qkv, kc, vc, decode_positions(*be, 6, 4), s, out));
  try {
    be->attention_decode(qkv, kc, vc, decode_positions(*be, 7, 4), s, out);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("10 positions"), std::string::npos) << e.what();
  }
  const Tensor at0 = decode_positions(*be, 0, 4);
  Tensor narrow = be->zeros({10, 8}, DType::F32, MemoryCategory::Buffers, "k");
  EXPECT_THROW(be->attention_decode(qkv, narrow, vc, at0, s, out), Error);
  AttentionShape two = s;
  two.batch = 2;
  two.seq = 2;
  EXPECT_THROW(be->attention_decode(qkv, kc, vc, at0, two, out), Error);
  // Positions that do not follow each other are not one sequence's new tokens.
  const Tensor gapped = ids_to_device(*be, {0, 1, 3, 4});
  EXPECT_THROW(be->attention_decode(qkv, kc, vc, gapped, s, out), Error);
}

// ---------------------------------------------------------------- the model

ModelConfig gqa_config(double init_range) {
  ModelConfig c = test_model_config({.vocab = 97, .hidden = 48, .ffn = 80, .layers = 2, .heads = 6,
                                   .kv_heads = 2, .head_dim = 8, .tied = true, .bias = true});
  c.initializer_range = init_range;
  c.max_position_embeddings = 64;
  return c;
}

ModelConfig mha_config(double init_range) {
  ModelConfig c = test_model_config({.vocab = 89, .hidden = 40, .ffn = 72, .layers = 3, .heads = 5,
                                   .kv_heads = 5, .head_dim = 10, .tied = false, .bias = false});
  c.initializer_range = init_range;
  c.max_position_embeddings = 64;
  return c;
}

struct TestModel {
  std::unique_ptr<Backend> be;
  std::unique_ptr<Transformer> model;
};

// A randomly initialised model; a larger init_range makes attention and logits peaked.
TestModel make_model(const ModelConfig& c, DType compute, uint64_t seed = 5) {
  TestModel m;
  m.be = make_cpu_backend();
  m.model = std::make_unique<Transformer>(*m.be, c, ModelShard::whole(c), compute,
                                          c.max_position_embeddings);
  initialize_parameters(*m.be, c, m.model->table(), seed, m.model->parameters());
  m.model->parameters_changed();
  return m;
}

// Transformer::logits on the whole sequence: (T, V) on the host.
std::vector<float> full_logits(TestModel& m, const std::vector<int32_t>& ids) {
  const int64_t T = int64_t(ids.size());
  std::vector<int32_t> pos(ids.size());
  for (int64_t t = 0; t < T; ++t) pos[size_t(t)] = int32_t(t);
  Transformer::Activations act = m.model->allocate_activations(1, T);
  return to_host(*m.be, m.model->logits(ids_to_device(*m.be, ids), ids_to_device(*m.be, pos), act));
}

std::vector<int32_t> random_ids(int64_t n, int64_t vocab, uint64_t seed) {
  std::vector<float> r = random_vector(size_t(n), seed, 0.0f, float(vocab));
  std::vector<int32_t> ids;
  for (float x : r) ids.push_back(std::min(int32_t(x), int32_t(vocab - 1)));
  return ids;
}

float max_abs(const std::vector<float>& v) {
  float m = 0;
  for (float x : v) m = std::max(m, std::abs(x));
  return m;
}

// decode: the prompt at once (all rows), a chunk of 4, then single tokens (last row only).
std::vector<float> decode_logits(TestModel& m, const std::vector<int32_t>& ids, int64_t prompt) {
  const int64_t T = int64_t(ids.size()), V = m.model->config().vocab_size;
  KvCache cache = m.model->make_kv_cache(T);
  std::vector<float> out;
  auto run = [&](int64_t begin, int64_t end, bool all_rows) {
    std::vector<int32_t> part(ids.begin() + begin, ids.begin() + end);
    Tensor logits = m.model->decode(ids_to_device(*m.be, part), cache, all_rows);
    EXPECT_EQ(logits.shape(), (Shape{all_rows ? end - begin : 1, V}));
    EXPECT_EQ(cache.length(), end);
    std::vector<float> h = to_host(*m.be, logits);
    out.insert(out.end(), h.begin(), h.end());
  };
  run(0, prompt, true);
  run(prompt, prompt + 4, true);
  for (int64_t t = prompt + 4; t < T; ++t) run(t, t + 1, false);
  return out;
}

void check_decode_matches_logits(const ModelConfig& c, DType dt, double rtol, double atol_frac) {
  TestModel m = make_model(c, dt);
  const std::vector<int32_t> ids = random_ids(29, c.vocab_size, 3);
  const std::vector<float> want = full_logits(m, ids);
  const std::vector<float> got = decode_logits(m, ids, 11);
  const float scale = max_abs(want);
  ASSERT_GT(scale, 1.0f) << "the test model's logits should not be flat";
  expect_close(got, want, rtol, atol_frac * scale,
               "decode vs logits, " + dtype_name(dt) + ", " + std::to_string(c.num_heads) +
                   " heads / " + std::to_string(c.num_kv_heads) + " kv heads");
}

// f32: the same ops as logits() up to summation order (attention kernel, matmul blocking):
// within 1e-5 relative, with an absolute floor of 1e-5 of the largest logit for logits near 0
// (measured: worst difference 1e-6 of the largest logit).
TEST(TransformerDecode, MatchesFullLogitsF32) {
  check_decode_matches_logits(gqa_config(0.2), DType::F32, 1e-5, 1e-5);
  check_decode_matches_logits(mha_config(0.2), DType::F32, 1e-5, 1e-5);
}

// bf16: a last-bit difference in an f32 intermediate can flip the bf16 rounding of a matmul
// operand (relative 2^-8), which the following layers carry: within 4e-3 of the largest
// logit (measured: 3.6e-4 for the GQA model, exact for the other).
TEST(TransformerDecode, MatchesFullLogitsBF16) {
  check_decode_matches_logits(gqa_config(0.2), DType::BF16, 0.0, 4e-3);
  check_decode_matches_logits(mha_config(0.2), DType::BF16, 0.0, 4e-3);
}

TEST(TransformerDecode, RejectsWhatDoesNotFit) {
  TestModel m = make_model(gqa_config(0.2), DType::F32);
  EXPECT_THROW(m.model->make_kv_cache(65), Error);  // beyond the RoPE tables (64)
  KvCache cache = m.model->make_kv_cache(8);
  m.model->decode(ids_to_device(*m.be, random_ids(6, 97, 1)), cache);
  try {
    m.model->decode(ids_to_device(*m.be, random_ids(3, 97, 2)), cache);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("8 positions"), std::string::npos) << e.what();
  }
  EXPECT_EQ(cache.length(), 6);
  KvCache other(*m.be, 3, 16, 8);  // not this model's geometry
  EXPECT_THROW(m.model->decode(ids_to_device(*m.be, {1}), other), Error);
}

// ---------------------------------------------------------------- the generator

std::vector<int32_t> greedy_reference(TestModel& m, std::vector<int32_t> seq, int64_t n) {
  const int64_t V = m.model->config().vocab_size;
  std::vector<int32_t> out;
  for (int64_t i = 0; i < n; ++i) {
    std::vector<float> logits = full_logits(m, seq);
    int32_t next = argmax_token(logits.data() + (int64_t(seq.size()) - 1) * V, V);
    out.push_back(next);
    seq.push_back(next);
  }
  return out;
}

TEST(Generator, GreedyIsTheArgmaxChainOfFullRecomputation) {
  for (DType dt : {DType::F32, DType::BF16}) {
    TestModel m = make_model(gqa_config(0.2), dt);
    const std::vector<int32_t> prompt = random_ids(7, 97, 9);
    GenerationOptions opt;
    opt.temperature = 0.0f;
    opt.max_new_tokens = 14;
    std::vector<int32_t> streamed;
    std::vector<int32_t> a =
        generate(*m.model, prompt, opt, [&](int32_t t) { streamed.push_back(t); });
    EXPECT_EQ(a.size(), 14u);
    EXPECT_EQ(streamed, a) << "on_token sees every new token, in order";
    EXPECT_EQ(generate(*m.model, prompt, opt), a) << "greedy is deterministic";
    EXPECT_EQ(a, greedy_reference(m, prompt, 14)) << dtype_name(dt);

    // top_p tiny: only the most likely token is ever kept, whatever the temperature and seed.
    GenerationOptions nucleus = opt;
    nucleus.temperature = 1.0f;
    nucleus.top_p = 1e-6f;
    nucleus.seed = 123;
    EXPECT_EQ(generate(*m.model, prompt, nucleus), a);
  }
}

// Sampling draws on the backend (Backend::sample_rows) what TokenSampler draws on the host from
// the same seed, token after token, over the logits of full recomputation.
TEST(Generator, SamplingIsTheTokenSamplerChainOfFullRecomputation) {
  TestModel m = make_model(gqa_config(0.2), DType::F32);
  const int64_t V = m.model->config().vocab_size;
  const std::vector<int32_t> prompt = random_ids(5, 97, 11);
  GenerationOptions opt;
  opt.temperature = 0.9f;
  opt.top_p = 0.8f;
  opt.seed = 7;
  opt.max_new_tokens = 12;
  const std::vector<int32_t> got = generate(*m.model, prompt, opt);
  TokenSampler sampler(opt.temperature, opt.top_p, opt.seed);
  std::vector<int32_t> seq = prompt, want;
  for (int64_t i = 0; i < opt.max_new_tokens; ++i) {
    const std::vector<float> logits = full_logits(m, seq);
    want.push_back(sampler.next(logits.data() + (int64_t(seq.size()) - 1) * V, V));
    seq.push_back(want.back());
  }
  EXPECT_EQ(got, want);
}

TEST(Generator, SamplingRepeatsWithTheSeedAndDiffersWithout) {
  // initializer_range 0.02: nearly uniform next-token distributions.
  TestModel m = make_model(gqa_config(0.02), DType::F32);
  const std::vector<int32_t> prompt = random_ids(5, 97, 4);
  for (float top_p : {1.0f, 0.9f}) {
    GenerationOptions opt;
    opt.temperature = 1.0f;
    opt.top_p = top_p;
    opt.max_new_tokens = 24;
    opt.seed = 1;
    std::vector<int32_t> a = generate(*m.model, prompt, opt), b = generate(*m.model, prompt, opt);
    EXPECT_EQ(a.size(), 24u);
    EXPECT_EQ(a, b) << "top_p " << top_p;
    opt.seed = 2;
    EXPECT_NE(generate(*m.model, prompt, opt), a) << "top_p " << top_p;
    opt.temperature = 0.0f;
    std::vector<int32_t> greedy = generate(*m.model, prompt, opt);
    EXPECT_NE(greedy, a) << "sampling from a flat distribution is not greedy";
  }
}

// The rule of kernels/token_sampling_rule.h written out plainly: the whole vocabulary sorted
// by falling weight (ties by index), the nucleus the shortest prefix whose integer mass
// reaches ceil(top_p * total), the draw walked in token order. TokenSampler (cpu::sample_rows)
// finds the boundary by a radix select instead of sorting; it must draw the very same tokens.
int32_t reference_sample(const std::vector<float>& logits, float temperature, float top_p,
                         std::mt19937_64& rng) {
  const int64_t V = int64_t(logits.size());
  const int32_t best = argmax_token(logits.data(), V);
  std::vector<float> weights(logits.size());
  cpu::token_weights(logits.data(), V, logits[size_t(best)], temperature, weights.data());
  int width = 0;
  while ((int64_t(1) << width) <= V) ++width;
  const double scale = std::ldexp(1.0, 63 - width);
  std::vector<uint64_t> mass(logits.size());
  uint64_t total = 0;
  for (size_t i = 0; i < mass.size(); ++i) total += mass[i] = uint64_t(double(weights[i]) * scale);
  const uint64_t bits = rng();
  std::vector<int32_t> order(logits.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = int32_t(i);
  std::sort(order.begin(), order.end(), [&](int32_t a, int32_t b) {
    return weights[size_t(a)] > weights[size_t(b)] ||
           (weights[size_t(a)] == weights[size_t(b)] && a < b);
  });
  const uint64_t target =
      top_p >= 1.0f ? total
                    : std::clamp<uint64_t>(uint64_t(std::ceil(double(top_p) * double(total))), 1,
                                           total);
  std::vector<bool> in_nucleus(logits.size(), false);
  uint64_t kept = 0;
  for (int32_t id : order) {
    if (kept >= target) break;
    in_nucleus[size_t(id)] = true;
    kept += mass[size_t(id)];
  }
  const uint64_t point = uint64_t((unsigned __int128)bits * kept >> 64);
  uint64_t run = 0;
  for (size_t i = 0; i < mass.size(); ++i)
    if (in_nucleus[i] && (run += mass[i]) > point) return int32_t(i);
  return -1;
}

TEST(Generator, SamplingDrawsWhatTheRuleWrittenOutDraws) {
  const int64_t V = 5000;
  std::mt19937_64 make(17);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  struct Kind {
    const char* name;
    float scale;   // the logits' spread: small is nearly uniform (a nucleus of most tokens)
    int peaks;     // tokens lifted far above the rest (a trained model's few likely ones)
    bool ties;     // logits on a coarse grid: many equal probabilities
  };
  for (const Kind& kind : {Kind{"peaked", 2.0f, 12, false}, Kind{"flat", 0.05f, 0, false},
                           Kind{"ties", 1.0f, 3, true}}) {
    std::vector<float> logits(static_cast<size_t>(V));
    for (float& x : logits) x = normal(make) * kind.scale;
    if (kind.ties)
      for (float& x : logits) x = std::round(x * 2.0f) / 2.0f;
    for (int i = 0; i < kind.peaks; ++i) logits[size_t(make() % uint64_t(V))] += 10.0f - float(i);
    for (float top_p : {0.5f, 0.9f, 0.999f, 1.0f}) {
      for (float temperature : {0.7f, 1.3f}) {
        SCOPED_TRACE(std::string(kind.name) + " top_p " + std::to_string(top_p) + " T " +
                     std::to_string(temperature));
        TokenSampler sampler(temperature, top_p, 5);
        std::mt19937_64 rng(5);
        for (int draw = 0; draw < 40; ++draw)
          ASSERT_EQ(sampler.next(logits.data(), V),
                    reference_sample(logits, temperature, top_p, rng))
              << "draw " << draw;
      }
    }
  }
}

TEST(Generator, StopsAtStopIdsAndTheLengthLimit) {
  TestModel m = make_model(gqa_config(0.2), DType::F32);
  const std::vector<int32_t> prompt = random_ids(6, 97, 8);
  GenerationOptions opt;
  opt.temperature = 0.0f;
  opt.max_new_tokens = 20;
  const std::vector<int32_t> all = generate(*m.model, prompt, opt);
  ASSERT_EQ(all.size(), 20u);

  // A stop id ends generation before it; it is neither returned nor streamed.
  GenerationOptions stop = opt;
  stop.stop_ids = {1000, all[5]};
  const size_t first = size_t(std::find(all.begin(), all.end(), all[5]) - all.begin());
  std::vector<int32_t> streamed;
  std::vector<int32_t> got =
      generate(*m.model, prompt, stop, [&](int32_t t) { streamed.push_back(t); });
  EXPECT_EQ(got, std::vector<int32_t>(all.begin(), all.begin() + int64_t(first)));
  EXPECT_EQ(streamed, got);

  // The maximum length counts the prompt: 6 + 4 = 10.
  GenerationOptions len = opt;
  len.max_len = 10;
  EXPECT_EQ(generate(*m.model, prompt, len), std::vector<int32_t>(all.begin(), all.begin() + 4));
  // Without max_len, the config's max_position_embeddings (64).
  len.max_len = 0;
  len.max_new_tokens = 1000;
  EXPECT_EQ(generate(*m.model, prompt, len).size(), 64u - 6u);

  len.max_new_tokens = 0;
  EXPECT_TRUE(generate(*m.model, prompt, len).empty());
}

TEST(Generator, RejectsBadPrompts) {
  TestModel m = make_model(gqa_config(0.2), DType::F32);
  GenerationOptions opt;
  EXPECT_THROW(generate(*m.model, {}, opt), Error);
  try {
    generate(*m.model, {3, 97}, opt);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("97"), std::string::npos) << e.what();
  }
  opt.max_len = 4;
  EXPECT_THROW(generate(*m.model, {1, 2, 3, 4}, opt), Error);  // no room for a new token

  // Options that make no sampling: one error naming the option.
  auto expect_option_error = [&](GenerationOptions bad, const std::string& named) {
    try {
      generate(*m.model, {1, 2}, bad);
      ADD_FAILURE() << "expected an error naming " << named;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(named), std::string::npos) << e.what();
    }
  };
  GenerationOptions bad;
  bad.temperature = std::numeric_limits<float>::quiet_NaN();
  expect_option_error(bad, "temperature");
  bad.temperature = std::numeric_limits<float>::infinity();
  expect_option_error(bad, "temperature");
  bad = GenerationOptions{};
  bad.top_p = std::numeric_limits<float>::quiet_NaN();
  expect_option_error(bad, "top_p");
  bad = GenerationOptions{};
  bad.max_new_tokens = -1;
  expect_option_error(bad, "new tokens");
}

TEST(TokenSampler, WeightsAreTheSoftmaxNumeratorsInFloat) {
  const float max_logit = 3.25f, temperature = 0.7f;
  const std::vector<float> logits = {max_logit, 3.0f,     0.0f,  -1.0f, -10.5f,  -40.0f,
                                     -57.0f,    -58.0f,   -200.0f, std::nanf(""),
                                     -std::numeric_limits<float>::infinity()};
  std::vector<float> w(logits.size());
  cpu::token_weights(logits.data(), int64_t(logits.size()), max_logit, temperature, w.data());
  EXPECT_EQ(w[0], 1.0f);  // the largest logit weighs exactly 1
  for (size_t i = 1; i < 7; ++i) {
    const double x = (double(logits[i]) - max_logit) / temperature;
    // Rounding x to float moves exp(x) by |x| * 2^-24 relative; the exp adds an ulp or two.
    EXPECT_NEAR(w[i], std::exp(x), std::exp(x) * (4.0 + std::abs(x)) * 0x1p-24)
        << "logit " << logits[i];
  }
  // Below exp(-87) (here (-58 - 3.25) / 0.7 = -87.5), a NaN and -inf: nothing.
  for (size_t i = 7; i < logits.size(); ++i) EXPECT_EQ(w[i], 0.0f) << "logit " << logits[i];
}

TEST(TokenSampler, NucleusKeepsTheSmallestSetReachingTopP) {
  // Probabilities 0.5, 0.3, 0.2: top_p 0.6 keeps {0, 1} renormalised to 5/8, 3/8.
  const std::vector<float> logits = {std::log(0.5f), std::log(0.3f), std::log(0.2f)};
  TokenSampler sampler(1.0f, 0.6f, 42);
  std::vector<int> counts(3, 0);
  const int draws = 8000;
  for (int i = 0; i < draws; ++i) counts[size_t(sampler.next(logits.data(), 3))]++;
  EXPECT_EQ(counts[2], 0);
  EXPECT_NEAR(double(counts[0]) / draws, 5.0 / 8.0, 0.025);

  // top_p 1: every token, with its probability.
  TokenSampler all(1.0f, 1.0f, 42);
  counts.assign(3, 0);
  for (int i = 0; i < draws; ++i) counts[size_t(all.next(logits.data(), 3))]++;
  EXPECT_NEAR(double(counts[2]) / draws, 0.2, 0.025);

  // A low temperature sharpens: token 1 has odds (0.3/0.5)^(1/0.02) ~ 1e-11 against token 0.
  TokenSampler cold(0.02f, 1.0f, 42);
  for (int i = 0; i < 100; ++i) EXPECT_EQ(cold.next(logits.data(), 3), 0);
  // Greedy: the first of equal maxima.
  const std::vector<float> tie = {0.0f, 2.0f, 2.0f};
  EXPECT_EQ(TokenSampler(0.0f, 0.9f, 1).next(tie.data(), 3), 1);
}

}  // namespace
}  // namespace vacc::test
