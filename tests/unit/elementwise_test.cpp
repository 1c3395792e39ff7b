// Data movement and element-wise kernels: copy/convert between f32 and bf16 (round to nearest
// even), fill, add (with aliasing), scale, sum_of_squares and bias_backward (both accumulate).
#include <cmath>
#include <cstring>
#include <limits>

#include "test_util.h"

namespace vacc::test {
namespace {

uint32_t bits_of(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}
float float_of(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// The bf16 nearest to a finite f32, ties to even, by comparing the distances in double (an
// independent route from the bit trick the library uses).
float bf16_nearest_even(float x) {
  uint32_t u = bits_of(x);
  float lo = float_of(u & 0xffff0000u);          // truncated toward zero
  float hi = float_of((u & 0xffff0000u) + 0x10000u);  // next bf16 away from zero
  double dlo = std::abs(double(x) - double(lo)), dhi = std::abs(double(hi) - double(x));
  if (dlo < dhi) return lo;
  if (dhi < dlo) return hi;
  return ((bits_of(lo) >> 16) & 1u) ? hi : lo;  // a tie: the one with an even last bit
}

std::vector<uint16_t> bf16_bits(Backend& be, const Tensor& t) {
  std::vector<uint16_t> out(size_t(t.numel()));
  be.download(t, out.data());
  return out;
}

TEST(Convert, F32ToBf16RoundsToNearestEven) {
  auto be = make_cpu_backend();
  const float ulp = std::ldexp(1.0f, -7);  // bf16 spacing in [1, 2)
  std::vector<float> special = {
      1.0f + ulp / 2,                  // exactly halfway between 1 and 1+ulp: down to even (1)
      1.0f + 3 * ulp / 2,              // exactly halfway between 1+ulp and 1+2ulp: up to even
      -(1.0f + ulp / 2),               // negative tie: magnitude down to even
      -(1.0f + 3 * ulp / 2),           // negative tie: magnitude up to even
      1.0f + ulp / 2 + std::ldexp(1.0f, -20),  // just above halfway: up
      1.0f + ulp / 2 - std::ldexp(1.0f, -20),  // just below halfway: down
      0.0f, -0.0f, 3.0f, 1e-30f, -65504.0f, 0.1f};
  std::vector<float> want_special = {1.0f,
                                     1.0f + 2 * ulp,
                                     -1.0f,
                                     -(1.0f + 2 * ulp),
                                     1.0f + ulp,
                                     1.0f,
                                     0.0f,
                                     -0.0f,
                                     3.0f,
                                     bf16_nearest_even(1e-30f),
                                     -65536.0f,
                                     float_of(0x3dcd0000u)};  // 0.1 = 0x3dcccccd -> 0x3dcd
  auto x = random_vector(1037, 7, -1000.0f, 1000.0f);
  x.insert(x.begin(), special.begin(), special.end());
  const int64_t n = int64_t(x.size());

  Tensor F = to_device(*be, x, {n});
  Tensor B = be->empty({n}, DType::BF16, MemoryCategory::Buffers, "bf16");
  be->copy(F, B);
  auto got = to_host(*be, B);  // bf16 -> f32 is exact
  for (size_t i = 0; i < special.size(); ++i) {
    EXPECT_EQ(bits_of(got[i]), bits_of(want_special[i]))
        << "special " << i << ": " << special[i] << " -> " << got[i] << ", want " << want_special[i];
  }
  for (size_t i = 0; i < x.size(); ++i)
    ASSERT_EQ(got[i], bf16_nearest_even(x[i])) << "element " << i << " = " << x[i];
  // The bits are the top half of the f32 result.
  auto bits = bf16_bits(*be, B);
  for (size_t i = 0; i < x.size(); ++i)
    ASSERT_EQ(uint32_t(bits[i]) << 16, bits_of(got[i])) << "element " << i;

  // NaN stays NaN, including NaNs whose payload is only in the low 16 bits (which rounding
  // would carry into infinity, or past it); the largest f32 rounds to infinity.
  std::vector<float> edge = {std::nanf(""), float_of(0x7f800001u), float_of(0xffffffffu),
                             float_of(0x7fff8000u), 3.4028235e38f,
                             -std::numeric_limits<float>::infinity()};
  Tensor FE = to_device(*be, edge, {int64_t(edge.size())});
  Tensor BE = be->empty({int64_t(edge.size())}, DType::BF16, MemoryCategory::Buffers, "bf16");
  be->copy(FE, BE);
  auto ge = to_host(*be, BE);
  for (size_t i = 0; i < 4; ++i) EXPECT_TRUE(std::isnan(ge[i])) << "NaN " << i << " -> " << ge[i];
  EXPECT_EQ(ge[4], std::numeric_limits<float>::infinity());
  EXPECT_EQ(ge[5], -std::numeric_limits<float>::infinity());
}

TEST(Convert, Bf16ToF32IsExactAndSameDtypeCopies) {
  auto be = make_cpu_backend();
  // Every finite positive and negative bf16 in a spread of exponents.
  std::vector<uint16_t> bits;
  for (uint32_t b = 0; b < 0x10000u; b += 37)
    if (((b >> 7) & 0xffu) != 0xffu) bits.push_back(uint16_t(b));
  const int64_t n = int64_t(bits.size());
  Tensor B = be->empty({n}, DType::BF16, MemoryCategory::Buffers, "bf16");
  be->upload(bits.data(), B);
  Tensor F = be->empty({n}, DType::F32, MemoryCategory::Buffers, "f32");
  be->copy(B, F);
  std::vector<float> got(static_cast<size_t>(n));
  be->download(F, got.data());
  for (size_t i = 0; i < bits.size(); ++i)
    ASSERT_EQ(bits_of(got[i]), uint32_t(bits[i]) << 16) << "bf16 bits " << bits[i];

  // Round trip f32 -> bf16 -> f32 of bf16 values is the identity.
  Tensor B2 = be->empty({n}, DType::BF16, MemoryCategory::Buffers, "bf16");
  be->copy(F, B2);
  EXPECT_EQ(bf16_bits(*be, B2), bits);

  // Same-dtype copies are exact, into a tensor of another shape with the same numel.
  auto x = random_vector(60, 8);
  Tensor X = to_device(*be, x, {6, 10});
  Tensor Y = be->empty({4, 15}, DType::F32, MemoryCategory::Buffers, "y");
  be->copy(X, Y);
  EXPECT_EQ(to_host(*be, Y), x);
  Tensor Z = be->empty({7, 9}, DType::F32, MemoryCategory::Buffers, "z");
  EXPECT_THROW(be->copy(X, Z), Error);
}

TEST(Fill, EveryDtype) {
  auto be = make_cpu_backend();
  Tensor F = be->empty({3, 41}, DType::F32, MemoryCategory::Buffers, "f");
  be->fill(F, 0.1f);
  EXPECT_EQ(to_host(*be, F), std::vector<float>(123, 0.1f));
  Tensor B = be->empty({77}, DType::BF16, MemoryCategory::Buffers, "b");
  be->fill(B, 0.1f);
  EXPECT_EQ(to_host(*be, B), std::vector<float>(77, bf16_nearest_even(0.1f)));
  Tensor I = be->empty({13}, DType::I32, MemoryCategory::Buffers, "i");
  be->fill(I, -7.0f);
  std::vector<int32_t> gi(13);
  be->download(I, gi.data());
  EXPECT_EQ(gi, std::vector<int32_t>(13, -7));
  // zeros() is fill(0).
  Tensor Zr = be->zeros({100003}, DType::F32, MemoryCategory::Buffers, "z");  // threaded path
  auto gz = to_host(*be, Zr);
  EXPECT_EQ(gz, std::vector<float>(100003, 0.0f));
}

TEST(Add, MatchesAndAllowsAliasing) {
  auto be = make_cpu_backend();
  for (int64_t n : {int64_t(1), int64_t(999), int64_t(70001)}) {
    auto a = random_vector(size_t(n), 10), b = random_vector(size_t(n), 11);
    std::vector<float> want(static_cast<size_t>(n));
    for (size_t i = 0; i < want.size(); ++i) want[i] = a[i] + b[i];  // one f32 rounding: exact
    Tensor A = to_device(*be, a, {n}), B = to_device(*be, b, {n});
    Tensor Out = be->empty({n}, DType::F32, MemoryCategory::Buffers, "out");
    be->add(A, B, Out);
    EXPECT_EQ(to_host(*be, Out), want) << "n " << n;
    EXPECT_EQ(to_host(*be, A), a) << "a unchanged, n " << n;
    be->add(A, B, A);  // out aliases a
    EXPECT_EQ(to_host(*be, A), want) << "out = a, n " << n;
    Tensor A2 = to_device(*be, a, {n});
    be->add(A2, B, B);  // out aliases b
    EXPECT_EQ(to_host(*be, B), want) << "out = b, n " << n;
  }
  auto be2 = make_cpu_backend();
  Tensor A = be2->zeros({3, 4}, DType::F32, MemoryCategory::Buffers, "a");
  Tensor B = be2->zeros({4, 3}, DType::F32, MemoryCategory::Buffers, "b");
  EXPECT_THROW(be2->add(A, B, A), Error);
  EXPECT_THROW(be2->add(A, A, B), Error);  // out of another shape
  Tensor AB = be2->zeros({3, 4}, DType::BF16, MemoryCategory::Buffers, "a bf16");
  EXPECT_THROW(be2->add(A, A, AB), Error);
}

TEST(Scale, MultipliesInPlace) {
  auto be = make_cpu_backend();
  for (int64_t n : {int64_t(5), int64_t(65537 + 3)}) {
    auto x = random_vector(size_t(n), 12);
    Tensor X = to_device(*be, x, {n});
    be->scale(X, -0.375f);
    std::vector<float> want = x;
    for (float& w : want) w *= -0.375f;  // one f32 rounding: the kernel must agree exactly
    expect_close(to_host(*be, X), want, 0.0, 0.0, "scale by -3/8, n " + std::to_string(n));
    be->scale(X, 0.0f);
    EXPECT_EQ(to_host(*be, X), std::vector<float>(size_t(n), 0.0f));
  }
}

TEST(SumOfSquares, AccumulatesIntoAcc) {
  auto be = make_cpu_backend();
  Tensor Acc = to_device(*be, {2.5f}, {1});
  double want = 2.5;
  for (int64_t n : {int64_t(1), int64_t(1031), int64_t(100003)}) {  // the last one is threaded
    auto x = random_vector(size_t(n), 13 + uint64_t(n), -3.0f, 3.0f);
    Tensor X = to_device(*be, x, {n});
    be->sum_of_squares(X, Acc);
    for (float v : x) want += double(v) * double(v);
    expect_close(to_host(*be, Acc), std::vector<double>{want}, 1e-6, 0.0,
                 "acc after n " + std::to_string(n));
  }
  // A matrix counts all its elements.
  auto m = random_vector(35, 14);
  Tensor M = to_device(*be, m, {5, 7});
  Tensor Acc2 = be->zeros({1}, DType::F32, MemoryCategory::Buffers, "acc");
  be->sum_of_squares(M, Acc2);
  double w2 = 0;
  for (float v : m) w2 += double(v) * double(v);
  expect_close(to_host(*be, Acc2), std::vector<double>{w2}, 1e-6, 0.0, "matrix");
  Tensor Bad = be->zeros({2}, DType::F32, MemoryCategory::Buffers, "acc");
  EXPECT_THROW(be->sum_of_squares(M, Bad), Error);
}

TEST(BiasBackward, AccumulatesColumnSums) {
  auto be = make_cpu_backend();
  for (auto [M, N] : {std::pair<int64_t, int64_t>{1, 1}, {37, 150}, {5, 64}, {129, 3}}) {
    auto dy = random_vector(size_t(M * N), 15);
    auto db0 = random_vector(size_t(N), 16);
    Tensor DY = to_device(*be, dy, {M, N});
    Tensor DB = to_device(*be, db0, {N});
    be->bias_backward(DY, DB);
    std::vector<double> want(db0.begin(), db0.end());
    for (int64_t i = 0; i < M; ++i)
      for (int64_t j = 0; j < N; ++j) want[size_t(j)] += dy[size_t(i * N + j)];
    std::string what = "M " + std::to_string(M) + " N " + std::to_string(N);
    expect_close(to_host(*be, DB), want, 1e-5, 1e-6 * double(M), what);
    be->bias_backward(DY, DB);  // again: adds the sums a second time
    for (int64_t i = 0; i < M; ++i)
      for (int64_t j = 0; j < N; ++j) want[size_t(j)] += dy[size_t(i * N + j)];
    expect_close(to_host(*be, DB), want, 1e-5, 2e-6 * double(M), what + " twice");
  }
  Tensor DY = be->zeros({4, 6}, DType::F32, MemoryCategory::Buffers, "dy");
  Tensor DB = be->zeros({4}, DType::F32, MemoryCategory::Buffers, "db");
  EXPECT_THROW(be->bias_backward(DY, DB), Error);
}

// Greedy decoding's next token: each row's largest value, the first of equal ones, NaNs never
// winning, and -1 where the largest is not finite.
TEST(ArgmaxRows, FirstLargestValueAndNonFiniteRows) {
  auto be = make_cpu_backend();
  const ArgmaxCase c = argmax_case();
  EXPECT_EQ(argmax_rows_of(*be, c.x, c.rows, c.cols), c.want);
  Tensor x = to_device(*be, c.x, {c.rows, c.cols});
  Tensor wrong = be->empty({c.rows + 1}, DType::I32, MemoryCategory::Buffers, "argmax");
  EXPECT_THROW(be->argmax_rows(x, wrong), Error);
}

// Sampling's next token by the rule of kernels/token_sampling_rule.h: the ties' order, the
// nucleus's boundary and the draw where they are known exactly, the argmax when greedy, -1
// where the largest logit is not finite, each row with its own random bits.
TEST(SampleRows, TiesNucleusAndDrawAsTheRuleSays) {
  auto be = make_cpu_backend();
  const TiedSamplingCase tied;
  const std::vector<float> x = tied.rows(3);
  std::vector<uint64_t> bits;
  std::vector<int32_t> want;
  for (int k = 0; k < 3; ++k) {  // top_p 0.5: the first three tokens
    bits.push_back(TiedSamplingCase::bits_for(k, 3));
    want.push_back(tied.tokens[size_t(k)]);
  }
  EXPECT_EQ(sample_rows_of(*be, x, 3, tied.cols, bits, 0.8f, 0.5f), want);
  bits = {TiedSamplingCase::bits_for(3, 6), TiedSamplingCase::bits_for(5, 6), 0};
  EXPECT_EQ(sample_rows_of(*be, x, 3, tied.cols, bits, 0.8f, 1.0f),
            (std::vector<int32_t>{101, 590, 5}));
  // top_p 0.3 of six equal weights: ceil(1.8) of them, the first two.
  bits = {TiedSamplingCase::bits_for(1, 2), ~uint64_t(0), 0};
  EXPECT_EQ(sample_rows_of(*be, x, 3, tied.cols, bits, 0.8f, 0.3f),
            (std::vector<int32_t>{17, 17, 5}));

  // Greedy (temperature or top_p 0) is the argmax; rows whose largest logit is not finite give
  // -1 when sampling too.
  const ArgmaxCase c = argmax_case();
  const std::vector<uint64_t> some_bits(size_t(c.rows), 12345);
  EXPECT_EQ(sample_rows_of(*be, c.x, c.rows, c.cols, some_bits, 0.0f, 0.9f), c.want);
  EXPECT_EQ(sample_rows_of(*be, c.x, c.rows, c.cols, some_bits, 0.7f, 0.0f), c.want);
  const std::vector<int32_t> drawn =
      sample_rows_of(*be, c.x, c.rows, c.cols, some_bits, 0.7f, 0.9f);
  for (size_t r = 0; r < drawn.size(); ++r) {
    if (c.want[r] < 0) EXPECT_EQ(drawn[r], -1) << "row " << r;
    else EXPECT_TRUE(drawn[r] >= 0 && drawn[r] < c.cols) << "row " << r << ": " << drawn[r];
  }

  Tensor logits = to_device(*be, x, {3, tied.cols});
  Tensor two_bits = be->empty({3, 2}, DType::I32, MemoryCategory::Buffers, "bits");
  Tensor one_bit = be->empty({3, 1}, DType::I32, MemoryCategory::Buffers, "bits");
  Tensor out = be->empty({3}, DType::I32, MemoryCategory::Buffers, "tokens");
  Tensor wrong = be->empty({2}, DType::I32, MemoryCategory::Buffers, "tokens");
  EXPECT_THROW(be->sample_rows(logits, one_bit, 1.0f, 0.9f, out), Error);
  EXPECT_THROW(be->sample_rows(logits, two_bits, 1.0f, 0.9f, wrong), Error);
}

}  // namespace
}  // namespace vacc::test
