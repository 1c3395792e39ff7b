// Causal attention (forward and backward) against naive double-precision references: the
// full softmax per row, the analytic gradient, and central finite differences of the
// reference forward. Shapes are chosen to be awkward for the kernel's tiles: T = 1, T not a
// multiple of the tile, head counts that are not powers of two, GQA ratios 1, 3 and 7,
// head_dim not a multiple of 16.
#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "test_util.h"

namespace vacc::test {
namespace {

struct AttnCase {
  int64_t batch, seq, q_heads, kv_heads, head_dim;
};

std::string describe(const AttnCase& c) {
  return "B=" + std::to_string(c.batch) + " T=" + std::to_string(c.seq) +
         " Hq=" + std::to_string(c.q_heads) + " Hkv=" + std::to_string(c.kv_heads) +
         " D=" + std::to_string(c.head_dim);
}

AttentionShape shape_of(const AttnCase& c) {
  AttentionShape s;
  s.batch = c.batch;
  s.seq = c.seq;
  s.q_heads = c.q_heads;
  s.kv_heads = c.kv_heads;
  s.head_dim = c.head_dim;
  return s;
}

// Index helpers into the fused (B*T, (Hq + 2 Hkv) D) qkv and the (B*T, Hq D) output.
struct Layout {
  AttnCase c;
  int64_t width() const { return (c.q_heads + 2 * c.kv_heads) * c.head_dim; }
  int64_t q(int64_t b, int64_t t, int64_t h, int64_t d) const {
    return (b * c.seq + t) * width() + h * c.head_dim + d;
  }
  int64_t k(int64_t b, int64_t t, int64_t g, int64_t d) const {
    return (b * c.seq + t) * width() + (c.q_heads + g) * c.head_dim + d;
  }
  int64_t v(int64_t b, int64_t t, int64_t g, int64_t d) const {
    return (b * c.seq + t) * width() + (c.q_heads + c.kv_heads + g) * c.head_dim + d;
  }
  int64_t o(int64_t b, int64_t t, int64_t h, int64_t d) const {
    return (b * c.seq + t) * c.q_heads * c.head_dim + h * c.head_dim + d;
  }
};

// Per (b, h, t): the softmax row P[s], s <= t, in double.
std::vector<double> softmax_row(const Layout& L, const std::vector<double>& qkv, int64_t b,
                                int64_t h, int64_t t, double* lse) {
  const int64_t D = L.c.head_dim, g = h / (L.c.q_heads / L.c.kv_heads);
  const double scale = 1.0 / std::sqrt(double(D));
  std::vector<double> s(size_t(t + 1));
  double mx = -std::numeric_limits<double>::infinity();
  for (int64_t j = 0; j <= t; ++j) {
    double dot = 0;
    for (int64_t d = 0; d < D; ++d) dot += qkv[L.q(b, t, h, d)] * qkv[L.k(b, j, g, d)];
    s[j] = dot * scale;
    mx = std::max(mx, s[j]);
  }
  double sum = 0;
  for (double& x : s) sum += (x = std::exp(x - mx));
  for (double& x : s) x /= sum;
  if (lse) *lse = mx + std::log(sum);
  return s;
}

void reference_forward(const AttnCase& c, const std::vector<double>& qkv, std::vector<double>& out,
                       std::vector<double>& lse) {
  Layout L{c};
  const int64_t D = c.head_dim, g_size = c.q_heads / c.kv_heads;
  out.assign(size_t(c.batch * c.seq * c.q_heads * D), 0.0);
  lse.assign(size_t(c.batch * c.q_heads * c.seq), 0.0);
  for (int64_t b = 0; b < c.batch; ++b)
    for (int64_t h = 0; h < c.q_heads; ++h)
      for (int64_t t = 0; t < c.seq; ++t) {
        auto p = softmax_row(L, qkv, b, h, t, &lse[size_t((b * c.q_heads + h) * c.seq + t)]);
        for (int64_t j = 0; j <= t; ++j)
          for (int64_t d = 0; d < D; ++d)
            out[L.o(b, t, h, d)] += p[j] * qkv[L.v(b, j, h / g_size, d)];
      }
}

// The analytic gradient, written independently of the kernel's formulation:
// dV_s = sum_t P_ts dO_t; dP_ts = dO_t . v_s; dS_ts = P_ts (dP_ts - sum_s' P_ts' dP_ts');
// dq_t = scale sum_s dS_ts k_s; dk_s = scale sum_t dS_ts q_t.
std::vector<double> reference_backward(const AttnCase& c, const std::vector<double>& qkv,
                                       const std::vector<double>& dout) {
  Layout L{c};
  const int64_t D = c.head_dim, g_size = c.q_heads / c.kv_heads;
  const double scale = 1.0 / std::sqrt(double(D));
  std::vector<double> dqkv(qkv.size(), 0.0);
  for (int64_t b = 0; b < c.batch; ++b)
    for (int64_t h = 0; h < c.q_heads; ++h) {
      const int64_t g = h / g_size;
      for (int64_t t = 0; t < c.seq; ++t) {
        auto p = softmax_row(L, qkv, b, h, t, nullptr);
        std::vector<double> dp(size_t(t + 1));
        double dsum = 0;
        for (int64_t j = 0; j <= t; ++j) {
          double x = 0;
          for (int64_t d = 0; d < D; ++d) x += dout[L.o(b, t, h, d)] * qkv[L.v(b, j, g, d)];
          dp[j] = x;
          dsum += p[j] * x;
        }
        for (int64_t j = 0; j <= t; ++j) {
          double ds = p[j] * (dp[j] - dsum);
          for (int64_t d = 0; d < D; ++d) {
            dqkv[L.v(b, j, g, d)] += p[j] * dout[L.o(b, t, h, d)];
            dqkv[L.q(b, t, h, d)] += scale * ds * qkv[L.k(b, j, g, d)];
            dqkv[L.k(b, j, g, d)] += scale * ds * qkv[L.q(b, t, h, d)];
          }
        }
      }
    }
  return dqkv;
}

std::vector<double> to_double(const std::vector<float>& v) { return {v.begin(), v.end()}; }

double max_abs(const std::vector<double>& v) {
  double m = 0;
  for (double x : v) m = std::max(m, std::abs(x));
  return m;
}

// Inputs scaled so that scores span a few units (peaked but not one-hot softmax rows).
std::vector<float> make_qkv(const AttnCase& c, uint64_t seed) {
  Layout L{c};
  return random_vector(size_t(c.batch * c.seq * L.width()), seed, -1.5f, 1.5f);
}

const std::vector<AttnCase> kCases = {
    {1, 1, 1, 1, 8},     // a single token
    {2, 7, 3, 1, 32},    // GQA 3, T below one tile
    {1, 65, 3, 3, 64},   // T one past a tile, 3 heads, no GQA
    {2, 130, 7, 1, 32},  // GQA 7, T past two tiles
    {1, 130, 6, 2, 24},  // GQA 3, head_dim not a multiple of 16
    {1, 64, 2, 2, 16},   // exactly one tile
    {1, 129, 14, 2, 8},  // GQA 7, D = 8
    {3, 50, 5, 5, 64},   // 5 heads, several sequences
    {1, 70, 10, 1, 16},  // GQA 10: more q heads per kv head than one tile stacks
};

TEST(AttentionTest, ForwardMatchesNaiveSoftmaxInF32AndBf16) {
  auto be = make_cpu_backend();
  uint64_t seed = 100;
  for (const AttnCase& c : kCases) {
    const AttentionShape s = shape_of(c);
    auto qkv = make_qkv(c, seed++);
    std::vector<double> want_out, want_lse;
    reference_forward(c, to_double(qkv), want_out, want_lse);
    Tensor QKV = to_device(*be, qkv, {c.batch * c.seq, s.qkv_width()});
    for (DType dt : {DType::F32, DType::BF16}) {
      Tensor out = be->empty({c.batch * c.seq, c.q_heads * c.head_dim}, dt,
                             MemoryCategory::Buffers, "out");
      Tensor lse = be->empty({c.batch, c.q_heads, c.seq}, DType::F32, MemoryCategory::Buffers,
                             "lse");
      be->attention_forward(QKV, s, out, lse, nullptr);
      const std::string what = describe(c) + " " + dtype_name(dt);
      // The outputs are convex combinations of values in [-1.5, 1.5]: bf16 rounding is
      // 2^-9 relative, so bf16 gets 1e-2 relative plus 4e-3 absolute.
      if (dt == DType::F32)
        expect_close(to_host(*be, out), want_out, 1e-5, 1e-5, what + " out");
      else
        expect_close(to_host(*be, out), want_out, 1e-2, 4e-3, what + " out");
      expect_close(to_host(*be, lse), want_lse, 1e-5, 1e-5, what + " lse");
    }
  }
}

// Runs the kernel backward with dqkv pre-filled with NaN (it must be fully overwritten).
std::vector<float> kernel_backward(Backend& be, const AttnCase& c, const std::vector<float>& qkv,
                                   const std::vector<float>& dout, DType io) {
  const AttentionShape s = shape_of(c);
  Tensor QKV = to_device(be, qkv, {c.batch * c.seq, s.qkv_width()});
  Tensor out = be.empty({c.batch * c.seq, c.q_heads * c.head_dim}, io, MemoryCategory::Buffers,
                        "out");
  Tensor lse = be.empty({c.batch, c.q_heads, c.seq}, DType::F32, MemoryCategory::Buffers, "lse");
  be.attention_forward(QKV, s, out, lse, nullptr);
  Tensor dO = to_device(be, dout, out.shape(), io);
  Tensor dQKV = be.empty(QKV.shape(), DType::F32, MemoryCategory::Buffers, "dqkv");
  be.fill(dQKV, std::numeric_limits<float>::quiet_NaN());
  be.attention_backward(dO, QKV, out, lse, s, dQKV);
  return to_host(be, dQKV);
}

TEST(AttentionTest, BackwardMatchesAnalyticGradient) {
  // 1 thread: one task per kv head; 3 threads: most of these shapes split each kv head's q
  // heads into parts (private dK, dV summed afterwards), as their kv heads are too few.
  for (int threads : {1, 3}) {
    auto be = make_cpu_backend(DeviceAllocator::kUnlimited, threads);
    uint64_t seed = 200;
    for (const AttnCase& c : kCases) {
      auto qkv = make_qkv(c, seed++);
      auto dout = random_vector(size_t(c.batch * c.seq * c.q_heads * c.head_dim), seed++);
      for (DType io : {DType::F32, DType::BF16}) {
        // bf16 dout holds rounded values; the reference uses the same ones.
        auto dout_used = io == DType::BF16 ? round_bf16(dout) : dout;
        auto want = reference_backward(c, to_double(qkv), to_double(dout_used));
        auto got = kernel_backward(*be, c, qkv, dout, io);
        size_t nans = 0;
        for (float x : got) nans += std::isnan(x) ? 1 : 0;
        const std::string what = describe(c) + " " + dtype_name(io) + " threads=" +
                                 std::to_string(threads);
        EXPECT_EQ(nans, 0u) << what << ": dqkv not fully overwritten";
        const double big = max_abs(want);
        if (io == DType::F32)
          expect_close(got, want, 1e-4, 1e-4 * std::max(1.0, big), what + " dqkv");
        else  // out is rounded to bf16, which perturbs D_i = rowsum(dO * out)
          expect_close(got, want, 2e-2, 1e-2 * std::max(1.0, big), what + " dqkv");
      }
    }
  }
  make_cpu_backend(DeviceAllocator::kUnlimited, 2);
}

// A bf16 qkv (mixed precision's activation) is computed from in f32: the same results, bit for
// bit, as an f32 qkv holding the rounded values.
TEST(AttentionTest, Bf16QkvIsTheRoundedF32Qkv) {
  auto be = make_cpu_backend();
  const AttnCase c{2, 70, 6, 2, 16};
  const AttentionShape s = shape_of(c);
  const auto qkv = make_qkv(c, 9);
  const auto dout = random_vector(size_t(c.batch * c.seq * c.q_heads * c.head_dim), 10);
  std::vector<float> out[2], lse[2], dqkv[2];
  for (int k = 0; k < 2; ++k) {
    Tensor QKV = k == 0 ? to_device(*be, qkv, {c.batch * c.seq, s.qkv_width()}, DType::BF16)
                        : to_device(*be, round_bf16(qkv), {c.batch * c.seq, s.qkv_width()});
    Tensor O = be->empty({c.batch * c.seq, c.q_heads * c.head_dim}, DType::F32,
                         MemoryCategory::Buffers, "out");
    Tensor L = be->empty({c.batch, c.q_heads, c.seq}, DType::F32, MemoryCategory::Buffers, "lse");
    Tensor DO = to_device(*be, dout, O.shape());
    Tensor DQKV = be->empty(QKV.shape(), DType::F32, MemoryCategory::Buffers, "dqkv");
    be->attention_forward(QKV, s, O, L, nullptr);
    be->attention_backward(DO, QKV, O, L, s, DQKV);
    out[k] = to_host(*be, O);
    lse[k] = to_host(*be, L);
    dqkv[k] = to_host(*be, DQKV);
  }
  EXPECT_EQ(out[0], out[1]);
  EXPECT_EQ(lse[0], lse[1]);
  EXPECT_EQ(dqkv[0], dqkv[1]);
  // Integer rows are not read as floats.
  Tensor Ints = be->zeros({c.batch * c.seq, s.qkv_width()}, DType::I32, MemoryCategory::Buffers,
                          "qkv");
  Tensor O = be->empty({c.batch * c.seq, c.q_heads * c.head_dim}, DType::F32,
                       MemoryCategory::Buffers, "out");
  Tensor L = be->empty({c.batch, c.q_heads, c.seq}, DType::F32, MemoryCategory::Buffers, "lse");
  EXPECT_THROW(be->attention_forward(Ints, s, O, L, nullptr), Error);
  // The bf16 copy of out: out rounded; a copy of another shape is refused before any write.
  Tensor QKV = to_device(*be, qkv, {c.batch * c.seq, s.qkv_width()}, DType::BF16);
  Tensor Copy = be->empty(O.shape(), DType::BF16, MemoryCategory::Buffers, "out (bf16)");
  be->attention_forward(QKV, s, O, L, &Copy);
  const std::vector<float> o = to_host(*be, O), copy = to_host(*be, Copy);
  ASSERT_EQ(o.size(), copy.size());
  for (size_t i = 0; i < o.size(); ++i) ASSERT_EQ(copy[i], bf16_to_float(float_to_bf16(o[i])));
  Tensor Short = be->empty({c.batch * c.seq - 1, c.q_heads * c.head_dim}, DType::BF16,
                           MemoryCategory::Buffers, "out (bf16)");
  try {
    be->attention_forward(QKV, s, O, L, &Short);
    ADD_FAILURE() << "a bf16 copy of the wrong shape was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("out_copy"), std::string::npos) << e.what();
  }
}

TEST(AttentionTest, BackwardMatchesFiniteDifferences) {
  // loss = sum(out * w): its gradient is the backward of dout = w. Central differences of the
  // double-precision reference forward at a handful of q, k and v entries.
  const AttnCase c{2, 19, 6, 2, 16};
  Layout L{c};
  auto be = make_cpu_backend();
  auto qkv = make_qkv(c, 7);
  auto w = random_vector(size_t(c.batch * c.seq * c.q_heads * c.head_dim), 8);
  auto got = kernel_backward(*be, c, qkv, w, DType::F32);
  auto want = reference_backward(c, to_double(qkv), to_double(w));

  auto loss = [&](const std::vector<double>& x) {
    std::vector<double> out, lse;
    reference_forward(c, x, out, lse);
    double s = 0;
    for (size_t i = 0; i < out.size(); ++i) s += out[i] * double(w[i]);
    return s;
  };
  std::vector<int64_t> probes = {L.q(0, 0, 0, 0),  L.q(1, 18, 5, 15), L.q(0, 9, 3, 7),
                                 L.k(0, 0, 0, 3),  L.k(1, 12, 1, 0),  L.k(0, 18, 1, 9),
                                 L.v(1, 0, 0, 2),  L.v(0, 10, 1, 11), L.v(1, 18, 0, 15)};
  std::vector<double> fd, kern, ref;
  const double h = 1e-4;
  for (int64_t i : probes) {
    auto x = to_double(qkv);
    x[size_t(i)] += h;
    double up = loss(x);
    x[size_t(i)] -= 2 * h;
    double down = loss(x);
    fd.push_back((up - down) / (2 * h));
    kern.push_back(got[size_t(i)]);
    ref.push_back(want[size_t(i)]);
  }
  expect_close(ref, fd, 1e-6, 1e-7, "analytic reference vs finite differences");
  expect_close(kern, fd, 1e-4, 1e-4, "kernel vs finite differences");
}

}  // namespace
}  // namespace vacc::test
