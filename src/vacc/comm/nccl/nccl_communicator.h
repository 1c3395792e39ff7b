// NcclCommunicator: GPU ranks, one per GPU, over NCCL. The NCCL unique id is made on rank 0 and
// broadcast over MPI; the host operations (all_reduce_host, broadcast_host, barrier) go over
// that MPI communicator too. Tensors live on the GPU; reducing operations take f32, bf16 or i32.
//
// Operations run on the communicator's own stream, after the work already enqueued on the
// compute stream (set_compute_stream; the legacy default stream unless told), so tensors that
// compute kernels are still producing are communicated only once ready. A request is an event
// recorded after the operation; waiting polls it and NCCL's asynchronous error with the
// timeout. On a timeout or an NCCL error the NCCL communicator is aborted (so the GPU does not
// wait forever) and every later operation on it throws.
//
// send and recv wait until the transfer is done: pair them so that one side of every pair
// sends first (a ring where every rank sends before receiving waits forever on NCCL).
// send_async queues its send: it is enqueued with the communicator's next recv (in one NCCL
// group, so both progress together), before its next other operation, or when its request is
// waited for (test() alone does not start it). So a schedule that posts its sends with
// send_async and receives in order cannot deadlock, as with MPI. Enqueued at once it could:
// NCCL runs one communicator's operations in order, so the send would hold back this rank's
// later receives, while the peer may send what those receive before it takes this send.
// Built only when the CUDA toolkit and NCCL are found (VACC_HAVE_NCCL).
#pragma once

#include <cuda_runtime_api.h>
#include <nccl.h>

#include "vacc/comm/communicator.h"
#include "vacc/comm/mpi_communicator.h"

namespace vacc {

class NcclCommunicator final : public Communicator {
 public:
  // Collective over the ranks of `host`: every one constructs one, each with its own GPU
  // (CUDA device `device_index`, made current).
  NcclCommunicator(std::unique_ptr<MpiCommunicator> host, int device_index);
  ~NcclCommunicator() override;
  NcclCommunicator(const NcclCommunicator&) = delete;
  NcclCommunicator& operator=(const NcclCommunicator&) = delete;

  int rank() const override;
  int size() const override;
  std::string host() const override;
  std::string name() const override { return "nccl"; }

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

  void progress() override;
  std::unique_ptr<Communicator> split(int color, int key) override;

  // The stream whose work every operation waits for before it starts.
  void set_compute_stream(cudaStream_t stream);
  // The stream the operations run on.
  cudaStream_t stream() const;
  int device_index() const;

  struct State;  // shared with the requests

 private:
  NcclCommunicator(std::unique_ptr<MpiCommunicator> host, int device_index, ncclComm_t comm);

  std::shared_ptr<State> st_;
};

// An NcclCommunicator over all ranks of the job (MPI_COMM_WORLD), on CUDA device device_index.
std::unique_ptr<Communicator> make_nccl_communicator(int device_index);

}  // namespace vacc
