// make_communicator, launched_as_rank and the settings every communicator shares.
#include "vacc/comm/communicator.h"

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cmath>
#include <cstdlib>
#include <cstring>

#include "vacc/comm/mpi_communicator.h"
#include "vacc/comm/single_rank_communicator.h"

namespace vacc {

namespace {

const char* env(const char* name) {
  const char* v = std::getenv(name);
  return v && *v ? v : nullptr;
}

// The job size a launcher exported, or -1 when none did (or it is not a number).
long launcher_job_size() {
  for (const char* name : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "SLURM_STEP_NUM_TASKS"}) {
    if (const char* v = env(name)) {
      char* end = nullptr;
      errno = 0;
      long n = std::strtol(v, &end, 10);
      if (errno == 0 && end != v && *end == '\0' && n >= 0) return n;
    }
  }
  return -1;
}

bool force_mpi() {
  const char* v = env("VACC_FORCE_MPI");
  return v && std::strcmp(v, "0") != 0;
}

}  // namespace

std::chrono::milliseconds default_comm_timeout() {
  const char* v = env("VACC_COMM_TIMEOUT_S");
  if (!v) return std::chrono::seconds(60);
  char* end = nullptr;
  errno = 0;
  double seconds = std::strtod(v, &end);
  VACC_CHECK(errno == 0 && end != v && *end == '\0' && std::isfinite(seconds) && seconds > 0 &&
                 seconds < 1e9,
             "VACC_COMM_TIMEOUT_S='", v,
             "': expected a positive number of seconds (for example 60 or 0.5)");
  return std::chrono::milliseconds(std::max<int64_t>(1, int64_t(std::ceil(seconds * 1000.0))));
}

std::string host_name() {
  char name[HOST_NAME_MAX + 1] = {};
  if (gethostname(name, sizeof name - 1) != 0) return "unknown-host";
  return name;
}

std::vector<double> gather_host(Communicator& comm, double value) {
  std::vector<double> all(size_t(comm.size()), 0.0);
  all[size_t(comm.rank())] = value;
  comm.all_reduce_host(all.data(), int64_t(all.size()));
  return all;
}

double max_over_ranks(Communicator& comm, double value) {
  const std::vector<double> all = gather_host(comm, value);
  return *std::max_element(all.begin(), all.end());
}

bool launched_as_rank() {
  long size = launcher_job_size();
  if (size >= 0) return size > 1;
  return env("PMIX_RANK") != nullptr || env("PMI_RANK") != nullptr;
}

std::unique_ptr<Communicator> make_communicator() {
  if (launched_as_rank() || force_mpi()) return std::make_unique<MpiCommunicator>();
  return std::make_unique<SingleRankCommunicator>();
}

namespace {

// A request that had finished when it was made (the blocking fallback of *_async).
class FinishedRequest final : public CommRequest {
 public:
  bool test() override { return true; }
  void wait() override {}
};

}  // namespace

std::unique_ptr<CommRequest> Communicator::send_async(const Tensor& buf, int peer) {
  send(buf, peer);
  return std::make_unique<FinishedRequest>();
}

std::unique_ptr<CommRequest> Communicator::recv_async(Tensor& buf, int peer) {
  recv(buf, peer);
  return std::make_unique<FinishedRequest>();
}

}  // namespace vacc
