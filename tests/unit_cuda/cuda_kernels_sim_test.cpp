// The CUDA kernels run in the CPU simulator (cuda_sim.h) against the CPU kernels on the same
// inputs: the launchers of kernels/cuda/cuda_kernels.h and matmul_fallback.h, rewritten to plain
// C++ by cu_to_sim.py, on host memory. This runs everywhere (no GPU needed) and checks the
// kernels' indexing, tiling, online softmax, reductions and barrier structure; what only a GPU
// shows (memory model, resource limits, cuBLASLt, the backend's streams) is left to
// cuda_backend_test. Tolerances as in cuda_backend_test.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "test_util.h"
#include "vacc/core/error.h"
#include "vacc/kernels/cpu/cpu_kernels.h"
#include "vacc/kernels/cuda/attention_flash_mma.h"
#include "vacc/kernels/cuda/attention_route.h"
#include "vacc/kernels/cuda/attention_self_check.h"
#include "vacc/kernels/cuda/cuda_context.h"
#include "vacc/kernels/cuda/cuda_kernels.h"
#include "vacc/kernels/cuda/matmul_fallback.h"

namespace vacc::test {
namespace {

constexpr double kBf16Step = 1.0 / 128;  // one bf16 ulp, relative (at most)
cudaStream_t const kStream = nullptr;

std::vector<int32_t> random_ints(size_t n, int32_t lo, int32_t hi, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int32_t> dist(lo, hi - 1);
  std::vector<int32_t> v(n);
  for (int32_t& x : v) x = dist(rng);
  return v;
}

std::vector<bf16> to_bf16(const std::vector<float>& v) {
  std::vector<bf16> out(v.size());
  for (size_t i = 0; i < v.size(); ++i) out[i] = float_to_bf16(v[i]);
  return out;
}
std::vector<float> from_bf16(const std::vector<bf16>& v) {
  std::vector<float> out(v.size());
  for (size_t i = 0; i < v.size(); ++i) out[i] = bf16_to_float(v[i]);
  return out;
}
double max_abs(const std::vector<float>& v) {
  double m = 0;
  for (float x : v) m = std::max(m, std::abs(double(x)));
  return m;
}

// Output buffers of either dtype as f32 values.
struct Out {
  DType dtype;
  std::vector<float> f;
  std::vector<bf16> b;
  Out(DType dt, size_t n, float init = 0.0f) : dtype(dt) {
    if (dt == DType::F32)
      f.assign(n, init);
    else
      b.assign(n, float_to_bf16(init));
  }
  void* data() { return dtype == DType::F32 ? static_cast<void*>(f.data()) : b.data(); }
  std::vector<float> values() const { return dtype == DType::F32 ? f : from_bf16(b); }
};

TEST(CudaKernelsSim, ConvertFillAddScaleAreExact) {
  std::vector<float> v = random_vector(3001, 1, -1e3f, 1e3f);
  const float specials[] = {0.0f, -0.0f, 1.0f + 1.0f / 256, 1.0f + 3.0f / 256, 1e-30f, -65504.0f,
                            std::numeric_limits<float>::infinity(),
                            std::numeric_limits<float>::quiet_NaN(),
                            -std::numeric_limits<float>::quiet_NaN(),
                            std::numeric_limits<float>::denorm_min()};
  std::copy(std::begin(specials), std::end(specials), v.begin());
  // Whole groups of four at an aligned start take the vectorised kernels; the others, the
  // element-by-element ones. Both must round exactly as float_to_bf16.
  for (size_t first : {size_t(0), size_t(1)})
    for (size_t n : {size_t(3000), size_t(2999)}) {
      const std::string what = "first " + std::to_string(first) + ", n " + std::to_string(n);
      std::vector<bf16> b(n + 1);
      cuda::convert(v.data() + first, DType::F32, b.data() + first, DType::BF16, int64_t(n),
                    kStream);
      size_t bad = 0;
      for (size_t i = first; i < first + n; ++i) bad += b[i].bits != float_to_bf16(v[i]).bits;
      EXPECT_EQ(bad, 0u) << "f32 -> bf16, " << what;
      std::vector<float> back(n + 1);
      cuda::convert(b.data() + first, DType::BF16, back.data() + first, DType::F32, int64_t(n),
                    kStream);
      bad = 0;
      for (size_t i = first; i < first + n; ++i) {
        const float want = bf16_to_float(b[i]);
        bad += std::memcmp(&want, &back[i], 4) != 0;
      }
      EXPECT_EQ(bad, 0u) << "bf16 -> f32, " << what;
    }

  std::vector<int32_t> ids(77, 0);
  cuda::fill(ids.data(), DType::I32, 5.0f, 77, kStream);
  EXPECT_EQ(std::count(ids.begin(), ids.end(), 5), 77);
  // f32 and bf16 fills: four a store from an aligned start (with n % 4 left over), else one by
  // one; every element of the range and nothing beside it.
  for (size_t first : {size_t(0), size_t(1)})
    for (size_t n : {size_t(300), size_t(299), size_t(3)}) {
      const std::string what = "first " + std::to_string(first) + ", n " + std::to_string(n);
      std::vector<float> ff(n + 2, 9.0f);
      cuda::fill(ff.data() + first, DType::F32, 0.3f, int64_t(n), kStream);
      std::vector<bf16> fb(n + 2, float_to_bf16(9.0f));
      cuda::fill(fb.data() + first, DType::BF16, 0.3f, int64_t(n), kStream);
      for (size_t i = 0; i < n + 2; ++i) {
        const bool in = i >= first && i < first + n;
        ASSERT_EQ(ff[i], in ? 0.3f : 9.0f) << "f32 element " << i << ", " << what;
        ASSERT_EQ(fb[i].bits, float_to_bf16(in ? 0.3f : 9.0f).bits)
            << "bf16 element " << i << ", " << what;
      }
    }

  auto a = random_vector(1000, 2), c = random_vector(1000, 3);
  std::vector<float> sum(1000);
  for (int64_t n : {int64_t(1000), int64_t(999)}) {  // vectorised, then element by element
    std::fill(sum.begin(), sum.end(), 0.0f);
    cuda::add(a.data(), c.data(), sum.data(), n, kStream);
    for (int64_t i = 0; i < n; ++i) ASSERT_EQ(sum[size_t(i)], a[size_t(i)] + c[size_t(i)]) << n;
  }
  cuda::scale(a.data(), -1.5f, 1000, kStream);
  EXPECT_EQ(a[17], c[17] * 0.0f + random_vector(1000, 2)[17] * -1.5f);
}

TEST(CudaKernelsSim, SumOfSquaresAndBiasBackward) {
  for (int64_t n : {int64_t(1), int64_t(257), int64_t(70001)}) {
    auto x = random_vector(size_t(n), 4, -2.0f, 2.0f);
    double want = 0.5;
    for (float v : x) want += double(v) * double(v);
    float acc = 0.5f;
    std::vector<double> partials(cuda::kSumPartials);
    cuda::sum_of_squares(x.data(), n, &acc, partials.data(), kStream);
    EXPECT_NEAR(acc, want, 1e-6 * want) << "n=" << n;
  }
  for (int64_t M : {int64_t(70), int64_t(1100)}) {  // one chunk of rows; three, the last short
    const int64_t N = 45;
    auto dy = random_vector(size_t(M * N), 5);
    auto g = random_vector(size_t(N), 6), c = g;
    std::vector<float> partials(size_t(cuda::column_sum_chunks(M) * N));
    cuda::column_sums(dy.data(), nullptr, nullptr, M, N, partials.data(), g.data(), kStream);
    cpu::bias_backward(dy.data(), c.data(), M, N);
    expect_close(g, c, 1e-5, 1e-6 * double(M), "bias_backward M=" + std::to_string(M));
  }
}

TEST(CudaKernelsSim, MatmulFallbackMatchesCpu) {
  struct Case {
    int64_t M, N, K;
    bool ta, tb;
    DType in, out;
    float alpha, beta;
    bool bias;
  };
  const std::vector<Case> cases = {
      {17, 23, 19, false, false, DType::F32, DType::F32, 1.0f, 0.0f, false},
      {17, 23, 19, true, false, DType::F32, DType::F32, 0.5f, 1.0f, false},
      {17, 23, 19, false, true, DType::BF16, DType::F32, 1.0f, 0.0f, true},
      {17, 23, 40, true, true, DType::BF16, DType::BF16, 1.0f, 0.0f, true},
  };
  for (const Case& k : cases) {
    auto a = random_vector(size_t(k.M * k.K), 7), b = random_vector(size_t(k.K * k.N), 8);
    auto bias = random_vector(size_t(k.N), 9), init = random_vector(size_t(k.M * k.N), 10);
    auto ab = to_bf16(a), bb = to_bf16(b);
    const void* pa = k.in == DType::F32 ? static_cast<const void*>(a.data()) : ab.data();
    const void* pb = k.in == DType::F32 ? static_cast<const void*>(b.data()) : bb.data();
    Out got(k.out, size_t(k.M * k.N)), want(k.out, size_t(k.M * k.N));
    if (k.out == DType::F32) got.f = want.f = init;
    cuda::matmul_fallback(pa, k.ta, pb, k.tb, got.data(), k.M, k.N, k.K, k.in, k.out, k.alpha,
                          k.beta, k.bias ? bias.data() : nullptr, kStream);
    cpu::matmul(pa, k.ta, pb, k.tb, want.data(), k.M, k.N, k.K, k.in, k.out, k.alpha, k.beta,
                k.bias ? bias.data() : nullptr);
    expect_close(got.values(), want.values(), k.out == DType::F32 ? 1e-5 : kBf16Step, 1e-5,
                 "matmul_fallback M=" + std::to_string(k.M) + " K=" + std::to_string(k.K));
  }
}

TEST(CudaKernelsSim, EmbeddingRmsnormRopeSwiglu) {
  {  // embedding over a shard
    const int64_t V = 13, C = 40, N = 30, start = 5;
    auto table = random_vector(size_t(V * C), 11);
    auto ids = random_ints(size_t(N), 0, int32_t(start + V + 4), 12);
    auto dout = random_vector(size_t(N * C), 13);
    std::vector<float> g(size_t(N * C), 9.0f), c(size_t(N * C), 9.0f);
    cuda::embedding_forward(ids.data(), table.data(), start, V, N, C, g.data(), kStream);
    cpu::embedding_forward(ids.data(), table.data(), start, V, N, C, c.data());
    expect_close(g, c, 0.0, 0.0, "embedding_forward");
    auto gt = random_vector(size_t(V * C), 14), ct = gt;
    cuda::embedding_backward(ids.data(), dout.data(), start, V, N, C, gt.data(), kStream);
    cpu::embedding_backward(ids.data(), dout.data(), start, V, N, C, ct.data());
    expect_close(gt, ct, 1e-6, 1e-6, "embedding_backward");
  }
  // rmsnorm: rows read four at a time (C = 300) and one at a time (C = 301); 9 rows, so the last
  // block of 8 rows has one.
  for (const int64_t C : {int64_t(300), int64_t(301)}) {
    const int64_t N = 9;
    auto x = random_vector(size_t(N * C), 15, -2.0f, 2.0f), w = random_vector(size_t(C), 16);
    for (DType dt : {DType::F32, DType::BF16}) {
      Out g(dt, size_t(N * C)), c(dt, size_t(N * C));
      std::vector<float> gr(static_cast<size_t>(N)), cr(static_cast<size_t>(N));
      cuda::rmsnorm_forward(x.data(), w.data(), 1e-6f, N, C, g.data(), dt, gr.data(), kStream);
      cpu::rmsnorm_forward(x.data(), w.data(), 1e-6f, N, C, c.data(), dt, cr.data());
      expect_close(g.values(), c.values(), dt == DType::F32 ? 1e-5 : kBf16Step + 1e-5, 1e-6,
                   "rmsnorm_forward " + dtype_name(dt));
      expect_close(gr, cr, 1e-5, 0.0, "rstd");
    }
    std::vector<float> rstd(static_cast<size_t>(N)), y(size_t(N * C));
    cpu::rmsnorm_forward(x.data(), w.data(), 1e-6f, N, C, y.data(), DType::F32, rstd.data());
    auto dout = random_vector(size_t(N * C), 17);
    std::vector<float> partials(size_t(cuda::rmsnorm_backward_scratch_floats(N, C)));
    for (bool with_residual : {false, true})
      for (DType copy_dt : {DType::F32, DType::BF16}) {
        auto residual = random_vector(size_t(N * C), 18);
        std::vector<float> gdx(size_t(N * C), 55.0f), cdx = gdx;
        Out gcopy(copy_dt, size_t(N * C)), ccopy(copy_dt, size_t(N * C));
        auto gdw = random_vector(size_t(C), 19), cdw = gdw;
        const float* res = with_residual ? residual.data() : nullptr;
        cuda::rmsnorm_backward(dout.data(), x.data(), w.data(), rstd.data(), N, C, res,
                               gdx.data(), gcopy.data(), copy_dt, gdw.data(), partials.data(),
                               kStream);
        cpu::rmsnorm_backward(dout.data(), x.data(), w.data(), rstd.data(), N, C, res, cdx.data(),
                              ccopy.data(), copy_dt, cdw.data());
        expect_close(gdx, cdx, 1e-4, 1e-5 * max_abs(cdx), "rmsnorm dx");
        expect_close(gcopy.values(), ccopy.values(), copy_dt == DType::F32 ? 1e-4 : kBf16Step,
                     1e-5 * max_abs(cdx), "rmsnorm dx copy " + dtype_name(copy_dt));
        expect_close(gdw, cdw, 1e-4, 1e-5 * max_abs(cdw), "rmsnorm dweight");
      }
    // dx may be dout itself, and the residual too.
    auto inplace = dout, cdx = dout;
    std::vector<float> gdw(size_t(C), 0.0f), cdw(size_t(C), 0.0f);
    cuda::rmsnorm_backward(inplace.data(), x.data(), w.data(), rstd.data(), N, C, inplace.data(),
                           inplace.data(), nullptr, DType::F32, gdw.data(), partials.data(),
                           kStream);
    cpu::rmsnorm_backward(dout.data(), x.data(), w.data(), rstd.data(), N, C, dout.data(),
                          cdx.data(), nullptr, DType::F32, cdw.data());
    expect_close(inplace, cdx, 1e-4, 1e-5 * max_abs(cdx), "rmsnorm dx in place of dout");
    expect_close(gdw, cdw, 1e-4, 1e-5 * max_abs(cdw), "rmsnorm dweight (dx in place)");
  }
  // rope: head_dim 16 four pairs at a time, 10 (5 pairs per half) one at a time.
  for (const int64_t D : {int64_t(16), int64_t(10)}) {
    const int64_t N = 7, H = 3, W = (H + 2) * D, P = 20;
    auto x = random_vector(size_t(N * W), 20), cs = random_vector(size_t(P * D / 2), 21);
    auto sn = random_vector(size_t(P * D / 2), 22);
    auto pos = random_ints(size_t(N), 0, int32_t(P), 23);
    cuda::DeviceError err{};
    for (bool inv : {false, true}) {
      auto g = x, c = x;
      cuda::rope(g.data(), DType::F32, N, W, pos.data(), cs.data(), sn.data(), P, H, D, inv,
                 nullptr, DType::F32, &err, kStream);
      cpu::rope(c.data(), DType::F32, N, W, pos.data(), cs.data(), sn.data(), P, H, D, inv,
                nullptr, DType::F32);
      expect_close(g, c, 1e-6, 1e-6, inv ? "rope inverse" : "rope");
    }
    // bf16 rows in place, each with a copy of the other dtype (f32 rows: bf16; bf16: f32).
    for (DType dt : {DType::F32, DType::BF16}) {
      const DType copy_dt = dt == DType::F32 ? DType::BF16 : DType::F32;
      Out g(dt, size_t(N * W)), c(dt, size_t(N * W));
      Out gc(copy_dt, size_t(N * W)), cc(copy_dt, size_t(N * W));
      for (Out* o : {&g, &c}) {
        if (dt == DType::F32) o->f = x;
        else o->b = to_bf16(x);
      }
      cuda::rope(g.data(), dt, N, W, pos.data(), cs.data(), sn.data(), P, H, D, false, gc.data(),
                 copy_dt, &err, kStream);
      cpu::rope(c.data(), dt, N, W, pos.data(), cs.data(), sn.data(), P, H, D, false, cc.data(),
                copy_dt);
      const double rtol = dt == DType::F32 ? 1e-6 : kBf16Step;
      expect_close(g.values(), c.values(), rtol, 1e-6, "rope " + dtype_name(dt));
      expect_close(gc.values(), cc.values(), kBf16Step, 1e-6, "rope copy " + dtype_name(copy_dt));
    }
    EXPECT_EQ(err.code, cuda::kNoError);
    pos[4] = int32_t(P);
    auto g = x;
    cuda::rope(g.data(), DType::F32, N, W, pos.data(), cs.data(), sn.data(), P, H, D, false,
               nullptr, DType::F32, &err, kStream);
    EXPECT_EQ(err.code, cuda::kRopePositionOutOfRange);
    EXPECT_EQ(err.a, P);
    EXPECT_EQ(err.b, 4);
    EXPECT_EQ(err.c, P);
  }

  for (int64_t F : {int64_t(300), int64_t(301)}) {  // swiglu: groups of 4 columns, then single
    const int64_t N = 5;
    auto gu = random_vector(size_t(N * 2 * F), 24, -6.0f, 6.0f), dout = random_vector(size_t(N * F), 25);
    for (DType dt : {DType::F32, DType::BF16}) {
      Out g(dt, size_t(N * F)), c(dt, size_t(N * F));
      cuda::swiglu_forward(gu.data(), DType::F32, N, F, g.data(), dt, kStream);
      cpu::swiglu_forward(gu.data(), DType::F32, N, F, c.data(), dt);
      const double rtol = dt == DType::F32 ? 1e-5 : kBf16Step + 1e-5;
      expect_close(g.values(), c.values(), rtol, 1e-7,
                   "swiglu_forward F=" + std::to_string(F) + " " + dtype_name(dt));
      Out gd(dt, size_t(N * 2 * F)), cd(dt, size_t(N * 2 * F));
      cuda::swiglu_backward(dout.data(), gu.data(), DType::F32, N, F, gd.data(), dt, kStream);
      cpu::swiglu_backward(dout.data(), gu.data(), DType::F32, N, F, cd.data(), dt);
      expect_close(gd.values(), cd.values(), rtol, 1e-6,
                   "swiglu_backward F=" + std::to_string(F) + " " + dtype_name(dt));
    }
  }
}

struct AttnCase {
  int64_t batch, seq, q_heads, kv_heads, head_dim;
  std::string str() const {
    return "B=" + std::to_string(batch) + " T=" + std::to_string(seq) +
           " Hq=" + std::to_string(q_heads) + " Hkv=" + std::to_string(kv_heads) +
           " D=" + std::to_string(head_dim);
  }
};

// Small shapes (the simulator runs a CUDA thread as a fiber) that still cross tiles of 32,
// mix GQA ratios and reach each per-lane column count (head_dim <= 64, <= 128, <= 256).
const std::vector<AttnCase> kAttnCases = {
    {1, 1, 1, 1, 8},     {2, 7, 3, 1, 32},   {1, 33, 2, 2, 24}, {1, 70, 3, 1, 33},
    {2, 130, 7, 1, 64},  {1, 40, 2, 1, 96},  {1, 65, 4, 2, 128}, {1, 9, 2, 2, 160},
    {1, 35, 2, 1, 256},
};

TEST(CudaKernelsSim, AttentionForwardAndBackwardMatchCpu) {
  for (const AttnCase& c : kAttnCases) {
    const int64_t W = (c.q_heads + 2 * c.kv_heads) * c.head_dim, rows = c.batch * c.seq;
    const int64_t OW = c.q_heads * c.head_dim;
    auto qkv = random_vector(size_t(rows * W), 26, -1.5f, 1.5f);
    auto dout = random_vector(size_t(rows * OW), 27);
    for (DType dt : {DType::F32, DType::BF16}) {
      const std::string what = c.str() + " " + dtype_name(dt);
      Out g(dt, size_t(rows * OW)), o(dt, size_t(rows * OW));
      std::vector<float> glse(size_t(c.batch * c.q_heads * c.seq)), lse(glse.size());
      cuda::attention_forward(qkv.data(), c.batch, c.seq, c.q_heads, c.kv_heads, c.head_dim,
                              g.data(), dt, glse.data(), kStream);
      cpu::attention_forward(qkv.data(), c.batch, c.seq, c.q_heads, c.kv_heads, c.head_dim,
                             o.data(), dt, lse.data());
      expect_close(g.values(), o.values(), dt == DType::F32 ? 2e-5 : kBf16Step, 2e-5, what + " out");
      expect_close(glse, lse, 2e-5, 2e-5, what + " lse");

      // Backward from the CPU's forward outputs on both sides.
      Out d(dt, size_t(rows * OW));
      if (dt == DType::F32)
        d.f = dout;
      else
        d.b = to_bf16(dout);
      std::vector<float> gdq(size_t(rows * W), 9.0f), cdq(size_t(rows * W), 9.0f);
      std::vector<unsigned char> scratch(cuda::attention_backward_scratch_bytes(
          c.batch, c.seq, c.q_heads, c.head_dim, dt));
      cuda::attention_backward(d.data(), qkv.data(), o.data(), dt, lse.data(), c.batch, c.seq,
                               c.q_heads, c.kv_heads, c.head_dim, gdq.data(), scratch.data(),
                               kStream);
      cpu::attention_backward(d.data(), qkv.data(), o.data(), dt, lse.data(), c.batch, c.seq,
                              c.q_heads, c.kv_heads, c.head_dim, cdq.data());
      expect_close(gdq, cdq, 2e-4, 2e-4 * std::max(1.0, max_abs(cdq)), what + " dqkv");
    }
  }
}

// The tensor-core product helper (mma_bf16.cuh; here its emulation, built from the PTX ISA's
// fragment layouts) against a scalar product of the bf16-rounded inputs.
TEST(CudaKernelsSim, MmaBf16TileProductMatchesScalar) {
  for (uint64_t seed : {61, 62, 63}) {
    auto a = random_vector(16 * 16, seed, -2.0f, 2.0f);
    auto b = random_vector(16 * 8, seed + 10, -2.0f, 2.0f);
    auto c = random_vector(16 * 8, seed + 20);
    std::vector<float> d(16 * 8, 9.0f);
    cuda::mma_bf16_tile_product(a.data(), b.data(), c.data(), d.data(), kStream);
    for (int i = 0; i < 16; ++i)
      for (int n = 0; n < 8; ++n) {
        double want = c[i * 8 + n];
        for (int k = 0; k < 16; ++k)
          want += double(bf16_to_float(float_to_bf16(a[i * 16 + k]))) *
                  double(bf16_to_float(float_to_bf16(b[k * 8 + n])));
        EXPECT_NEAR(d[i * 8 + n], want, 1e-5 * (1.0 + std::abs(want)))
            << "row " << i << " col " << n << " seed " << seed;
      }
  }
}

// The one place that chooses attention's kernels: the tensor-core flash kernels for bf16 with
// head_dim 64 or 128 (after their self-check, here on the emulated product), the
// cuBLASLt products for other head dims up to 8192 tokens, f32 flash otherwise; VACC_ATTENTION
// prefers a route where it can run.
TEST(CudaKernelsSim, AttentionRouteChoosesTheTensorCoreFlashWhereItFits) {
  using cuda::AttentionRoute;
  cuda::CudaContext ctx(0, size_t(1) << 30);
  EXPECT_TRUE(cuda::flash_mma_self_check(ctx, 64));
  EXPECT_TRUE(cuda::flash_mma_self_check(ctx, 128));
  EXPECT_FALSE(cuda::flash_mma_self_check(ctx, 96));
  unsetenv("VACC_ATTENTION");
  EXPECT_EQ(cuda::attention_route(ctx, 1024, 64, DType::BF16), AttentionRoute::FlashMma);
  EXPECT_EQ(cuda::attention_route(ctx, 100000, 128, DType::BF16), AttentionRoute::FlashMma);
  EXPECT_EQ(cuda::attention_route(ctx, 1024, 96, DType::BF16), AttentionRoute::Gemm);
  EXPECT_EQ(cuda::attention_route(ctx, 8193, 96, DType::BF16), AttentionRoute::FlashF32);
  EXPECT_EQ(cuda::attention_route(ctx, 1024, 64, DType::F32), AttentionRoute::FlashF32);
  setenv("VACC_ATTENTION", "gemm", 1);
  EXPECT_EQ(cuda::attention_route(ctx, 1024, 64, DType::BF16), AttentionRoute::Gemm);
  EXPECT_EQ(cuda::attention_route(ctx, 8193, 64, DType::BF16), AttentionRoute::FlashMma);
  setenv("VACC_ATTENTION", "flash_f32", 1);
  EXPECT_EQ(cuda::attention_route(ctx, 1024, 64, DType::BF16), AttentionRoute::FlashF32);
  setenv("VACC_ATTENTION", "flash_mma", 1);
  EXPECT_EQ(cuda::attention_route(ctx, 1024, 96, DType::BF16), AttentionRoute::Gemm);
  EXPECT_EQ(cuda::attention_route(ctx, 1024, 64, DType::F32), AttentionRoute::FlashF32);
  setenv("VACC_ATTENTION", "fast", 1);
  EXPECT_THROW(cuda::attention_route(ctx, 1024, 64, DType::BF16), Error);
  unsetenv("VACC_ATTENTION");
}

TEST(CudaKernelsSim, AttentionDecodeMatchesCpu) {
  struct Case {
    int64_t past, n_new, q_heads, kv_heads, head_dim;
  };
  for (const Case& c : {Case{0, 5, 3, 3, 12}, Case{130, 2, 4, 2, 64}, Case{3, 1, 2, 1, 200}}) {
    const int64_t W = (c.q_heads + 2 * c.kv_heads) * c.head_dim, KW = c.kv_heads * c.head_dim;
    const int64_t max_len = c.past + c.n_new + 3, OW = c.q_heads * c.head_dim;
    auto qkv = random_vector(size_t(c.n_new * W), 28, -1.5f, 1.5f);
    auto kc = random_vector(size_t(max_len * KW), 29, -1.5f, 1.5f), vc = random_vector(kc.size(), 30);
    for (DType dt : {DType::F32, DType::BF16}) {
      auto gk = kc, gv = vc, ck = kc, cv = vc;
      Out g(dt, size_t(c.n_new * OW)), o(dt, size_t(c.n_new * OW));
      std::vector<int32_t> positions(static_cast<size_t>(c.n_new));
      for (int64_t i = 0; i < c.n_new; ++i) positions[size_t(i)] = int32_t(c.past + i);
      cuda::DeviceError error{};
      cuda::attention_decode(qkv.data(), c.n_new, c.q_heads, c.kv_heads, c.head_dim, gk.data(),
                             gv.data(), max_len, positions.data(), g.data(), dt, &error, kStream);
      EXPECT_EQ(error.code, cuda::kNoError);
      cpu::attention_decode(qkv.data(), c.n_new, c.q_heads, c.kv_heads, c.head_dim, ck.data(),
                            cv.data(), c.past, o.data(), dt);
      const std::string what = "decode past=" + std::to_string(c.past) + " " + dtype_name(dt);
      expect_close(gk, ck, 0.0, 0.0, what + " k_cache");
      expect_close(gv, cv, 0.0, 0.0, what + " v_cache");
      expect_close(g.values(), o.values(), dt == DType::F32 ? 1e-5 : kBf16Step, 1e-6, what + " out");
    }
  }
}

TEST(CudaKernelsSim, SoftmaxCrossEntropyRowsAndHelpers) {
  const int64_t N = 6, V = 1000, C = 5;
  std::vector<int32_t> labels = {3, -100, 999, 0, -100, 500};
  std::vector<int32_t> rows = {0, 2, 3, 5};
  const int64_t R = int64_t(rows.size());
  auto logits_f32 = random_vector(size_t(R * V), 31, -4.0f, 4.0f);
  const float gs = 0.37f;
  // The chunk's logits in f32, or in bf16 (mixed precision), where the gradients overwrite them
  // in that dtype; the references start from the values the kernels read.
  struct Logits {
    std::vector<float> f32, values;
    std::vector<bf16> b16;
    void* data(bool bf) { return bf ? static_cast<void*>(b16.data()) : f32.data(); }
    float at(bool bf, int64_t i) const {
      return bf ? bf16_to_float(b16[size_t(i)]) : f32[size_t(i)];
    }
  };
  auto make_logits = [&](bool bf) {
    Logits l;
    if (bf) l.b16 = to_bf16(logits_f32);
    else l.f32 = logits_f32;
    l.values = bf ? round_bf16(logits_f32) : logits_f32;
    return l;
  };
  auto dt = [](bool bf) { return bf ? DType::BF16 : DType::F32; };
  for (bool bf : {false, true}) {
    Logits logits = make_logits(bf);
    std::vector<float> loss(static_cast<size_t>(R));
    cuda::softmax_cross_entropy_rows(logits.data(bf), dt(bf), R, V, rows.data(), labels.data(),
                                     true, gs, loss.data(), kStream);
    for (int64_t r = 0; r < R; ++r) {
      const float* l = logits.values.data() + r * V;
      const int32_t label = labels[size_t(rows[size_t(r)])];
      double mx = -INFINITY, sum = 0;
      for (int64_t j = 0; j < V; ++j) mx = std::max(mx, double(l[j]));
      for (int64_t j = 0; j < V; ++j) sum += std::exp(double(l[j]) - mx);
      EXPECT_NEAR(loss[size_t(r)], std::log(sum) + mx - l[label], 1e-5) << "row " << r;
      std::vector<float> want(static_cast<size_t>(V)), got(static_cast<size_t>(V));
      for (int64_t j = 0; j < V; ++j) {
        want[size_t(j)] = float(gs * (std::exp(double(l[j]) - mx) / sum - (j == label ? 1 : 0)));
        got[size_t(j)] = logits.at(bf, r * V + j);
      }
      expect_close(got, want, bf ? kBf16Step : 1e-5, 1e-7, "dlogits row " + std::to_string(r));
    }
    float total = 2.0f;
    cuda::add_loss_sum(loss.data(), R, &total, kStream);
    double want_total = 2.0;
    for (float l : loss) want_total += double(l);
    EXPECT_NEAR(total, want_total, 1e-5);
  }
  // Vocabulary shard [vocab_start, vocab_start + V): labels 3 and 999 outside, 500 and 0 as
  // well when vocab_start = 200 (label 500 is column 300).
  const int64_t vocab_start = 200;
  for (bool bf : {false, true}) {
    Logits logits = make_logits(bf);
    std::vector<float> lse(size_t(N), 9.0f), target(size_t(N), 9.0f);
    cuda::shard_logsumexp_rows(logits.data(bf), dt(bf), R, V, rows.data(), labels.data(),
                               vocab_start, lse.data(), target.data(), kStream);
    std::vector<float> g(size_t(N), 0.0f);
    for (int64_t r = 0; r < R; ++r) {
      const float* l = logits.values.data() + r * V;
      const int64_t i = rows[size_t(r)], col = labels[size_t(i)] - vocab_start;
      double mx = -INFINITY, sum = 0;
      for (int64_t j = 0; j < V; ++j) mx = std::max(mx, double(l[j]));
      for (int64_t j = 0; j < V; ++j) sum += std::exp(double(l[j]) - mx);
      EXPECT_NEAR(lse[size_t(i)], std::log(sum) + mx, 1e-5) << "shard lse row " << i;
      EXPECT_EQ(target[size_t(i)], col >= 0 && col < V ? l[col] : 0.0f) << "target row " << i;
      g[size_t(i)] = lse[size_t(i)] + 0.25f;  // as if other shards added to the sum
    }
    EXPECT_EQ(lse[1], 9.0f) << "ignored rows are the caller's (the backend zeroes them first)";
    cuda::shard_softmax_grad_rows(logits.data(bf), dt(bf), R, V, rows.data(), labels.data(),
                                  vocab_start, g.data(), gs, kStream);
    for (int64_t r = 0; r < R; ++r) {
      const float* l = logits.values.data() + r * V;
      const int64_t i = rows[size_t(r)], col = labels[size_t(i)] - vocab_start;
      std::vector<float> want(static_cast<size_t>(V)), got(static_cast<size_t>(V));
      for (int64_t j = 0; j < V; ++j) {
        want[size_t(j)] = float(gs * (std::exp(double(l[j]) - g[size_t(i)]) - (j == col ? 1 : 0)));
        got[size_t(j)] = logits.at(bf, r * V + j);
      }
      expect_close(got, want, bf ? kBf16Step : 1e-5, 1e-7, "shard dlogits row " + std::to_string(r));
    }
  }

  auto x = random_vector(size_t(N * C), 32);
  std::vector<float> gathered(size_t(R * C));
  cuda::gather_rows(x.data(), rows.data(), R, C, sizeof(float), gathered.data(), kStream);
  for (int64_t r = 0; r < R; ++r)
    for (int64_t j = 0; j < C; ++j)
      ASSERT_EQ(gathered[size_t(r * C + j)], x[size_t(rows[size_t(r)] * C + j)]);
  auto xb = to_bf16(x);
  std::vector<bf16> gb(size_t(R * C));
  cuda::gather_rows(xb.data(), rows.data(), R, C, 2, gb.data(), kStream);
  EXPECT_EQ(gb[size_t(3 * C + 4)].bits, xb[size_t(5 * C + 4)].bits);
  std::vector<float> dx(size_t(N * C), 7.0f);
  cuda::zero_ignored_rows(dx.data(), labels.data(), N, C, kStream);
  cuda::scatter_rows(gathered.data(), rows.data(), R, C, dx.data(), kStream);
  for (int64_t i = 0; i < N; ++i)
    for (int64_t j = 0; j < C; ++j)
      ASSERT_EQ(dx[size_t(i * C + j)], labels[size_t(i)] == -100 ? 0.0f : x[size_t(i * C + j)]);
}

TEST(CudaKernelsSim, AdamWMatchesCpu) {
  const int64_t n = 3001;
  auto p = random_vector(size_t(n), 33), m = random_vector(size_t(n), 34, -0.1f, 0.1f);
  auto v = random_vector(size_t(n), 35, 0.0f, 0.01f), grad = random_vector(size_t(n), 36);
  auto cp = p, cm = m, cv = v;
  for (int64_t step = 1; step <= 3; ++step) {
    cuda::adamw_step(p.data(), grad.data(), m.data(), v.data(), n, 1e-3f, 0.9f, 0.999f, 1e-8f,
                     0.1f, step, 0.7f, kStream);
    cpu::adamw_step(cp.data(), grad.data(), cm.data(), cv.data(), n, 1e-3f, 0.9f, 0.999f, 1e-8f,
                    0.1f, step, 0.7f);
  }
  expect_close(p, cp, 1e-6, 1e-7, "param");
  expect_close(m, cm, 1e-6, 1e-7, "m");
  expect_close(v, cv, 1e-6, 1e-8, "v");
}

}  // namespace
}  // namespace vacc::test
