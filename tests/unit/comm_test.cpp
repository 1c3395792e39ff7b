// The single-rank communicator, the timeout setting and how a process knows it is a rank.
// (The MPI communicator is tested under mpirun in tests/unit_mpi.)
#include <gtest/gtest.h>

#include <cstdlib>
#include <optional>
#include <string>
#include <vector>

#include "vacc/comm/communicator.h"
#include "vacc/comm/single_rank_communicator.h"

namespace vacc {
namespace {

// Sets (or, with nullopt, unsets) an environment variable for one scope.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, std::optional<std::string> value) : name_(name) {
    if (const char* old = std::getenv(name)) old_ = old;
    if (value)
      setenv(name, value->c_str(), 1);
    else
      unsetenv(name);
  }
  ~ScopedEnv() {
    if (old_)
      setenv(name_, old_->c_str(), 1);
    else
      unsetenv(name_);
  }

 private:
  const char* name_;
  std::optional<std::string> old_;
};

Tensor filled(HostAllocator& alloc, std::vector<float> values) {
  Tensor t(alloc, {int64_t(values.size())}, DType::F32, MemoryCategory::Buffers, "comm test");
  std::copy(values.begin(), values.end(), t.data_as<float>());
  return t;
}

std::vector<float> contents(const Tensor& t) {
  return std::vector<float>(t.data_as<float>(), t.data_as<float>() + t.numel());
}

TEST(SingleRankCommunicator, IsRankZeroOfOne) {
  SingleRankCommunicator comm;
  EXPECT_EQ(comm.rank(), 0);
  EXPECT_EQ(comm.size(), 1);
  EXPECT_EQ(comm.name(), "single");
  EXPECT_FALSE(comm.host().empty());
}

TEST(SingleRankCommunicator, AllReduceAndBroadcastLeaveTheBuffer) {
  HostAllocator alloc;
  SingleRankCommunicator comm;
  Tensor t = filled(alloc, {1.5f, -2.0f, 3.25f});
  comm.all_reduce(t);
  EXPECT_EQ(contents(t), (std::vector<float>{1.5f, -2.0f, 3.25f}));
  auto request = comm.all_reduce_async(t);
  EXPECT_TRUE(request->test());
  request->wait();
  comm.broadcast(t, 0);
  EXPECT_EQ(contents(t), (std::vector<float>{1.5f, -2.0f, 3.25f}));
  EXPECT_THROW(comm.broadcast(t, 1), Error);

  double host[2] = {4.0, 5.0};
  comm.all_reduce_host(host, 2);
  EXPECT_EQ(host[0], 4.0);
  EXPECT_EQ(host[1], 5.0);
  char bytes[3] = {'a', 'b', 'c'};
  comm.broadcast_host(bytes, 3, 0);
  EXPECT_EQ(std::string(bytes, 3), "abc");
  comm.barrier();
  comm.progress();
}

TEST(SingleRankCommunicator, ReduceScatterAndAllGatherCopy) {
  HostAllocator alloc;
  SingleRankCommunicator comm;
  Tensor in = filled(alloc, {1, 2, 3, 4});
  Tensor out = filled(alloc, {0, 0, 0, 0});
  int64_t counts[] = {4};
  comm.reduce_scatter(in, out, counts);
  EXPECT_EQ(contents(out), (std::vector<float>{1, 2, 3, 4}));

  Tensor part = filled(alloc, {7, 8, 9, 10});
  comm.all_gather(part, out, counts);
  EXPECT_EQ(contents(out), (std::vector<float>{7, 8, 9, 10}));
  comm.all_gather(out, out, counts);  // in place
  EXPECT_EQ(contents(out), (std::vector<float>{7, 8, 9, 10}));

  // bf16 is copied bit for bit.
  Tensor b(alloc, {2}, DType::BF16, MemoryCategory::Buffers, "bf16");
  Tensor c(alloc, {2}, DType::BF16, MemoryCategory::Buffers, "bf16");
  b.data_as<bf16>()[0] = float_to_bf16(1.5f);
  b.data_as<bf16>()[1] = float_to_bf16(-3.0f);
  int64_t two[] = {2};
  comm.all_gather(b, c, two);
  EXPECT_EQ(bf16_to_float(c.data_as<bf16>()[0]), 1.5f);
  EXPECT_EQ(bf16_to_float(c.data_as<bf16>()[1]), -3.0f);

  // Zero elements.
  Tensor empty_in(alloc, {0}, DType::F32, MemoryCategory::Buffers, "empty");
  Tensor empty_out(alloc, {0}, DType::F32, MemoryCategory::Buffers, "empty");
  int64_t zero[] = {0};
  comm.reduce_scatter(empty_in, empty_out, zero);
  comm.all_gather(empty_in, empty_out, zero);
}

TEST(SingleRankCommunicator, WrongCountsAreClearErrors) {
  HostAllocator alloc;
  SingleRankCommunicator comm;
  Tensor in = filled(alloc, {1, 2, 3, 4});
  Tensor out = filled(alloc, {0, 0, 0});
  int64_t four[] = {4};
  int64_t two_counts[] = {2, 2};
  int64_t negative[] = {-1};
  try {
    comm.reduce_scatter(in, out, four);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("out"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("count of this rank (0) is 4"), std::string::npos)
        << e.what();
  }
  EXPECT_THROW(comm.reduce_scatter(in, in, two_counts), Error);  // two counts, one rank
  EXPECT_THROW(comm.all_gather(in, in, negative), Error);
  Tensor undefined;
  EXPECT_THROW(comm.all_reduce(undefined), Error);
}

TEST(SingleRankCommunicator, SendAndRecvHaveNoPeer) {
  HostAllocator alloc;
  SingleRankCommunicator comm;
  Tensor t = filled(alloc, {1});
  try {
    comm.send(t, 1);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("single rank"), std::string::npos) << e.what();
  }
  EXPECT_THROW(comm.recv(t, 1), Error);
}

TEST(SingleRankCommunicator, SplitGivesASingleRankOrNothing) {
  SingleRankCommunicator comm;
  comm.set_timeout(std::chrono::milliseconds(1234));
  auto part = comm.split(3, 0);
  ASSERT_NE(part, nullptr);
  EXPECT_EQ(part->size(), 1);
  EXPECT_EQ(part->timeout(), std::chrono::milliseconds(1234));
  EXPECT_EQ(comm.split(-1, 0), nullptr);
}

TEST(CommTimeout, DefaultsToSixtySecondsAndReadsTheEnvironment) {
  {
    ScopedEnv unset("VACC_COMM_TIMEOUT_S", std::nullopt);
    EXPECT_EQ(default_comm_timeout(), std::chrono::seconds(60));
    EXPECT_EQ(SingleRankCommunicator().timeout(), std::chrono::seconds(60));
  }
  {
    ScopedEnv set("VACC_COMM_TIMEOUT_S", "2.5");
    EXPECT_EQ(default_comm_timeout(), std::chrono::milliseconds(2500));
    EXPECT_EQ(SingleRankCommunicator().timeout(), std::chrono::milliseconds(2500));
  }
  for (const char* bad : {"abc", "-1", "0", "5s", "nan", "inf"}) {
    ScopedEnv set("VACC_COMM_TIMEOUT_S", bad);
    try {
      default_comm_timeout();
      FAIL() << "expected an error for " << bad;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("VACC_COMM_TIMEOUT_S"), std::string::npos) << e.what();
    }
  }
  SingleRankCommunicator comm;
  EXPECT_THROW(comm.set_timeout(std::chrono::milliseconds(0)), Error);
}

TEST(LaunchedAsRank, ReadsTheLauncherEnvironment) {
  ScopedEnv a("OMPI_COMM_WORLD_SIZE", std::nullopt), b("PMI_SIZE", std::nullopt),
      c("SLURM_STEP_NUM_TASKS", std::nullopt), d("PMIX_RANK", std::nullopt),
      e("PMI_RANK", std::nullopt), f("VACC_FORCE_MPI", std::nullopt);
  EXPECT_FALSE(launched_as_rank());
  EXPECT_EQ(make_communicator()->name(), "single");
  {
    ScopedEnv size("OMPI_COMM_WORLD_SIZE", "4");
    EXPECT_TRUE(launched_as_rank());
  }
  {
    ScopedEnv size("OMPI_COMM_WORLD_SIZE", "1"), rank("PMIX_RANK", "0");
    EXPECT_FALSE(launched_as_rank());  // mpirun -np 1: one rank, no MPI needed
  }
  {
    ScopedEnv size("SLURM_STEP_NUM_TASKS", "8");
    EXPECT_TRUE(launched_as_rank());
  }
  {
    ScopedEnv rank("PMI_RANK", "3");
    EXPECT_TRUE(launched_as_rank());
  }
  {
    ScopedEnv batch("SLURM_NTASKS", "8");  // a batch script, not an srun step
    EXPECT_FALSE(launched_as_rank());
  }
}

}  // namespace
}  // namespace vacc
