#include "vacc/comm/single_rank_communicator.h"

#include <cstring>

#include "vacc/comm/collective_checks.h"
#ifdef VACC_COMM_CUDA
#include <cuda_runtime_api.h>
#endif

namespace vacc {

namespace {

// Already finished when it is returned.
class FinishedRequest final : public CommRequest {
 public:
  bool test() override { return true; }
  void wait() override {}
};

void check_defined(std::string_view op, std::string_view role, const Tensor& t) {
  VACC_CHECK(t.defined(), op, ": ", role, " is an undefined tensor");
}

// dst = src (same number of bytes, same device kind).
void copy_bytes(std::string_view op, const Tensor& src, Tensor& dst) {
  VACC_CHECK(src.device().kind == dst.device().kind, op, ": ", src.str(), " and ", dst.str(),
             " are on different kinds of device");
  if (src.nbytes() == 0 || src.data() == dst.data()) return;
  if (src.device().kind == Device::Kind::CPU) {
    std::memmove(dst.data(), src.data(), src.nbytes());
    return;
  }
#ifdef VACC_COMM_CUDA
  // Whatever stream produced src has finished, and the copy is done when this returns.
  cudaError_t e = cudaDeviceSynchronize();
  if (e == cudaSuccess) e = cudaMemcpy(dst.data(), src.data(), src.nbytes(), cudaMemcpyDefault);
  if (e == cudaSuccess) e = cudaDeviceSynchronize();
  VACC_CHECK(e == cudaSuccess, op, ": copying ", src.str(), " to ", dst.str(),
             " failed: ", cudaGetErrorString(e));
#else
  fail(op, ": ", src.str(), " is a CUDA tensor but vacc was built without CUDA");
#endif
}

}  // namespace

SingleRankCommunicator::SingleRankCommunicator()
    : host_(host_name()), timeout_(default_comm_timeout()) {}

void SingleRankCommunicator::set_timeout(std::chrono::milliseconds timeout) {
  VACC_CHECK(timeout.count() > 0, "communicator timeout must be positive (got ", timeout.count(),
             " ms)");
  timeout_ = timeout;
}

std::unique_ptr<CommRequest> SingleRankCommunicator::all_reduce_async(Tensor& buf) {
  check_defined("all_reduce", "buf", buf);
  return std::make_unique<FinishedRequest>();
}

std::unique_ptr<CommRequest> SingleRankCommunicator::reduce_scatter_async(
    const Tensor& in, Tensor& out, std::span<const int64_t> counts) {
  check_defined("reduce_scatter", "in", in);
  check_defined("reduce_scatter", "out", out);
  check_scatter_gather("reduce_scatter", in, "in", out, "out", counts, 0, 1);
  copy_bytes("reduce_scatter", in, out);
  return std::make_unique<FinishedRequest>();
}

std::unique_ptr<CommRequest> SingleRankCommunicator::all_gather_async(
    const Tensor& part, Tensor& out, std::span<const int64_t> counts) {
  check_defined("all_gather", "part", part);
  check_defined("all_gather", "out", out);
  check_scatter_gather("all_gather", out, "out", part, "part", counts, 0, 1);
  copy_bytes("all_gather", part, out);
  return std::make_unique<FinishedRequest>();
}

void SingleRankCommunicator::broadcast(Tensor& buf, int root) {
  check_defined("broadcast", "buf", buf);
  VACC_CHECK(root == 0, "broadcast from rank ", root, ": this job has a single rank (0)");
}

void SingleRankCommunicator::all_reduce_host(double* values, int64_t count) {
  VACC_CHECK(count >= 0 && (count == 0 || values), "all_reduce_host: bad buffer (", count,
             " values)");
}

void SingleRankCommunicator::broadcast_host(void* data, int64_t bytes, int root) {
  VACC_CHECK(bytes >= 0 && (bytes == 0 || data), "broadcast_host: bad buffer (", bytes, " bytes)");
  VACC_CHECK(root == 0, "broadcast_host from rank ", root, ": this job has a single rank (0)");
}

void SingleRankCommunicator::send(const Tensor& buf, int peer) {
  fail("send of ", buf.str(), " to rank ", peer,
       ": this job has a single rank, so there is no peer");
}

void SingleRankCommunicator::recv(Tensor& buf, int peer) {
  fail("recv of ", buf.str(), " from rank ", peer,
       ": this job has a single rank, so there is no peer");
}

std::unique_ptr<Communicator> SingleRankCommunicator::split(int color, int key) {
  if (color < 0) return nullptr;
  auto c = std::make_unique<SingleRankCommunicator>();
  c->set_timeout(timeout_);
  return c;
}

}  // namespace vacc
