// Token embedding: forward against a naive gather, over the whole table and over a vocabulary
// shard (ids outside the shard give zero rows); backward against a naive scatter-add with
// repeated ids, accumulating into what dtable already holds.
#include "test_util.h"

namespace vacc::test {
namespace {

// out (N, C) = table[id - start] for ids in [start, start + V), else zero rows.
std::vector<double> naive_gather(const std::vector<int32_t>& ids, const std::vector<float>& table,
                                 int64_t start, int64_t V, int64_t C) {
  std::vector<double> out(ids.size() * size_t(C), 0.0);
  for (size_t i = 0; i < ids.size(); ++i) {
    int64_t row = int64_t(ids[i]) - start;
    if (row < 0 || row >= V) continue;
    for (int64_t j = 0; j < C; ++j) out[i * size_t(C) + size_t(j)] = table[size_t(row * C + j)];
  }
  return out;
}

// dtable (V, C) = initial + scatter-add of dout rows by id (rows outside the shard skipped).
std::vector<double> naive_scatter_add(const std::vector<int32_t>& ids,
                                      const std::vector<float>& dout,
                                      const std::vector<float>& initial, int64_t start, int64_t V,
                                      int64_t C) {
  std::vector<double> d(initial.begin(), initial.end());
  for (size_t i = 0; i < ids.size(); ++i) {
    int64_t row = int64_t(ids[i]) - start;
    if (row < 0 || row >= V) continue;
    for (int64_t j = 0; j < C; ++j) d[size_t(row * C + j)] += dout[i * size_t(C) + size_t(j)];
  }
  return d;
}

std::vector<int32_t> random_ids(size_t n, int32_t lo, int32_t hi, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int32_t> dist(lo, hi - 1);
  std::vector<int32_t> ids(n);
  for (int32_t& id : ids) id = dist(rng);
  return ids;
}

TEST(Embedding, ForwardMatchesNaiveGather) {
  auto be = make_cpu_backend();
  const int64_t V = 53, C = 37, N = 29;
  auto table = random_vector(size_t(V * C), 11);
  auto ids = random_ids(size_t(N), 0, int32_t(V), 12);
  ids[0] = 0;
  ids[1] = int32_t(V - 1);  // both ends of the table
  Tensor T = to_device(*be, table, {V, C});
  Tensor I = ids_to_device(*be, ids);
  Tensor Out = be->empty({N, C}, DType::F32, MemoryCategory::Activations, "out");
  be->fill(Out, 123.0f);  // stale values must be overwritten
  be->embedding_forward(I, T, 0, Out);
  // A gather copies: exact.
  expect_close(to_host(*be, Out), naive_gather(ids, table, 0, V, C), 0.0, 0.0, "gather");
}

TEST(Embedding, VocabShardGivesZeroRowsOutsideTheShard) {
  auto be = make_cpu_backend();
  // The shard holds ids [40, 40 + 23) of a vocabulary of 100.
  const int64_t start = 40, V = 23, C = 19, N = 41;
  auto table = random_vector(size_t(V * C), 21);
  auto ids = random_ids(size_t(N), 0, 100, 22);
  // Include the boundaries on both sides of the shard.
  ids[0] = int32_t(start - 1);
  ids[1] = int32_t(start);
  ids[2] = int32_t(start + V - 1);
  ids[3] = int32_t(start + V);
  ids[4] = 0;
  int inside = 0;
  for (int32_t id : ids) inside += (id >= start && id < start + V);
  ASSERT_GT(inside, 3);
  ASSERT_LT(inside, int(N) - 3);

  // The shard is rows [1, V + 1) of a bigger table whose neighbouring rows hold non-zero
  // values, so a read one row outside the shard shows.
  std::vector<float> padded(size_t(C), 5.0f);
  padded.insert(padded.end(), table.begin(), table.end());
  padded.insert(padded.end(), size_t(C), 6.0f);
  Tensor Big = to_device(*be, padded, {V + 2, C});
  Tensor T = Big.rows(1, V + 1);
  Tensor I = ids_to_device(*be, ids);
  Tensor Out = be->empty({N, C}, DType::F32, MemoryCategory::Activations, "out");
  be->fill(Out, -7.0f);
  be->embedding_forward(I, T, start, Out);
  auto got = to_host(*be, Out);
  expect_close(got, naive_gather(ids, table, start, V, C), 0.0, 0.0, "shard gather");
  // Spelled out for the boundary ids.
  for (int64_t j = 0; j < C; ++j) {
    EXPECT_EQ(got[size_t(0 * C + j)], 0.0f) << "id start-1, col " << j;
    EXPECT_EQ(got[size_t(1 * C + j)], table[size_t(j)]) << "id start, col " << j;
    EXPECT_EQ(got[size_t(2 * C + j)], table[size_t((V - 1) * C + j)]) << "id start+V-1, col " << j;
    EXPECT_EQ(got[size_t(3 * C + j)], 0.0f) << "id start+V, col " << j;
  }
}

TEST(Embedding, BackwardAccumulatesRepeatedIds) {
  auto be = make_cpu_backend();
  const int64_t V = 17, C = 45, N = 63;  // C spans several 16-column blocks and a partial one
  auto ids = random_ids(size_t(N), 0, int32_t(V), 31);
  // Force heavy repetition of one id.
  for (size_t i = 0; i < ids.size(); i += 4) ids[i] = 5;
  auto dout = random_vector(size_t(N * C), 32);
  auto initial = random_vector(size_t(V * C), 33);
  Tensor D = to_device(*be, dout, {N, C});
  Tensor I = ids_to_device(*be, ids);
  Tensor DT = to_device(*be, initial, {V, C});
  be->embedding_backward(I, D, 0, DT);
  auto want = naive_scatter_add(ids, dout, initial, 0, V, C);
  expect_close(to_host(*be, DT), want, 1e-6, 1e-6, "scatter-add once");

  // A second call adds again.
  be->embedding_backward(I, D, 0, DT);
  auto want2 = naive_scatter_add(ids, dout, std::vector<float>(want.begin(), want.end()), 0, V, C);
  expect_close(to_host(*be, DT), want2, 1e-6, 1e-6, "scatter-add twice");
}

TEST(Embedding, BackwardOnAShardSkipsOtherIds) {
  auto be = make_cpu_backend();
  const int64_t start = 30, V = 11, C = 21, N = 50;
  auto ids = random_ids(size_t(N), 0, 60, 41);
  ids[0] = int32_t(start - 1);
  ids[1] = int32_t(start + V);
  ids[2] = int32_t(start);
  ids[3] = int32_t(start);
  ids[4] = int32_t(start + V - 1);
  auto dout = random_vector(size_t(N * C), 42);
  auto initial = random_vector(size_t(V * C), 43);
  Tensor D = to_device(*be, dout, {N, C});
  Tensor I = ids_to_device(*be, ids);
  // The shard's gradient is rows [1, V + 1) of a bigger buffer: the rows either side of it
  // must not be written (ids start - 1 and start + V are just outside).
  std::vector<float> padded(size_t(C), 5.0f);
  padded.insert(padded.end(), initial.begin(), initial.end());
  padded.insert(padded.end(), size_t(C), 6.0f);
  Tensor Big = to_device(*be, padded, {V + 2, C});
  Tensor DT = Big.rows(1, V + 1);
  be->embedding_backward(I, D, start, DT);
  expect_close(to_host(*be, DT), naive_scatter_add(ids, dout, initial, start, V, C), 1e-6, 1e-6,
               "shard scatter-add");
  expect_close(to_host(*be, Big.rows(0, 1)), std::vector<float>(size_t(C), 5.0f), 0.0, 0.0,
               "the row before the shard");
  expect_close(to_host(*be, Big.rows(V + 1, V + 2)), std::vector<float>(size_t(C), 6.0f), 0.0,
               0.0, "the row after the shard");
}

TEST(Embedding, RejectsMismatchedShapes) {
  auto be = make_cpu_backend();
  Tensor T = be->zeros({7, 5}, DType::F32, MemoryCategory::Parameters, "table");
  Tensor I = ids_to_device(*be, {1, 2, 3});
  Tensor Bad = be->empty({3, 4}, DType::F32, MemoryCategory::Activations, "out");
  EXPECT_THROW(be->embedding_forward(I, T, 0, Bad), Error);
  Tensor F = be->empty({3}, DType::F32, MemoryCategory::Buffers, "float ids");
  Tensor Out = be->empty({3, 5}, DType::F32, MemoryCategory::Activations, "out");
  EXPECT_THROW(be->embedding_forward(F, T, 0, Out), Error);
  EXPECT_THROW(be->embedding_backward(I, Bad, 0, T), Error);
}

}  // namespace
}  // namespace vacc::test
