// The fused output projection + cross-entropy against a naive double-precision reference
// (full logits, log-softmax, gradients), finite differences, the accumulate/overwrite/forward-
// only conventions, row chunking (several chunks, a partial last one, ignored rows gathered
// out) and label validation.
#include <algorithm>
#include <cstring>
#include <sstream>

#include "test_util.h"

namespace vacc::test {
namespace {

struct Reference {
  double loss = 0.0;
  std::vector<double> dx, dw;  // grad_scale * d(sum loss)/dx, /dw
};

// Everything in double from the (already rounded, if bf16) input values; bf16_logits: each
// logit rounded (through f32) to bf16 first, as mixed precision keeps them.
Reference naive(const std::vector<float>& x, const std::vector<float>& w,
                const std::vector<int32_t>& labels, int64_t n, int64_t c, int64_t v,
                double grad_scale, bool bf16_logits, bool grads = true) {
  Reference ref;
  if (grads) {
    ref.dx.assign(size_t(n * c), 0.0);
    ref.dw.assign(size_t(v * c), 0.0);
  }
  std::vector<double> logits(static_cast<size_t>(v));
  for (int64_t i = 0; i < n; ++i) {
    if (labels[size_t(i)] == -100) continue;
    const float* xi = x.data() + i * c;
    double mx = -INFINITY;
    for (int64_t j = 0; j < v; ++j) {
      const float* wj = w.data() + j * c;
      double s = 0.0;
      for (int64_t k = 0; k < c; ++k) s += double(xi[k]) * double(wj[k]);
      if (bf16_logits) s = double(bf16_to_float(float_to_bf16(float(s))));
      logits[size_t(j)] = s;
      mx = std::max(mx, s);
    }
    double sum = 0.0;
    for (int64_t j = 0; j < v; ++j) sum += std::exp(logits[size_t(j)] - mx);
    const double lse = mx + std::log(sum);
    const int32_t label = labels[size_t(i)];
    ref.loss += lse - logits[size_t(label)];
    if (!grads) continue;
    for (int64_t j = 0; j < v; ++j) {
      double g = std::exp(logits[size_t(j)] - lse) - (j == label ? 1.0 : 0.0);
      g *= grad_scale;
      const float* wj = w.data() + j * c;
      double* dwj = ref.dw.data() + j * c;
      double* dxi = ref.dx.data() + i * c;
      for (int64_t k = 0; k < c; ++k) {
        dxi[k] += g * double(wj[k]);
        dwj[k] += g * double(xi[k]);
      }
    }
  }
  return ref;
}

// Labels in [0, V) with about `ignore_fraction` of them -100.
std::vector<int32_t> random_labels(int64_t n, int64_t v, double ignore_fraction, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int32_t> label(0, int32_t(v - 1));
  std::uniform_real_distribution<double> u(0.0, 1.0);
  std::vector<int32_t> out(static_cast<size_t>(n));
  for (auto& l : out) l = u(rng) < ignore_fraction ? -100 : label(rng);
  return out;
}

double max_abs(const std::vector<double>& v) {
  double m = 0.0;
  for (double x : v) m = std::max(m, std::abs(x));
  return m;
}

struct Result {
  double loss;
  std::vector<float> dx, dw;
};

// Runs the backend op. dx starts as garbage (it must be overwritten); dw starts at dw_init.
Result run(Backend& be, const std::vector<float>& x, const std::vector<float>& w,
           const std::vector<int32_t>& labels, int64_t n, int64_t c, int64_t v, DType dt,
           float grad_scale, const std::vector<float>& dw_init, bool want_dx = true,
           bool want_dw = true) {
  Tensor X = to_device(be, x, {n, c}, dt), W = to_device(be, w, {v, c}, dt);
  Tensor L = ids_to_device(be, labels);
  Tensor loss = to_device(be, {0.0f}, {1});
  Tensor dX = to_device(be, std::vector<float>(size_t(n * c), 7.0f), {n, c});
  Tensor dW = to_device(be, dw_init, {v, c});
  be.classifier_cross_entropy(X, W, L, grad_scale, loss, want_dx ? &dX : nullptr,
                              want_dw ? &dW : nullptr);
  Result r;
  r.loss = double(to_host(be, loss)[0]);
  r.dx = to_host(be, dX);
  r.dw = to_host(be, dW);
  return r;
}

struct Case {
  int64_t n, c, v;
  double ignore_fraction;
};

std::string case_name(const ::testing::TestParamInfo<Case>& info) {
  const Case& k = info.param;
  std::ostringstream name;
  name << "N" << k.n << "_C" << k.c << "_V" << k.v << "_ignore" << int(k.ignore_fraction * 100);
  return name.str();
}

class ClassifierCrossEntropyTest : public ::testing::TestWithParam<Case> {};

TEST_P(ClassifierCrossEntropyTest, MatchesNaiveReferenceInF32AndBf16) {
  const auto [n, c, v, ignore_fraction] = GetParam();
  auto be = make_cpu_backend();
  // Logits of order a few units: softmax neither uniform nor one-hot.
  auto x = random_vector(size_t(n * c), 11, -1.0f, 1.0f);
  const float w_range = 3.0f / std::sqrt(float(c));
  auto w = random_vector(size_t(v * c), 12, -w_range, w_range);
  auto labels = random_labels(n, v, ignore_fraction, 13);
  const float grad_scale = 0.37f;
  auto dw_init = random_vector(size_t(v * c), 14, -0.01f, 0.01f);

  for (DType dt : {DType::F32, DType::BF16}) {
    const bool bf = dt == DType::BF16;
    std::vector<float> xr = bf ? round_bf16(x) : x, wr = bf ? round_bf16(w) : w;
    Reference ref = naive(xr, wr, labels, n, c, v, grad_scale, bf);
    std::vector<double> want_dw(ref.dw.size());
    for (size_t i = 0; i < want_dw.size(); ++i) want_dw[i] = ref.dw[i] + double(dw_init[i]);

    Result got = run(*be, x, w, labels, n, c, v, dt, grad_scale, dw_init);
    const std::string tag = std::string(" ").append(dtype_name(dt));
    // f32: 1e-5 relative on the loss, 1e-4 on gradients (with an absolute floor of 1e-4 of
    // the largest gradient, for elements that cancel). bf16: the logits are the rounded inputs'
    // products accumulated in f32, rounded to bf16 as the reference's (f32 and double rarely
    // round a logit apart), so the loss stays tight; the gradients go
    // through a bf16-rounded dlogits (relative 2^-9 per element), so they get 2e-2 relative
    // with a floor of 1e-2 of the largest gradient.
    const double loss_rtol = bf ? 1e-4 : 1e-5;
    const double grad_rtol = bf ? 2e-2 : 1e-4, grad_floor = bf ? 1e-2 : 1e-4;
    EXPECT_NEAR(got.loss, ref.loss, loss_rtol * std::abs(ref.loss) + 1e-6) << "loss" << tag;
    expect_close(got.dx, ref.dx, grad_rtol, grad_floor * max_abs(ref.dx) + 1e-12, std::string("dx").append(tag));
    expect_close(got.dw, want_dw, grad_rtol, grad_floor * max_abs(ref.dw) + 1e-12, std::string("dw").append(tag));
    // Rows labelled -100 have an exactly zero dx.
    for (int64_t i = 0; i < n; ++i) {
      if (labels[size_t(i)] != -100) continue;
      for (int64_t k = 0; k < c; ++k) {
        ASSERT_EQ(got.dx[size_t(i * c + k)], 0.0f) << "row " << i << tag;
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, ClassifierCrossEntropyTest,
    ::testing::Values(Case{1, 8, 7, 0.0}, Case{5, 33, 1000, 0.2}, Case{37, 64, 5003, 0.3},
                      Case{300, 33, 1000, 0.25}, Case{300, 8, 7, 0.5},
                      // 32 MiB of f32 logits hold 83 rows at V = 100000, 55 at V = 151936: several
                      // chunks and a partial last one, contiguous (no ignores) and gathered.
                      Case{301, 8, 100000, 0.0}, Case{300, 8, 100000, 0.3},
                      Case{120, 8, 151936, 0.1}),
    case_name);

TEST(ClassifierCrossEntropy, GradientsMatchFiniteDifferences) {
  const int64_t n = 4, c = 5, v = 6;
  auto be = make_cpu_backend();
  auto x = random_vector(size_t(n * c), 21, -1.5f, 1.5f);
  auto w = random_vector(size_t(v * c), 22, -1.5f, 1.5f);
  std::vector<int32_t> labels = {2, -100, 5, 0};
  const float grad_scale = 0.5f;
  Result got = run(*be, x, w, labels, n, c, v, DType::F32, grad_scale,
                   std::vector<float>(size_t(v * c), 0.0f));

  // Central differences of the double-precision forward, perturbing one input at a time.
  auto loss_of = [&](const std::vector<float>& xs, const std::vector<float>& ws, size_t idx,
                     bool in_x, double delta) {
    double total = 0.0;
    for (int64_t i = 0; i < n; ++i) {
      if (labels[size_t(i)] == -100) continue;
      std::vector<double> lg(static_cast<size_t>(v));
      double mx = -INFINITY;
      for (int64_t j = 0; j < v; ++j) {
        double s = 0.0;
        for (int64_t k = 0; k < c; ++k) {
          double xv = xs[size_t(i * c + k)], wv = ws[size_t(j * c + k)];
          if (in_x && size_t(i * c + k) == idx) xv += delta;
          if (!in_x && size_t(j * c + k) == idx) wv += delta;
          s += xv * wv;
        }
        lg[size_t(j)] = s;
        mx = std::max(mx, s);
      }
      double sum = 0.0;
      for (double l : lg) sum += std::exp(l - mx);
      total += mx + std::log(sum) - lg[size_t(labels[size_t(i)])];
    }
    return total;
  };
  const double h = 1e-4;
  std::vector<double> fd_dx(x.size()), fd_dw(w.size());
  for (size_t i = 0; i < x.size(); ++i)
    fd_dx[i] = grad_scale * (loss_of(x, w, i, true, h) - loss_of(x, w, i, true, -h)) / (2 * h);
  for (size_t i = 0; i < w.size(); ++i)
    fd_dw[i] = grad_scale * (loss_of(x, w, i, false, h) - loss_of(x, w, i, false, -h)) / (2 * h);
  expect_close(got.dx, fd_dx, 1e-4, 1e-5, "dx vs finite differences");
  expect_close(got.dw, fd_dw, 1e-4, 1e-5, "dw vs finite differences");
  EXPECT_NEAR(got.loss, loss_of(x, w, 0, true, 0.0), 1e-5);
}

TEST(ClassifierCrossEntropy, AccumulatesDweightOverwritesDxAndForwardOnlyMatches) {
  const int64_t n = 50, c = 16, v = 300;
  auto be = make_cpu_backend();
  auto x = random_vector(size_t(n * c), 31), w = random_vector(size_t(v * c), 32);
  auto labels = random_labels(n, v, 0.2, 33);
  auto zeros = std::vector<float>(size_t(v * c), 0.0f);
  auto prev = random_vector(size_t(v * c), 34, -5.0f, 5.0f);

  Result fresh = run(*be, x, w, labels, n, c, v, DType::F32, 1.0f, zeros);
  Result acc = run(*be, x, w, labels, n, c, v, DType::F32, 1.0f, prev);
  std::vector<double> want(prev.size());
  for (size_t i = 0; i < want.size(); ++i) want[i] = double(prev[i]) + double(fresh.dw[i]);
  expect_close(acc.dw, want, 1e-6, 1e-6, "dweight += onto existing values");
  // dx started as 7.0 everywhere in run(): overwritten, and identical between the two calls.
  expect_close(acc.dx, fresh.dx, 0.0, 0.0, "dx overwritten");

  // Forward only: the same loss, no outputs touched.
  Result fwd = run(*be, x, w, labels, n, c, v, DType::F32, 1.0f, prev, false, false);
  EXPECT_EQ(fwd.loss, fresh.loss);
  expect_close(fwd.dw, prev, 0.0, 0.0, "dweight untouched when not requested");
  expect_close(fwd.dx, std::vector<float>(size_t(n * c), 7.0f), 0.0, 0.0,
               "dx untouched when not requested");
  // Only one of the two gradients.
  Result only_dx = run(*be, x, w, labels, n, c, v, DType::F32, 1.0f, prev, true, false);
  EXPECT_EQ(only_dx.loss, fresh.loss);
  expect_close(only_dx.dx, fresh.dx, 0.0, 0.0, "dx alone");
  expect_close(only_dx.dw, prev, 0.0, 0.0, "dweight alone untouched");
  Result only_dw = run(*be, x, w, labels, n, c, v, DType::F32, 1.0f, zeros, false, true);
  expect_close(only_dw.dw, fresh.dw, 0.0, 0.0, "dweight alone");

  // loss_sum accumulates (+=) too.
  Tensor X = to_device(*be, x, {n, c}), W = to_device(*be, w, {v, c});
  Tensor L = ids_to_device(*be, labels);
  Tensor loss = to_device(*be, {2.5f}, {1});
  be->classifier_cross_entropy(X, W, L, 1.0f, loss, nullptr, nullptr);
  EXPECT_NEAR(to_host(*be, loss)[0], 2.5 + fresh.loss, 1e-4);
}

TEST(ClassifierCrossEntropy, AllRowsIgnoredGivesZero) {
  const int64_t n = 6, c = 4, v = 9;
  auto be = make_cpu_backend();
  auto x = random_vector(size_t(n * c), 41), w = random_vector(size_t(v * c), 42);
  auto prev = random_vector(size_t(v * c), 43);
  Result r = run(*be, x, w, std::vector<int32_t>(size_t(n), -100), n, c, v, DType::F32, 1.0f, prev);
  EXPECT_EQ(r.loss, 0.0);
  expect_close(r.dx, std::vector<float>(size_t(n * c), 0.0f), 0.0, 0.0, "dx zero");
  expect_close(r.dw, prev, 0.0, 0.0, "dweight unchanged");
}

TEST(ClassifierCrossEntropy, InvalidLabelThrowsNamingRowAndLabel) {
  const int64_t n = 4, c = 4, v = 10;
  auto be = make_cpu_backend();
  auto x = random_vector(size_t(n * c), 51), w = random_vector(size_t(v * c), 52);
  auto prev = random_vector(size_t(v * c), 53);
  for (int32_t bad : {int32_t(v), -5, -1, 1 << 30}) {
    std::vector<int32_t> labels = {1, -100, bad, 3};
    Tensor X = to_device(*be, x, {n, c}), W = to_device(*be, w, {v, c});
    Tensor L = ids_to_device(*be, labels);
    Tensor loss = to_device(*be, {0.0f}, {1});
    Tensor dX = be->empty({n, c}, DType::F32, MemoryCategory::Buffers, "dx");
    Tensor dW = to_device(*be, prev, {v, c});
    try {
      be->classifier_cross_entropy(X, W, L, 1.0f, loss, &dX, &dW);
      ADD_FAILURE() << "label " << bad << " did not throw";
    } catch (const Error& e) {
      std::string msg = e.what();
      EXPECT_NE(msg.find("row 2"), std::string::npos) << msg;
      EXPECT_NE(msg.find(std::to_string(bad)), std::string::npos) << msg;
    }
    // Nothing was accumulated before the check.
    expect_close(to_host(*be, dW), prev, 0.0, 0.0, "dweight untouched after a bad label");
    EXPECT_EQ(to_host(*be, loss)[0], 0.0f);
  }
}

}  // namespace
}  // namespace vacc::test
