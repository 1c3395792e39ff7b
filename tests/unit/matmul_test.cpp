// Matrix products (oneDNN) against a naive double-precision loop, all transposes, f32 and bf16.
#include "test_util.h"

namespace vacc::test {
namespace {

std::vector<double> naive_matmul(const std::vector<float>& a, bool ta, const std::vector<float>& b,
                                 bool tb, int64_t M, int64_t N, int64_t K) {
  std::vector<double> c(size_t(M * N), 0.0);
  for (int64_t i = 0; i < M; ++i)
    for (int64_t j = 0; j < N; ++j) {
      double s = 0;
      for (int64_t k = 0; k < K; ++k)
        s += double(ta ? a[k * M + i] : a[i * K + k]) * double(tb ? b[j * K + k] : b[k * N + j]);
      c[i * N + j] = s;
    }
  return c;
}

struct MatmulCase {
  int64_t M, N, K;
  bool ta, tb;
};

class MatmulTest : public ::testing::TestWithParam<MatmulCase> {};

TEST_P(MatmulTest, MatchesNaiveInF32AndBf16) {
  auto [M, N, K, ta, tb] = GetParam();
  auto be = make_cpu_backend();
  auto a = random_vector(size_t(M * K), 1), b = random_vector(size_t(K * N), 2);
  auto bias = random_vector(size_t(N), 3);
  Shape sa = ta ? Shape{K, M} : Shape{M, K}, sb = tb ? Shape{N, K} : Shape{K, N};
  for (DType dt : {DType::F32, DType::BF16}) {
    std::vector<float> ar = dt == DType::BF16 ? round_bf16(a) : a;
    std::vector<float> br = dt == DType::BF16 ? round_bf16(b) : b;
    auto want = naive_matmul(ar, ta, br, tb, M, N, K);
    Tensor A = to_device(*be, a, sa, dt), B = to_device(*be, b, sb, dt);
    Tensor C = be->empty({M, N}, DType::F32, MemoryCategory::Buffers, "c");
    be->matmul(A, ta, B, tb, C);
    // bf16 inputs are exact after rounding; only the f32 accumulation order differs.
    expect_close(to_host(*be, C), want, 1e-4, 1e-4, "plain " + dtype_name(dt));

    // beta accumulates into what is there; the bias is added per column.
    auto prev = random_vector(size_t(M * N), 4);
    Tensor D = to_device(*be, prev, {M, N});
    be->matmul(A, ta, B, tb, D, 1.0f, 1.0f);
    std::vector<double> want_acc(want.size());
    for (size_t i = 0; i < want.size(); ++i) want_acc[i] = want[i] + prev[i];
    expect_close(to_host(*be, D), want_acc, 1e-4, 1e-4, "beta=1 " + dtype_name(dt));

    // matmul_add: the same sum into another tensor, the addend untouched; or into the addend.
    Tensor Addend = to_device(*be, prev, {M, N});
    be->matmul_add(A, ta, B, tb, Addend, C);
    expect_close(to_host(*be, C), want_acc, 1e-4, 1e-4, "matmul_add " + dtype_name(dt));
    EXPECT_EQ(to_host(*be, Addend), prev) << "matmul_add changed its addend";
    be->matmul_add(A, ta, B, tb, Addend, Addend);
    expect_close(to_host(*be, Addend), want_acc, 1e-4, 1e-4, "matmul_add in place");

    Tensor Bias = to_device(*be, bias, {N});
    be->matmul(A, ta, B, tb, C, 1.0f, 0.0f, &Bias);
    std::vector<double> want_bias(want.size());
    for (int64_t i = 0; i < M; ++i)
      for (int64_t j = 0; j < N; ++j) want_bias[i * N + j] = want[i * N + j] + bias[j];
    expect_close(to_host(*be, C), want_bias, 1e-4, 1e-4, "bias " + dtype_name(dt));
  }
}

INSTANTIATE_TEST_SUITE_P(Shapes, MatmulTest,
                         ::testing::Values(MatmulCase{1, 1, 1, false, false},
                                           MatmulCase{7, 13, 5, false, true},
                                           MatmulCase{33, 17, 65, true, false},
                                           MatmulCase{64, 96, 128, true, true},
                                           MatmulCase{130, 70, 300, false, false}));

TEST(Matmul, RejectsMismatchedInnerDimension) {
  auto be = make_cpu_backend();
  Tensor a = be->zeros({3, 4}, DType::F32, MemoryCategory::Buffers, "a");
  Tensor b = be->zeros({5, 6}, DType::F32, MemoryCategory::Buffers, "b");
  Tensor c = be->zeros({3, 6}, DType::F32, MemoryCategory::Buffers, "c");
  EXPECT_THROW(be->matmul(a, false, b, false, c), Error);
  // matmul_add: an addend of another shape or dtype than out.
  Tensor a6 = be->zeros({6, 4}, DType::F32, MemoryCategory::Buffers, "a");
  Tensor short_addend = be->zeros({2, 6}, DType::F32, MemoryCategory::Buffers, "addend");
  Tensor bf16_addend = be->zeros({3, 6}, DType::BF16, MemoryCategory::Buffers, "addend");
  EXPECT_THROW(be->matmul_add(a, false, a6, true, short_addend, c), Error);
  EXPECT_THROW(be->matmul_add(a, false, a6, true, bf16_addend, c), Error);
  EXPECT_NO_THROW(be->matmul_add(a, false, a6, true, c, c));
}

}  // namespace
}  // namespace vacc::test
