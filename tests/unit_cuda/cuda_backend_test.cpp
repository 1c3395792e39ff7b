// The CUDA backend against the CPU backend: every op of backend.h run on both with the same
// random inputs (uploaded from the same host values), outputs compared element by element.
// Tolerances: f32 results as tight as the CPU kernel tests' bounds against their references
// (the two backends differ only in summation order, exp implementations and, for attention
// and the classifier, tiling), doubled where both backends are themselves approximations;
// bf16 results may differ by one bf16 ulp (up to 2^-7 relative) where a value close to a
// rounding boundary rounds differently, and bf16 products by the bounds the CPU tests state.
// Without a GPU every test skips itself with the reason. The same file is also built against
// the CPU simulator of the CUDA backend (cuda_sim.h; VACC_CUDA_SIM), where it runs everywhere.
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "test_util.h"
#include "vacc/core/error.h"
#include "vacc/kernels/backend.h"
#include "vacc/kernels/cuda/attention_flash_mma.h"
#include "vacc/kernels/cuda/attention_route.h"
#include "vacc/kernels/cuda/attention_self_check.h"
#include "vacc/kernels/cuda/attention_tuning.h"
#include "vacc/kernels/cuda/cuda_backend.h"
#include "vacc/kernels/cuda/cuda_allocator.h"
#include "vacc/kernels/cuda/cuda_context.h"
#include "vacc/kernels/cuda/matmul_autotune.h"
#ifdef VACC_CUDA_SIM
#include "fake_cuda_runtime.h"
#endif

namespace vacc::test {
namespace {

constexpr double kBf16Step = 1.0 / 128;  // one bf16 ulp, relative (at most)
// bf16 attention runs on the tensor cores from bf16-rounded q, k, v (and dO) with bf16
// probabilities: every element within this fraction of the largest |value| of the CPU's f32
// result (lse: absolutely).
constexpr double kBf16Attention = 1.5e-2;  // seen: 5.4e-3 (out), 4.7e-3 (lse), 2.8e-3 (dqkv)


// Runs on any machine: the probe never throws, and without a GPU the factory says why.
TEST(CudaDevices, CountIsSafeAndFactoryExplainsAMissingGpu) {
  const int count = cuda_device_count();
  EXPECT_GE(count, 0);
  if (count > 0) {
    EXPECT_EQ(cuda_unavailable_reason(), "");
    return;
  }
  EXPECT_NE(cuda_unavailable_reason(), "");
  try {
    make_cuda_backend(0);
    ADD_FAILURE() << "make_cuda_backend succeeded without a GPU";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("no CUDA GPU"), std::string::npos) << e.what();
  }
}

class CudaBackendTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (cuda_device_count() == 0)
      GTEST_SKIP() << "no CUDA GPU on this machine (" << cuda_unavailable_reason()
                   << "): the CUDA backend is built but cannot run here";
    // An 8 GiB budget: the classifier's logits chunks are 1/64 of it (128 MiB), so the
    // classifier case below spans 4 chunks on any GPU.
    gpu_ = make_cuda_backend(0, size_t(8) << 30);
    cpu_ = make_cpu_backend();
  }

  Backend& gpu() { return *gpu_; }
  Backend& cpu() { return *cpu_; }

  std::unique_ptr<Backend> gpu_, cpu_;
};

std::vector<int32_t> random_ints(size_t n, int32_t lo, int32_t hi, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int32_t> dist(lo, hi - 1);
  std::vector<int32_t> v(n);
  for (int32_t& x : v) x = dist(rng);
  return v;
}

double max_abs(const std::vector<float>& v) {
  double m = 0;
  for (float x : v) m = std::max(m, std::abs(double(x)));
  return m;
}

uint16_t bits_of(float f) { return float_to_bf16(f).bits; }

// ---------------------------------------------------------------- data movement, element-wise

TEST_F(CudaBackendTest, NameAndDevice) {
  EXPECT_EQ(gpu().device(), (Device{Device::Kind::CUDA, 0}));
  EXPECT_NE(gpu().name().find("cuda:0"), std::string::npos) << gpu().name();
}

TEST_F(CudaBackendTest, UploadDownloadCopyAndBf16RoundingAreBitExact) {
  std::vector<float> v = random_vector(100003, 1, -1e3f, 1e3f);
  const float specials[] = {0.0f,
                            -0.0f,
                            1.0f + 1.0f / 256,  // a tie: rounds to even
                            1.0f + 3.0f / 256,
                            1e-30f,
                            -65504.0f,
                            std::numeric_limits<float>::infinity(),
                            -std::numeric_limits<float>::infinity(),
                            std::numeric_limits<float>::quiet_NaN(),
                            std::numeric_limits<float>::denorm_min()};
  std::copy(std::begin(specials), std::end(specials), v.begin());
  const int64_t n = int64_t(v.size());
  Tensor f = to_device(gpu(), v, {n});
  std::vector<float> back(v.size());
  gpu().download(f, back.data());
  EXPECT_EQ(0, std::memcmp(back.data(), v.data(), v.size() * 4)) << "upload/download round trip";

  Tensor b = gpu().empty({n}, DType::BF16, MemoryCategory::Buffers, "bf16");
  gpu().copy(f, b);
  std::vector<bf16> bits(v.size());
  gpu().download(b, bits.data());
  size_t bad = 0;
  for (size_t i = 0; i < v.size(); ++i) bad += bits[i].bits != bits_of(v[i]);
  EXPECT_EQ(bad, 0u) << "f32 -> bf16 differs from float_to_bf16";

  Tensor f2 = gpu().empty({n}, DType::F32, MemoryCategory::Buffers, "f32");
  gpu().copy(b, f2);
  std::vector<float> widened(v.size());
  gpu().download(f2, widened.data());
  bad = 0;
  for (size_t i = 0; i < v.size(); ++i) {
    const float want = bf16_to_float(bits[i]);
    bad += std::memcmp(&want, &widened[i], 4) != 0;
  }
  EXPECT_EQ(bad, 0u) << "bf16 -> f32 is not exact";

  Tensor same = gpu().empty({n}, DType::F32, MemoryCategory::Buffers, "copy");
  gpu().copy(f, same);
  gpu().download(same, back.data());
  EXPECT_EQ(0, std::memcmp(back.data(), v.data(), v.size() * 4)) << "same-dtype copy";
}

TEST_F(CudaBackendTest, FillAddScale) {
  const int64_t n = 70001;
  for (DType dt : {DType::F32, DType::BF16}) {
    Tensor t = gpu().empty({n}, dt, MemoryCategory::Buffers, "fill");
    gpu().fill(t, 0.3f);
    const float want = dt == DType::F32 ? 0.3f : bf16_to_float(float_to_bf16(0.3f));
    expect_close(to_host(gpu(), t), std::vector<float>(size_t(n), want), 0.0, 0.0,
                 "fill " + dtype_name(dt));
  }
  Tensor ids = gpu().empty({n}, DType::I32, MemoryCategory::Buffers, "fill i32");
  gpu().fill(ids, 7.0f);
  std::vector<int32_t> got(static_cast<size_t>(n));
  gpu().download(ids, got.data());
  EXPECT_EQ(std::count(got.begin(), got.end(), 7), n) << "fill i32";

  auto a = random_vector(size_t(n), 2), b = random_vector(size_t(n), 3);
  Tensor A = to_device(gpu(), a, {n}), B = to_device(gpu(), b, {n});
  Tensor Out = gpu().empty({n}, DType::F32, MemoryCategory::Buffers, "out");
  gpu().add(A, B, Out);
  std::vector<float> sum(static_cast<size_t>(n));
  for (size_t i = 0; i < sum.size(); ++i) sum[i] = a[i] + b[i];
  expect_close(to_host(gpu(), Out), sum, 0.0, 0.0, "add");
  gpu().add(A, B, A);  // out may be an input
  expect_close(to_host(gpu(), A), sum, 0.0, 0.0, "add in place");
  gpu().scale(B, -2.5f);
  for (float& x : b) x *= -2.5f;
  expect_close(to_host(gpu(), B), b, 0.0, 0.0, "scale");
}

TEST_F(CudaBackendTest, SumOfSquaresAccumulates) {
  for (int64_t n : {int64_t(1), int64_t(1000), int64_t(3000017)}) {
    auto x = random_vector(size_t(n), 4, -2.0f, 2.0f);
    double want = 1.25;
    for (float v : x) want += double(v) * double(v);
    Tensor X = to_device(gpu(), x, {n});
    Tensor Acc = to_device(gpu(), {1.25f}, {1});
    gpu().sum_of_squares(X, Acc);
    expect_close(to_host(gpu(), Acc), std::vector<double>{want}, 1e-6, 0.0,
                 "sum_of_squares n=" + std::to_string(n));
  }
}

TEST_F(CudaBackendTest, BiasBackwardAccumulates) {
  const int64_t M = 1031, N = 77;
  auto dy = random_vector(size_t(M * N), 5);
  auto init = random_vector(size_t(N), 6);
  std::vector<float> out[2];
  Backend* bes[2] = {&gpu(), &cpu()};
  for (int k = 0; k < 2; ++k) {
    Tensor DY = to_device(*bes[k], dy, {M, N}), DB = to_device(*bes[k], init, {N});
    bes[k]->bias_backward(DY, DB);
    out[k] = to_host(*bes[k], DB);
  }
  expect_close(out[0], out[1], 1e-5, 1e-6 * double(M), "bias_backward");
}

// ---------------------------------------------------------------- matrix products

struct MatmulCase {
  int64_t M, N, K;
  bool ta, tb;
  DType in, out;
  float alpha, beta;
  bool bias;
  int64_t offset;  // elements a, b and out start at inside larger buffers (alignment)
};

std::string describe(const MatmulCase& c) {
  return "M=" + std::to_string(c.M) + " N=" + std::to_string(c.N) + " K=" + std::to_string(c.K) +
         (c.ta ? " aT" : "") + (c.tb ? " bT" : "") + " in=" + dtype_name(c.in) +
         " out=" + dtype_name(c.out) + " alpha=" + std::to_string(c.alpha) +
         " beta=" + std::to_string(c.beta) + (c.bias ? " bias" : "") +
         " offset=" + std::to_string(c.offset);
}

std::vector<float> run_matmul(Backend& be, const MatmulCase& c, const std::vector<float>& a,
                              const std::vector<float>& b, const std::vector<float>& out0,
                              const std::vector<float>& bias) {
  const int64_t na = c.M * c.K, nb = c.K * c.N, no = c.M * c.N, off = c.offset;
  Tensor A = to_device(be, a, {off + na}, c.in).view(off, c.ta ? Shape{c.K, c.M} : Shape{c.M, c.K});
  Tensor B = to_device(be, b, {off + nb}, c.in).view(off, c.tb ? Shape{c.N, c.K} : Shape{c.K, c.N});
  Tensor O = to_device(be, out0, {off + no}, c.out).view(off, {c.M, c.N});
  Tensor Bias = to_device(be, bias, {c.N});
  be.matmul(A, c.ta, B, c.tb, O, c.alpha, c.beta, c.bias ? &Bias : nullptr);
  return to_host(be, O);
}

TEST_F(CudaBackendTest, MatmulMatchesCpu) {
  std::vector<MatmulCase> cases;
  for (DType in : {DType::F32, DType::BF16})
    for (bool ta : {false, true})
      for (bool tb : {false, true}) {
        cases.push_back({37, 53, 29, ta, tb, in, DType::F32, 1.0f, 0.0f, false, 0});
        cases.push_back({64, 128, 256, ta, tb, in, DType::F32, 0.5f, 1.0f, false, 0});
        cases.push_back({33, 96, 64, ta, tb, in, DType::F32, 1.0f, 0.25f, true, 0});
      }
  cases.push_back({65, 130, 72, false, true, DType::BF16, DType::BF16, 1.0f, 0.0f, true, 0});
  cases.push_back({31, 45, 17, false, true, DType::BF16, DType::F32, 1.0f, 0.0f, true, 1});
  cases.push_back({31, 45, 17, true, false, DType::F32, DType::F32, 1.0f, 1.0f, false, 3});
  cases.push_back({5, 7, 0, false, false, DType::F32, DType::F32, 1.0f, 0.5f, true, 0});  // K = 0
  cases.push_back({300, 1000, 512, false, true, DType::BF16, DType::F32, 1.0f, 0.0f, false, 0});
  for (const MatmulCase& c : cases) {
    SCOPED_TRACE(describe(c));
    const int64_t off = c.offset;
    auto a = random_vector(size_t(off + c.M * c.K), 7), b = random_vector(size_t(off + c.K * c.N), 8);
    auto out0 = random_vector(size_t(off + c.M * c.N), 9), bias = random_vector(size_t(c.N), 10);
    auto got = run_matmul(gpu(), c, a, b, out0, bias);
    auto want = run_matmul(cpu(), c, a, b, out0, bias);
    // Both accumulate in f32 from the same (rounded) inputs; a bf16 output may round one step
    // apart where the f32 results straddle a rounding boundary.
    const double scale = std::sqrt(double(std::max<int64_t>(c.K, 1)));
    if (c.out == DType::F32) {
      expect_close(got, want, 1e-4, 1e-5 * scale, describe(c));
    } else {
      // A bf16 output's bias epilogue reads a bf16 copy of the bias (as autocast's bf16 linear
      // does): its rounding, at most half a step of |bias| (a whole one allowed), adds to
      // outputs of any size.
      double max_bias = 0.0;
      for (float v : bias) max_bias = std::max(max_bias, double(std::abs(v)));
      expect_close(got, want, kBf16Step, 1e-5 * scale + (c.bias ? kBf16Step * max_bias : 0.0),
                   describe(c));
    }
  }
}

// matmul_add: the residual read as cuBLASLt's C (addend beside out, or out itself), against
// the CPU's copy and product with beta 1; an offset view takes the alignment fallback.
TEST_F(CudaBackendTest, MatmulAddMatchesCpu) {
  const int64_t M = 70, N = 96, K = 64;
  for (DType in : {DType::F32, DType::BF16})
    for (bool in_place : {false, true})
      for (int64_t off : {int64_t(0), int64_t(1)}) {
        const std::string what = "matmul_add " + dtype_name(in) +
                                 (in_place ? " in place" : "") + " offset " + std::to_string(off);
        auto a = random_vector(size_t(M * K), 31), b = random_vector(size_t(N * K), 32);
        auto addend = random_vector(size_t(off + M * N), 33, -4.0f, 4.0f);
        std::vector<float> got[2];
        Backend* bes[2] = {&gpu(), &cpu()};
        for (int k = 0; k < 2; ++k) {
          Backend& be = *bes[k];
          Tensor A = to_device(be, a, {M, K}, in), B = to_device(be, b, {N, K}, in);
          Tensor Add = to_device(be, addend, {off + M * N}).view(off, {M, N});
          Tensor O = be.zeros({off + M * N}, DType::F32, MemoryCategory::Buffers, "out")
                         .view(off, {M, N});
          be.matmul_add(A, false, B, true, Add, in_place ? Add : O);
          got[k] = to_host(be, in_place ? Add : O);
        }
        expect_close(got[0], got[1], 1e-4, 1e-5 * std::sqrt(double(K)), what);
      }
  // Its checks name the addend.
  Tensor A = gpu().zeros({4, 8}, DType::F32, MemoryCategory::Buffers, "a");
  Tensor O = gpu().zeros({4, 4}, DType::F32, MemoryCategory::Buffers, "out");
  Tensor Bad = gpu().zeros({4, 5}, DType::F32, MemoryCategory::Buffers, "addend");
  EXPECT_THROW(gpu().matmul_add(A, false, A, true, Bad, O), Error);
}

// VACC_MATMUL_AUTOTUNE set while this lives.
struct AutotuneSetting {
  explicit AutotuneSetting(const char* value) { setenv("VACC_MATMUL_AUTOTUNE", value, 1); }
  ~AutotuneSetting() { unsetenv("VACC_MATMUL_AUTOTUNE"); }
};

// A product's first run times several cuBLASLt algorithms on its own operands
// (matmul_autotune.h). One that accumulates into its output (a gradient) must still add to it
// exactly once, the runs after use the fastest, and the results are the CPU's. The simulator
// offers two algorithms here, the second the faster (its sums run the other way); a GPU offers
// its own.
TEST_F(CudaBackendTest, MatmulAutotuningAddsOnceAndKeepsTheFastest) {
#ifdef VACC_CUDA_SIM
  vacc_sim::CublasLtAlgorithms algorithms(2);
#endif
  gpu_ = make_cuda_backend(0, size_t(1) << 30);  // no plans yet
  const std::vector<MatmulCase> cases = {
      {48, 40, 56, true, false, DType::F32, DType::F32, 1.0f, 1.0f, false, 0},   // dW += a^T b
      {48, 40, 56, true, false, DType::BF16, DType::F32, 1.0f, 1.0f, false, 0},  // bf16 operands
      {64, 72, 32, false, true, DType::BF16, DType::BF16, 1.0f, 0.0f, true, 0},  // qkv + bias
  };
  for (int run = 0; run < 2; ++run)
    for (const MatmulCase& c : cases) {
      SCOPED_TRACE(describe(c) + (run ? ", tuned" : ", first run"));
      auto a = random_vector(size_t(c.M * c.K), 41), b = random_vector(size_t(c.K * c.N), 42);
      auto out0 = random_vector(size_t(c.M * c.N), 43), bias = random_vector(size_t(c.N), 44);
      auto got = run_matmul(gpu(), c, a, b, out0, bias);
      auto want = run_matmul(cpu(), c, a, b, out0, bias);
      double max_bias = 0.0;
      for (float v : bias) max_bias = std::max(max_bias, double(std::abs(v)));
      const double tol = c.out == DType::F32 ? 1e-4 : kBf16Step;
      expect_close(got, want, tol, 1e-4 + (c.bias ? kBf16Step * max_bias : 0.0), describe(c));
    }
  // matmul_add in place (the residual add read as C = D): its trials must not add twice either.
  const int64_t M = 40, N = 32, K = 24;
  auto a = random_vector(size_t(M * K), 45), b = random_vector(size_t(N * K), 46);
  auto residual = random_vector(size_t(M * N), 47);
  std::vector<float> sums[2];
  Backend* bes[2] = {&gpu(), &cpu()};
  for (int k = 0; k < 2; ++k) {
    Tensor A = to_device(*bes[k], a, {M, K}), B = to_device(*bes[k], b, {N, K});
    Tensor R = to_device(*bes[k], residual, {M, N});
    bes[k]->matmul_add(A, false, B, true, R, R);
    sums[k] = to_host(*bes[k], R);
  }
  expect_close(sums[0], sums[1], 1e-4, 1e-4, "matmul_add in place");
  const std::string summary = gpu().tuning_summary();
  EXPECT_NE(summary.find("cuBLASLt algorithms timed"), std::string::npos) << summary;
#ifdef VACC_CUDA_SIM
  // Four plans, each timed both algorithms 1 + kAutotuneRepeats times; then the faster (1) ran
  // every real product: the three cases twice, matmul_add once.
  const int64_t trials = 4 * (1 + cuda::kAutotuneRepeats);
  EXPECT_EQ(vacc_sim::cublaslt_runs_of_algorithm(0), trials);
  EXPECT_EQ(vacc_sim::cublaslt_runs_of_algorithm(1), trials + 3 * 2 + 1);
  EXPECT_NE(summary.find("timed for 4 product shape(s); in 4 of them"), std::string::npos)
      << summary;
#endif
  // A product first run inside a graph capture is not timed there: its plan keeps the
  // heuristic's first choice for good, so the graph's replays and the eager runs agree.
  const MatmulCase c{24, 40, 16, false, true, DType::F32, DType::F32, 1.0f, 0.0f, false, 0};
  auto a1 = random_vector(size_t(c.M * c.K), 48), b1 = random_vector(size_t(c.N * c.K), 49);
  Tensor A = to_device(gpu(), a1, {c.M, c.K}), B = to_device(gpu(), b1, {c.N, c.K});
  Tensor Y = gpu().zeros({c.M, c.N}, DType::F32, MemoryCategory::Buffers, "y");
  std::unique_ptr<OpGraph> graph = gpu().capture_graph([&] { gpu().matmul(A, false, B, true, Y); });
  graph->replay();
  const std::vector<float> replayed = to_host(gpu(), Y);
  gpu().matmul(A, false, B, true, Y);
  EXPECT_EQ(to_host(gpu(), Y), replayed) << "the eager run differs from the graph's";
#ifdef VACC_CUDA_SIM
  EXPECT_EQ(vacc_sim::cublaslt_runs_of_algorithm(0), trials + 2) << "the heuristic's first";
#endif
}

// VACC_MATMUL_AUTOTUNE=0 keeps the heuristic's first choice untimed; a bad value is refused by
// name when the backend is made.
TEST_F(CudaBackendTest, MatmulAutotuningCanBeTurnedOff) {
#ifdef VACC_CUDA_SIM
  vacc_sim::CublasLtAlgorithms algorithms(2);
#endif
  {
    AutotuneSetting off("0");
    gpu_ = make_cuda_backend(0, size_t(1) << 30);
    const MatmulCase c{16, 24, 8, false, false, DType::F32, DType::F32, 1.0f, 1.0f, false, 0};
    auto a = random_vector(size_t(c.M * c.K), 51), b = random_vector(size_t(c.K * c.N), 52);
    auto out0 = random_vector(size_t(c.M * c.N), 53), bias = random_vector(size_t(c.N), 54);
    for (int run = 0; run < 2; ++run)
      expect_close(run_matmul(gpu(), c, a, b, out0, bias),
                   run_matmul(cpu(), c, a, b, out0, bias), 1e-4, 1e-5, describe(c));
    EXPECT_EQ(gpu().tuning_summary(), "");
#ifdef VACC_CUDA_SIM
    EXPECT_EQ(vacc_sim::cublaslt_runs_of_algorithm(0), 2);
    EXPECT_EQ(vacc_sim::cublaslt_runs_of_algorithm(1), 0);
#endif
  }
  AutotuneSetting bad("many");
  try {
    make_cuda_backend(0, size_t(1) << 30);
    ADD_FAILURE() << "a bad VACC_MATMUL_AUTOTUNE was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("VACC_MATMUL_AUTOTUNE='many'"), std::string::npos)
        << e.what();
  }
}

// ---------------------------------------------------------------- transformer ops

TEST_F(CudaBackendTest, EmbeddingForwardAndBackwardOverAShard) {
  // Every id repeats (N > V), over more than one of the kernel's 256-token tiles and columns.
  const int64_t V = 53, C = 261, N = 300, start = 20;
  auto table = random_vector(size_t(V * C), 11);
  auto ids = random_ints(size_t(N), 0, int32_t(start + V + 10), 12);  // some outside the shard
  ids[0] = int32_t(start);
  ids[1] = int32_t(start + V - 1);
  ids[2] = int32_t(start + V);
  auto dout = random_vector(size_t(N * C), 13);
  auto dt0 = random_vector(size_t(V * C), 14);
  std::vector<float> out[2], dtable[2];
  Backend* bes[2] = {&gpu(), &cpu()};
  for (int k = 0; k < 2; ++k) {
    Backend& be = *bes[k];
    Tensor T = to_device(be, table, {V, C}), I = ids_to_device(be, ids);
    Tensor O = be.empty({N, C}, DType::F32, MemoryCategory::Activations, "out");
    be.fill(O, 123.0f);
    be.embedding_forward(I, T, start, O);
    out[k] = to_host(be, O);
    Tensor DO = to_device(be, dout, {N, C}), DT = to_device(be, dt0, {V, C});
    be.embedding_backward(I, DO, start, DT);
    dtable[k] = to_host(be, DT);
  }
  expect_close(out[0], out[1], 0.0, 0.0, "embedding_forward (a copy: exact)");
  // Both sum each row's repeats in token order: the same bits (and so the same on every run).
  expect_close(dtable[0], dtable[1], 0.0, 0.0, "embedding_backward (token order: exact)");
}

TEST_F(CudaBackendTest, RmsNormForwardAndBackward) {
  const int64_t N = 67, C = 896;
  const float eps = 1e-6f;
  auto x = random_vector(size_t(N * C), 15, -2.0f, 2.0f), w = random_vector(size_t(C), 16);
  Backend* bes[2] = {&gpu(), &cpu()};
  for (DType out_dt : {DType::F32, DType::BF16}) {
    std::vector<float> out[2], rstd[2];
    for (int k = 0; k < 2; ++k) {
      Backend& be = *bes[k];
      Tensor X = to_device(be, x, {N, C}), W = to_device(be, w, {C});
      Tensor O = be.empty({N, C}, out_dt, MemoryCategory::Activations, "out");
      Tensor R = be.empty({N}, DType::F32, MemoryCategory::Activations, "rstd");
      be.rmsnorm_forward(X, W, eps, O, R);
      out[k] = to_host(be, O);
      rstd[k] = to_host(be, R);
    }
    const std::string what = "rmsnorm_forward " + dtype_name(out_dt);
    expect_close(out[0], out[1], out_dt == DType::F32 ? 1e-5 : kBf16Step + 1e-5, 1e-6, what);
    expect_close(rstd[0], rstd[1], 1e-5, 0.0, what + " rstd");
  }
  // C = 896: four columns per load; C = 90: one. N = 67 rows: four whole tiles of the
  // backward's and a part of one.
  for (const int64_t c : {C, int64_t(90)}) {
    const auto xc = random_vector(size_t(N * c), 15, -2.0f, 2.0f), wc = random_vector(size_t(c), 16);
    const auto doutc = random_vector(size_t(N * c), 17), dx0c = random_vector(size_t(N * c), 18);
    const auto dw0c = random_vector(size_t(c), 19);
    for (bool accumulate : {false, true}) {  // dx += (dx as its own residual), with a bf16 copy
      std::vector<float> dx[2], dw[2], copy[2];
      for (int k = 0; k < 2; ++k) {
        Backend& be = *bes[k];
        Tensor X = to_device(be, xc, {N, c}), W = to_device(be, wc, {c});
        Tensor O = be.empty({N, c}, DType::F32, MemoryCategory::Activations, "out");
        Tensor R = be.empty({N}, DType::F32, MemoryCategory::Activations, "rstd");
        be.rmsnorm_forward(X, W, eps, O, R);
        Tensor DO = to_device(be, doutc, {N, c}), DX = to_device(be, dx0c, {N, c});
        Tensor DW = to_device(be, dw0c, {c});
        Tensor Copy = be.empty({N, c}, DType::BF16, MemoryCategory::Activations, "dx (bf16)");
        be.rmsnorm_backward(DO, X, W, R, accumulate ? &DX : nullptr, DX, &Copy, DW);
        dx[k] = to_host(be, DX);
        dw[k] = to_host(be, DW);
        copy[k] = to_host(be, Copy);
      }
      const std::string what = "rmsnorm_backward C=" + std::to_string(c) +
                               (accumulate ? " accumulate" : "");
      expect_close(dx[0], dx[1], 1e-4, 1e-5 * max_abs(dx[1]), what + " dx");
      expect_close(copy[0], copy[1], kBf16Step, 1e-5 * max_abs(dx[1]), what + " dx copy");
      expect_close(dw[0], dw[1], 1e-4, 1e-5 * max_abs(dw[1]), what + " dweight");
    }
  }
}

// RoPE's backward with the qkv bias gradient in one pass on the GPU against the CPU's rope then
// bias_backward: head_dim 64 (four pairs a thread) and 10 (one), 45 rows (two tiles of 16 and a
// part), in place (f32) and into an f32 or bf16 copy; dbias accumulates. A bad position is
// reported as by rope.
TEST_F(CudaBackendTest, RopeBackwardWithBiasMatchesRopeThenBiasBackward) {
  const int64_t N = 45, H = 5, max_pos = 100;
  for (const int64_t D : {int64_t(64), int64_t(10)}) {
    const int64_t width = (H + 2) * D;
    auto x = random_vector(size_t(N * width), 40);
    auto cos = random_vector(size_t(max_pos * D / 2), 41), sin = random_vector(size_t(max_pos * D / 2), 42);
    auto pos = random_ints(size_t(N), 0, int32_t(max_pos), 43);
    auto bias0 = random_vector(size_t(width), 44);
    for (int mode = 0; mode < 3; ++mode) {  // in place; f32 copy; bf16 copy
      const DType copy_dt = mode == 2 ? DType::BF16 : DType::F32;
      std::vector<float> rows[2], bias[2];
      Backend* bes[2] = {&gpu(), &cpu()};
      for (int k = 0; k < 2; ++k) {
        Backend& be = *bes[k];
        Tensor X = to_device(be, x, {N, width}), P = ids_to_device(be, pos);
        Tensor Cs = to_device(be, cos, {max_pos, D / 2}), Sn = to_device(be, sin, {max_pos, D / 2});
        Tensor C = be.empty({N, width}, copy_dt, MemoryCategory::Buffers, "copy");
        Tensor B = to_device(be, bias0, {width});
        be.rope_backward_with_bias(X, P, Cs, Sn, H, D, mode == 0 ? nullptr : &C, B);
        rows[k] = to_host(be, mode == 0 ? X : C);
        bias[k] = to_host(be, B);
      }
      const std::string what = "rope_backward_with_bias D=" + std::to_string(D) +
                               (mode == 0 ? " in place" : mode == 1 ? " f32 copy" : " bf16 copy");
      expect_close(rows[0], rows[1], mode == 2 ? kBf16Step : 1e-6, 1e-6, what);
      expect_close(bias[0], bias[1], 1e-5, 1e-5 * max_abs(bias[1]), what + " dbias");
    }
    auto bad = pos;
    bad[20] = int32_t(max_pos);
    Tensor X = to_device(gpu(), x, {N, width}), P = ids_to_device(gpu(), bad);
    Tensor Cs = to_device(gpu(), cos, {max_pos, D / 2}), Sn = to_device(gpu(), sin, {max_pos, D / 2});
    Tensor B = to_device(gpu(), bias0, {width});
    try {
      gpu().rope_backward_with_bias(X, P, Cs, Sn, H, D, nullptr, B);
      gpu().synchronize();
      ADD_FAILURE() << "a position outside the table was accepted";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("rope: position 100 of token 20"), std::string::npos)
          << e.what();
    }
  }
}

TEST_F(CudaBackendTest, RopeForwardInverseAndBadPosition) {
  const int64_t N = 45, H = 5, D = 64, width = (H + 2) * D, max_pos = 100;
  auto x = random_vector(size_t(N * width), 20);
  auto cos = random_vector(size_t(max_pos * D / 2), 21), sin = random_vector(size_t(max_pos * D / 2), 22);
  auto pos = random_ints(size_t(N), 0, int32_t(max_pos), 23);
  Backend* bes[2] = {&gpu(), &cpu()};
  // f32 in place, with a bf16 copy on the inverse (the backward's); bf16 in place.
  for (DType dt : {DType::F32, DType::BF16})
    for (bool inverse : {false, true}) {
      std::vector<float> got[2], copy[2];
      for (int k = 0; k < 2; ++k) {
        Backend& be = *bes[k];
        Tensor X = to_device(be, x, {N, width}, dt), P = ids_to_device(be, pos);
        Tensor Cs = to_device(be, cos, {max_pos, D / 2}), Sn = to_device(be, sin, {max_pos, D / 2});
        Tensor C = be.empty({N, width}, DType::BF16, MemoryCategory::Buffers, "copy");
        be.rope(X, P, Cs, Sn, H, D, inverse, inverse ? &C : nullptr);
        got[k] = to_host(be, X);
        if (inverse) copy[k] = to_host(be, C);
      }
      const std::string what = std::string(inverse ? "rope inverse " : "rope ") + dtype_name(dt);
      expect_close(got[0], got[1], dt == DType::F32 ? 1e-6 : kBf16Step, 1e-6, what);
      if (inverse) expect_close(copy[0], copy[1], kBf16Step, 1e-6, what + " copy");
    }
  // A position outside the table: reported (by the next synchronising call) with the CPU's
  // message, and the backend stays usable.
  auto bad = pos;
  bad[7] = int32_t(max_pos);
  Tensor X = to_device(gpu(), x, {N, width}), P = ids_to_device(gpu(), bad);
  Tensor Cs = to_device(gpu(), cos, {max_pos, D / 2}), Sn = to_device(gpu(), sin, {max_pos, D / 2});
  try {
    gpu().rope(X, P, Cs, Sn, H, D, false, nullptr);
    gpu().synchronize();
    ADD_FAILURE() << "a position outside the table was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("rope: position 100 of token 7"), std::string::npos)
        << e.what();
  }
  EXPECT_NO_THROW(gpu().synchronize());
}

TEST_F(CudaBackendTest, SwigluForwardAndBackward) {
  const int64_t N = 57, F = 1000;
  auto gu = random_vector(size_t(N * 2 * F), 24, -6.0f, 6.0f), dout = random_vector(size_t(N * F), 25);
  Backend* bes[2] = {&gpu(), &cpu()};
  // (inputs, outputs): f32 and bf16 outputs of f32 inputs, and bf16 inputs (mixed precision).
  for (auto [in, dt] : {std::pair{DType::F32, DType::F32}, std::pair{DType::F32, DType::BF16},
                        std::pair{DType::BF16, DType::BF16}}) {
    std::vector<float> out[2], dgu[2];
    for (int k = 0; k < 2; ++k) {
      Backend& be = *bes[k];
      Tensor GU = to_device(be, gu, {N, 2 * F}), DO = to_device(be, dout, {N, F});
      if (in == DType::BF16) {
        Tensor GUb = be.empty({N, 2 * F}, in, MemoryCategory::Activations, "gate_up bf16");
        Tensor DOb = be.empty({N, F}, in, MemoryCategory::Activations, "dout bf16");
        be.copy(GU, GUb);
        be.copy(DO, DOb);
        GU = GUb;
        DO = DOb;
      }
      Tensor O = be.empty({N, F}, dt, MemoryCategory::Activations, "out");
      Tensor DGU = be.empty({N, 2 * F}, dt, MemoryCategory::Activations, "dgate_up");
      be.swiglu_forward(GU, O);
      be.swiglu_backward(DO, GU, DGU);
      out[k] = to_host(be, O);
      dgu[k] = to_host(be, DGU);
    }
    // The CPU's exp is a polynomial (about 1 ulp); the GPU's is expf.
    const double rtol = dt == DType::F32 ? 1e-5 : kBf16Step + 1e-5;
    const std::string what = dtype_name(in) + " -> " + dtype_name(dt);
    expect_close(out[0], out[1], rtol, 1e-7, "swiglu_forward " + what);
    expect_close(dgu[0], dgu[1], rtol, 1e-6, "swiglu_backward " + what);
  }
}

// ---------------------------------------------------------------- attention

struct AttnCase {
  int64_t batch, seq, q_heads, kv_heads, head_dim;
  std::string str() const {
    return "B=" + std::to_string(batch) + " T=" + std::to_string(seq) +
           " Hq=" + std::to_string(q_heads) + " Hkv=" + std::to_string(kv_heads) +
           " D=" + std::to_string(head_dim);
  }
  AttentionShape shape() const { return AttentionShape{batch, seq, q_heads, kv_heads, head_dim}; }
  std::string str(DType compute, DType out) const {
    return str() + " compute " + dtype_name(compute) + " out " + dtype_name(out);
  }
};

const std::vector<AttnCase> kAttnCases = {
    {1, 1, 1, 1, 8},       // a single token
    {2, 7, 3, 1, 32},      // GQA 3, T below one tile
    {1, 33, 3, 3, 64},     // T one past a tile, no GQA
    {2, 130, 7, 1, 24},    // GQA 7, T past four tiles, head_dim not a multiple of 32
    {1, 100, 14, 2, 64},   // GQA 7 (Qwen2.5-0.5B's head shape)
    {3, 50, 4, 2, 128},    // head_dim 128, several sequences
    {1, 70, 10, 1, 16},    // GQA 10
    {1, 40, 4, 4, 256},    // the largest head_dim
    {1, 257, 2, 1, 33},    // odd head_dim, T = 8 tiles + 1
    {1, 130, 2, 1, 128},   // head_dim 128 over three tiles of 64 (the tensor-core flash kernels)
};

// The (compute, output) dtypes attention is run with: f32; f32 computed, bf16 stored (the
// flash kernel); mixed precision with f32 and with bf16 outputs (the tensor-core route).
const std::vector<std::pair<DType, DType>> kAttnPrecisions = {
    {DType::F32, DType::F32}, {DType::F32, DType::BF16},
    {DType::BF16, DType::F32}, {DType::BF16, DType::BF16}};
// The qkv dtype of a precision: bf16 with mixed precision's f32 output, as the model trains
// (its qkv activation is bf16, its attention output f32); f32 otherwise (packed or converted
// by the GPU routes).
DType attn_qkv_dtype(DType compute, DType out) {
  return compute == DType::BF16 && out == DType::F32 ? DType::BF16 : DType::F32;
}

// The routes bf16 attention is run through (attention_route.h): the default (the tensor-core
// flash kernels for head_dim 64 and 128, the cuBLASLt products for the others) and the products
// forced by VACC_ATTENTION. f32 attention has one route.
std::vector<const char*> attention_routes(DType compute) {
  if (compute == DType::BF16) return {nullptr, "gemm"};
  return {nullptr};
}
// Sets VACC_ATTENTION for a scope (nullptr: unset).
struct AttentionRouteScope {
  explicit AttentionRouteScope(const char* route) {
    if (route)
      setenv("VACC_ATTENTION", route, 1);
    else
      unsetenv("VACC_ATTENTION");
  }
  ~AttentionRouteScope() { unsetenv("VACC_ATTENTION"); }
};
std::string route_label(const char* route) {
  return route ? std::string(" route ") + route : std::string();
}

// The tensor-core product the flash_mma route is built on, on this device, against the exact
// result: if it fails, bf16 attention quietly takes the gemm route, so say so here.
TEST_F(CudaBackendTest, TensorCoreSelfCheckPasses) {
  cuda::CudaContext ctx(0, size_t(64) << 20);
  EXPECT_TRUE(cuda::tensor_core_mma_self_check(ctx))
      << "mma.m16n8k16 bf16 disagrees with the host on this GPU: see the warning above";
}

// The check attention_route runs before it lets training use the tensor-core flash kernels:
// they agree with the exact f32 kernels on this device (the figures are printed for the record).
TEST_F(CudaBackendTest, FlashMmaKernelsPassTheirSelfCheck) {
  cuda::CudaContext ctx(0, size_t(64) << 20);
  for (int64_t head_dim : {64, 128}) {
    const cuda::FlashMmaAgreement a = cuda::flash_mma_agreement(ctx, head_dim);
    std::printf("flash_mma self-check, head_dim %lld: out %.2e, lse %.2e, dqkv %.2e\n",
                static_cast<long long>(head_dim), a.out, a.lse, a.dqkv);
    EXPECT_LE(a.worst(), cuda::kFlashMmaSelfCheckTolerance) << "head_dim " << head_dim;
    // The bound leaves room for bf16 rounding only, not for a wrong tile.
    EXPECT_GT(a.out, 0.0) << "bf16 outputs cannot match f32 exactly: is the check comparing?";
    EXPECT_TRUE(cuda::flash_mma_self_check(ctx, head_dim)) << "head_dim " << head_dim;
    // The backward's dK/dV variants differ in register allocation only: the same bits.
    EXPECT_EQ(a.dkdv_variants_alike, cuda::attention_flash_mma_dkdv_variants(head_dim))
        << "head_dim " << head_dim;
    EXPECT_EQ(cuda::flash_mma_dkdv_variants_checked(ctx, head_dim), a.dkdv_variants_alike);
  }
}

// VACC_ATTENTION_AUTOTUNE set while this lives.
struct AttentionAutotuneSetting {
  explicit AttentionAutotuneSetting(const char* value) {
    setenv("VACC_ATTENTION_AUTOTUNE", value, 1);
  }
  ~AttentionAutotuneSetting() { unsetenv("VACC_ATTENTION_AUTOTUNE"); }
};

// The first run of a problem times each dK/dV variant (a warm-up and kAutotuneRepeats runs) and
// ends with the one it keeps; later runs take that one only. Off, or with one variant, variant 0
// runs once. A bad setting is refused with its name.
TEST_F(CudaBackendTest, FlashMmaBackwardTuningTimesTheVariantsOnceAndKeepsOne) {
  cuda::CudaContext ctx(0, size_t(64) << 20);
  const cuda::FlashMmaBackwardTuning::Problem p{2, 128, 14, 2, 64, DType::BF16, DType::BF16};
  ASSERT_EQ(cuda::attention_flash_mma_dkdv_variants(64), 2);
  ASSERT_EQ(cuda::flash_mma_dkdv_variants_checked(ctx, 64), 2);
  std::vector<int> calls;
  auto backward = [&](int v) {
    if (size_t(v) >= calls.size()) calls.resize(size_t(v) + 1);
    ++calls[size_t(v)];
  };
  {
    const AttentionAutotuneSetting on("1");
    cuda::FlashMmaBackwardTuning tuning;
    EXPECT_EQ(tuning.chosen(p), -1);
    tuning.run(ctx, p, backward);
    const int kept = tuning.chosen(p);
    ASSERT_TRUE(kept == 0 || kept == 1) << kept;
    ASSERT_EQ(calls.size(), 2u);
    for (int v = 0; v < 2; ++v)
      EXPECT_EQ(calls[size_t(v)], 1 + cuda::kAutotuneRepeats + (v == kept)) << "variant " << v;
    EXPECT_EQ(tuning.tuned_problems(), 1);
    EXPECT_EQ(tuning.kept_other_than_first(), kept == 1 ? 1 : 0);
    calls.assign(2, 0);
    tuning.run(ctx, p, backward);
    EXPECT_EQ(calls[size_t(kept)], 1);
    EXPECT_EQ(calls[size_t(1 - kept)], 0);
    // Another problem (head_dim 128 has one variant): variant 0, untimed.
    calls.assign(2, 0);
    cuda::FlashMmaBackwardTuning::Problem p128 = p;
    p128.head_dim = 128;
    tuning.run(ctx, p128, backward);
    EXPECT_EQ(calls[0], 1);
    EXPECT_EQ(calls[1], 0);
    EXPECT_EQ(tuning.tuned_problems(), 1);
  }
  {
    const AttentionAutotuneSetting off("0");
    cuda::FlashMmaBackwardTuning tuning;
    calls.assign(2, 0);
    tuning.run(ctx, p, backward);
    EXPECT_EQ(calls[0], 1);
    EXPECT_EQ(calls[1], 0);
    EXPECT_EQ(tuning.chosen(p), 0);
  }
  const AttentionAutotuneSetting bad("yes");
  cuda::FlashMmaBackwardTuning tuning;
  try {
    tuning.run(ctx, p, backward);
    ADD_FAILURE() << "a bad VACC_ATTENTION_AUTOTUNE was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("VACC_ATTENTION_AUTOTUNE='yes'"), std::string::npos)
        << e.what();
  }
}

TEST_F(CudaBackendTest, AttentionForwardMatchesCpu) {
  for (const AttnCase& c : kAttnCases) {
    auto qkv = random_vector(size_t(c.batch * c.seq * c.shape().qkv_width()), 26, -1.5f, 1.5f);
    for (auto [compute, dt] : kAttnPrecisions)
    for (const char* route : attention_routes(compute)) {
      const AttentionRouteScope route_scope(route);
      AttentionShape s = c.shape();
      s.compute = compute;
      std::vector<float> out[2], lse[2];
      Backend* bes[2] = {&gpu(), &cpu()};
      for (int k = 0; k < 2; ++k) {
        Backend& be = *bes[k];
        Tensor QKV =
            to_device(be, qkv, {c.batch * c.seq, s.qkv_width()}, attn_qkv_dtype(compute, dt));
        Tensor O = be.empty({c.batch * c.seq, c.q_heads * c.head_dim}, dt,
                            MemoryCategory::Activations, "out");
        Tensor L = be.empty({c.batch, c.q_heads, c.seq}, DType::F32, MemoryCategory::Activations,
                            "lse");
        // An f32 out with its bf16 copy (training in mixed precision): the copy is out rounded.
        Tensor Copy = be.empty(O.shape(), DType::BF16, MemoryCategory::Activations, "out (bf16)");
        be.attention_forward(QKV, s, O, L, dt == DType::F32 ? &Copy : nullptr);
        out[k] = to_host(be, O);
        lse[k] = to_host(be, L);
        if (dt == DType::F32) {
          const std::vector<float> copy = to_host(be, Copy);
          size_t wrong = 0;
          for (size_t i = 0; i < copy.size(); ++i)
            wrong += copy[i] != bf16_to_float(float_to_bf16(out[k][i]));
          EXPECT_EQ(wrong, 0u) << c.str(compute, dt) << route_label(route) << " bf16 copy, "
                               << (k == 0 ? "gpu" : "cpu");
        }
      }
      const std::string what = c.str(compute, dt) + " qkv " +
                               dtype_name(attn_qkv_dtype(compute, dt)) + route_label(route);
      if (compute == DType::BF16) {
        expect_close(out[0], out[1], 0.0, kBf16Attention * max_abs(out[1]), what + " out");
        expect_close(lse[0], lse[1], 0.0, kBf16Attention, what + " lse");
      } else {
        expect_close(out[0], out[1], dt == DType::F32 ? 2e-5 : kBf16Step, dt == DType::F32 ? 2e-5 : 1e-5,
                     what + " out");
        expect_close(lse[0], lse[1], 2e-5, 2e-5, what + " lse");
      }
    }
  }
}

TEST_F(CudaBackendTest, AttentionBackwardMatchesCpu) {
  for (const AttnCase& c : kAttnCases) {
    const int64_t rows = c.batch * c.seq, out_width = c.q_heads * c.head_dim;
    auto qkv = random_vector(size_t(rows * c.shape().qkv_width()), 27, -1.5f, 1.5f);
    auto dout = random_vector(size_t(rows * out_width), 28);
    for (auto [compute, dt] : kAttnPrecisions)
    for (const char* route : attention_routes(compute)) {
      const AttentionRouteScope route_scope(route);
      AttentionShape s = c.shape();
      s.compute = compute;
      // The forward's out and lse from the CPU, given to both backends: the backward of each
      // then sees identical inputs.
      const DType qkv_dt = attn_qkv_dtype(compute, dt);
      std::vector<float> out, lse;
      {
        Tensor QKV = to_device(cpu(), qkv, {rows, s.qkv_width()}, qkv_dt);
        Tensor O = cpu().empty({rows, out_width}, dt, MemoryCategory::Activations, "out");
        Tensor L = cpu().empty({c.batch, c.q_heads, c.seq}, DType::F32,
                               MemoryCategory::Activations, "lse");
        cpu().attention_forward(QKV, s, O, L, nullptr);
        out = to_host(cpu(), O);
        lse = to_host(cpu(), L);
      }
      std::vector<float> dqkv[2];
      Backend* bes[2] = {&gpu(), &cpu()};
      for (int k = 0; k < 2; ++k) {
        Backend& be = *bes[k];
        Tensor QKV = to_device(be, qkv, {rows, s.qkv_width()}, qkv_dt);
        Tensor O = to_device(be, out, {rows, out_width}, dt);
        Tensor DO = to_device(be, dout, {rows, out_width}, dt);
        Tensor L = to_device(be, lse, {c.batch, c.q_heads, c.seq});
        Tensor DQKV = to_device(be, std::vector<float>(size_t(rows * s.qkv_width()), 9.0f),
                                {rows, s.qkv_width()});  // must be overwritten
        be.attention_backward(DO, QKV, O, L, s, DQKV);
        dqkv[k] = to_host(be, DQKV);
      }
      const double big = std::max(1.0, max_abs(dqkv[1]));
      const std::string what =
          c.str(compute, dt) + " qkv " + dtype_name(qkv_dt) + route_label(route);
      if (compute == DType::BF16)
        expect_close(dqkv[0], dqkv[1], 0.0, kBf16Attention * big, what + " dqkv");
      else
        expect_close(dqkv[0], dqkv[1], 2e-4, 2e-4 * big, what + " dqkv");
    }
  }
}

// qkv and dout that start one element past an aligned address (views into larger buffers):
// qkv is packed into an aligned bf16 copy first, and the tensor-core kernels read dout element
// by element instead of four at a time.
TEST_F(CudaBackendTest, TensorCoreAttentionReadsMisalignedInputs) {
  const AttnCase c{1, 70, 4, 2, 64};
  const int64_t rows = c.batch * c.seq, out_width = c.q_heads * c.head_dim;
  AttentionShape s = c.shape();
  s.compute = DType::BF16;
  const int64_t width = s.qkv_width();
  auto qkv = random_vector(size_t(rows * width + 1), 29, -1.5f, 1.5f);
  auto dout = random_vector(size_t(rows * out_width + 1), 30);
  std::vector<float> out[2], lse[2], dqkv[2];
  Backend* bes[2] = {&gpu(), &cpu()};
  for (int k = 0; k < 2; ++k) {
    Backend& be = *bes[k];
    Tensor QKV = to_device(be, qkv, {rows * width + 1}).view(1, {rows, width});
    Tensor DO = to_device(be, dout, {rows * out_width + 1}, DType::BF16).view(1, {rows, out_width});
    Tensor O = be.empty({rows, out_width}, DType::BF16, MemoryCategory::Activations, "out");
    Tensor L = be.empty({c.batch, c.q_heads, c.seq}, DType::F32, MemoryCategory::Activations, "lse");
    Tensor DQKV = be.empty({rows, width}, DType::F32, MemoryCategory::Activations, "dqkv");
    be.attention_forward(QKV, s, O, L, nullptr);
    be.attention_backward(DO, QKV, O, L, s, DQKV);
    out[k] = to_host(be, O);
    lse[k] = to_host(be, L);
    dqkv[k] = to_host(be, DQKV);
  }
  expect_close(out[0], out[1], 0.0, kBf16Attention * max_abs(out[1]), c.str() + " out");
  expect_close(lse[0], lse[1], 0.0, kBf16Attention, c.str() + " lse");
  expect_close(dqkv[0], dqkv[1], 0.0, kBf16Attention * std::max(1.0, max_abs(dqkv[1])),
               c.str() + " dqkv");
}

TEST_F(CudaBackendTest, AttentionDecodeMatchesCpu) {
  struct DecodeCase {
    int64_t past, n_new, q_heads, kv_heads, head_dim;
  };
  const std::vector<DecodeCase> cases = {
      {0, 13, 3, 3, 12}, {200, 1, 14, 2, 64}, {127, 3, 9, 3, 8}, {300, 5, 4, 4, 128},
      {1, 1, 2, 1, 256}};
  for (const DecodeCase& c : cases) {
    const int64_t max_len = c.past + c.n_new + 4, kvw = c.kv_heads * c.head_dim;
    const AttentionShape s{1, c.n_new, c.q_heads, c.kv_heads, c.head_dim};
    auto qkv = random_vector(size_t(c.n_new * s.qkv_width()), 29, -1.5f, 1.5f);
    auto kc = random_vector(size_t(max_len * kvw), 30, -1.5f, 1.5f);
    auto vc = random_vector(size_t(max_len * kvw), 31, -1.5f, 1.5f);
    const std::string what = "past=" + std::to_string(c.past) + " new=" + std::to_string(c.n_new) +
                             " Hq=" + std::to_string(c.q_heads) + " D=" + std::to_string(c.head_dim);
    for (DType dt : {DType::F32, DType::BF16}) {
      std::vector<float> out[2], kout[2], vout[2];
      Backend* bes[2] = {&gpu(), &cpu()};
      for (int k = 0; k < 2; ++k) {
        Backend& be = *bes[k];
        Tensor QKV = to_device(be, qkv, {c.n_new, s.qkv_width()});
        Tensor K = to_device(be, kc, {max_len, kvw}), V = to_device(be, vc, {max_len, kvw});
        Tensor O = be.empty({c.n_new, c.q_heads * c.head_dim}, dt, MemoryCategory::Buffers, "out");
        be.attention_decode(QKV, K, V, decode_positions(be, c.past, c.n_new), s, O);
        out[k] = to_host(be, O);
        kout[k] = to_host(be, K);
        vout[k] = to_host(be, V);
      }
      expect_close(kout[0], kout[1], 0.0, 0.0, what + " k_cache");
      expect_close(vout[0], vout[1], 0.0, 0.0, what + " v_cache");
      if (dt == DType::F32)
        expect_close(out[0], out[1], 1e-5, 1e-6, what + " out f32");
      else
        expect_close(out[0], out[1], kBf16Step, 1e-6, what + " out bf16");
    }
  }
  // New tokens beyond the cache: the kernel reports it, and the next synchronize throws the
  // CPU's message.
  const AttentionShape s{1, 2, 2, 1, 8};
  Tensor QKV = gpu().zeros({2, s.qkv_width()}, DType::F32, MemoryCategory::Buffers, "qkv");
  Tensor K = gpu().zeros({5, 8}, DType::F32, MemoryCategory::Buffers, "k");
  Tensor V = gpu().zeros({5, 8}, DType::F32, MemoryCategory::Buffers, "v");
  Tensor O = gpu().zeros({2, 16}, DType::F32, MemoryCategory::Buffers, "out");
  gpu().attention_decode(QKV, K, V, decode_positions(gpu(), 4, 2), s, O);
  try {
    gpu().synchronize();
    ADD_FAILURE() << "new tokens beyond the cache were accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("2 new tokens after 4 cached ones do not fit a KV cache "
                                         "of 5 positions"),
              std::string::npos)
        << e.what();
  }
}

// ---------------------------------------------------------------- classifier, optimizer

struct ClassifierResult {
  std::vector<float> loss, dx, dw;
};

ClassifierResult run_classifier(Backend& be, const std::vector<float>& x,
                                const std::vector<float>& w, const std::vector<int32_t>& labels,
                                int64_t n, int64_t c, int64_t v, DType dt, float grad_scale,
                                const std::vector<float>& dw0, bool want_dx, bool want_dw) {
  Tensor X = to_device(be, x, {n, c}, dt), W = to_device(be, w, {v, c}, dt);
  Tensor L = ids_to_device(be, labels);
  Tensor Loss = to_device(be, {2.5f}, {1});  // accumulated onto
  Tensor DX = to_device(be, std::vector<float>(size_t(n * c), 7.0f), {n, c});  // overwritten
  Tensor DW = to_device(be, dw0, {v, c});
  be.classifier_cross_entropy(X, W, L, grad_scale, Loss, want_dx ? &DX : nullptr,
                              want_dw ? &DW : nullptr);
  return {to_host(be, Loss), to_host(be, DX), to_host(be, DW)};
}

std::vector<int32_t> labels_with_ignored(int64_t n, int64_t v, double ignore_fraction,
                                         uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int32_t> label(0, int32_t(v - 1));
  std::uniform_real_distribution<double> u(0.0, 1.0);
  std::vector<int32_t> out(static_cast<size_t>(n));
  for (auto& l : out) l = u(rng) < ignore_fraction ? -100 : label(rng);
  return out;
}

// Greedy decoding's next token on the device: the CPU's indices on the special rows, and on a
// Qwen-wide vocabulary (151936) of random logits.
TEST_F(CudaBackendTest, ArgmaxRowsMatchesCpu) {
  const ArgmaxCase c = argmax_case();
  EXPECT_EQ(argmax_rows_of(gpu(), c.x, c.rows, c.cols), c.want);

  const int64_t rows = 3, vocab = 151936;
  const std::vector<float> logits = random_vector(size_t(rows * vocab), 37, -8.0f, 8.0f);
  EXPECT_EQ(argmax_rows_of(gpu(), logits, rows, vocab),
            argmax_rows_of(cpu(), logits, rows, vocab));
}

// Sampling on the device draws what the CPU draws: exactly on rows whose weights are exact
// (ties), and on a Qwen-wide vocabulary of random logits, where the device's exp may differ
// from the CPU's by an ulp; that moves a draw only when its point or the nucleus's boundary
// falls within that ulp's share of the mass, so these draws allow one such difference.
TEST_F(CudaBackendTest, SampleRowsMatchesCpu) {
  const TiedSamplingCase tied;
  const std::vector<uint64_t> bits = {TiedSamplingCase::bits_for(0, 3),
                                      TiedSamplingCase::bits_for(1, 3),
                                      TiedSamplingCase::bits_for(2, 3)};
  EXPECT_EQ(sample_rows_of(gpu(), tied.rows(3), 3, tied.cols, bits, 0.8f, 0.5f),
            (std::vector<int32_t>{5, 17, 100}));
  const ArgmaxCase c = argmax_case();
  const std::vector<uint64_t> some_bits(size_t(c.rows), 12345);
  EXPECT_EQ(sample_rows_of(gpu(), c.x, c.rows, c.cols, some_bits, 0.0f, 0.9f), c.want);
  EXPECT_EQ(sample_rows_of(gpu(), c.x, c.rows, c.cols, some_bits, 0.7f, 0.9f),
            sample_rows_of(cpu(), c.x, c.rows, c.cols, some_bits, 0.7f, 0.9f));

  // Vocabularies narrower than a block's share of a row (4096 tokens).
  for (int64_t cols : {1, 3, 37}) {
    const std::vector<float> narrow = random_vector(size_t(8 * cols), 47, -3.0f, 3.0f);
    std::vector<uint64_t> narrow_bits(8);
    for (size_t r = 0; r < narrow_bits.size(); ++r)
      narrow_bits[r] = 0x9e3779b97f4a7c15ull * (r + 1);
    EXPECT_EQ(sample_rows_of(gpu(), narrow, 8, cols, narrow_bits, 1.0f, 0.7f),
              sample_rows_of(cpu(), narrow, 8, cols, narrow_bits, 1.0f, 0.7f))
        << cols << " tokens";
  }

  // Ties across the blocks' shares: 10000 equal logits (weights exactly 1 on both backends),
  // so the nucleus ends inside a run of ties in the second or third share and the draw falls
  // anywhere; and a row without a finite logit (-1 on both).
  {
    const int64_t wide = 10000;
    std::vector<float> equal(size_t(3 * wide), 0.5f);
    for (int64_t i = 0; i < wide; ++i) equal[size_t(2 * wide + i)] = -INFINITY;
    std::mt19937_64 tie_rng(44);
    for (float top_p : {0.45f, 0.83f, 1.0f})
      for (int round = 0; round < 3; ++round) {
        const std::vector<uint64_t> tie_bits = {tie_rng(), tie_rng(), tie_rng()};
        const std::vector<int32_t> want =
            sample_rows_of(cpu(), equal, 3, wide, tie_bits, 1.0f, top_p);
        EXPECT_EQ(sample_rows_of(gpu(), equal, 3, wide, tie_bits, 1.0f, top_p), want)
            << "top_p " << top_p;
        EXPECT_EQ(want[2], -1);
      }
  }

  // Peaked logits (a few tokens far above the rest, as a trained model's) and flat ones (the
  // nucleus most of the vocabulary), each row drawn with its own bits.
  const int64_t rows = 4, vocab = 151936;
  std::vector<float> logits = random_vector(size_t(rows * vocab), 41, -2.0f, 2.0f);
  for (int64_t r = 0; r < 2; ++r)
    for (int k = 0; k < 12; ++k)
      logits[size_t(r * vocab + (k * 7919 + r * 31) % vocab)] += 14.0f - float(k);
  std::mt19937_64 rng(43);
  int draws = 0, differ = 0;
  for (float temperature : {0.7f, 1.3f})
    for (float top_p : {0.5f, 0.9f, 1.0f})
      for (int round = 0; round < 2; ++round) {
        std::vector<uint64_t> row_bits(static_cast<size_t>(rows));
        for (uint64_t& b : row_bits) b = rng();
        const std::vector<int32_t> want =
            sample_rows_of(cpu(), logits, rows, vocab, row_bits, temperature, top_p);
        const std::vector<int32_t> got =
            sample_rows_of(gpu(), logits, rows, vocab, row_bits, temperature, top_p);
        for (size_t r = 0; r < size_t(rows); ++r, ++draws) {
          ASSERT_TRUE(got[r] >= 0 && got[r] < vocab) << got[r];
          if (got[r] != want[r]) {
            ++differ;
            std::printf("row %zu at T %.1f, top_p %.1f: the device drew %d, the CPU %d\n", r,
                        double(temperature), double(top_p), got[r], want[r]);
          }
        }
      }
  EXPECT_LE(differ, 1) << differ << " of " << draws << " draws differ from the CPU's";
}

TEST_F(CudaBackendTest, ClassifierCrossEntropyMatchesCpu) {
  struct Case {
    int64_t n, c, v;
    double ignore;
  };
  // The last case has more counted rows than one 128 MiB logits chunk (the fixture's budget / 64)
  // holds: 4 chunks. The
  // simulator's build uses 64 KiB chunks instead (the others cross chunks there) and skips it:
  // its cuBLASLt is plain loops.
  std::vector<Case> cases = {
      {1, 8, 5, 0.0}, {37, 64, 1000, 0.0}, {64, 96, 3001, 0.4}, {50, 32, 17, 1.0}};
#ifndef VACC_CUDA_SIM
  cases.push_back({4500, 64, 32768, 0.1});
#endif
  for (const Case& k : cases) {
    auto x = random_vector(size_t(k.n * k.c), 32);
    const float wr = 3.0f / std::sqrt(float(k.c));
    auto w = random_vector(size_t(k.v * k.c), 33, -wr, wr);
    auto labels = labels_with_ignored(k.n, k.v, k.ignore, 34);
    auto dw0 = random_vector(size_t(k.v * k.c), 35, -0.01f, 0.01f);
    for (DType dt : {DType::F32, DType::BF16}) {
      for (int mode = 0; mode < 3; ++mode) {  // both gradients, dx only, forward only
        const bool want_dx = mode <= 1, want_dw = mode == 0;
        auto g = run_classifier(gpu(), x, w, labels, k.n, k.c, k.v, dt, 0.37f, dw0, want_dx, want_dw);
        auto r = run_classifier(cpu(), x, w, labels, k.n, k.c, k.v, dt, 0.37f, dw0, want_dx, want_dw);
        const bool bf = dt == DType::BF16;
        const std::string what = "N=" + std::to_string(k.n) + " V=" + std::to_string(k.v) + " " +
                                 dtype_name(dt) + " mode " + std::to_string(mode);
        expect_close(g.loss, r.loss, bf ? 2e-4 : 2e-5, 1e-5, what + " loss");
        // bf16: the logit gradients are rounded to bf16 before the products, and a logit that
        // differs in its last f32 bits may round one bf16 step apart.
        const double grad_rtol = bf ? 2e-2 : 2e-4, grad_floor = bf ? 1e-2 : 1e-4;
        expect_close(g.dx, r.dx, grad_rtol, grad_floor * max_abs(r.dx) + 1e-12, what + " dx");
        expect_close(g.dw, r.dw, grad_rtol, grad_floor * max_abs(r.dw) + 1e-12, what + " dw");
      }
    }
  }
}

TEST_F(CudaBackendTest, ClassifierRejectsBadLabelsBeforeTouchingOutputs) {
  const int64_t n = 6, c = 8, v = 10;
  auto x = random_vector(size_t(n * c), 36), w = random_vector(size_t(v * c), 37);
  std::vector<int32_t> labels = {1, -100, 3, 10, 2, 0};
  std::string messages[2];
  Backend* bes[2] = {&gpu(), &cpu()};
  for (int k = 0; k < 2; ++k) {
    Backend& be = *bes[k];
    Tensor X = to_device(be, x, {n, c}), W = to_device(be, w, {v, c});
    Tensor L = ids_to_device(be, labels), Loss = to_device(be, {1.0f}, {1});
    Tensor DX = to_device(be, std::vector<float>(size_t(n * c), 7.0f), {n, c});
    try {
      be.classifier_cross_entropy(X, W, L, 1.0f, Loss, &DX, nullptr);
      ADD_FAILURE() << "label 10 of 10 classes was accepted";
    } catch (const Error& e) {
      messages[k] = e.what();
    }
    EXPECT_EQ(to_host(be, Loss)[0], 1.0f);
    EXPECT_EQ(to_host(be, DX)[0], 7.0f);
  }
  EXPECT_EQ(messages[0], messages[1]);
}

// Mixed precision keeps the logits in bf16 (what PyTorch's bf16 models compute the loss from):
// x = (1, 1) and weight rows (8, 2^-6), (0, 0), (-1, 2^-7) give the logits 8.015625, 0 and
// -0.9921875, of which the first rounds to 8 in bf16 (its neighbours are 2^-4 apart). With
// label 1, the loss is the log-sum-exp: 8.000460 rounded, 8.016078 not; f32 keeps 8.015625.
// The vocabulary-parallel pieces give the same lse and the label's logit.
TEST_F(CudaBackendTest, ClassifierRoundsTheLogitsToBf16InMixedPrecision) {
  const std::vector<float> x = {1.0f, 1.0f}, w = {8.0f, 0.015625f, 0.0f, 0.0f, -1.0f, 0.0078125f};
  auto lse_of = [](double a) { return std::log(std::exp(a) + 1.0 + std::exp(-0.9921875)); };
  for (DType dt : {DType::F32, DType::BF16}) {
    const double label0 = dt == DType::BF16 ? 8.0 : 8.015625, lse = lse_of(label0);
    for (Backend* be : {&cpu(), &gpu()}) {
      const std::string what = std::string(be == &cpu() ? "cpu " : "gpu ") + dtype_name(dt);
      Tensor X = to_device(*be, x, {1, 2}, dt), W = to_device(*be, w, {3, 2}, dt);
      Tensor Loss = to_device(*be, {0.0f}, {1});
      be->classifier_cross_entropy(X, W, ids_to_device(*be, {1}), 1.0f, Loss, nullptr, nullptr);
      EXPECT_NEAR(to_host(*be, Loss)[0], lse, 2e-6) << what;
      Tensor Lse = to_device(*be, {9.0f}, {1}), Tl = to_device(*be, {9.0f}, {1});
      be->classifier_logsumexp(X, W, 0, ids_to_device(*be, {0}), Lse, Tl);
      EXPECT_NEAR(to_host(*be, Lse)[0], lse, 2e-6) << what << " lse";
      EXPECT_EQ(to_host(*be, Tl)[0], float(label0)) << what << " label logit";
    }
  }
}

// The vocabulary-parallel pieces on one shard [vocab_start, vocab_start + V_shard) of a larger
// vocabulary: labels inside and outside the shard, ignored rows; the backward pass gets the same
// lse_global on both backends (the CPU's shard lse plus what other shards would add).
TEST_F(CudaBackendTest, VocabularyParallelClassifierMatchesCpu) {
  struct Case {
    int64_t n, c, v_shard, vocab_start;
    double ignore;
  };
  const std::vector<Case> cases = {
      {37, 64, 700, 300, 0.3}, {64, 96, 3001, 0, 0.0}, {20, 16, 50, 1000, 1.0}, {5, 8, 7, 3, 0.2}};
  for (const Case& k : cases) {
    const int64_t vocab = k.vocab_start + k.v_shard + 500;
    auto x = random_vector(size_t(k.n * k.c), 42);
    const float wr = 3.0f / std::sqrt(float(k.c));
    auto w = random_vector(size_t(k.v_shard * k.c), 43, -wr, wr);
    auto labels = labels_with_ignored(k.n, vocab, k.ignore, 44);
    auto dw0 = random_vector(size_t(k.v_shard * k.c), 45, -0.01f, 0.01f);
    for (DType dt : {DType::F32, DType::BF16}) {
      const bool bf = dt == DType::BF16;
      const std::string what = "N=" + std::to_string(k.n) + " V_shard=" + std::to_string(k.v_shard) +
                               " start=" + std::to_string(k.vocab_start) + " " + dtype_name(dt);
      std::vector<float> lse[2], target[2], dx[2], dw[2];
      std::vector<float> lse_global;
      Backend* bes[2] = {&cpu(), &gpu()};  // the CPU first: its lse makes lse_global
      for (int b = 0; b < 2; ++b) {
        Backend& be = *bes[b];
        Tensor X = to_device(be, x, {k.n, k.c}, dt), W = to_device(be, w, {k.v_shard, k.c}, dt);
        Tensor L = ids_to_device(be, labels);
        Tensor Lse = to_device(be, std::vector<float>(size_t(k.n), 9.0f), {k.n});
        Tensor Tl = to_device(be, std::vector<float>(size_t(k.n), 9.0f), {k.n});
        be.classifier_logsumexp(X, W, k.vocab_start, L, Lse, Tl);
        lse[b] = to_host(be, Lse);
        target[b] = to_host(be, Tl);
        if (b == 0) {
          lse_global = lse[0];
          for (float& g : lse_global) g += 0.5f;
        }
        Tensor G = to_device(be, lse_global, {k.n});
        Tensor DX = to_device(be, std::vector<float>(size_t(k.n * k.c), 7.0f), {k.n, k.c});
        Tensor DW = to_device(be, dw0, {k.v_shard, k.c});
        be.classifier_cross_entropy_backward(X, W, k.vocab_start, L, G, 0.37f, &DX, &DW);
        be.classifier_cross_entropy_backward(X, W, k.vocab_start, L, G, 0.37f, nullptr, nullptr);
        dx[b] = to_host(be, DX);
        dw[b] = to_host(be, DW);
      }
      expect_close(lse[1], lse[0], 2e-5, 2e-5, what + " lse");
      expect_close(target[1], target[0], 2e-5, 2e-5, what + " target_logit");
      const double grad_rtol = bf ? 2e-2 : 2e-4, grad_floor = bf ? 1e-2 : 1e-4;
      expect_close(dx[1], dx[0], grad_rtol, grad_floor * max_abs(dx[0]) + 1e-12, what + " dx");
      expect_close(dw[1], dw[0], grad_rtol, grad_floor * max_abs(dw[0]) + 1e-12, what + " dw");
    }
  }
  // A negative label (not -100) is rejected with the CPU's message.
  std::string messages[2];
  Backend* bes[2] = {&gpu(), &cpu()};
  for (int b = 0; b < 2; ++b) {
    Backend& be = *bes[b];
    Tensor X = to_device(be, random_vector(16, 46), {2, 8}), W = to_device(be, random_vector(24, 47), {3, 8});
    Tensor L = ids_to_device(be, {1, -5});
    Tensor Lse = be.empty({2}, DType::F32, MemoryCategory::Buffers, "lse");
    Tensor Tl = be.empty({2}, DType::F32, MemoryCategory::Buffers, "target");
    try {
      be.classifier_logsumexp(X, W, 0, L, Lse, Tl);
      ADD_FAILURE() << "label -5 was accepted";
    } catch (const Error& e) {
      messages[b] = e.what();
    }
  }
  EXPECT_EQ(messages[0], messages[1]);
}

// AdamW from the same start on one backend: `steps` updates by `step` with fresh gradients;
// returns param, m and v.
using AdamWCall = std::function<void(Backend&, Tensor&, const Tensor&, Tensor&, Tensor&,
                                     const AdamWParams&)>;
std::array<std::vector<float>, 3> adamw_run(Backend& be, int64_t n, int64_t steps, float lr,
                                            float weight_decay, const AdamWCall& step) {
  Tensor P = to_device(be, random_vector(size_t(n), 38), {n});
  Tensor M = to_device(be, random_vector(size_t(n), 39, -0.1f, 0.1f), {n});
  Tensor V = to_device(be, random_vector(size_t(n), 40, 0.0f, 0.01f), {n});
  for (int64_t k = 1; k <= steps; ++k) {
    Tensor G = to_device(be, random_vector(size_t(n), 41 + uint64_t(k)), {n});
    AdamWParams hp;
    hp.lr = lr;
    hp.weight_decay = weight_decay;
    hp.step = k;
    hp.grad_scale = 0.7f;
    step(be, P, G, M, V, hp);
  }
  return {to_host(be, P), to_host(be, M), to_host(be, V)};
}

TEST_F(CudaBackendTest, AdamWStepsMatchCpu) {
  const AdamWCall step = [](Backend& be, Tensor& P, const Tensor& G, Tensor& M, Tensor& V,
                            const AdamWParams& hp) { be.adamw_step(P, G, M, V, hp); };
  const auto g = adamw_run(gpu(), 100003, 3, 1e-3f, 0.1f, step);
  const auto c = adamw_run(cpu(), 100003, 3, 1e-3f, 0.1f, step);
  expect_close(g[0], c[0], 1e-6, 1e-4 * 1e-3, "param");
  expect_close(g[1], c[1], 1e-6, 1e-7, "m");
  expect_close(g[2], c[2], 1e-6, 1e-8, "v");
}

// All of a model's segments in one launch: gaps between segments stay untouched, decay only
// where asked, pieces longer than one work item (16384), and both the float4 route (offsets and
// sizes multiples of 4) and the scalar one.
TEST_F(CudaBackendTest, AdamWSegmentsMatchCpu) {
  const int64_t n = 50021;
  const std::vector<std::vector<AdamWSegment>> layouts = {
      {{0, 40000, true}, {40004, 896, false}, {40900, 9000, true}},
      {{1, 40001, true}, {40003, 7, false}, {40010, 10011, true}}};
  const std::vector<float> p0 = random_vector(size_t(n), 38);  // adamw_run's start
  for (const auto& segments : layouts) {
    // Each run also writes a bf16 copy of the parameters, kept here (k: 0 gpu, 1 cpu).
    std::vector<float> copies[2];
    auto run = [&](Backend& be, int k) {
      Tensor copy = be.zeros({n}, DType::BF16, MemoryCategory::Parameters, "param copy");
      const AdamWCall step = [&](Backend& b, Tensor& P, const Tensor& G, Tensor& M, Tensor& V,
                                 const AdamWParams& hp) {
        b.adamw_step_segments(P, G, M, V, segments, hp, &copy);
      };
      auto out = adamw_run(be, n, 2, 1e-2f, 0.3f, step);
      copies[k] = to_host(be, copy);
      return out;
    };
    const auto g = run(gpu(), 0);
    const auto c = run(cpu(), 1);
    const std::string what = "segments from offset " + std::to_string(segments[0].offset);
    expect_close(g[0], c[0], 1e-6, 1e-4 * 1e-2, what + " param");
    // The copy is the updated parameters rounded (zero in the gaps, as it started).
    expect_close(copies[0], copies[1], kBf16Step, 1e-4 * 1e-2, what + " bf16 copy");
    std::vector<bool> covered(size_t(n), false);
    for (const AdamWSegment& sg : segments)
      std::fill_n(covered.begin() + sg.offset, sg.numel, true);
    int64_t gaps = 0;
    for (int64_t i = 0; i < n; ++i)
      if (!covered[size_t(i)]) {
        ++gaps;
        EXPECT_EQ(g[0][size_t(i)], p0[size_t(i)]) << what << ": element " << i << " changed";
      }
    EXPECT_GT(gaps, 0) << what;
  }
  // Overlapping segments are refused with a message naming the segment.
  Tensor P = gpu().zeros({8}, DType::F32, MemoryCategory::Parameters, "p");
  Tensor G = gpu().zeros({8}, DType::F32, MemoryCategory::Gradients, "g");
  Tensor M = gpu().zeros({8}, DType::F32, MemoryCategory::OptimizerState, "m");
  Tensor V = gpu().zeros({8}, DType::F32, MemoryCategory::OptimizerState, "v");
  try {
    gpu().adamw_step_segments(P, G, M, V, {{0, 4, true}, {3, 4, true}}, AdamWParams{}, nullptr);
    ADD_FAILURE() << "overlapping segments were accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("segment 1 [3, 7)"), std::string::npos) << e.what();
  }
}

// ---------------------------------------------------------------- memory and argument checks

TEST_F(CudaBackendTest, AllocatorCountsBudgetAndHighWaterMark) {
  auto be = make_cuda_backend(0, size_t(256) << 20);
  DeviceAllocator& alloc = be->allocator();
  const size_t base = alloc.in_use();  // the backend's own buffers (cuBLASLt workspace, ...)
  {
    Tensor a = be->empty({1000, 1000}, DType::F32, MemoryCategory::Activations, "a");
    Tensor b = be->empty({10, 10}, DType::BF16, MemoryCategory::Parameters, "b");
    EXPECT_EQ(alloc.in_use(), base + 4000000 + 200);
    EXPECT_EQ(alloc.in_use(MemoryCategory::Parameters), 200u);
  }
  EXPECT_EQ(alloc.in_use(), base);
  EXPECT_GE(alloc.high_water_mark(), base + 4000200);
  {
    // Freed blocks are reused: the same sizes again do not grow the device's usage.
    Tensor a = be->empty({1000, 1000}, DType::F32, MemoryCategory::Activations, "a again");
    be->fill(a, 1.0f);
    EXPECT_EQ(to_host(*be, a)[999999], 1.0f);
  }
  try {
    Tensor huge = be->empty({int64_t(300) << 20}, DType::F32, MemoryCategory::Activations, "huge");
    ADD_FAILURE() << "a tensor over the budget was allocated";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("out of memory on cuda:0"), std::string::npos) << e.what();
  }
}

TEST_F(CudaBackendTest, TensorsOnAnotherDeviceAreRejected) {
  Tensor host = to_device(cpu(), {1.0f, 2.0f}, {2});
  Tensor dev = to_device(gpu(), {1.0f, 2.0f}, {2});
  try {
    gpu().add(host, dev, dev);
    ADD_FAILURE() << "a host tensor was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("expected a tensor on cuda:0"), std::string::npos)
        << e.what();
  }
}

// ---------------------------------------------------------------- graphs

// A captured region runs nothing until replayed; each replay reads the inputs' memory as it
// is then (uploads between replays are seen) and gives what the same ops give eagerly.
TEST_F(CudaBackendTest, GraphReplaysTheRegionOnTheCurrentInputs) {
  ASSERT_TRUE(gpu().supports_graphs());
  const int64_t m = 37, k = 64, n = 48;
  std::vector<float> a = random_vector(size_t(m * k), 1), b = random_vector(size_t(m * k), 2),
                     w = random_vector(size_t(n * k), 3), bias = random_vector(size_t(n), 4);
  // The region, on either backend: y = (a + b) @ w^T + bias in bf16 products (scratch
  // conversions and the bf16 bias copy allocate inside), then rms-normalised rows.
  auto run = [&](Backend& be, const std::vector<float>& a_values, Tensor* graphed_out,
                 std::unique_ptr<OpGraph>* graph) {
    Tensor A = to_device(be, a_values, {m, k}), B = to_device(be, b, {m, k});
    Tensor W = to_device(be, w, {n, k}), Bias = to_device(be, bias, {n});
    Tensor norm_w = to_device(be, std::vector<float>(size_t(n), 1.5f), {n});
    Tensor Y = be.zeros({m, n}, DType::F32, MemoryCategory::Buffers, "y");
    Tensor Out = be.zeros({m, n}, DType::F32, MemoryCategory::Buffers, "out");
    Tensor Rstd = be.empty({m}, DType::F32, MemoryCategory::Buffers, "rstd");
    auto region = [&] {
      Tensor sum = be.empty({m, k}, DType::F32, MemoryCategory::Buffers, "sum");
      be.add(A, B, sum);
      Tensor sum16 = be.empty({m, k}, DType::BF16, MemoryCategory::Buffers, "sum bf16");
      Tensor w16 = be.empty({n, k}, DType::BF16, MemoryCategory::Buffers, "w bf16");
      be.copy(sum, sum16);
      be.copy(W, w16);
      be.matmul(sum16, false, w16, true, Y, 1.0f, 0.0f, &Bias);
      be.rmsnorm_forward(Y, norm_w, 1e-5f, Out, Rstd);
    };
    if (!graph) {
      region();
      return to_host(be, Out);
    }
    *graph = be.capture_graph(region);
    EXPECT_EQ(to_host(be, Out), std::vector<float>(size_t(m * n), 0.0f))
        << "the capture ran the region";
    (*graph)->replay();
    std::vector<float> first = to_host(be, Out);
    std::vector<float> a2 = a;
    for (float& x : a2) x = -2.0f * x;
    be.upload(a2.data(), A);
    be.fill(Out, 0.0f);
    (*graph)->replay();
    *graphed_out = to_device(be, to_host(be, Out), {m, n});
    return first;
  };
  std::unique_ptr<OpGraph> graph;
  Tensor second;
  const std::vector<float> first = run(gpu(), a, &second, &graph);
  EXPECT_EQ(first, run(gpu(), a, nullptr, nullptr)) << "replay differs from the eager ops";
  std::vector<float> a2 = a;
  for (float& x : a2) x = -2.0f * x;
  EXPECT_EQ(to_host(gpu(), second), run(gpu(), a2, nullptr, nullptr))
      << "the replay after new inputs differs from the eager ops on them";
  // And the region is right: against the CPU backend (bf16 products: the matmul test's bound).
  expect_close(first, run(cpu(), a, nullptr, nullptr), 3e-2, 3e-2, "graph vs cpu");
}

// What a graph cannot hold fails clearly, abandons the capture, and leaves the backend usable.
TEST_F(CudaBackendTest, CaptureRefusesHostCopiesAndWaits) {
  Tensor x = to_device(gpu(), {1.0f, 2.0f, 3.0f}, {3});
  std::vector<float> host(3);
  const std::pair<const char*, std::function<void()>> regions[] = {
      {"a copy from the device to the host", [&] { gpu().download(x, host.data()); }},
      {"a copy from the host to the device", [&] { gpu().upload(host.data(), x); }},
      {"waiting for the device", [&] { gpu().synchronize(); }},
  };
  for (const auto& [what, region] : regions) {
    try {
      gpu().capture_graph([&] {
        gpu().scale(x, 2.0f);
        region();
      });
      ADD_FAILURE() << what << " was captured";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(std::string(what) + " inside a CUDA graph capture"),
                std::string::npos)
          << e.what();
    }
  }
  EXPECT_EQ(to_host(gpu(), x), (std::vector<float>{1.0f, 2.0f, 3.0f})) << "an abandoned capture ran";
  auto graph = gpu().capture_graph([&] { gpu().scale(x, 2.0f); });
  graph->replay();
  graph->replay();
  EXPECT_EQ(to_host(gpu(), x), (std::vector<float>{4.0f, 8.0f, 12.0f}));
}

// A block a capture allocated or freed is never handed to a tensor outside a capture while a
// graph lives (the graph would overwrite it at its next replay); once the graphs are gone it is.
TEST_F(CudaBackendTest, GraphPoolKeepsCapturedBlocksFromOtherTensors) {
  auto be = make_cuda_backend(0, size_t(256) << 20);
  auto& alloc = dynamic_cast<cuda::CudaAllocator&>(be->allocator());
  const int64_t n = 1 << 16;
  Tensor kept = be->empty({n}, DType::F32, MemoryCategory::Buffers, "freed inside the capture");
  void* kept_ptr = kept.data();
  void* freed_before = nullptr;
  {
    Tensor t = be->empty({n}, DType::F32, MemoryCategory::Buffers, "freed before capture");
    freed_before = t.data();
  }  // now cached: the capture takes it into the pool
  void* inside = nullptr;
  auto graph = be->capture_graph([&] {
    Tensor scratch = be->empty({n}, DType::F32, MemoryCategory::Buffers, "scratch");
    be->fill(scratch, 1.0f);
    be->add(scratch, kept, kept);
    inside = scratch.data();
    kept = Tensor();
  });
  EXPECT_EQ(inside, freed_before) << "the capture did not reuse the cached block";
  EXPECT_GE(alloc.graph_pool_bytes(), size_t(2 * n * 4));
  // Its two free blocks count against the budget: a tensor that fits beside the bytes in use
  // but not beside them too is refused, naming them.
  EXPECT_EQ(alloc.reserved_bytes(), size_t(2 * n * 4));
  const size_t room = alloc.budget() - alloc.in_use();
  try {
    Tensor t = be->empty({int64_t(room / 4)}, DType::F32, MemoryCategory::Buffers, "too big");
    ADD_FAILURE() << "a tensor over the budget less the graph pool was allocated";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("kept for graphs: 512.00 KiB"), std::string::npos)
        << e.what();
  }
  { Tensor t = be->empty({int64_t(room / 4) - 2 * n}, DType::F32, MemoryCategory::Buffers, "fits"); }
  std::vector<Tensor> others;
  for (int i = 0; i < 4; ++i) {
    others.push_back(be->empty({n}, DType::F32, MemoryCategory::Buffers, "other"));
    EXPECT_NE(others.back().data(), inside);
    EXPECT_NE(others.back().data(), kept_ptr);
  }
  graph.reset();
  EXPECT_EQ(alloc.graph_pool_bytes(), 0u);
  EXPECT_EQ(alloc.reserved_bytes(), 0u);
  others.clear();
  bool reused = false;
  for (int i = 0; i < 8; ++i) {
    others.push_back(be->empty({n}, DType::F32, MemoryCategory::Buffers, "after"));
    reused |= others.back().data() == inside || others.back().data() == kept_ptr;
  }
  EXPECT_TRUE(reused) << "the pool's blocks did not return to ordinary use";
}

TEST_F(CudaBackendTest, CpuBackendHasNoGraphs) {
  EXPECT_FALSE(cpu().supports_graphs());
  try {
    cpu().capture_graph([] {});
    ADD_FAILURE() << "the CPU backend captured a graph";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("cannot capture graphs"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace vacc::test
