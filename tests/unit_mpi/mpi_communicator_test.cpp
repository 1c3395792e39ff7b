// The MPI communicator, run as several ranks: `mpirun -np N mpi_communicator_test`. Every
// operation is checked against a naive reference each rank computes itself, with values that
// depend on the rank and the index (so a wrong offset or a missing rank shows). A failed test
// on any rank ends the whole job (MPI_Abort, non-zero exit) instead of leaving the other ranks
// waiting in a collective.
#include "vacc/comm/mpi_communicator.h"

#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <numeric>
#include <string>
#include <thread>
#include <vector>

#include "vacc/comm/communicator.h"

namespace vacc {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

std::unique_ptr<Communicator> g_comm;
std::chrono::milliseconds g_initial_timeout{0};

Communicator& comm() {
  return *g_comm;
}

// Half-integers of small magnitude: every sum of them is exact in f32, whatever the order.
float value(int rank, int64_t i) {
  return float((i * 7 + rank * 13) % 101 - 50) + 0.5f * float(rank);
}

Tensor f32_tensor(HostAllocator& alloc, int64_t n) {
  return Tensor(alloc, {n}, DType::F32, MemoryCategory::Buffers, "mpi test");
}

Tensor rank_values(HostAllocator& alloc, int rank, int64_t n, int64_t first_index = 0) {
  Tensor t = f32_tensor(alloc, n);
  for (int64_t i = 0; i < n; ++i) t.data_as<float>()[i] = value(rank, first_index + i);
  return t;
}

float sum_over_ranks(int64_t i) {
  float s = 0;
  for (int r = 0; r < comm().size(); ++r) s += value(r, i);
  return s;
}

// counts[r] elements for rank r: uneven, and rank 1 has none.
std::vector<int64_t> uneven_counts(int size) {
  std::vector<int64_t> counts(size_t(size), 0);
  for (int r = 0; r < size; ++r) counts[size_t(r)] = r == 1 ? 0 : 5 + 3 * r;
  return counts;
}

std::vector<int64_t> offsets_of(const std::vector<int64_t>& counts) {
  std::vector<int64_t> offsets(counts.size() + 1, 0);
  std::partial_sum(counts.begin(), counts.end(), offsets.begin() + 1);
  return offsets;
}

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

#define REQUIRE_RANKS(n)                                                               \
  do {                                                                                 \
    if (comm().size() < (n)) GTEST_SKIP() << "needs " << (n) << " ranks (mpirun -np)"; \
  } while (0)

TEST(MpiCommunicator, KnowsTheJob) {
  EXPECT_EQ(comm().name(), launched_as_rank() ? "mpi" : "single");
  if (const char* size = std::getenv("OMPI_COMM_WORLD_SIZE")) {
    EXPECT_EQ(comm().size(), std::atoi(size));
  }
  if (const char* rank = std::getenv("OMPI_COMM_WORLD_RANK")) {
    EXPECT_EQ(comm().rank(), std::atoi(rank));
  }
  EXPECT_FALSE(comm().host().empty());
  if (const char* t = std::getenv("VACC_COMM_TIMEOUT_S")) {
    EXPECT_EQ(g_initial_timeout.count(), int64_t(std::atof(t) * 1000));
  }
  // Every rank is a different one.
  std::vector<double> seen(size_t(comm().size()), 0.0);
  seen[size_t(comm().rank())] = 1.0;
  comm().all_reduce_host(seen.data(), int64_t(seen.size()));
  for (double s : seen) EXPECT_EQ(s, 1.0);
}

TEST(MpiCommunicator, AllReduceSumsEveryRank) {
  HostAllocator alloc;
  const int64_t n = 1003;
  Tensor buf = rank_values(alloc, comm().rank(), n);
  comm().all_reduce(buf);
  for (int64_t i = 0; i < n; ++i)
    ASSERT_EQ(buf.data_as<float>()[i], sum_over_ranks(i)) << "at " << i;

  Tensor ints(alloc, {5}, DType::I32, MemoryCategory::Buffers, "ints");
  for (int i = 0; i < 5; ++i) ints.data_as<int32_t>()[i] = (comm().rank() + 1) * (i + 1);
  comm().all_reduce(ints);
  int ranks = comm().size();
  for (int i = 0; i < 5; ++i)
    EXPECT_EQ(ints.data_as<int32_t>()[i], ranks * (ranks + 1) / 2 * (i + 1));

  Tensor empty = f32_tensor(alloc, 0);
  comm().all_reduce(empty);
}

TEST(MpiCommunicator, ReduceScatterWithUnevenAndZeroCounts) {
  HostAllocator alloc;
  std::vector<int64_t> counts = uneven_counts(comm().size());
  std::vector<int64_t> offsets = offsets_of(counts);
  int r = comm().rank();
  Tensor in = rank_values(alloc, r, offsets.back());
  Tensor out = f32_tensor(alloc, counts[size_t(r)]);
  comm().reduce_scatter(in, out, counts);
  for (int64_t j = 0; j < counts[size_t(r)]; ++j)
    ASSERT_EQ(out.data_as<float>()[j], sum_over_ranks(offsets[size_t(r)] + j)) << "at " << j;
  // in is left as it was.
  for (int64_t i = 0; i < offsets.back(); ++i) ASSERT_EQ(in.data_as<float>()[i], value(r, i));

  // Equal counts.
  std::vector<int64_t> equal(size_t(comm().size()), 64);
  Tensor in2 = rank_values(alloc, r, 64 * comm().size());
  Tensor out2 = f32_tensor(alloc, 64);
  comm().reduce_scatter(in2, out2, equal);
  for (int64_t j = 0; j < 64; ++j) ASSERT_EQ(out2.data_as<float>()[j], sum_over_ranks(64 * r + j));
}

TEST(MpiCommunicator, AllGatherWithUnevenAndZeroCounts) {
  HostAllocator alloc;
  std::vector<int64_t> counts = uneven_counts(comm().size());
  std::vector<int64_t> offsets = offsets_of(counts);
  int r = comm().rank();
  // Rank q's part holds value(q, offset_q + j): the gathered whole is value(owner(i), i).
  auto expected = [&](int64_t i) {
    int owner = 0;
    while (i >= offsets[size_t(owner) + 1]) ++owner;
    return value(owner, i);
  };
  Tensor part = rank_values(alloc, r, counts[size_t(r)], offsets[size_t(r)]);
  Tensor out = f32_tensor(alloc, offsets.back());
  std::fill(out.data_as<float>(), out.data_as<float>() + out.numel(), -999.0f);
  comm().all_gather(part, out, counts);
  for (int64_t i = 0; i < offsets.back(); ++i)
    ASSERT_EQ(out.data_as<float>()[i], expected(i)) << "at " << i;

  // In place: the part is this rank's place in the whole (a shard viewing the full buffer).
  Tensor whole = f32_tensor(alloc, offsets.back());
  std::fill(whole.data_as<float>(), whole.data_as<float>() + whole.numel(), -999.0f);
  Tensor shard = whole.view(offsets[size_t(r)], {counts[size_t(r)]});
  for (int64_t j = 0; j < counts[size_t(r)]; ++j)
    shard.data_as<float>()[j] = value(r, offsets[size_t(r)] + j);
  comm().all_gather(shard, whole, counts);
  for (int64_t i = 0; i < offsets.back(); ++i)
    ASSERT_EQ(whole.data_as<float>()[i], expected(i)) << "at " << i;

  // bf16 parts, bit for bit.
  Tensor bpart(alloc, {3}, DType::BF16, MemoryCategory::Buffers, "bf16 part");
  Tensor bout(alloc, {3 * comm().size()}, DType::BF16, MemoryCategory::Buffers, "bf16 whole");
  for (int j = 0; j < 3; ++j) bpart.data_as<bf16>()[j] = float_to_bf16(value(r, j) / 3.0f);
  std::vector<int64_t> threes(size_t(comm().size()), 3);
  comm().all_gather(bpart, bout, threes);
  for (int q = 0; q < comm().size(); ++q)
    for (int j = 0; j < 3; ++j)
      EXPECT_EQ(bout.data_as<bf16>()[3 * q + j].bits, float_to_bf16(value(q, j) / 3.0f).bits);
}

TEST(MpiCommunicator, BroadcastFromEveryRootAndOfBf16) {
  HostAllocator alloc;
  int r = comm().rank();
  for (int root = 0; root < comm().size(); ++root) {
    Tensor buf = r == root ? rank_values(alloc, root, 77) : f32_tensor(alloc, 77);
    if (r != root) std::fill(buf.data_as<float>(), buf.data_as<float>() + 77, -1.0f);
    comm().broadcast(buf, root);
    for (int64_t i = 0; i < 77; ++i)
      ASSERT_EQ(buf.data_as<float>()[i], value(root, i)) << "root " << root;
  }
  int root = comm().size() - 1;
  Tensor b(alloc, {2, 9}, DType::BF16, MemoryCategory::Buffers, "bf16");
  for (int64_t i = 0; i < 18; ++i)
    b.data_as<bf16>()[i] = r == root ? float_to_bf16(value(root, i) * 1.001f) : bf16{0};
  comm().broadcast(b, root);
  for (int64_t i = 0; i < 18; ++i)
    EXPECT_EQ(b.data_as<bf16>()[i].bits, float_to_bf16(value(root, i) * 1.001f).bits);
  Tensor t = f32_tensor(alloc, 1);
  EXPECT_THROW(comm().broadcast(t, comm().size()), Error);
}

TEST(MpiCommunicator, SendAndRecvAroundARing) {
  REQUIRE_RANKS(2);
  HostAllocator alloc;
  int r = comm().rank(), n = comm().size();
  int next = (r + 1) % n, prev = (r + n - 1) % n;
  Tensor out = rank_values(alloc, r, 300);
  Tensor in = f32_tensor(alloc, 300);
  if (r % 2 == 0) {
    comm().send(out, next);
    comm().recv(in, prev);
  } else {
    comm().recv(in, prev);
    comm().send(out, next);
  }
  for (int64_t i = 0; i < 300; ++i) ASSERT_EQ(in.data_as<float>()[i], value(prev, i)) << "at " << i;
  EXPECT_THROW(comm().send(out, r), Error);  // itself
  EXPECT_THROW(comm().recv(in, n), Error);   // outside the job
}

TEST(MpiCommunicator, RecvOfAnotherSizeIsAClearError) {
  REQUIRE_RANKS(2);
  HostAllocator alloc;
  int r = comm().rank();
  if (r == 0) {
    comm().send(rank_values(alloc, 0, 10), 1);  // larger than rank 1's buffer
    comm().send(rank_values(alloc, 0, 4), 1);   // smaller than rank 1's buffer
  } else if (r == 1) {
    Tensor small = f32_tensor(alloc, 5);
    try {
      comm().recv(small, 0);
      ADD_FAILURE() << "expected an error for a larger message";
    } catch (const Error& e) {
      EXPECT_TRUE(contains(e.what(), "recv of f32[5]")) << e.what();
      EXPECT_TRUE(contains(e.what(), "shapes disagree")) << e.what();
    }
    Tensor large = f32_tensor(alloc, 8);
    try {
      comm().recv(large, 0);
      ADD_FAILURE() << "expected an error for a smaller message";
    } catch (const Error& e) {
      EXPECT_TRUE(contains(e.what(), "received 16 bytes where 32 were expected")) << e.what();
    }
  }
  comm().barrier();
}

TEST(MpiCommunicator, HostOperations) {
  int r = comm().rank(), n = comm().size();
  std::vector<double> v = {double(r), 0.25 * r, 1.0, -double(r * r)};
  comm().all_reduce_host(v.data(), int64_t(v.size()));
  double s = n * (n - 1) / 2.0, s2 = 0;
  for (int q = 0; q < n; ++q) s2 += q * q;
  EXPECT_EQ(v[0], s);
  EXPECT_EQ(v[1], 0.25 * s);
  EXPECT_EQ(v[2], double(n));
  EXPECT_EQ(v[3], -s2);

  int root = n > 1 ? 1 : 0;
  char text[32] = {};
  if (r == root) std::snprintf(text, sizeof text, "plan from rank %d", root);
  comm().broadcast_host(text, sizeof text, root);
  EXPECT_EQ(std::string(text), "plan from rank " + std::to_string(root));
  comm().broadcast_host(nullptr, 0, 0);
  comm().all_reduce_host(nullptr, 0);
  comm().barrier();
}

TEST(MpiCommunicator, OverlappingRequestsWaitedInReverseOrder) {
  HostAllocator alloc;
  int r = comm().rank();
  std::vector<int64_t> counts = uneven_counts(comm().size());
  std::vector<int64_t> offsets = offsets_of(counts);
  Tensor a = rank_values(alloc, r, 5000), b = rank_values(alloc, r, 17),
         c = rank_values(alloc, r, 100000);
  Tensor in = rank_values(alloc, r, offsets.back()), out = f32_tensor(alloc, counts[size_t(r)]);
  Tensor part = rank_values(alloc, r, counts[size_t(r)], offsets[size_t(r)]);
  Tensor whole = f32_tensor(alloc, offsets.back());
  std::vector<std::unique_ptr<CommRequest>> requests;
  requests.push_back(comm().all_reduce_async(a));
  requests.push_back(comm().reduce_scatter_async(in, out, counts));
  requests.push_back(comm().all_reduce_async(b));
  requests.push_back(comm().all_gather_async(part, whole, counts));
  requests.push_back(comm().all_reduce_async(c));
  for (int i = 0; i < 5; ++i) comm().progress();  // "compute" in between
  for (auto it = requests.rbegin(); it != requests.rend(); ++it) (*it)->wait();
  for (auto& request : requests) EXPECT_TRUE(request->test());
  for (int64_t i = 0; i < 5000; ++i) ASSERT_EQ(a.data_as<float>()[i], sum_over_ranks(i));
  for (int64_t i = 0; i < 17; ++i) ASSERT_EQ(b.data_as<float>()[i], sum_over_ranks(i));
  for (int64_t i = 0; i < 100000; ++i) ASSERT_EQ(c.data_as<float>()[i], sum_over_ranks(i));
  for (int64_t j = 0; j < counts[size_t(r)]; ++j)
    ASSERT_EQ(out.data_as<float>()[j], sum_over_ranks(offsets[size_t(r)] + j));
  for (int q = 0; q < comm().size(); ++q)
    for (int64_t j = 0; j < counts[size_t(q)]; ++j)
      ASSERT_EQ(whole.data_as<float>()[offsets[size_t(q)] + j], value(q, offsets[size_t(q)] + j));
}

TEST(MpiCommunicator, ProgressAloneFinishesARequest) {
  HostAllocator alloc;
  Tensor buf = rank_values(alloc, comm().rank(), 2000);
  auto request = comm().all_reduce_async(buf);
  auto deadline = Clock::now() + 10s;
  while (!request->test() && Clock::now() < deadline) {
    comm().progress();
    std::this_thread::sleep_for(100us);
  }
  ASSERT_TRUE(request->test());
  for (int64_t i = 0; i < 2000; ++i) ASSERT_EQ(buf.data_as<float>()[i], sum_over_ranks(i));
}

TEST(MpiCommunicator, DestroyingAnUnfinishedRequestWaitsForIt) {
  HostAllocator alloc;
  Tensor buf = rank_values(alloc, comm().rank(), 4096);
  comm().all_reduce_async(buf);  // the request is dropped at once
  for (int64_t i = 0; i < 4096; ++i) ASSERT_EQ(buf.data_as<float>()[i], sum_over_ranks(i));
}

TEST(MpiCommunicator, WrongArgumentsAreClearErrors) {
  HostAllocator alloc;
  Tensor b(alloc, {4}, DType::BF16, MemoryCategory::Buffers, "bf16 grads");
  try {
    comm().all_reduce(b);
    ADD_FAILURE() << "expected an error";
  } catch (const Error& e) {
    EXPECT_TRUE(contains(e.what(), "sums f32 or i32")) << e.what();
  }
  Tensor in = f32_tensor(alloc, 10), out = f32_tensor(alloc, 3);
  std::vector<int64_t> short_list = {10};
  if (comm().size() > 1) {
    EXPECT_THROW(comm().reduce_scatter(in, out, short_list), Error);
  }
  std::vector<int64_t> counts(size_t(comm().size()), 3);
  EXPECT_THROW(comm().reduce_scatter(in, out, counts), Error);  // in has 10, not 3 * size
  Tensor whole = f32_tensor(alloc, 3 * comm().size());
  EXPECT_THROW(comm().reduce_scatter(whole, whole, counts), Error);  // overlap
  // Overlapping out, but no rank's place in it.
  EXPECT_THROW(comm().all_gather(whole.view(1, {3}), whole, counts), Error);
  comm().barrier();
}

TEST(MpiCommunicator, SplitIntoGroups) {
  REQUIRE_RANKS(2);
  HostAllocator alloc;
  int r = comm().rank(), n = comm().size();
  // Two groups by parity, ordered by descending rank.
  std::unique_ptr<Communicator> group = comm().split(r % 2, -r);
  ASSERT_NE(group, nullptr);
  std::vector<int> members;
  for (int q = n - 1; q >= 0; --q)
    if (q % 2 == r % 2) members.push_back(q);
  EXPECT_EQ(group->size(), int(members.size()));
  EXPECT_EQ(members[size_t(group->rank())], r);
  EXPECT_EQ(group->timeout(), comm().timeout());
  Tensor buf = rank_values(alloc, r, 50);
  group->all_reduce(buf);
  for (int64_t i = 0; i < 50; ++i) {
    float expected = 0;
    for (int q : members) expected += value(q, i);
    ASSERT_EQ(buf.data_as<float>()[i], expected);
  }
  group.reset();
  // Rank 0 stays out.
  std::unique_ptr<Communicator> rest = comm().split(r == 0 ? -1 : 0, r);
  EXPECT_EQ(rest == nullptr, r == 0);
  if (rest) {
    EXPECT_EQ(rest->size(), n - 1);
  }
}

// The timeout: every rank but rank 1 waits for rank 1, which joins 2 s late; with a 0.5 s
// timeout they get a CommTimeout after about 0.5 s. The operation still finishes once rank 1
// joins (MPI operations cannot be cancelled), so the job goes on cleanly.
TEST(MpiCommunicatorTimeout, BarrierThatOneRankJoinsLate) {
  REQUIRE_RANKS(2);
  const auto previous = comm().timeout();
  comm().barrier();
  comm().set_timeout(500ms);
  if (comm().rank() == 1) {
    std::this_thread::sleep_for(2s);
    comm().barrier();
  } else {
    auto start = Clock::now();
    try {
      comm().barrier();
      ADD_FAILURE() << "the barrier did not time out";
    } catch (const CommTimeout& e) {
      double seconds = std::chrono::duration<double>(Clock::now() - start).count();
      EXPECT_GE(seconds, 0.5);
      EXPECT_LT(seconds, 1.5);
      std::string expected = "rank " + std::to_string(comm().rank()) + " (host " + comm().host() +
                             "): barrier timed out after 0.5 s waiting for the other";
      EXPECT_TRUE(contains(e.what(), expected)) << e.what();
      if (comm().rank() == 0) std::printf("rank 0 after %.2f s: %s\n", seconds, e.what());
    }
  }
  comm().set_timeout(previous);
  comm().barrier();  // rank 1 has caught up: the next operation works
}

TEST(MpiCommunicatorTimeout, AsyncAllReduceTimesOutThenFinishes) {
  REQUIRE_RANKS(2);
  HostAllocator alloc;
  const auto previous = comm().timeout();
  const int64_t n = 123456;
  Tensor buf = rank_values(alloc, comm().rank(), n);
  comm().barrier();
  comm().set_timeout(500ms);
  if (comm().rank() == 1) std::this_thread::sleep_for(2s);
  auto request = comm().all_reduce_async(buf);
  if (comm().rank() != 1) {
    auto start = Clock::now();
    try {
      request->wait();
      ADD_FAILURE() << "the all_reduce did not time out";
    } catch (const CommTimeout& e) {
      double seconds = std::chrono::duration<double>(Clock::now() - start).count();
      EXPECT_GE(seconds, 0.5);
      EXPECT_LT(seconds, 1.5);
      EXPECT_TRUE(contains(e.what(), "all_reduce of 123456 floats timed out after 0.5 s"))
          << e.what();
      EXPECT_TRUE(contains(e.what(), "died or hangs")) << e.what();
      if (comm().rank() == 0) std::printf("rank 0 after %.2f s: %s\n", seconds, e.what());
    }
    EXPECT_FALSE(request->test());
  }
  comm().set_timeout(previous);
  request->wait();  // rank 1 joins: the same request finishes
  for (int64_t i = 0; i < n; ++i)
    ASSERT_EQ(buf.data_as<float>()[i], sum_over_ranks(i)) << "at " << i;
}

// Prints the failures of a rank other than 0 (rank 0 prints the whole run).
class RankFailurePrinter : public ::testing::EmptyTestEventListener {
 public:
  explicit RankFailurePrinter(int rank) : rank_(rank) {}
  void OnTestPartResult(const ::testing::TestPartResult& result) override {
    if (!result.failed()) return;
    std::fprintf(stdout, "[rank %d] %s:%d: Failure\n%s\n", rank_,
                 result.file_name() ? result.file_name() : "?", result.line_number(),
                 result.message());
    std::fflush(stdout);
  }

 private:
  int rank_;
};

// A test that failed on this rank may leave the others waiting in a collective: end the job.
class AbortOnFailure : public ::testing::EmptyTestEventListener {
 public:
  void OnTestEnd(const ::testing::TestInfo& info) override {
    if (info.result()->Failed())
      mpi_abort("rank " + std::to_string(comm().rank()) + " (host " + comm().host() + "): test " +
                    info.test_suite_name() + "." + info.name() + " failed; ending the job",
                1);
  }
};

}  // namespace
}  // namespace vacc

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  try {
    vacc::g_comm = vacc::make_communicator();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "mpi_communicator_test: %s\n", e.what());
    return 1;
  }
  vacc::g_initial_timeout = vacc::g_comm->timeout();
  auto& listeners = ::testing::UnitTest::GetInstance()->listeners();
  if (vacc::g_comm->rank() != 0) {
    delete listeners.Release(listeners.default_result_printer());
    listeners.Append(new vacc::RankFailurePrinter(vacc::g_comm->rank()));
  }
  listeners.Append(new vacc::AbortOnFailure);
  int result = RUN_ALL_TESTS();
  vacc::g_comm->barrier();
  vacc::g_comm.reset();
  return result;
}
