// Helpers shared by the unit tests: random host data, moving it through a Backend, and
// comparing with tolerances that print the worst element.
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "vacc/core/error.h"
#include "vacc/kernels/backend.h"
#include "vacc/model/model_config.h"

namespace vacc::test {

inline std::vector<float> random_vector(size_t n, uint64_t seed, float lo = -1.0f, float hi = 1.0f) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> dist(lo, hi);
  std::vector<float> v(n);
  for (float& x : v) x = dist(rng);
  return v;
}

// A device tensor holding host values (f32 or bf16 target dtype; i32 from ints).
inline Tensor to_device(Backend& be, const std::vector<float>& host, Shape shape,
                        DType dtype = DType::F32) {
  Tensor f = be.empty(shape, DType::F32, MemoryCategory::Buffers, "test input");
  be.upload(host.data(), f);
  if (dtype == DType::F32) return f;
  Tensor t = be.empty(shape, dtype, MemoryCategory::Buffers, "test input");
  be.copy(f, t);
  return t;
}

inline Tensor ids_to_device(Backend& be, const std::vector<int32_t>& host) {
  Tensor t = be.empty({int64_t(host.size())}, DType::I32, MemoryCategory::Buffers, "test ids");
  be.upload(host.data(), t);
  return t;
}

// The positions [past, past + n) of n new tokens (attention_decode's), on the device.
inline Tensor decode_positions(Backend& be, int64_t past, int64_t n) {
  std::vector<int32_t> pos(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) pos[size_t(i)] = int32_t(past + i);
  return ids_to_device(be, pos);
}

// Values of a device tensor as f32 on the host (bf16 converted).
inline std::vector<float> to_host(Backend& be, const Tensor& t) {
  Tensor f = t;
  if (t.dtype() != DType::F32) {
    f = be.empty(t.shape(), DType::F32, MemoryCategory::Buffers, "test output");
    be.copy(t, f);
  }
  std::vector<float> out(size_t(f.numel()));
  be.download(f, out.data());
  return out;
}

// A small, valid model configuration for tests.
struct TestModelShape {
  int64_t vocab, hidden, ffn, layers, heads, kv_heads, head_dim;
  bool tied, bias;
};
inline ModelConfig test_model_config(const TestModelShape& s) {
  ModelConfig c;
  c.vocab_size = s.vocab;
  c.hidden_size = s.hidden;
  c.intermediate_size = s.ffn;
  c.num_layers = s.layers;
  c.num_heads = s.heads;
  c.num_kv_heads = s.kv_heads;
  c.head_dim = s.head_dim;
  c.tie_word_embeddings = s.tied;
  c.attention_bias = s.bias;
  c.validate("test config");
  return c;
}

// Rounds values through bf16, as a bf16 tensor would hold them.
inline std::vector<float> round_bf16(std::vector<float> v) {
  for (float& x : v) x = bf16_to_float(float_to_bf16(x));
  return v;
}

// Expects |got - want| <= atol + rtol * |want| everywhere; reports the worst element.
// Runs f and expects a vacc::Error whose message contains `needle`.
template <typename F>
void expect_error(F&& f, const std::string& needle) {
  try {
    f();
    ADD_FAILURE() << "expected an error mentioning '" << needle << "'";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos)
        << "the error '" << e.what() << "' does not mention '" << needle << "'";
  }
}

template <typename A, typename B>
void expect_close(const A& got, const B& want, double rtol, double atol, const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  size_t worst = 0;
  double worst_excess = -1.0;
  size_t bad = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    double g = double(got[i]), w = double(want[i]);
    double excess = std::abs(g - w) - (atol + rtol * std::abs(w));
    if (!(excess <= 0.0)) ++bad;
    if (!(excess <= worst_excess) || std::isnan(g)) {
      worst_excess = excess;
      worst = i;
    }
  }
  EXPECT_EQ(bad, 0u) << what << ": " << bad << " of " << got.size()
                     << " elements out of tolerance; worst at " << worst << ": got "
                     << double(got[worst]) << ", want " << double(want[worst]);
}

// Rows for Backend::argmax_rows (7 rows of 600: wider than a GPU block's 256 threads) and the
// index each must give: a planted maximum, ties (the first wins), NaNs (never win), and rows
// whose largest value is not finite (-1).
struct ArgmaxCase {
  int64_t rows = 7, cols = 600;
  std::vector<float> x;
  std::vector<int32_t> want;
};
inline ArgmaxCase argmax_case() {
  ArgmaxCase c;
  const float nan = std::numeric_limits<float>::quiet_NaN(),
              inf = std::numeric_limits<float>::infinity();
  c.x = random_vector(size_t(c.rows * c.cols), 31, -1.0f, 1.0f);
  auto at = [&](int64_t r, int64_t i) -> float& { return c.x[size_t(r * c.cols + i)]; };
  at(0, 517) = 2.5f;
  for (int64_t i : {300, 40, 599}) at(1, i) = 5.0f;
  at(2, 0) = nan, at(2, 10) = nan, at(2, 599) = 3.0f;
  for (int64_t i = 0; i < c.cols; ++i) at(3, i) = nan, at(4, i) = -inf, at(6, i) = nan;
  at(5, 200) = inf;
  at(6, 333) = -2.0f;
  c.want = {517, 40, 599, -1, -1, -1, 333};
  return c;
}
// Backend::argmax_rows of host values (rows, cols), back on the host.
inline std::vector<int32_t> argmax_rows_of(Backend& be, const std::vector<float>& x, int64_t rows,
                                           int64_t cols) {
  Tensor out = be.empty({rows}, DType::I32, MemoryCategory::Buffers, "argmax");
  be.argmax_rows(to_device(be, x, {rows, cols}), out);
  std::vector<int32_t> got(static_cast<size_t>(rows));
  be.download(out, got.data());
  return got;
}

// Backend::sample_rows of host logits (rows, cols) with each row's 64 random bits, back on the
// host.
inline std::vector<int32_t> sample_rows_of(Backend& be, const std::vector<float>& logits,
                                           int64_t rows, int64_t cols,
                                           const std::vector<uint64_t>& bits, float temperature,
                                           float top_p) {
  Tensor random_bits = be.empty({rows, 2}, DType::I32, MemoryCategory::Buffers, "random bits");
  be.upload(bits.data(), random_bits);
  Tensor out = be.empty({rows}, DType::I32, MemoryCategory::Buffers, "tokens");
  be.sample_rows(to_device(be, logits, {rows, cols}), random_bits, temperature, top_p, out);
  std::vector<int32_t> got(static_cast<size_t>(rows));
  be.download(out, got.data());
  return got;
}

// Rows for Backend::sample_rows whose draws are known exactly: weight 1 (logit 0) at six
// tokens, 0 (logit -1000) elsewhere, so the weights are exact on every backend and the six
// tie. The nucleus of top_p 0.5 is the first three of them in token order; a draw with random
// bits b picks the (b * n / 2^64)-th of the nucleus's n tokens.
struct TiedSamplingCase {
  int64_t cols = 600;
  std::vector<int32_t> tokens = {5, 17, 100, 101, 333, 590};
  std::vector<float> row() const {
    std::vector<float> x(static_cast<size_t>(cols), -1000.0f);
    for (int32_t t : tokens) x[size_t(t)] = 0.0f;
    return x;
  }
  // n such rows, one after another.
  std::vector<float> rows(int n) const {
    std::vector<float> x;
    for (int r = 0; r < n; ++r) {
      const std::vector<float> one = row();
      x.insert(x.end(), one.begin(), one.end());
    }
    return x;
  }
  // Random bits whose draw is the k-th of n tokens: the middle of its share of 2^64.
  static uint64_t bits_for(int k, int n) {
    return uint64_t(((unsigned __int128)(2 * k + 1) << 64) / (2 * unsigned(n)));
  }
};

}  // namespace vacc::test
