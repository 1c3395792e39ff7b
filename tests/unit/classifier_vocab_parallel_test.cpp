// The vocabulary-parallel cross-entropy pieces (classifier_logsumexp and
// classifier_cross_entropy_backward): the vocabulary split into shards, each shard's
// log-sum-exp and label logit combined on the host as the tensor-parallel hooks would, must
// give the loss of the whole-vocabulary classifier_cross_entropy and of a naive double
// reference; the shards' dx summed and their dweight rows side by side its gradients. Also
// row chunking, ignored rows, overwrite/accumulate conventions, bf16, the profiling
// pass-through and label validation.
#include <algorithm>
#include <sstream>

#include "test_util.h"
#include "vacc/kernels/profiling_backend.h"

namespace vacc::test {
namespace {

struct Reference {
  double loss = 0.0;
  std::vector<double> dx, dw;  // grad_scale * d(sum loss)/dx, /dw
};

// bf16_logits: each logit rounded (through f32) to bf16 first, as mixed precision keeps them.
Reference naive(const std::vector<float>& x, const std::vector<float>& w,
                const std::vector<int32_t>& labels, int64_t n, int64_t c, int64_t v,
                double grad_scale, bool bf16_logits) {
  Reference ref;
  ref.dx.assign(size_t(n * c), 0.0);
  ref.dw.assign(size_t(v * c), 0.0);
  std::vector<double> logits(static_cast<size_t>(v));
  for (int64_t i = 0; i < n; ++i) {
    if (labels[size_t(i)] == -100) continue;
    double mx = -INFINITY;
    for (int64_t j = 0; j < v; ++j) {
      double s = 0.0;
      for (int64_t k = 0; k < c; ++k) s += double(x[size_t(i * c + k)]) * double(w[size_t(j * c + k)]);
      if (bf16_logits) s = double(bf16_to_float(float_to_bf16(float(s))));
      logits[size_t(j)] = s;
      mx = std::max(mx, s);
    }
    double sum = 0.0;
    for (int64_t j = 0; j < v; ++j) sum += std::exp(logits[size_t(j)] - mx);
    const double lse = mx + std::log(sum);
    const int32_t label = labels[size_t(i)];
    ref.loss += lse - logits[size_t(label)];
    for (int64_t j = 0; j < v; ++j) {
      const double g = grad_scale * (std::exp(logits[size_t(j)] - lse) - (j == label ? 1.0 : 0.0));
      for (int64_t k = 0; k < c; ++k) {
        ref.dx[size_t(i * c + k)] += g * double(w[size_t(j * c + k)]);
        ref.dw[size_t(j * c + k)] += g * double(x[size_t(i * c + k)]);
      }
    }
  }
  return ref;
}

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

// The vocabulary split as ModelShard::tensor_parallel splits it: ranges of ceil(V / shards).
std::vector<std::pair<int64_t, int64_t>> vocab_ranges(int64_t v, int shards) {
  const int64_t chunk = (v + shards - 1) / shards;
  std::vector<std::pair<int64_t, int64_t>> out;
  for (int r = 0; r < shards; ++r) out.push_back({r * chunk, std::min(v, (r + 1) * chunk)});
  return out;
}

struct Combined {
  double loss = 0.0;
  std::vector<float> lse;          // global, per row
  std::vector<float> dx;           // sum of the shards' dx
  std::vector<float> dw;           // the shards' dweight rows, in vocabulary order
  std::vector<std::vector<float>> shard_lse, shard_target;
};

// Runs the shards one after another, combining as the hooks do (log-sum-exp of the shards'
// lse; sum of the label logits; sum of dx). dx starts as garbage in every shard (it must be
// overwritten); dweight starts at dw_init.
Combined run_shards(Backend& be, const std::vector<float>& x, const std::vector<float>& w,
                    const std::vector<int32_t>& labels, int64_t n, int64_t c, int64_t v, int shards,
                    DType dt, float grad_scale, const std::vector<float>& dw_init) {
  const auto ranges = vocab_ranges(v, shards);
  Tensor X = to_device(be, x, {n, c}, dt);
  Tensor L = ids_to_device(be, labels);
  Combined out;
  std::vector<double> target(static_cast<size_t>(n), 0.0);
  for (const auto& [b, e] : ranges) {
    const int64_t vs = e - b;
    std::vector<float> ws(w.begin() + b * c, w.begin() + e * c);
    Tensor W = to_device(be, ws, {vs, c}, dt);
    Tensor lse = to_device(be, std::vector<float>(size_t(n), 5.0f), {n});
    Tensor tl = to_device(be, std::vector<float>(size_t(n), 5.0f), {n});
    be.classifier_logsumexp(X, W, b, L, lse, tl);
    out.shard_lse.push_back(to_host(be, lse));
    out.shard_target.push_back(to_host(be, tl));
  }
  out.lse.assign(size_t(n), 0.0f);
  for (int64_t i = 0; i < n; ++i) {
    double mx = -INFINITY;
    for (int s = 0; s < shards; ++s) mx = std::max(mx, double(out.shard_lse[size_t(s)][size_t(i)]));
    double sum = 0.0;
    for (int s = 0; s < shards; ++s) sum += std::exp(double(out.shard_lse[size_t(s)][size_t(i)]) - mx);
    out.lse[size_t(i)] = float(mx + std::log(sum));
    for (int s = 0; s < shards; ++s) target[size_t(i)] += out.shard_target[size_t(s)][size_t(i)];
    if (labels[size_t(i)] != -100) out.loss += double(out.lse[size_t(i)]) - target[size_t(i)];
  }
  Tensor G = to_device(be, out.lse, {n});
  out.dx.assign(size_t(n * c), 0.0f);
  for (const auto& [b, e] : ranges) {
    const int64_t vs = e - b;
    std::vector<float> ws(w.begin() + b * c, w.begin() + e * c);
    Tensor W = to_device(be, ws, {vs, c}, dt);
    Tensor dX = to_device(be, std::vector<float>(size_t(n * c), 7.0f), {n, c});
    std::vector<float> init(dw_init.begin() + b * c, dw_init.begin() + e * c);
    Tensor dW = to_device(be, init, {vs, c});
    be.classifier_cross_entropy_backward(X, W, b, L, G, grad_scale, &dX, &dW);
    const auto dx = to_host(be, dX);
    for (size_t k = 0; k < dx.size(); ++k) out.dx[k] += dx[k];
    const auto dw = to_host(be, dW);
    out.dw.insert(out.dw.end(), dw.begin(), dw.end());
  }
  return out;
}

struct Case {
  int64_t n, c, v;
  int shards;
  double ignore_fraction;
};

std::string case_name(const ::testing::TestParamInfo<Case>& info) {
  const Case& k = info.param;
  std::ostringstream name;
  name << "N" << k.n << "_C" << k.c << "_V" << k.v << "_shards" << k.shards << "_ignore"
       << int(k.ignore_fraction * 100);
  return name.str();
}

class ClassifierVocabParallelTest : public ::testing::TestWithParam<Case> {};

TEST_P(ClassifierVocabParallelTest, ShardsCombineToTheWholeVocabulary) {
  const auto [n, c, v, shards, ignore_fraction] = GetParam();
  auto be = make_cpu_backend();
  auto x = random_vector(size_t(n * c), 11, -1.0f, 1.0f);
  const float w_range = 3.0f / std::sqrt(float(c));
  auto w = random_vector(size_t(v * c), 12, -w_range, w_range);
  auto labels = random_labels(n, v, ignore_fraction, 13);
  const float grad_scale = 0.37f;
  auto dw_init = random_vector(size_t(v * c), 14, -0.01f, 0.01f);

  for (DType dt : {DType::F32, DType::BF16}) {
    const bool bf = dt == DType::BF16;
    const std::string tag = std::string(" ").append(dtype_name(dt));
    std::vector<float> xr = bf ? round_bf16(x) : x, wr = bf ? round_bf16(w) : w;
    const Reference ref = naive(xr, wr, labels, n, c, v, grad_scale, bf);
    std::vector<double> want_dw(ref.dw.size());
    for (size_t i = 0; i < want_dw.size(); ++i) want_dw[i] = ref.dw[i] + double(dw_init[i]);

    const Combined got = run_shards(*be, x, w, labels, n, c, v, shards, dt, grad_scale, dw_init);
    const double loss_rtol = bf ? 1e-4 : 1e-5;
    const double grad_rtol = bf ? 2e-2 : 1e-4, grad_floor = bf ? 1e-2 : 1e-4;
    EXPECT_NEAR(got.loss, ref.loss, loss_rtol * std::abs(ref.loss) + 1e-6) << "loss" << tag;
    expect_close(got.dx, ref.dx, grad_rtol, grad_floor * max_abs(ref.dx) + 1e-12, "dx" + tag);
    expect_close(got.dw, want_dw, grad_rtol, grad_floor * max_abs(ref.dw) + 1e-12, "dw" + tag);

    // The same as the whole-vocabulary fused kernel.
    Tensor X = to_device(*be, x, {n, c}, dt), W = to_device(*be, w, {v, c}, dt);
    Tensor L = ids_to_device(*be, labels);
    Tensor loss = to_device(*be, {0.0f}, {1});
    Tensor dX = to_device(*be, std::vector<float>(size_t(n * c), 0.0f), {n, c});
    Tensor dW = to_device(*be, dw_init, {v, c});
    be->classifier_cross_entropy(X, W, L, grad_scale, loss, &dX, &dW);
    const double full_loss = to_host(*be, loss)[0];
    EXPECT_NEAR(got.loss, full_loss, loss_rtol * std::abs(full_loss) + 1e-6) << "vs fused" << tag;
    expect_close(got.dx, to_host(*be, dX), grad_rtol, grad_floor * max_abs(ref.dx) + 1e-12,
                 "dx vs fused" + tag);
    expect_close(got.dw, to_host(*be, dW), grad_rtol, grad_floor * max_abs(ref.dw) + 1e-12,
                 "dw vs fused" + tag);

    // Ignored rows: lse and label logit 0 in every shard, dx exactly 0. A label outside a
    // shard: label logit 0 there.
    const auto ranges = vocab_ranges(v, shards);
    for (int64_t i = 0; i < n; ++i) {
      const int32_t l = labels[size_t(i)];
      for (int s = 0; s < shards; ++s) {
        const bool ignored = l == -100;
        const bool inside = !ignored && l >= ranges[size_t(s)].first && l < ranges[size_t(s)].second;
        if (ignored) {
          ASSERT_EQ(got.shard_lse[size_t(s)][size_t(i)], 0.0f) << "row " << i << tag;
        }
        if (!inside) {
          ASSERT_EQ(got.shard_target[size_t(s)][size_t(i)], 0.0f) << "row " << i << tag;
        }
      }
      if (l != -100) continue;
      for (int64_t k = 0; k < c; ++k) ASSERT_EQ(got.dx[size_t(i * c + k)], 0.0f) << "row " << i;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, ClassifierVocabParallelTest,
    ::testing::Values(Case{1, 8, 7, 2, 0.0}, Case{5, 33, 1000, 4, 0.2},
                      Case{37, 64, 5003, 3, 0.3}, Case{300, 8, 7, 4, 0.5},
                      Case{300, 33, 1000, 1, 0.25},
                      // 32 MiB of f32 logits hold 167 rows of a 50000-row shard: several chunks,
                      // contiguous (no ignores) and gathered.
                      Case{301, 8, 100000, 2, 0.0}, Case{300, 8, 100000, 2, 0.3}),
    case_name);

TEST(ClassifierVocabParallel, OnlyTheRequestedGradientsAreWritten) {
  const int64_t n = 20, c = 8, v = 30;
  auto be = make_cpu_backend();
  auto x = random_vector(size_t(n * c), 31), w = random_vector(size_t(v * c), 32);
  auto labels = random_labels(n, v, 0.2, 33);
  Tensor X = to_device(*be, x, {n, c}), W = to_device(*be, w, {v, c});
  Tensor L = ids_to_device(*be, labels);
  Tensor G = to_device(*be, std::vector<float>(size_t(n), 4.0f), {n});
  auto prev = random_vector(size_t(v * c), 34);
  Tensor dX = to_device(*be, std::vector<float>(size_t(n * c), 7.0f), {n, c});
  Tensor dW = to_device(*be, prev, {v, c});
  be->classifier_cross_entropy_backward(X, W, 0, L, G, 1.0f, nullptr, &dW);
  be->classifier_cross_entropy_backward(X, W, 0, L, G, 1.0f, &dX, nullptr);
  auto dx1 = to_host(*be, dX), dw1 = to_host(*be, dW);
  // dweight accumulates: a second call adds the same again; dx is overwritten.
  be->classifier_cross_entropy_backward(X, W, 0, L, G, 1.0f, &dX, &dW);
  expect_close(to_host(*be, dX), dx1, 0.0, 0.0, "dx overwritten");
  std::vector<double> want(prev.size());
  for (size_t i = 0; i < want.size(); ++i) want[i] = 2.0 * double(dw1[i]) - double(prev[i]);
  expect_close(to_host(*be, dW), want, 1e-5, 1e-6, "dweight accumulated");
}

TEST(ClassifierVocabParallel, ProfilingBackendPassesThrough) {
  const int64_t n = 9, c = 8, v = 40;
  auto cpu = make_cpu_backend();
  ProfilingBackend profiling(*cpu);
  auto x = random_vector(size_t(n * c), 41), w = random_vector(size_t(v * c), 42);
  auto labels = random_labels(n, 2 * v, 0.2, 43);  // about half of them in this shard [v, 2v)
  // lse and label logits of the shard through a backend.
  auto forward = [&](Backend& be) {
    Tensor X = to_device(be, x, {n, c}), W = to_device(be, w, {v, c});
    Tensor L = ids_to_device(be, labels);
    Tensor lse = to_device(be, std::vector<float>(size_t(n), 0.0f), {n});
    Tensor tl = to_device(be, std::vector<float>(size_t(n), 0.0f), {n});
    be.classifier_logsumexp(X, W, v, L, lse, tl);
    Tensor dX = to_device(be, std::vector<float>(size_t(n * c), 0.0f), {n, c});
    be.classifier_cross_entropy_backward(X, W, v, L, lse, 1.0f, &dX, nullptr);
    return std::vector<std::vector<float>>{to_host(be, lse), to_host(be, tl), to_host(be, dX)};
  };
  EXPECT_EQ(forward(profiling), forward(*cpu));
  EXPECT_EQ(profiling.by_op().at("classifier_logsumexp").calls, 1);
  EXPECT_EQ(profiling.by_op().at("classifier_cross_entropy_backward").calls, 1);
}

TEST(ClassifierVocabParallel, NegativeLabelThrowsNamingRow) {
  const int64_t n = 3, c = 4, v = 5;
  auto be = make_cpu_backend();
  Tensor X = to_device(*be, random_vector(size_t(n * c), 51), {n, c});
  Tensor W = to_device(*be, random_vector(size_t(v * c), 52), {v, c});
  Tensor L = ids_to_device(*be, {1, -7, 2});
  Tensor lse = to_device(*be, std::vector<float>(size_t(n), 0.0f), {n});
  Tensor tl = to_device(*be, std::vector<float>(size_t(n), 0.0f), {n});
  expect_error([&] { be->classifier_logsumexp(X, W, 0, L, lse, tl); }, "label -7 of row 1");
  expect_error([&] { be->classifier_cross_entropy_backward(X, W, 0, L, lse, 1.0f, nullptr, nullptr); },
               "label -7 of row 1");
  Tensor short_lse = to_device(*be, std::vector<float>(2, 0.0f), {2});
  expect_error([&] { be->classifier_logsumexp(X, W, 0, ids_to_device(*be, {1, 2, 3}), short_lse, tl); },
               "lse");
}

}  // namespace
}  // namespace vacc::test
