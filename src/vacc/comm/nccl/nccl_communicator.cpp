#include "vacc/comm/nccl/nccl_communicator.h"

#include <cstdio>
#include <exception>

#include "vacc/comm/collective_checks.h"
#include "vacc/comm/timed_poll.h"

namespace vacc {

struct NcclCommunicator::State {
  std::unique_ptr<MpiCommunicator> host;
  int device = 0;
  int rank = 0;
  int size = 1;
  std::string host_name;
  ncclComm_t comm = nullptr;
  cudaStream_t stream = nullptr;   // the operations run here
  cudaStream_t compute = nullptr;  // and wait for the work enqueued here (0: legacy default)
  cudaEvent_t compute_done = nullptr;
  std::chrono::milliseconds timeout{60000};
  bool aborted = false;
  // send_async's sends not yet enqueued (see issue_queued_sends).
  struct QueuedSend {
    Tensor buf;
    int peer;
    std::shared_ptr<struct OpEvent> issued;
  };
  std::vector<QueuedSend> queued_sends;

  ~State();
  std::string who() const {
    return "rank " + std::to_string(rank) + " (host " + host_name +
           ", cuda:" + std::to_string(device) + ")";
  }
  void abort() {
    if (aborted || !comm) return;
    aborted = true;
    ncclCommAbort(comm);
    comm = nullptr;
  }
};

// The event recorded on the communication stream after an operation; for a send of send_async,
// none until the send is enqueued.
struct OpEvent {
  cudaEvent_t event = nullptr;
  ~OpEvent() {
    if (event) cudaEventDestroy(event);
  }
};

namespace {

using State = NcclCommunicator::State;

void check_cuda(const State* st, cudaError_t e, std::string_view what) {
  if (e != cudaSuccess)
    fail(st ? st->who() + ": " : std::string(), what, " failed: ", cudaGetErrorString(e));
}

void check_nccl(State& st, ncclResult_t r, std::string_view what) {
  if (r == ncclSuccess) return;
  std::string detail = st.comm ? ncclGetLastError(st.comm) : "";
  fail(st.who(), ": ", what, " failed: ", ncclGetErrorString(r), detail.empty() ? "" : ": ",
       detail);
}

ncclDataType_t nccl_type(DType dtype) {
  switch (dtype) {
    case DType::F32:
      return ncclFloat32;
    case DType::BF16:
      return ncclBfloat16;
    case DType::I32:
      return ncclInt32;
  }
  return ncclUint8;
}

std::string describe_values(int64_t n, DType dtype) {
  return std::to_string(n) + " " + dtype_name(dtype) + " values";
}

// Polls `event` until it completed, NCCL reports an error or the timeout passes; aborts the
// NCCL communicator on an error or timeout, so the GPU stops waiting for the peers too.
void wait_event(State& st, cudaEvent_t event, const std::string& what,
                const std::string& waiting_for) {
  TimedPoll poll(st.timeout);
  check_cuda(&st, cudaSetDevice(st.device), "selecting the GPU");
  bool done = poll.until([&] {
    cudaError_t e = cudaEventQuery(event);
    if (e == cudaSuccess) return true;
    if (e != cudaErrorNotReady) check_cuda(&st, e, what);
    VACC_CHECK(!st.aborted, st.who(), ": ", what,
               " cannot finish: the NCCL communicator was aborted after an earlier failure");
    ncclResult_t async = ncclSuccess;
    ncclCommGetAsyncError(st.comm, &async);
    if (async != ncclSuccess && async != ncclInProgress) {
      std::string detail = ncclGetLastError(st.comm);
      st.abort();
      fail(st.who(), ": ", what, " failed: ", ncclGetErrorString(async), ": ", detail);
    }
    return false;
  });
  if (!done) {
    st.abort();
    throw CommTimeout(timeout_message(st.rank, st.host_name, what, st.timeout, waiting_for) +
                      "; the NCCL communicator was aborted");
  }
}

void issue_queued_sends(State& st, std::string_view what, Tensor* recv = nullptr, int peer = -1);

class NcclRequest final : public CommRequest {
 public:
  NcclRequest(std::shared_ptr<State> st, std::shared_ptr<OpEvent> event, std::string what,
              std::string waiting_for, std::vector<Tensor> buffers)
      : st_(std::move(st)),
        event_(std::move(event)),
        what_(std::move(what)),
        waiting_for_(std::move(waiting_for)),
        buffers_(std::move(buffers)) {}

  ~NcclRequest() override {
    if (!done_ && !st_->aborted) {
      // Destroying an unfinished request waits for it (but never throws).
      try {
        wait();
      } catch (const std::exception& e) {
        std::fprintf(stderr, "vacc: %s\n", e.what());
      }
    }
  }

  // A queued send (send_async) is not done before it is enqueued: test() does not enqueue it.
  bool test() override {
    if (done_) return true;
    if (!event_->event) return false;
    cudaError_t e = cudaEventQuery(event_->event);
    if (e == cudaErrorNotReady) return false;
    check_cuda(st_.get(), e, what_);
    finish();
    return true;
  }

  void wait() override {
    if (done_) return;
    if (!event_->event) issue_queued_sends(*st_, what_);
    VACC_CHECK(event_->event, st_->who(), ": ", what_,
               " was never started: an earlier operation of this communicator failed");
    wait_event(*st_, event_->event, what_, waiting_for_);
    finish();
  }

 private:
  void finish() {
    done_ = true;
    buffers_.clear();
  }

  std::shared_ptr<State> st_;
  std::shared_ptr<OpEvent> event_;
  std::string what_;
  std::string waiting_for_;
  std::vector<Tensor> buffers_;  // kept alive until the GPU is done with them
  bool done_ = false;
};

// Makes the GPU current and orders the communication stream after the compute stream.
void start_after_compute(State& st, std::string_view what) {
  VACC_CHECK(!st.aborted, st.who(), ": ", what,
             ": the NCCL communicator was aborted after an earlier failure");
  check_cuda(&st, cudaSetDevice(st.device), "selecting the GPU");
  check_cuda(&st, cudaEventRecord(st.compute_done, st.compute), "recording the compute stream");
  check_cuda(&st, cudaStreamWaitEvent(st.stream, st.compute_done, 0),
             "ordering the communication stream after the compute stream");
}

// Records, into `ev`, an event after the work enqueued so far on the communication stream.
void record_into(State& st, OpEvent& ev) {
  cudaEvent_t event = nullptr;
  check_cuda(&st, cudaEventCreateWithFlags(&event, cudaEventDisableTiming), "creating an event");
  const cudaError_t e = cudaEventRecord(event, st.stream);
  if (e != cudaSuccess) cudaEventDestroy(event);
  check_cuda(&st, e, "recording an event");
  ev.event = event;
}
std::shared_ptr<OpEvent> record_event(State& st) {
  auto ev = std::make_shared<OpEvent>();
  record_into(st, *ev);
  return ev;
}

// A request completing with the work enqueued so far on the communication stream.
std::unique_ptr<CommRequest> request_after(const std::shared_ptr<State>& st, std::string what,
                                           std::vector<Tensor> buffers,
                                           std::string waiting_for = std::string()) {
  if (waiting_for.empty()) waiting_for = waiting_for_ranks(st->size);
  return std::make_unique<NcclRequest>(st, record_event(*st), std::move(what),
                                       std::move(waiting_for), std::move(buffers));
}

// Enqueues calls inside one NCCL group.
template <typename Calls>
void grouped(State& st, std::string_view what, Calls calls) {
  check_nccl(st, ncclGroupStart(), what);
  ncclResult_t first_error = ncclSuccess;
  calls([&](ncclResult_t r) {
    if (first_error == ncclSuccess) first_error = r;
  });
  ncclResult_t end_result = ncclGroupEnd();
  check_nccl(st, first_error != ncclSuccess ? first_error : end_result, what);
}

// Enqueues send_async's queued sends, in one NCCL group with the receive `recv` from `peer` when
// given. Sends are queued, not enqueued at once, because NCCL runs a communicator's operations
// in the order they were enqueued: in a pipeline, stage 0 sends activations 0 and 1 before it
// receives gradient 0, while stage 1 sends gradient 0 before it receives activations 1, so
// enqueued at once each stage's stream would wait for the other (beyond NCCL's internal
// buffering). Grouped with the next receive they progress together, as MPI's Isend does.
void issue_queued_sends(State& st, std::string_view what, Tensor* recv, int peer) {
  if (st.queued_sends.empty() && !recv) return;
  std::vector<State::QueuedSend> sends = std::move(st.queued_sends);
  st.queued_sends.clear();
  start_after_compute(st, what);
  grouped(st, what, [&](auto record) {
    for (const State::QueuedSend& q : sends)
      record(ncclSend(q.buf.data(), q.buf.nbytes(), ncclUint8, q.peer, st.comm, st.stream));
    if (recv) record(ncclRecv(recv->data(), recv->nbytes(), ncclUint8, peer, st.comm, st.stream));
  });
  for (State::QueuedSend& q : sends) record_into(st, *q.issued);
}

// Before a collective: the queued sends first (a peer may wait for them), then the
// communication stream ordered after the compute stream.
void start_collective(State& st, std::string_view what) {
  issue_queued_sends(st, what);
  start_after_compute(st, what);
}

void check_rank(const State& st, std::string_view op, std::string_view role, int r) {
  VACC_CHECK(r >= 0 && r < st.size, op, ": ", role, " rank ", r, " is outside the job (", st.size,
             " ranks)");
}

bool all_equal(std::span<const int64_t> counts) {
  for (int64_t c : counts)
    if (c != counts[0]) return false;
  return true;
}

}  // namespace

NcclCommunicator::State::~State() {
  cudaSetDevice(device);
  if (comm) {
    // Let what was enqueued finish (a peer that hangs: abort instead of waiting forever).
    TimedPoll poll(timeout);
    bool idle = poll.until([&] { return cudaStreamQuery(stream) != cudaErrorNotReady; });
    if (idle)
      ncclCommDestroy(comm);
    else
      ncclCommAbort(comm);
  }
  if (compute_done) cudaEventDestroy(compute_done);
  if (stream) cudaStreamDestroy(stream);
}

NcclCommunicator::NcclCommunicator(std::unique_ptr<MpiCommunicator> host, int device_index)
    : NcclCommunicator(std::move(host), device_index, nullptr) {}

NcclCommunicator::NcclCommunicator(std::unique_ptr<MpiCommunicator> host, int device_index,
                                   ncclComm_t comm)
    : st_(std::make_shared<State>()) {
  VACC_CHECK(host, "NcclCommunicator needs an MPI communicator for its host operations");
  State& st = *st_;
  st.rank = host->rank();
  st.size = host->size();
  st.host_name = host->host();
  st.timeout = host->timeout();
  st.device = device_index;
  st.host = std::move(host);
  int devices = 0;
  check_cuda(&st, cudaGetDeviceCount(&devices), "counting the GPUs");
  VACC_CHECK(device_index >= 0 && device_index < devices, st.who(), ": there is no GPU ",
             device_index, " (this host has ", devices, ")");
  check_cuda(&st, cudaSetDevice(device_index), "selecting the GPU");
  check_cuda(&st, cudaStreamCreateWithFlags(&st.stream, cudaStreamNonBlocking),
             "creating the communication stream");
  check_cuda(&st, cudaEventCreateWithFlags(&st.compute_done, cudaEventDisableTiming),
             "creating an event");
  if (comm) {
    st.comm = comm;
    return;
  }
  ncclUniqueId id{};
  if (st.rank == 0) check_nccl(st, ncclGetUniqueId(&id), "creating the NCCL unique id");
  st.host->broadcast_host(&id, sizeof id, 0);
  check_nccl(st, ncclCommInitRank(&st.comm, st.size, id, st.rank),
             "creating the NCCL communicator");
}

NcclCommunicator::~NcclCommunicator() = default;

int NcclCommunicator::rank() const {
  return st_->rank;
}
int NcclCommunicator::size() const {
  return st_->size;
}
std::string NcclCommunicator::host() const {
  return st_->host_name;
}
cudaStream_t NcclCommunicator::stream() const {
  return st_->stream;
}
int NcclCommunicator::device_index() const {
  return st_->device;
}
void NcclCommunicator::set_compute_stream(cudaStream_t stream) {
  st_->compute = stream;
}

void NcclCommunicator::set_timeout(std::chrono::milliseconds timeout) {
  st_->host->set_timeout(timeout);  // checks it
  st_->timeout = timeout;
}

std::chrono::milliseconds NcclCommunicator::timeout() const {
  return st_->timeout;
}

std::unique_ptr<CommRequest> NcclCommunicator::all_reduce_async(Tensor& buf) {
  check_comm_tensor("all_reduce", "buf", buf, Device::Kind::CUDA, "nccl");
  std::string what = "all_reduce of " + describe_values(buf.numel(), buf.dtype());
  start_collective(*st_, what);
  check_nccl(*st_,
             ncclAllReduce(buf.data(), buf.data(), size_t(buf.numel()), nccl_type(buf.dtype()),
                           ncclSum, st_->comm, st_->stream),
             what);
  return request_after(st_, what, {buf});
}

std::unique_ptr<CommRequest> NcclCommunicator::reduce_scatter_async(
    const Tensor& in, Tensor& out, std::span<const int64_t> counts) {
  const char* name = "reduce_scatter";
  check_comm_tensor(name, "in", in, Device::Kind::CUDA, "nccl");
  check_comm_tensor(name, "out", out, Device::Kind::CUDA, "nccl");
  std::vector<int64_t> offsets =
      check_scatter_gather(name, in, "in", out, "out", counts, st_->rank, st_->size);
  VACC_CHECK(!tensors_overlap(in, out), name, ": out (", out.str(), ") overlaps in (", in.str(),
             "); reduce_scatter needs separate buffers");
  std::string what = std::string(name) + " of " + describe_values(in.numel(), in.dtype());
  start_collective(*st_, what);
  ncclDataType_t type = nccl_type(in.dtype());
  size_t element = dtype_size(in.dtype());
  if (all_equal(counts)) {
    check_nccl(*st_,
               ncclReduceScatter(in.data(), out.data(), size_t(counts[0]), type, ncclSum, st_->comm,
                                 st_->stream),
               what);
  } else {
    // Each rank's region is reduced onto that rank.
    const char* base = static_cast<const char*>(in.data());
    grouped(*st_, what, [&](auto record) {
      for (int r = 0; r < st_->size; ++r) {
        if (counts[size_t(r)] == 0) continue;
        record(ncclReduce(base + size_t(offsets[size_t(r)]) * element,
                          r == st_->rank ? out.data() : nullptr, size_t(counts[size_t(r)]), type,
                          ncclSum, r, st_->comm, st_->stream));
      }
    });
  }
  return request_after(st_, what, {in, out});
}

std::unique_ptr<CommRequest> NcclCommunicator::all_gather_async(const Tensor& part, Tensor& out,
                                                                std::span<const int64_t> counts) {
  const char* name = "all_gather";
  check_comm_tensor(name, "part", part, Device::Kind::CUDA, "nccl");
  check_comm_tensor(name, "out", out, Device::Kind::CUDA, "nccl");
  std::vector<int64_t> offsets =
      check_scatter_gather(name, out, "out", part, "part", counts, st_->rank, st_->size);
  size_t element = dtype_size(out.dtype());
  char* base = static_cast<char*>(out.data());
  char* own_place = base + size_t(offsets[size_t(st_->rank)]) * element;
  VACC_CHECK(part.data() == own_place || !tensors_overlap(part, out), name, ": part (", part.str(),
             ") overlaps out (", out.str(), ") but is not this rank's place in it");
  std::string what = std::string(name) + " of " + describe_values(out.numel(), out.dtype());
  start_collective(*st_, what);
  ncclDataType_t type = nccl_type(out.dtype());
  if (all_equal(counts)) {
    check_nccl(
        *st_,
        ncclAllGather(part.data(), out.data(), size_t(counts[0]), type, st_->comm, st_->stream),
        what);
  } else {
    // Each rank broadcasts its part into its place in out.
    grouped(*st_, what, [&](auto record) {
      for (int r = 0; r < st_->size; ++r) {
        if (counts[size_t(r)] == 0) continue;
        char* place = base + size_t(offsets[size_t(r)]) * element;
        record(ncclBroadcast(r == st_->rank ? part.data() : place, place, size_t(counts[size_t(r)]),
                             type, r, st_->comm, st_->stream));
      }
    });
  }
  return request_after(st_, what, {part, out});
}

void NcclCommunicator::broadcast(Tensor& buf, int root) {
  check_comm_tensor("broadcast", "buf", buf, Device::Kind::CUDA, "nccl");
  check_rank(*st_, "broadcast", "root", root);
  std::string what = "broadcast of " + buf.str() + " from rank " + std::to_string(root);
  start_collective(*st_, what);
  check_nccl(
      *st_,
      ncclBroadcast(buf.data(), buf.data(), buf.nbytes(), ncclUint8, root, st_->comm, st_->stream),
      what);
  request_after(st_, what, {buf})->wait();
}

void NcclCommunicator::all_reduce_host(double* values, int64_t count) {
  issue_queued_sends(*st_, "all_reduce_host");
  st_->host->all_reduce_host(values, count);
}

void NcclCommunicator::broadcast_host(void* data, int64_t bytes, int root) {
  issue_queued_sends(*st_, "broadcast_host");
  st_->host->broadcast_host(data, bytes, root);
}

void NcclCommunicator::barrier() {
  issue_queued_sends(*st_, "barrier");
  st_->host->barrier();
}

void NcclCommunicator::send(const Tensor& buf, int peer) {
  send_async(buf, peer)->wait();
}

std::unique_ptr<CommRequest> NcclCommunicator::send_async(const Tensor& buf, int peer) {
  check_comm_tensor("send", "buf", buf, Device::Kind::CUDA, "nccl");
  check_rank(*st_, "send", "peer", peer);
  VACC_CHECK(peer != st_->rank, "send: rank ", peer, " cannot send to itself");
  VACC_CHECK(!st_->aborted, st_->who(), ": send: the NCCL communicator was aborted after an "
             "earlier failure");
  std::string what = "send of " + buf.str() + " to rank " + std::to_string(peer);
  auto issued = std::make_shared<OpEvent>();
  st_->queued_sends.push_back({buf, peer, issued});
  return std::make_unique<NcclRequest>(st_, std::move(issued), std::move(what),
                                       waiting_for_peer(peer, false), std::vector<Tensor>{buf});
}

void NcclCommunicator::recv(Tensor& buf, int peer) {
  check_comm_tensor("recv", "buf", buf, Device::Kind::CUDA, "nccl");
  check_rank(*st_, "recv", "peer", peer);
  VACC_CHECK(peer != st_->rank, "recv: rank ", peer, " cannot receive from itself");
  std::string what = "recv of " + buf.str() + " from rank " + std::to_string(peer);
  issue_queued_sends(*st_, what, &buf, peer);
  request_after(st_, what, {buf}, waiting_for_peer(peer, true))->wait();
}

void NcclCommunicator::progress() {
  st_->host->progress();
}

std::unique_ptr<Communicator> NcclCommunicator::split(int color, int key) {
  VACC_CHECK(!st_->aborted, st_->who(),
             ": split: the NCCL communicator was aborted after an earlier failure");
  issue_queued_sends(*st_, "split");
  std::unique_ptr<Communicator> host_part = st_->host->split(color, key);  // every rank is here
  check_cuda(st_.get(), cudaSetDevice(st_->device), "selecting the GPU");
  ncclComm_t part = nullptr;
  check_nccl(*st_,
             ncclCommSplit(st_->comm, color < 0 ? NCCL_SPLIT_NOCOLOR : color, key, &part, nullptr),
             "split");
  if (!host_part) return nullptr;
  std::unique_ptr<MpiCommunicator> host(static_cast<MpiCommunicator*>(host_part.release()));
  auto c =
      std::unique_ptr<NcclCommunicator>(new NcclCommunicator(std::move(host), st_->device, part));
  c->set_compute_stream(st_->compute);
  c->set_timeout(st_->timeout);
  return c;
}

std::unique_ptr<Communicator> make_nccl_communicator(int device_index) {
  return std::make_unique<NcclCommunicator>(std::make_unique<MpiCommunicator>(), device_index);
}

}  // namespace vacc
