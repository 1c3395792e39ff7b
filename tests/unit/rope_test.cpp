// Rotary position embedding (rotate-half, Hugging Face Llama/Qwen2 semantics): forward against
// a naive rotation with cos/sin tables built here; only the first num_heads heads of each row
// rotate; the inverse undoes the forward and is its transpose (the backward); positions outside
// the table are rejected.
#include "test_util.h"

namespace vacc::test {
namespace {

// cos and sin (max_pos, D/2): angle(p, j) = p * theta^(-2j/D).
struct Tables {
  std::vector<float> cos, sin;
};
Tables make_tables(int64_t max_pos, int64_t D, double theta) {
  const int64_t half = D / 2;
  Tables t{std::vector<float>(size_t(max_pos * half)), std::vector<float>(size_t(max_pos * half))};
  for (int64_t p = 0; p < max_pos; ++p)
    for (int64_t j = 0; j < half; ++j) {
      double inv_freq = std::pow(theta, -2.0 * double(j) / double(D));
      double angle = double(p) * inv_freq;
      t.cos[size_t(p * half + j)] = float(std::cos(angle));
      t.sin[size_t(p * half + j)] = float(std::sin(angle));
    }
  return t;
}

// Rotates the first num_heads heads of each row; the rest of the row is copied. transpose
// applies R^T (sin negated).
std::vector<double> naive_rope(const std::vector<float>& x, int64_t N, int64_t width,
                               const std::vector<int32_t>& pos, const Tables& t,
                               int64_t num_heads, int64_t D, bool transpose) {
  const int64_t half = D / 2;
  std::vector<double> y(x.begin(), x.end());
  for (int64_t n = 0; n < N; ++n)
    for (int64_t h = 0; h < num_heads; ++h)
      for (int64_t j = 0; j < half; ++j) {
        double c = t.cos[size_t(pos[size_t(n)] * half + j)];
        double s = t.sin[size_t(pos[size_t(n)] * half + j)];
        if (transpose) s = -s;
        size_t i1 = size_t(n * width + h * D + j), i2 = i1 + size_t(half);
        double a = x[i1], b = x[i2];
        y[i1] = a * c - b * s;
        y[i2] = b * c + a * s;
      }
  return y;
}

struct RopeCase {
  int64_t N, num_heads, extra_cols, D, max_pos;
  double theta;
};
void PrintTo(const RopeCase& c, std::ostream* os) {
  *os << "N=" << c.N << " heads=" << c.num_heads << " extra_cols=" << c.extra_cols
      << " head_dim=" << c.D << " max_pos=" << c.max_pos << " theta=" << c.theta;
}

class RopeTest : public ::testing::TestWithParam<RopeCase> {
 protected:
  std::vector<int32_t> positions(int64_t N, int64_t max_pos, uint64_t seed) {
    std::mt19937_64 rng(seed);
    std::uniform_int_distribution<int32_t> dist(0, int32_t(max_pos - 1));
    std::vector<int32_t> p(static_cast<size_t>(N));
    for (int32_t& v : p) v = dist(rng);
    p[0] = 0;
    p[size_t(N - 1)] = int32_t(max_pos - 1);
    return p;
  }
};

TEST_P(RopeTest, ForwardMatchesNaiveAndLeavesTheRestOfTheRow) {
  auto [N, H, extra, D, max_pos, theta] = GetParam();
  const int64_t width = H * D + extra;
  auto be = make_cpu_backend();
  auto tables = make_tables(max_pos, D, theta);
  auto pos = positions(N, max_pos, 1);
  auto x = random_vector(size_t(N * width), 2);
  Tensor X = to_device(*be, x, {N, width});
  Tensor P = ids_to_device(*be, pos);
  Tensor Cos = to_device(*be, tables.cos, {max_pos, D / 2});
  Tensor Sin = to_device(*be, tables.sin, {max_pos, D / 2});
  be->rope(X, P, Cos, Sin, H, D, false, nullptr);
  auto got = to_host(*be, X);
  expect_close(got, naive_rope(x, N, width, pos, tables, H, D, false), 1e-5, 1e-6, "forward");
  // Columns past the rotated heads are bit-for-bit untouched.
  for (int64_t n = 0; n < N; ++n)
    for (int64_t k = H * D; k < width; ++k)
      ASSERT_EQ(got[size_t(n * width + k)], x[size_t(n * width + k)]) << "row " << n << " col " << k;
  // Position 0 is the identity.
  for (int64_t k = 0; k < width; ++k) ASSERT_EQ(got[size_t(k)], x[size_t(k)]) << "position 0, col " << k;

  // bf16 in place: the rotation computed in f32 from the rounded inputs, rounded; a copy gets
  // the whole rows as x holds them (in f32 here: exactly the bf16 values, the rest included).
  const auto xb = round_bf16(x);
  Tensor XB = to_device(*be, x, {N, width}, DType::BF16);
  Tensor Copy = be->empty({N, width}, DType::F32, MemoryCategory::Buffers, "copy");
  be->rope(XB, P, Cos, Sin, H, D, false, &Copy);
  const auto got_b = to_host(*be, XB);
  const auto want_b = naive_rope(xb, N, width, pos, tables, H, D, false);
  expect_close(got_b, want_b, 1.0 / 128, 1e-6, "forward in bf16");
  EXPECT_EQ(to_host(*be, Copy), got_b) << "the copy of the bf16 rows";
  // An f32 x with a bf16 copy: x as without a copy, the copy its rounding.
  Tensor X2 = to_device(*be, x, {N, width});
  Tensor CopyB = be->empty({N, width}, DType::BF16, MemoryCategory::Buffers, "copy (bf16)");
  be->rope(X2, P, Cos, Sin, H, D, false, &CopyB);
  EXPECT_EQ(to_host(*be, X2), got) << "x with a copy";
  EXPECT_EQ(to_host(*be, CopyB), round_bf16(got)) << "the bf16 copy of the f32 rows";
}

TEST_P(RopeTest, InverseIsTheTransposeAndUndoesTheForward) {
  auto [N, H, extra, D, max_pos, theta] = GetParam();
  const int64_t width = H * D + extra;
  auto be = make_cpu_backend();
  auto tables = make_tables(max_pos, D, theta);
  auto pos = positions(N, max_pos, 3);
  auto x = random_vector(size_t(N * width), 4), y = random_vector(size_t(N * width), 5);
  Tensor P = ids_to_device(*be, pos);
  Tensor Cos = to_device(*be, tables.cos, {max_pos, D / 2});
  Tensor Sin = to_device(*be, tables.sin, {max_pos, D / 2});

  // The inverse against the naive transposed rotation.
  Tensor Y = to_device(*be, y, {N, width});
  be->rope(Y, P, Cos, Sin, H, D, true, nullptr);
  auto rty = to_host(*be, Y);
  expect_close(rty, naive_rope(y, N, width, pos, tables, H, D, true), 1e-5, 1e-6, "inverse");

  // Adjoint identity: <R x, y> = <x, R^T y> (so the inverse is the backward of the forward).
  Tensor X = to_device(*be, x, {N, width});
  be->rope(X, P, Cos, Sin, H, D, false, nullptr);
  auto rx = to_host(*be, X);
  double lhs = 0, rhs = 0, mag = 0;
  for (size_t k = 0; k < x.size(); ++k) {
    lhs += double(rx[k]) * double(y[k]);
    rhs += double(x[k]) * double(rty[k]);
    mag += std::abs(double(x[k]) * double(y[k]));
  }
  EXPECT_NEAR(lhs, rhs, 1e-6 * mag) << "<Rx, y> vs <x, R^T y>";

  // R^T R x = x (the tables are cos/sin of one angle, so R is orthogonal to f32 precision).
  be->rope(X, P, Cos, Sin, H, D, true, nullptr);
  expect_close(to_host(*be, X), x, 1e-5, 1e-6, "inverse(forward(x))");
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, RopeTest,
    ::testing::Values(
        // A fused qkv row of 3 q heads, 1 k head and 1 v head (extra = the v head): q and k
        // rotate, v does not.
        RopeCase{23, 4, 14, 14, 37, 10000.0},
        // Qwen2's theta, a row with a ragged tail, one head.
        RopeCase{11, 1, 5, 6, 29, 1000000.0},
        // Every column of the row rotates; head_dim 2.
        RopeCase{9, 5, 0, 2, 13, 10000.0},
        // A head_dim of 64 over long positions.
        RopeCase{7, 3, 64, 64, 4097, 10000.0}),
    [](const auto& info) {
      const RopeCase& c = info.param;
      return "N" + std::to_string(c.N) + "_H" + std::to_string(c.num_heads) + "_D" +
             std::to_string(c.D) + "_extra" + std::to_string(c.extra_cols);
    });

TEST(Rope, PositionsOutsideTheTableThrowAndLeaveXUnchanged) {
  auto be = make_cpu_backend();
  const int64_t N = 4, D = 8, H = 2, max_pos = 10;
  auto tables = make_tables(max_pos, D, 10000.0);
  Tensor Cos = to_device(*be, tables.cos, {max_pos, D / 2});
  Tensor Sin = to_device(*be, tables.sin, {max_pos, D / 2});
  auto x = random_vector(size_t(N * H * D), 6);
  for (int32_t bad : {int32_t(max_pos), int32_t(-1), int32_t(1 << 30)}) {
    Tensor X = to_device(*be, x, {N, H * D});
    Tensor P = ids_to_device(*be, {1, 2, bad, 3});
    EXPECT_THROW(be->rope(X, P, Cos, Sin, H, D, false, nullptr), Error) << "position " << bad;
    EXPECT_THROW(be->rope(X, P, Cos, Sin, H, D, true, nullptr), Error) << "position " << bad;
    expect_close(to_host(*be, X), x, 0.0, 0.0, "x after a rejected call");
  }
  // The last position of the table is fine.
  Tensor X = to_device(*be, x, {N, H * D});
  Tensor P = ids_to_device(*be, {0, int32_t(max_pos - 1), 5, 9});
  EXPECT_NO_THROW(be->rope(X, P, Cos, Sin, H, D, false, nullptr));
}

TEST(Rope, RejectsBadGeometry) {
  auto be = make_cpu_backend();
  const int64_t N = 3, max_pos = 6;
  Tensor P = ids_to_device(*be, {0, 1, 2});
  Tensor X = be->zeros({N, 20}, DType::F32, MemoryCategory::Activations, "x");
  Tensor Cos4 = be->zeros({max_pos, 4}, DType::F32, MemoryCategory::Buffers, "cos");
  Tensor Sin4 = be->zeros({max_pos, 4}, DType::F32, MemoryCategory::Buffers, "sin");
  // 3 heads of 8 do not fit a row of 20.
  EXPECT_THROW(be->rope(X, P, Cos4, Sin4, 3, 8, false, nullptr), Error);
  // The tables' width must be head_dim/2.
  EXPECT_THROW(be->rope(X, P, Cos4, Sin4, 2, 6, false, nullptr), Error);
  // An odd head_dim has no halves.
  Tensor Cos2 = be->zeros({max_pos, 2}, DType::F32, MemoryCategory::Buffers, "cos");
  EXPECT_THROW(be->rope(X, P, Cos2, Cos2, 2, 5, false, nullptr), Error);
  // One position per row.
  Tensor P2 = ids_to_device(*be, {0, 1});
  EXPECT_THROW(be->rope(X, P2, Cos4, Sin4, 2, 8, false, nullptr), Error);
  // The tables are f32: bf16 tables are rejected, not misread.
  Tensor CosB = be->zeros({max_pos, 4}, DType::BF16, MemoryCategory::Buffers, "cos bf16");
  EXPECT_NO_THROW(be->rope(X, P, Cos4, Sin4, 2, 8, false, nullptr));
  EXPECT_THROW(be->rope(X, P, CosB, Sin4, 2, 8, false, nullptr), Error);
  EXPECT_THROW(be->rope(X, P, Cos4, CosB, 2, 8, false, nullptr), Error);
  // A copy of another shape or of an integer type.
  Tensor Narrow = be->zeros({X.size(0), X.size(1) - 1}, DType::F32, MemoryCategory::Buffers, "c");
  Tensor Ints = be->zeros(X.shape(), DType::I32, MemoryCategory::Buffers, "c");
  EXPECT_THROW(be->rope(X, P, Cos4, Sin4, 2, 8, false, &Narrow), Error);
  EXPECT_THROW(be->rope(X, P, Cos4, Sin4, 2, 8, false, &Ints), Error);
}

}  // namespace
}  // namespace vacc::test
