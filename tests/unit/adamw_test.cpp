// AdamW: several steps against a double-precision transcription of PyTorch's torch.optim.AdamW
// (single-tensor, non-amsgrad, non-maximize), with weight decay and a grad_scale != 1.
#include "test_util.h"

namespace vacc::test {
namespace {

// torch/optim/adamw.py (_single_tensor_adamw), in double:
//   param.mul_(1 - lr * weight_decay)
//   exp_avg.lerp_(grad, 1 - beta1)               (m = m + (1 - b1)(g - m) = b1 m + (1 - b1) g)
//   exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
//   bias_correction1 = 1 - beta1 ** step; bias_correction2 = 1 - beta2 ** step
//   step_size = lr / bias_correction1
//   denom = (exp_avg_sq.sqrt() / sqrt(bias_correction2)).add_(eps)
//   param.addcdiv_(exp_avg, denom, value=-step_size)
// The hyperparameters are the f32 values the kernel receives, widened exactly to double.
struct NaiveAdamW {
  std::vector<double> param, m, v;

  void step(const std::vector<float>& grad, const AdamWParams& p) {
    const double lr = p.lr, b1 = p.beta1, b2 = p.beta2, eps = p.eps, wd = p.weight_decay;
    const double bc1 = 1.0 - std::pow(b1, double(p.step));
    const double bc2 = 1.0 - std::pow(b2, double(p.step));
    const double step_size = lr / bc1;
    for (size_t i = 0; i < param.size(); ++i) {
      double g = double(grad[i]) * double(p.grad_scale);
      param[i] *= 1.0 - lr * wd;
      m[i] = b1 * m[i] + (1.0 - b1) * g;
      v[i] = b2 * v[i] + (1.0 - b2) * g * g;
      double denom = std::sqrt(v[i]) / std::sqrt(bc2) + eps;
      param[i] -= step_size * m[i] / denom;
    }
  }
};

struct AdamWCase {
  int64_t n;
  float lr, weight_decay, grad_scale, eps;
};
void PrintTo(const AdamWCase& c, std::ostream* os) {
  *os << "n=" << c.n << " lr=" << c.lr << " weight_decay=" << c.weight_decay
      << " grad_scale=" << c.grad_scale << " eps=" << c.eps;
}

class AdamWTest : public ::testing::TestWithParam<AdamWCase> {};

TEST_P(AdamWTest, StepsMatchPyTorchInDouble) {
  auto [n, lr, wd, grad_scale, eps] = GetParam();
  auto be = make_cpu_backend();
  auto p0 = random_vector(size_t(n), 1, -2.0f, 2.0f);
  NaiveAdamW ref{{p0.begin(), p0.end()}, std::vector<double>(size_t(n), 0.0),
                 std::vector<double>(size_t(n), 0.0)};
  Tensor P = to_device(*be, p0, {n});
  Tensor M = be->zeros({n}, DType::F32, MemoryCategory::OptimizerState, "m");
  Tensor V = be->zeros({n}, DType::F32, MemoryCategory::OptimizerState, "v");

  AdamWParams hp;
  hp.lr = lr;
  hp.beta1 = 0.9f;
  hp.beta2 = 0.95f;
  hp.eps = eps;
  hp.weight_decay = wd;
  hp.grad_scale = grad_scale;
  const int steps = 7;
  for (int s = 1; s <= steps; ++s) {
    hp.step = s;
    // Gradients of changing scale per step, some elements tiny (eps matters there).
    auto grad = random_vector(size_t(n), 100 + uint64_t(s), -3.0f, 3.0f);
    for (size_t i = 0; i < grad.size(); i += 5) grad[i] *= 1e-6f;
    Tensor G = to_device(*be, grad, {n});
    be->adamw_step(P, G, M, V, hp);
    ref.step(grad, hp);

    // Every element's update is O(lr): compare the parameters to 1e-6 of themselves plus a
    // small fraction of the step, and the moments to 1e-6 of their typical size.
    std::string at = " after step " + std::to_string(s);
    expect_close(to_host(*be, P), ref.param, 1e-6, 1e-4 * lr, "param" + at);
    expect_close(to_host(*be, M), ref.m, 1e-6, 1e-6 * 3.0 * grad_scale, "m" + at);
    expect_close(to_host(*be, V), ref.v, 1e-6, 1e-6 * 9.0 * grad_scale * grad_scale, "v" + at);
  }
  // The parameters did move (by many tolerances).
  auto got = to_host(*be, P);
  double moved = 0;
  for (size_t i = 0; i < got.size(); ++i) moved = std::max(moved, std::abs(double(got[i]) - p0[i]));
  EXPECT_GT(moved, 100 * 1e-6 * 2.0);
}

INSTANTIATE_TEST_SUITE_P(
    Hyperparameters, AdamWTest,
    ::testing::Values(AdamWCase{1, 1e-3f, 0.1f, 0.37f, 1e-8f},
                      AdamWCase{1001, 3e-4f, 0.01f, 0.25f, 1e-8f},
                      AdamWCase{20011, 1e-2f, 0.05f, 1.7f, 1e-6f},  // over the threading cut-off
                      AdamWCase{257, 2e-3f, 0.0f, 0.5f, 1e-8f}),
    [](const auto& info) {
      std::string name = "n";  // (built with +=: GCC 12's -Wrestrict misfires on "lit" + string)
      name += std::to_string(info.param.n);
      name += "_";
      name += std::to_string(info.index);
      return name;
    });

TEST(AdamW, FirstStepIsSignDescentWithDecay) {
  // At step 1, m_hat = g and v_hat = g^2, so the update is lr * g / (|g| + eps) = lr * sign(g)
  // (for |g| >> eps), after the decay param *= 1 - lr * wd.
  auto be = make_cpu_backend();
  std::vector<float> p = {1.0f, -2.0f, 0.5f}, g = {4.0f, -0.25f, 0.0f};
  Tensor P = to_device(*be, p, {3}), G = to_device(*be, g, {3});
  Tensor M = be->zeros({3}, DType::F32, MemoryCategory::OptimizerState, "m");
  Tensor V = be->zeros({3}, DType::F32, MemoryCategory::OptimizerState, "v");
  AdamWParams hp;
  hp.lr = 0.01f;
  hp.weight_decay = 0.5f;
  hp.grad_scale = 0.5f;
  hp.step = 1;
  be->adamw_step(P, G, M, V, hp);
  auto got = to_host(*be, P);
  const double decay = 1.0 - 0.01 * 0.5;
  EXPECT_NEAR(got[0], 1.0 * decay - 0.01, 1e-6);
  EXPECT_NEAR(got[1], -2.0 * decay + 0.01, 1e-6);
  EXPECT_NEAR(got[2], 0.5 * decay, 1e-7);  // zero gradient: decay only
}

TEST(AdamW, SegmentsDecayWhereAskedAndLeaveGapsAlone) {
  // Elements [0, 2) decay, [2, 3) does not, [3, 4) is in no segment; all gradients zero, so the
  // only change is the decay param *= 1 - lr * wd.
  auto be = make_cpu_backend();
  Tensor P = to_device(*be, {1.0f, 2.0f, 3.0f, 4.0f}, {4});
  Tensor G = be->zeros({4}, DType::F32, MemoryCategory::Gradients, "g");
  Tensor M = be->zeros({4}, DType::F32, MemoryCategory::OptimizerState, "m");
  Tensor V = be->zeros({4}, DType::F32, MemoryCategory::OptimizerState, "v");
  AdamWParams hp;
  hp.lr = 0.1f;
  hp.weight_decay = 0.5f;
  // The bf16 copy receives the segments' updated values, rounded; its gap keeps what it held.
  Tensor Copy = to_device(*be, {0.0f, 0.0f, 0.0f, -7.0f}, {4}, DType::BF16);
  be->adamw_step_segments(P, G, M, V, {{0, 2, true}, {2, 1, false}}, hp, &Copy);
  const std::vector<float> got = to_host(*be, P);
  EXPECT_FLOAT_EQ(got[0], 1.0f * 0.95f);
  EXPECT_FLOAT_EQ(got[1], 2.0f * 0.95f);
  EXPECT_EQ(got[2], 3.0f);
  EXPECT_EQ(got[3], 4.0f);
  const std::vector<float> rounded = round_bf16({got[0], got[1]});
  EXPECT_EQ(to_host(*be, Copy), (std::vector<float>{rounded[0], rounded[1], 3.0f, -7.0f}));
  Tensor Short = be->zeros({3}, DType::BF16, MemoryCategory::Parameters, "copy");
  EXPECT_THROW(be->adamw_step_segments(P, G, M, V, {{0, 2, true}}, hp, &Short), Error);
}

TEST(AdamW, RejectsMismatchedTensors) {
  auto be = make_cpu_backend();
  Tensor P = be->zeros({10}, DType::F32, MemoryCategory::Parameters, "p");
  Tensor G = be->zeros({9}, DType::F32, MemoryCategory::Gradients, "g");
  Tensor M = be->zeros({10}, DType::F32, MemoryCategory::OptimizerState, "m");
  Tensor V = be->zeros({10}, DType::F32, MemoryCategory::OptimizerState, "v");
  Tensor GB = be->zeros({10}, DType::BF16, MemoryCategory::Gradients, "g bf16");
  EXPECT_THROW(be->adamw_step(P, G, M, V, AdamWParams{}), Error);
  EXPECT_THROW(be->adamw_step(P, GB, M, V, AdamWParams{}), Error);
  EXPECT_THROW(be->adamw_step(P, M, G, V, AdamWParams{}), Error);
}

}  // namespace
}  // namespace vacc::test
