// RMSNorm: forward (out and rstd) against a double-precision reference, out in f32 and bf16;
// backward (dx and dweight) against central finite differences, in double, of the scalar loss
// L = sum(out * R); accumulate_dx and the accumulation of dweight.
#include "test_util.h"

namespace vacc::test {
namespace {

constexpr float kEps = 1e-5f;

// One row of RMSNorm in double.
void naive_row(const double* x, const double* w, int64_t C, double eps, double* y, double* rstd) {
  double ss = 0;
  for (int64_t j = 0; j < C; ++j) ss += x[j] * x[j];
  double r = 1.0 / std::sqrt(ss / double(C) + eps);
  if (rstd) *rstd = r;
  for (int64_t j = 0; j < C; ++j) y[j] = x[j] * r * w[j];
}

std::vector<double> to_double(const std::vector<float>& v) { return {v.begin(), v.end()}; }

class RmsNormTest : public ::testing::TestWithParam<int64_t> {};

TEST_P(RmsNormTest, ForwardMatchesNaiveF32AndBf16) {
  const int64_t C = GetParam(), N = 7;
  auto be = make_cpu_backend();
  // Rows of very different scales, so rstd matters.
  auto x = random_vector(size_t(N * C), 100 + uint64_t(C), -2.0f, 2.0f);
  for (int64_t i = 0; i < N; ++i)
    for (int64_t j = 0; j < C; ++j) x[size_t(i * C + j)] *= std::pow(4.0f, float(i - 3));
  auto w = random_vector(size_t(C), 200 + uint64_t(C), 0.5f, 1.5f);

  auto xd = to_double(x), wd = to_double(w);
  std::vector<double> want(size_t(N * C)), want_rstd(static_cast<size_t>(N));
  for (int64_t i = 0; i < N; ++i)
    naive_row(&xd[size_t(i * C)], wd.data(), C, kEps, &want[size_t(i * C)], &want_rstd[size_t(i)]);

  Tensor X = to_device(*be, x, {N, C}), W = to_device(*be, w, {C});
  Tensor Rstd = be->empty({N}, DType::F32, MemoryCategory::Activations, "rstd");
  Tensor Out = be->empty({N, C}, DType::F32, MemoryCategory::Activations, "out");
  be->rmsnorm_forward(X, W, kEps, Out, Rstd);
  expect_close(to_host(*be, Out), want, 1e-5, 1e-7, "out f32");
  expect_close(to_host(*be, Rstd), want_rstd, 1e-5, 0.0, "rstd");

  // bf16 out: the f32 result rounded once to nearest, so within bf16's unit roundoff 2^-8
  // (relative) of the exact value, plus the f32 error above.
  Tensor OutB = be->empty({N, C}, DType::BF16, MemoryCategory::Activations, "out bf16");
  be->rmsnorm_forward(X, W, kEps, OutB, Rstd);
  expect_close(to_host(*be, OutB), want, std::ldexp(1.0, -8) + 1e-5, 1e-7, "out bf16");
  expect_close(to_host(*be, Rstd), want_rstd, 1e-5, 0.0, "rstd (bf16 call)");
}

// Gradients of L = sum_ij out_ij R_ij by central differences of the double reference.
struct FdGrads {
  std::vector<double> dx, dw;
};
FdGrads finite_differences(const std::vector<double>& x, const std::vector<double>& w,
                           const std::vector<double>& R, int64_t N, int64_t C) {
  const double h = 1e-6;
  std::vector<double> y(static_cast<size_t>(C));
  auto row_loss = [&](const double* xi, const double* wv, int64_t i) {
    naive_row(xi, wv, C, kEps, y.data(), nullptr);
    double s = 0;
    for (int64_t j = 0; j < C; ++j) s += y[size_t(j)] * R[size_t(i * C + j)];
    return s;
  };
  FdGrads g{std::vector<double>(x.size()), std::vector<double>(w.size(), 0.0)};
  std::vector<double> xi(static_cast<size_t>(C)), wp = w;
  for (int64_t i = 0; i < N; ++i) {
    // x_ij only affects row i.
    std::copy(x.begin() + i * C, x.begin() + (i + 1) * C, xi.begin());
    for (int64_t j = 0; j < C; ++j) {
      double keep = xi[size_t(j)];
      xi[size_t(j)] = keep + h;
      double lp = row_loss(xi.data(), w.data(), i);
      xi[size_t(j)] = keep - h;
      double lm = row_loss(xi.data(), w.data(), i);
      xi[size_t(j)] = keep;
      g.dx[size_t(i * C + j)] = (lp - lm) / (2 * h);
    }
    // w_j affects every row: sum the per-row differences.
    for (int64_t j = 0; j < C; ++j) {
      double keep = wp[size_t(j)];
      wp[size_t(j)] = keep + h;
      double lp = row_loss(&x[size_t(i * C)], wp.data(), i);
      wp[size_t(j)] = keep - h;
      double lm = row_loss(&x[size_t(i * C)], wp.data(), i);
      wp[size_t(j)] = keep;
      g.dw[size_t(j)] += (lp - lm) / (2 * h);
    }
  }
  return g;
}

TEST_P(RmsNormTest, BackwardMatchesFiniteDifferences) {
  const int64_t C = GetParam(), N = 5;
  auto be = make_cpu_backend();
  auto x = random_vector(size_t(N * C), 300 + uint64_t(C), -2.0f, 2.0f);
  for (int64_t j = 0; j < C; ++j) x[size_t(2 * C + j)] *= 0.01f;  // a small-scale row
  auto w = random_vector(size_t(C), 400 + uint64_t(C), -1.5f, 1.5f);
  auto R = random_vector(size_t(N * C), 500 + uint64_t(C));
  auto fd = finite_differences(to_double(x), to_double(w), to_double(R), N, C);

  Tensor X = to_device(*be, x, {N, C}), W = to_device(*be, w, {C});
  Tensor Rstd = be->empty({N}, DType::F32, MemoryCategory::Activations, "rstd");
  Tensor Out = be->empty({N, C}, DType::F32, MemoryCategory::Activations, "out");
  be->rmsnorm_forward(X, W, kEps, Out, Rstd);

  Tensor Dout = to_device(*be, R, {N, C});
  Tensor Dx = be->empty({N, C}, DType::F32, MemoryCategory::Activations, "dx");
  be->fill(Dx, 55.0f);  // overwritten without a residual
  auto dw0 = random_vector(size_t(C), 600 + uint64_t(C));
  Tensor Dw = to_device(*be, dw0, {C});
  be->rmsnorm_backward(Dout, X, W, Rstd, nullptr, Dx, nullptr, Dw);

  // dx_ij = r_i (w_j R_ij - x_ij k_i) cancels (badly for C = 1, where it is ~eps/x^2 of its
  // terms), so the f32 error is relative to the size of the terms, r_i max_j |w_j R_ij|.
  auto got_dx = to_host(*be, Dx);
  auto got_rstd = to_host(*be, Rstd);
  for (int64_t i = 0; i < N; ++i) {
    double scale = 0;
    for (int64_t j = 0; j < C; ++j)
      scale = std::max(scale, double(got_rstd[size_t(i)]) *
                                  std::abs(double(w[size_t(j)]) * R[size_t(i * C + j)]));
    std::vector<float> g(got_dx.begin() + i * C, got_dx.begin() + (i + 1) * C);
    std::vector<double> want(fd.dx.begin() + i * C, fd.dx.begin() + (i + 1) * C);
    expect_close(g, want, 1e-4, 1e-5 * scale, "dx row " + std::to_string(i));
  }
  std::vector<double> want_dw(static_cast<size_t>(C));
  double wscale = 0;
  for (int64_t j = 0; j < C; ++j) {
    want_dw[size_t(j)] = dw0[size_t(j)] + fd.dw[size_t(j)];
    wscale = std::max(wscale, std::abs(fd.dw[size_t(j)]));
  }
  expect_close(to_host(*be, Dw), want_dw, 1e-4, 1e-5 * wscale, "dweight (accumulated)");

  // A residual adds the same gradient to itself, into dx and (rounded) into the bf16 copy;
  // dweight accumulates again.
  auto dx0 = random_vector(size_t(N * C), 700 + uint64_t(C));
  Tensor Residual = to_device(*be, dx0, {N, C});
  Tensor Dx2 = be->empty({N, C}, DType::F32, MemoryCategory::Activations, "dx");
  Tensor Copy = be->empty({N, C}, DType::BF16, MemoryCategory::Activations, "dx (bf16)");
  be->rmsnorm_backward(Dout, X, W, Rstd, &Residual, Dx2, &Copy, Dw);
  std::vector<double> want_acc(size_t(N * C));
  for (size_t k = 0; k < want_acc.size(); ++k) want_acc[k] = double(dx0[k]) + double(got_dx[k]);
  const auto got_acc = to_host(*be, Dx2);
  expect_close(got_acc, want_acc, 1e-6, 1e-6, "dx with a residual");
  EXPECT_EQ(to_host(*be, Copy), round_bf16(got_acc)) << "the bf16 copy of dx";
  for (int64_t j = 0; j < C; ++j) want_dw[size_t(j)] += fd.dw[size_t(j)];
  expect_close(to_host(*be, Dw), want_dw, 1e-4, 1e-5 * wscale, "dweight (accumulated twice)");

  // The residual may be dx itself, and dout too (each element is read before it is written).
  be->rmsnorm_backward(Dout, X, W, Rstd, &Residual, Residual, nullptr, Dw);
  EXPECT_EQ(to_host(*be, Residual), got_acc) << "dx in place of its residual";
  Tensor InPlace = to_device(*be, R, {N, C});
  be->rmsnorm_backward(InPlace, X, W, Rstd, &InPlace, InPlace, nullptr, Dw);
  std::vector<double> want_self(size_t(N * C));
  for (size_t k = 0; k < want_self.size(); ++k) want_self[k] = double(R[k]) + double(got_dx[k]);
  expect_close(to_host(*be, InPlace), want_self, 1e-6, 1e-6, "dx in place of dout and residual");
  for (int64_t j = 0; j < C; ++j) want_dw[size_t(j)] += 2 * fd.dw[size_t(j)];
  expect_close(to_host(*be, Dw), want_dw, 1e-4, 1e-5 * wscale, "dweight (accumulated 4 times)");
}

INSTANTIATE_TEST_SUITE_P(AwkwardWidths, RmsNormTest, ::testing::Values(1, 7, 33, 896),
                         [](const auto& info) {
                           std::string name = "C";
                           name += std::to_string(info.param);
                           return name;
                         });

TEST(RmsNorm, RejectsBadShapes) {
  auto be = make_cpu_backend();
  Tensor X = be->zeros({3, 8}, DType::F32, MemoryCategory::Activations, "x");
  Tensor W = be->zeros({7}, DType::F32, MemoryCategory::Parameters, "w");
  Tensor Out = be->empty({3, 8}, DType::F32, MemoryCategory::Activations, "out");
  Tensor Rstd = be->empty({3}, DType::F32, MemoryCategory::Activations, "rstd");
  EXPECT_THROW(be->rmsnorm_forward(X, W, kEps, Out, Rstd), Error);
  Tensor W8 = be->zeros({8}, DType::F32, MemoryCategory::Parameters, "w");
  Tensor Rstd2 = be->empty({2}, DType::F32, MemoryCategory::Activations, "rstd");
  EXPECT_THROW(be->rmsnorm_forward(X, W8, kEps, Out, Rstd2), Error);
  // The backward reads weight and rstd as f32: other dtypes are rejected, not misread.
  Tensor Dx = be->empty({3, 8}, DType::F32, MemoryCategory::Activations, "dx");
  Tensor Dw = be->zeros({8}, DType::F32, MemoryCategory::Gradients, "dw");
  Tensor WB = be->zeros({8}, DType::BF16, MemoryCategory::Parameters, "w bf16");
  Tensor RstdB = be->zeros({3}, DType::BF16, MemoryCategory::Activations, "rstd bf16");
  Tensor RstdI = be->zeros({3}, DType::I32, MemoryCategory::Activations, "rstd i32");
  EXPECT_NO_THROW(be->rmsnorm_backward(X, X, W8, Rstd, nullptr, Dx, nullptr, Dw));
  EXPECT_THROW(be->rmsnorm_backward(X, X, WB, Rstd, nullptr, Dx, nullptr, Dw), Error);
  EXPECT_THROW(be->rmsnorm_backward(X, X, W8, RstdB, nullptr, Dx, nullptr, Dw), Error);
  EXPECT_THROW(be->rmsnorm_backward(X, X, W8, RstdI, nullptr, Dx, nullptr, Dw), Error);
  EXPECT_THROW(be->rmsnorm_backward(X, X, W8, Rstd2, nullptr, Dx, nullptr, Dw), Error);
  // A residual or a copy of another shape, or a copy that is not a float type, neither.
  Tensor Short = be->zeros({2, 8}, DType::F32, MemoryCategory::Activations, "short");
  Tensor CopyI = be->zeros({3, 8}, DType::I32, MemoryCategory::Activations, "copy i32");
  EXPECT_THROW(be->rmsnorm_backward(X, X, W8, Rstd, &Short, Dx, nullptr, Dw), Error);
  EXPECT_THROW(be->rmsnorm_backward(X, X, W8, Rstd, nullptr, Dx, &Short, Dw), Error);
  EXPECT_THROW(be->rmsnorm_backward(X, X, W8, Rstd, nullptr, Dx, &CopyI, Dw), Error);
}

}  // namespace
}  // namespace vacc::test
