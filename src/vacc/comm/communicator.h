// Communicator: the collective and point-to-point operations between the ranks of a job, over
// device tensors (f32 unless stated). Implementations: SingleRankCommunicator (one rank, no
// MPI), MpiCommunicator (CPU ranks, any number of hosts), NcclCommunicator (GPU ranks; its
// unique id bootstrapped over MPI).
//
// Every wait has a timeout: a peer that died or hangs makes the operation throw
// vacc::CommTimeout naming the operation, this rank and the peers involved, instead of
// blocking forever. The *_async forms start an operation and return a request to wait on
// later, so gradient buckets are reduced while backward is still running; progress() lets
// the caller drive outstanding requests between compute (MPI progresses only inside calls).
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "vacc/core/error.h"
#include "vacc/core/tensor.h"

namespace vacc {

// Thrown when a wait runs past the communicator's timeout.
class CommTimeout : public Error {
 public:
  using Error::Error;
};

// A started operation. wait() blocks until it finished (or throws CommTimeout); test() says
// whether it has, without blocking. Destroying an unfinished request waits for it.
class CommRequest {
 public:
  virtual ~CommRequest() = default;
  virtual bool test() = 0;
  virtual void wait() = 0;
};

class Communicator {
 public:
  virtual ~Communicator() = default;

  virtual int rank() const = 0;
  virtual int size() const = 0;
  // The host this rank runs on (for messages and logs).
  virtual std::string host() const = 0;
  virtual std::string name() const = 0;  // "single", "mpi", "nccl"

  // Every wait gives up after this long (default 60 s; VACC_COMM_TIMEOUT_S overrides).
  virtual void set_timeout(std::chrono::milliseconds timeout) = 0;
  virtual std::chrono::milliseconds timeout() const = 0;

  // ---- collectives (every rank calls them in the same order) ----
  // In place: buf = sum over ranks of buf.
  virtual std::unique_ptr<CommRequest> all_reduce_async(Tensor& buf) = 0;
  // in holds the whole range (sum of counts elements) on every rank; out (counts[rank()]
  // elements) receives this rank's part of the sum: elements [sum(counts[0..rank)),
  // + counts[rank]). Counts may differ between ranks, and may be 0.
  virtual std::unique_ptr<CommRequest> reduce_scatter_async(const Tensor& in, Tensor& out,
                                                            std::span<const int64_t> counts) = 0;
  // part (counts[rank()] elements) from every rank, concatenated in rank order into out
  // (sum of counts elements) on every rank. part may be the rank's own place inside out
  // (in place: part.data() == out.data() + sum(counts[0..rank)) elements).
  virtual std::unique_ptr<CommRequest> all_gather_async(const Tensor& part, Tensor& out,
                                                        std::span<const int64_t> counts) = 0;

  void all_reduce(Tensor& buf) { all_reduce_async(buf)->wait(); }
  void reduce_scatter(const Tensor& in, Tensor& out, std::span<const int64_t> counts) {
    reduce_scatter_async(in, out, counts)->wait();
  }
  void all_gather(const Tensor& part, Tensor& out, std::span<const int64_t> counts) {
    all_gather_async(part, out, counts)->wait();
  }
  // buf on every rank = buf of root (any dtype).
  virtual void broadcast(Tensor& buf, int root) = 0;
  // Host values (losses, norms, token counts): in place, sum over ranks.
  virtual void all_reduce_host(double* values, int64_t count) = 0;
  // Host bytes of root to every rank (the plan, a config); size must agree on every rank.
  virtual void broadcast_host(void* data, int64_t bytes, int root) = 0;
  virtual void barrier() = 0;

  // ---- point to point (pipeline stages) ----
  virtual void send(const Tensor& buf, int peer) = 0;
  virtual void recv(Tensor& buf, int peer) = 0;
  // Started now, finished by the request; buf must stay untouched until then. Messages
  // between two ranks arrive in the order they were sent. A schedule that posts its sends
  // this way and receives in order cannot deadlock on send/recv pairs.
  virtual std::unique_ptr<CommRequest> send_async(const Tensor& buf, int peer);
  virtual std::unique_ptr<CommRequest> recv_async(Tensor& buf, int peer);

  // Drives outstanding async requests (call between compute steps).
  virtual void progress() = 0;

  // ---- groups (the rank grid: data-, pipeline- and tensor-parallel groups) ----
  // Collective: every rank calls it. Ranks with the same color form a new communicator, ordered
  // by key (ties by rank). A negative color leaves this rank out (returns nullptr). The new
  // communicator is independent of this one (its own messages, timeout copied from this one).
  virtual std::unique_ptr<Communicator> split(int color, int key) {
    fail(name(), " communicator: split is not supported");
  }
};

// The timeout every communicator starts with: VACC_COMM_TIMEOUT_S (seconds, may be fractional)
// when set, else 60 s. A value that is not a positive number throws vacc::Error naming it.
std::chrono::milliseconds default_comm_timeout();

// This machine's host name (for messages).
std::string host_name();

// Every rank's `value`, in rank order, on every rank (collective); and its largest.
std::vector<double> gather_host(Communicator& comm, double value);
double max_over_ranks(Communicator& comm, double value);

// The communicator for this process: MPI when launched by mpirun/srun with more than one
// rank (or when VACC_FORCE_MPI is set), else a single rank. Initialises MPI on first use.
std::unique_ptr<Communicator> make_communicator();

// True when this process was started by mpirun or srun as one of several ranks: the job size
// in OMPI_COMM_WORLD_SIZE, PMI_SIZE or SLURM_STEP_NUM_TASKS (set by srun, unlike SLURM_NTASKS
// which a batch script also sees) is above 1, or PMIX_RANK / PMI_RANK is set without a size.
bool launched_as_rank();

}  // namespace vacc
