// SwiGLU on a fused gate_up (N, 2F): forward against a double-precision reference (f32 and bf16
// out); backward against central finite differences, in double, of L = sum(out * R), with an
// f32 and a bf16 dgate_up.
#include "test_util.h"

namespace vacc::test {
namespace {

double silu(double g) { return g / (1.0 + std::exp(-g)); }

std::vector<double> naive_swiglu(const std::vector<float>& gu, int64_t N, int64_t F) {
  std::vector<double> out(size_t(N * F));
  for (int64_t i = 0; i < N; ++i)
    for (int64_t j = 0; j < F; ++j)
      out[size_t(i * F + j)] = silu(gu[size_t(i * 2 * F + j)]) * double(gu[size_t(i * 2 * F + F + j)]);
  return out;
}

// d/d gate_up of sum(silu(gate) * up * R), by central differences per element (each element of
// gate_up enters exactly one output: out_ij uses gate_ij and up_ij).
std::vector<double> fd_grad(const std::vector<float>& gu, const std::vector<float>& R, int64_t N,
                            int64_t F) {
  const double h = 1e-6;
  std::vector<double> d(gu.size());
  for (int64_t i = 0; i < N; ++i)
    for (int64_t j = 0; j < F; ++j) {
      double g = gu[size_t(i * 2 * F + j)], u = gu[size_t(i * 2 * F + F + j)];
      double r = R[size_t(i * F + j)];
      auto loss = [&](double gg, double uu) { return silu(gg) * uu * r; };
      d[size_t(i * 2 * F + j)] = (loss(g + h, u) - loss(g - h, u)) / (2 * h);
      d[size_t(i * 2 * F + F + j)] = (loss(g, u + h) - loss(g, u - h)) / (2 * h);
    }
  return d;
}

struct SwigluCase {
  int64_t N, F;
};
void PrintTo(const SwigluCase& c, std::ostream* os) { *os << "N=" << c.N << " F=" << c.F; }

class SwigluTest : public ::testing::TestWithParam<SwigluCase> {};

TEST_P(SwigluTest, ForwardMatchesNaiveF32AndBf16) {
  auto [N, F] = GetParam();
  auto be = make_cpu_backend();
  // Wide range: silu's saturated tails and its region near 0.
  auto gu = random_vector(size_t(N * 2 * F), 10 + uint64_t(F), -8.0f, 8.0f);
  auto want = naive_swiglu(gu, N, F);
  Tensor GU = to_device(*be, gu, {N, 2 * F});
  Tensor Out = be->empty({N, F}, DType::F32, MemoryCategory::Activations, "out");
  be->swiglu_forward(GU, Out);
  expect_close(to_host(*be, Out), want, 1e-5, 1e-7, "out f32");
  // bf16: one rounding of the f32 value, within bf16's unit roundoff 2^-8 (relative).
  Tensor OutB = be->empty({N, F}, DType::BF16, MemoryCategory::Activations, "out bf16");
  be->swiglu_forward(GU, OutB);
  expect_close(to_host(*be, OutB), want, std::ldexp(1.0, -8) + 1e-5, 1e-7, "out bf16");
}

TEST_P(SwigluTest, BackwardMatchesFiniteDifferences) {
  auto [N, F] = GetParam();
  auto be = make_cpu_backend();
  auto gu = random_vector(size_t(N * 2 * F), 20 + uint64_t(F), -6.0f, 6.0f);
  auto R = random_vector(size_t(N * F), 30 + uint64_t(F));
  auto want = fd_grad(gu, R, N, F);
  Tensor GU = to_device(*be, gu, {N, 2 * F});
  Tensor Dout = to_device(*be, R, {N, F});

  Tensor D = be->empty({N, 2 * F}, DType::F32, MemoryCategory::Activations, "dgate_up");
  be->fill(D, 99.0f);  // overwritten
  be->swiglu_backward(Dout, GU, D);
  expect_close(to_host(*be, D), want, 1e-4, 1e-6, "dgate_up f32");

  Tensor DB = be->empty({N, 2 * F}, DType::BF16, MemoryCategory::Activations, "dgate_up bf16");
  be->fill(DB, 99.0f);
  be->swiglu_backward(Dout, GU, DB);
  expect_close(to_host(*be, DB), want, std::ldexp(1.0, -8) + 1e-4, 1e-6, "dgate_up bf16");
}

// bf16 gate_up and dout (mixed precision keeps them in bf16): exactly the f32 results of the
// bf16-rounded values, forward and backward.
TEST_P(SwigluTest, Bf16InputsGiveTheF32ResultsOfTheirValues) {
  auto [N, F] = GetParam();
  auto be = make_cpu_backend();
  Tensor GU = to_device(*be, random_vector(size_t(N * 2 * F), 40 + uint64_t(F), -6.0f, 6.0f),
                        {N, 2 * F});
  Tensor Dout = to_device(*be, random_vector(size_t(N * F), 50 + uint64_t(F)), {N, F});
  Tensor GUb = be->empty({N, 2 * F}, DType::BF16, MemoryCategory::Activations, "gate_up bf16");
  Tensor Doutb = be->empty({N, F}, DType::BF16, MemoryCategory::Activations, "dout bf16");
  be->copy(GU, GUb);
  be->copy(Dout, Doutb);
  be->copy(GUb, GU);  // GU, Dout: the rounded values in f32
  be->copy(Doutb, Dout);
  for (DType out : {DType::F32, DType::BF16}) {
    const std::string what = "out " + dtype_name(out);
    Tensor O1 = be->empty({N, F}, out, MemoryCategory::Activations, "o1");
    Tensor O2 = be->empty({N, F}, out, MemoryCategory::Activations, "o2");
    be->swiglu_forward(GU, O1);
    be->swiglu_forward(GUb, O2);
    expect_close(to_host(*be, O2), to_host(*be, O1), 0.0, 0.0, "forward, " + what);
    Tensor D1 = be->empty({N, 2 * F}, out, MemoryCategory::Activations, "d1");
    Tensor D2 = be->empty({N, 2 * F}, out, MemoryCategory::Activations, "d2");
    be->swiglu_backward(Dout, GU, D1);
    be->swiglu_backward(Doutb, GUb, D2);
    expect_close(to_host(*be, D2), to_host(*be, D1), 0.0, 0.0, "backward, " + what);
  }
  // dout and gate_up share a dtype.
  Tensor D = be->empty({N, 2 * F}, DType::F32, MemoryCategory::Activations, "d");
  EXPECT_THROW(be->swiglu_backward(Dout, GUb, D), Error);
}

INSTANTIATE_TEST_SUITE_P(Shapes, SwigluTest,
                         ::testing::Values(SwigluCase{1, 1}, SwigluCase{7, 13}, SwigluCase{19, 97},
                                           SwigluCase{3, 1000}),
                         [](const auto& info) {
                           std::string name = "N";
                           name += std::to_string(info.param.N);
                           name += "_F";
                           name += std::to_string(info.param.F);
                           return name;
                         });

TEST(Swiglu, GateAndUpAreTheRightHalves) {
  // gate = 0 gives silu = 0 whatever up is; up = 0 gives 0 whatever gate is. One row, F = 3:
  // gate = (0, 1, 2), up = (5, 0, -1).
  auto be = make_cpu_backend();
  std::vector<float> gu = {0.0f, 1.0f, 2.0f, 5.0f, 0.0f, -1.0f};
  Tensor GU = to_device(*be, gu, {1, 6});
  Tensor Out = be->empty({1, 3}, DType::F32, MemoryCategory::Activations, "out");
  be->swiglu_forward(GU, Out);
  auto got = to_host(*be, Out);
  EXPECT_EQ(got[0], 0.0f);
  EXPECT_EQ(got[1], 0.0f);
  EXPECT_NEAR(got[2], -silu(2.0), 1e-6);
}

TEST(Swiglu, RejectsBadShapes) {
  auto be = make_cpu_backend();
  Tensor GU = be->zeros({4, 10}, DType::F32, MemoryCategory::Activations, "gate_up");
  Tensor Odd = be->zeros({4, 9}, DType::F32, MemoryCategory::Activations, "gate_up");
  Tensor Out = be->empty({4, 5}, DType::F32, MemoryCategory::Activations, "out");
  Tensor Out4 = be->empty({4, 4}, DType::F32, MemoryCategory::Activations, "out");
  EXPECT_THROW(be->swiglu_forward(GU, Out4), Error);
  EXPECT_THROW(be->swiglu_forward(Odd, Out4), Error);
  Tensor D = be->empty({4, 10}, DType::F32, MemoryCategory::Activations, "dgate_up");
  EXPECT_THROW(be->swiglu_backward(Out4, GU, D), Error);
  // An odd number of columns has no halves, in the backward too.
  Tensor DOdd = be->empty({4, 9}, DType::F32, MemoryCategory::Activations, "dgate_up");
  EXPECT_THROW(be->swiglu_backward(Out4, Odd, DOdd), Error);
}

}  // namespace
}  // namespace vacc::test
