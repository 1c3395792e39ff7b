// SingleRankCommunicator: the job is one rank (a single-device flavor), so no MPI at all.
// all_reduce and broadcast leave the buffer as it is; reduce_scatter and all_gather copy (the
// one rank's part is the whole range); send and recv have no peer and throw.
#pragma once

#include "vacc/comm/communicator.h"

namespace vacc {

class SingleRankCommunicator final : public Communicator {
 public:
  SingleRankCommunicator();

  int rank() const override { return 0; }
  int size() const override { return 1; }
  std::string host() const override { return host_; }
  std::string name() const override { return "single"; }

  void set_timeout(std::chrono::milliseconds timeout) override;
  std::chrono::milliseconds timeout() const override { return timeout_; }

  std::unique_ptr<CommRequest> all_reduce_async(Tensor& buf) override;
  std::unique_ptr<CommRequest> reduce_scatter_async(const Tensor& in, Tensor& out,
                                                    std::span<const int64_t> counts) override;
  std::unique_ptr<CommRequest> all_gather_async(const Tensor& part, Tensor& out,
                                                std::span<const int64_t> counts) override;
  void broadcast(Tensor& buf, int root) override;
  void all_reduce_host(double* values, int64_t count) override;
  void broadcast_host(void* data, int64_t bytes, int root) override;
  void barrier() override {}

  void send(const Tensor& buf, int peer) override;
  void recv(Tensor& buf, int peer) override;

  void progress() override {}
  std::unique_ptr<Communicator> split(int color, int key) override;

 private:
  std::string host_;
  std::chrono::milliseconds timeout_;
};

}  // namespace vacc
