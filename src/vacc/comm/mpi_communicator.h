// MpiCommunicator: CPU ranks over MPI (any number of hosts). Tensors are host memory; the
// reducing operations (all_reduce, reduce_scatter) take f32 or i32, all_gather, broadcast and
// send/recv any dtype. Every operation is non-blocking MPI underneath, and every wait polls it
// (MPI_Test) with the communicator's timeout, so a dead or hung peer gives a CommTimeout rather
// than a hang. MPI progresses only inside MPI calls: call progress() between compute steps while
// async requests are outstanding.
//
// MPI counts are 32-bit: all_reduce, broadcast, send/recv and the host operations split larger
// buffers into several calls; reduce_scatter and all_gather refuse a count or offset above
// INT_MAX elements with a clear error. Use from one thread at a time.
#pragma once

#include <mpi.h>

#include "vacc/comm/communicator.h"
#include "vacc/comm/mpi_process.h"

namespace vacc {

class MpiCommunicator final : public Communicator {
 public:
  // A duplicate of `base` (own message space; errors returned, not fatal). Collective over
  // `base`: every rank of it constructs one. Initialises MPI when needed.
  explicit MpiCommunicator(MPI_Comm base = MPI_COMM_WORLD);
  ~MpiCommunicator() override;
  MpiCommunicator(const MpiCommunicator&) = delete;
  MpiCommunicator& operator=(const MpiCommunicator&) = delete;

  int rank() const override;
  int size() const override;
  std::string host() const override;
  std::string name() const override { return "mpi"; }

  void set_timeout(std::chrono::milliseconds timeout) override;
  std::chrono::milliseconds timeout() const override;

  std::unique_ptr<CommRequest> all_reduce_async(Tensor& buf) override;
  std::unique_ptr<CommRequest> reduce_scatter_async(const Tensor& in, Tensor& out,
                                                    std::span<const int64_t> counts) override;
  std::unique_ptr<CommRequest> all_gather_async(const Tensor& part, Tensor& out,
                                                std::span<const int64_t> counts) override;
  void broadcast(Tensor& buf, int root) override;
  void all_reduce_host(double* values, int64_t count) override;
  void broadcast_host(void* data, int64_t bytes, int root) override;
  void barrier() override;

  void send(const Tensor& buf, int peer) override;
  void recv(Tensor& buf, int peer) override;
  std::unique_ptr<CommRequest> send_async(const Tensor& buf, int peer) override;
  std::unique_ptr<CommRequest> recv_async(Tensor& buf, int peer) override;

  void progress() override;
  std::unique_ptr<Communicator> split(int color, int key) override;

  // The MPI communicator underneath (for code that calls MPI itself).
  MPI_Comm mpi_comm() const;

  struct Context;  // shared with the requests, which may outlive the communicator

 private:
  std::shared_ptr<Context> ctx_;
};

}  // namespace vacc
