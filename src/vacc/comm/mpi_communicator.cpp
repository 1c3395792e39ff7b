#include "vacc/comm/mpi_communicator.h"

#include <algorithm>
#include <climits>
#include <cstdio>
#include <exception>

#include "vacc/comm/collective_checks.h"
#include "vacc/comm/timed_poll.h"

namespace vacc {

struct MpiOp;

struct MpiCommunicator::Context {
  MPI_Comm comm = MPI_COMM_NULL;
  int rank = 0;
  int size = 1;
  std::string host;
  std::chrono::milliseconds timeout{60000};
  std::vector<std::weak_ptr<MpiOp>> live;  // async operations, for progress()
};

namespace {

using Context = MpiCommunicator::Context;
constexpr int kPointToPointTag = 7;
constexpr int64_t kMaxCount = INT_MAX;

}  // namespace

// One started operation: its MPI requests and everything MPI reads or writes until they finish.
struct MpiOp {
  std::string what;         // "all_reduce of 123 floats"
  std::string waiting_for;  // "the other 3 ranks (...)"
  std::vector<MPI_Request> requests;
  std::vector<MPI_Status> statuses;
  std::vector<Tensor> buffers;          // kept alive until MPI is done with them
  std::vector<int> counts, displs;      // argument arrays non-blocking MPI reads until the end
  std::vector<int64_t> expected_bytes;  // recv: the bytes each request must receive
  std::shared_ptr<void> keep_alive;     // anything else MPI writes into (a new communicator)
  bool done = false;
  std::string error;  // set when done and MPI reported an error
};

namespace {

std::string who(const Context& ctx) {
  return "rank " + std::to_string(ctx.rank) + " (host " + ctx.host + ")";
}

std::string describe_values(int64_t n, DType dtype) {
  switch (dtype) {
    case DType::F32:
      return std::to_string(n) + " floats";
    case DType::BF16:
      return std::to_string(n) + " bf16 values";
    case DType::I32:
      return std::to_string(n) + " int32 values";
  }
  return std::to_string(n) + " values";
}

MPI_Datatype mpi_type(DType dtype) {
  switch (dtype) {
    case DType::F32:
      return MPI_FLOAT;
    case DType::BF16:
      return MPI_UINT16_T;
    case DType::I32:
      return MPI_INT32_T;
  }
  return MPI_BYTE;
}

// The reducing operations sum f32 or i32; MPI has no bf16 sum.
void check_summable(std::string_view op, std::string_view role, const Tensor& t) {
  VACC_CHECK(t.dtype() == DType::F32 || t.dtype() == DType::I32, op, ": ", role, " is ", t.str(),
             "; the MPI communicator sums f32 or i32 tensors (reduce in an f32 buffer)");
}

// Throws the MPI error of a call that could not start.
void check_started(const Context& ctx, int rc, const MpiOp& op) {
  if (rc != MPI_SUCCESS) fail(who(ctx), ": starting ", op.what, " failed: ", mpi_error_text(rc));
}

// Polls op once; never throws. True when it finished (successfully or with op.error set).
bool advance(const Context* ctx, MpiOp& op) {
  if (op.done) return true;
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (finalized) {  // a request that outlived MPI
    op.done = true;
    op.error = op.what + " cannot finish: MPI was already finalized";
    return true;
  }
  int flag = 0;
  int rc = MPI_Testall(int(op.requests.size()), op.requests.data(), &flag, op.statuses.data());
  if (rc == MPI_SUCCESS && !flag) return false;
  op.done = true;
  std::string prefix = (ctx ? who(*ctx) + ": " : std::string()) + op.what + " failed: ";
  if (rc != MPI_SUCCESS) {
    int code = rc;
    if (rc == MPI_ERR_IN_STATUS)
      for (const MPI_Status& s : op.statuses)
        if (s.MPI_ERROR != MPI_SUCCESS && s.MPI_ERROR != MPI_ERR_PENDING) {
          code = s.MPI_ERROR;
          break;
        }
    op.error = prefix + mpi_error_text(code);
    int error_class = 0;
    MPI_Error_class(code, &error_class);
    if (error_class == MPI_ERR_TRUNCATE)
      op.error += " (the sender's tensor is larger than this one: the shapes disagree)";
  } else {
    for (size_t i = 0; i < op.expected_bytes.size(); ++i) {
      int got = 0;
      MPI_Get_count(&op.statuses[i], MPI_BYTE, &got);
      if (got != op.expected_bytes[i]) {
        op.error = prefix + "received " + std::to_string(got) + " bytes where " +
                   std::to_string(op.expected_bytes[i]) +
                   " were expected (the sender's tensor is smaller: the shapes disagree)";
        break;
      }
    }
  }
  op.buffers.clear();
  return true;
}

// Polls op once; throws its error.
bool test_op(const Context& ctx, MpiOp& op) {
  bool finished = advance(&ctx, op);
  if (finished && !op.error.empty()) throw Error(op.error);
  return finished;
}

void wait_op(const Context& ctx, MpiOp& op) {
  TimedPoll poll(ctx.timeout);
  if (!poll.until([&] { return test_op(ctx, op); }))
    throw CommTimeout(timeout_message(ctx.rank, ctx.host, op.what, ctx.timeout, op.waiting_for));
}

// An operation that timed out stays with MPI (it cannot be cancelled): kept, with its buffers,
// until it finishes.
void keep(std::shared_ptr<MpiOp> op) {
  if (op->done) return;
  mpi_keep_until_done([op] { return advance(nullptr, *op); });
}

// Waits for the started op; on a timeout, MPI keeps it.
void run_blocking(const Context& ctx, const std::shared_ptr<MpiOp>& op) {
  op->statuses.resize(op->requests.size());
  try {
    wait_op(ctx, *op);
  } catch (const CommTimeout&) {
    keep(op);
    throw;
  }
}

class MpiRequest final : public CommRequest {
 public:
  MpiRequest(std::shared_ptr<Context> ctx, std::shared_ptr<MpiOp> op)
      : ctx_(std::move(ctx)), op_(std::move(op)) {}

  ~MpiRequest() override {
    if (op_->done) return;
    if (std::uncaught_exceptions() == 0) {
      // Destroying an unfinished request waits for it (but never throws).
      try {
        wait_op(*ctx_, *op_);
        return;
      } catch (const CommTimeout& e) {
        std::fprintf(stderr, "vacc: %s (dropped unfinished)\n", e.what());
      } catch (const std::exception& e) {
        std::fprintf(stderr, "vacc: %s\n", e.what());
        return;
      }
    }
    keep(op_);  // unwinding from an error: do not wait here, MPI may still finish it
  }

  bool test() override { return test_op(*ctx_, *op_); }
  void wait() override { wait_op(*ctx_, *op_); }

 private:
  std::shared_ptr<Context> ctx_;
  std::shared_ptr<MpiOp> op_;
};

std::unique_ptr<CommRequest> make_request(const std::shared_ptr<Context>& ctx,
                                          std::shared_ptr<MpiOp> op) {
  op->statuses.resize(op->requests.size());
  std::erase_if(ctx->live, [](const std::weak_ptr<MpiOp>& w) { return w.expired(); });
  ctx->live.push_back(op);
  return std::make_unique<MpiRequest>(ctx, std::move(op));
}

// Starts `call(offset, count)` for every piece of at most kMaxCount elements of [0, n) (once
// for n == 0, so every rank still takes part).
template <typename Call>
void in_pieces(const Context& ctx, MpiOp& op, int64_t n, Call call) {
  int64_t offset = 0;
  do {
    int count = int(std::min(n - offset, kMaxCount));
    MPI_Request request = MPI_REQUEST_NULL;
    int rc = call(offset, count, &request);
    if (rc != MPI_SUCCESS) {
      if (!op.requests.empty()) {  // the pieces already started stay with MPI
        auto started = std::make_shared<MpiOp>(op);
        started->statuses.resize(started->requests.size());
        keep(started);
      }
      check_started(ctx, rc, op);
    }
    op.requests.push_back(request);
    offset += count;
  } while (offset < n);
}

void check_root(const Context& ctx, std::string_view op, int root) {
  VACC_CHECK(root >= 0 && root < ctx.size, op, ": root rank ", root, " is outside the job (",
             ctx.size, " ranks)");
}

void check_peer(const Context& ctx, std::string_view op, int peer) {
  VACC_CHECK(peer >= 0 && peer < ctx.size, op, ": peer rank ", peer, " is outside the job (",
             ctx.size, " ranks)");
  VACC_CHECK(peer != ctx.rank, op, ": rank ", peer, " cannot exchange with itself");
}

// counts as the int array MPI takes; refuses counts and offsets above INT_MAX.
std::vector<int> int_counts(std::string_view op, std::span<const int64_t> counts,
                            const std::vector<int64_t>& offsets) {
  VACC_CHECK(offsets.back() <= kMaxCount, op, ": ", offsets.back(),
             " elements in all is above the MPI limit of ", kMaxCount,
             " (32-bit counts and offsets); split the buffer into several calls");
  return std::vector<int>(counts.begin(), counts.end());
}

}  // namespace

MpiCommunicator::MpiCommunicator(MPI_Comm base) : ctx_(std::make_shared<Context>()) {
  ensure_mpi_initialized();
  ctx_->host = host_name();
  ctx_->timeout = default_comm_timeout();
  MPI_Comm_rank(base, &ctx_->rank);
  MPI_Comm_size(base, &ctx_->size);
  auto op = std::make_shared<MpiOp>();
  op->what = "creating the MPI communicator (" + std::to_string(ctx_->size) + " ranks)";
  op->waiting_for = waiting_for_ranks(ctx_->size);
  auto comm = std::make_shared<MPI_Comm>(MPI_COMM_NULL);  // MPI writes it when the dup is done
  op->keep_alive = comm;
  op->requests.push_back(MPI_REQUEST_NULL);
  check_started(*ctx_, MPI_Comm_idup(base, comm.get(), &op->requests[0]), *op);
  run_blocking(*ctx_, op);
  ctx_->comm = *comm;
  MPI_Comm_set_errhandler(ctx_->comm, MPI_ERRORS_RETURN);
}

MpiCommunicator::~MpiCommunicator() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  // Operations still running on it finish normally (MPI frees it when they are done).
  if (!finalized && ctx_->comm != MPI_COMM_NULL) MPI_Comm_free(&ctx_->comm);
}

int MpiCommunicator::rank() const {
  return ctx_->rank;
}
int MpiCommunicator::size() const {
  return ctx_->size;
}
std::string MpiCommunicator::host() const {
  return ctx_->host;
}
MPI_Comm MpiCommunicator::mpi_comm() const {
  return ctx_->comm;
}

void MpiCommunicator::set_timeout(std::chrono::milliseconds timeout) {
  VACC_CHECK(timeout.count() > 0, "communicator timeout must be positive (got ", timeout.count(),
             " ms)");
  ctx_->timeout = timeout;
}

std::chrono::milliseconds MpiCommunicator::timeout() const {
  return ctx_->timeout;
}

std::unique_ptr<CommRequest> MpiCommunicator::all_reduce_async(Tensor& buf) {
  check_comm_tensor("all_reduce", "buf", buf, Device::Kind::CPU, "mpi");
  check_summable("all_reduce", "buf", buf);
  auto op = std::make_shared<MpiOp>();
  op->what = "all_reduce of " + describe_values(buf.numel(), buf.dtype());
  op->waiting_for = waiting_for_ranks(ctx_->size);
  op->buffers.push_back(buf);
  MPI_Datatype type = mpi_type(buf.dtype());
  size_t element = dtype_size(buf.dtype());
  char* data = static_cast<char*>(buf.data());
  in_pieces(*ctx_, *op, buf.numel(), [&](int64_t offset, int count, MPI_Request* r) {
    return MPI_Iallreduce(MPI_IN_PLACE, data + size_t(offset) * element, count, type, MPI_SUM,
                          ctx_->comm, r);
  });
  return make_request(ctx_, std::move(op));
}

std::unique_ptr<CommRequest> MpiCommunicator::reduce_scatter_async(
    const Tensor& in, Tensor& out, std::span<const int64_t> counts) {
  const char* name = "reduce_scatter";
  check_comm_tensor(name, "in", in, Device::Kind::CPU, "mpi");
  check_comm_tensor(name, "out", out, Device::Kind::CPU, "mpi");
  check_summable(name, "in", in);
  std::vector<int64_t> offsets =
      check_scatter_gather(name, in, "in", out, "out", counts, ctx_->rank, ctx_->size);
  VACC_CHECK(!tensors_overlap(in, out), name, ": out (", out.str(), ") overlaps in (", in.str(),
             "); reduce_scatter needs separate buffers");
  auto op = std::make_shared<MpiOp>();
  op->what = std::string(name) + " of " + describe_values(in.numel(), in.dtype());
  op->waiting_for = waiting_for_ranks(ctx_->size);
  op->counts = int_counts(name, counts, offsets);
  op->buffers = {in, out};
  op->requests.push_back(MPI_REQUEST_NULL);
  check_started(*ctx_,
                MPI_Ireduce_scatter(in.data(), out.data(), op->counts.data(), mpi_type(in.dtype()),
                                    MPI_SUM, ctx_->comm, &op->requests[0]),
                *op);
  return make_request(ctx_, std::move(op));
}

std::unique_ptr<CommRequest> MpiCommunicator::all_gather_async(const Tensor& part, Tensor& out,
                                                               std::span<const int64_t> counts) {
  const char* name = "all_gather";
  check_comm_tensor(name, "part", part, Device::Kind::CPU, "mpi");
  check_comm_tensor(name, "out", out, Device::Kind::CPU, "mpi");
  std::vector<int64_t> offsets =
      check_scatter_gather(name, out, "out", part, "part", counts, ctx_->rank, ctx_->size);
  size_t element = dtype_size(out.dtype());
  char* own_place = static_cast<char*>(out.data()) + size_t(offsets[size_t(ctx_->rank)]) * element;
  // part may already be this rank's place in out (a shard that is a view of the whole).
  bool in_place = part.data() == own_place;
  VACC_CHECK(in_place || !tensors_overlap(part, out), name, ": part (", part.str(),
             ") overlaps out (", out.str(), ") but is not this rank's place in it");
  auto op = std::make_shared<MpiOp>();
  op->what = std::string(name) + " of " + describe_values(out.numel(), out.dtype());
  op->waiting_for = waiting_for_ranks(ctx_->size);
  op->counts = int_counts(name, counts, offsets);
  op->displs.assign(offsets.begin(), offsets.end() - 1);
  op->buffers = {part, out};
  MPI_Datatype type = mpi_type(out.dtype());
  op->requests.push_back(MPI_REQUEST_NULL);
  check_started(*ctx_,
                MPI_Iallgatherv(in_place ? MPI_IN_PLACE : part.data(),
                                op->counts[size_t(ctx_->rank)], type, out.data(), op->counts.data(),
                                op->displs.data(), type, ctx_->comm, &op->requests[0]),
                *op);
  return make_request(ctx_, std::move(op));
}

void MpiCommunicator::broadcast(Tensor& buf, int root) {
  check_comm_tensor("broadcast", "buf", buf, Device::Kind::CPU, "mpi");
  check_root(*ctx_, "broadcast", root);
  auto op = std::make_shared<MpiOp>();
  op->what = "broadcast of " + buf.str() + " from rank " + std::to_string(root);
  op->waiting_for = waiting_for_ranks(ctx_->size);
  op->buffers.push_back(buf);
  char* data = static_cast<char*>(buf.data());
  in_pieces(*ctx_, *op, int64_t(buf.nbytes()), [&](int64_t offset, int count, MPI_Request* r) {
    return MPI_Ibcast(data + offset, count, MPI_BYTE, root, ctx_->comm, r);
  });
  run_blocking(*ctx_, op);
}

void MpiCommunicator::all_reduce_host(double* values, int64_t count) {
  VACC_CHECK(count >= 0 && (count == 0 || values), "all_reduce_host: bad buffer (", count,
             " values)");
  auto op = std::make_shared<MpiOp>();
  op->what = "all_reduce_host of " + std::to_string(count) + " doubles";
  op->waiting_for = waiting_for_ranks(ctx_->size);
  in_pieces(*ctx_, *op, count, [&](int64_t offset, int n, MPI_Request* r) {
    return MPI_Iallreduce(MPI_IN_PLACE, values + offset, n, MPI_DOUBLE, MPI_SUM, ctx_->comm, r);
  });
  run_blocking(*ctx_, op);
}

void MpiCommunicator::broadcast_host(void* data, int64_t bytes, int root) {
  VACC_CHECK(bytes >= 0 && (bytes == 0 || data), "broadcast_host: bad buffer (", bytes, " bytes)");
  check_root(*ctx_, "broadcast_host", root);
  auto op = std::make_shared<MpiOp>();
  op->what =
      "broadcast_host of " + std::to_string(bytes) + " bytes from rank " + std::to_string(root);
  op->waiting_for = waiting_for_ranks(ctx_->size);
  char* p = static_cast<char*>(data);
  in_pieces(*ctx_, *op, bytes, [&](int64_t offset, int n, MPI_Request* r) {
    return MPI_Ibcast(p + offset, n, MPI_BYTE, root, ctx_->comm, r);
  });
  run_blocking(*ctx_, op);
}

void MpiCommunicator::barrier() {
  auto op = std::make_shared<MpiOp>();
  op->what = "barrier";
  op->waiting_for = waiting_for_ranks(ctx_->size);
  op->requests.push_back(MPI_REQUEST_NULL);
  check_started(*ctx_, MPI_Ibarrier(ctx_->comm, &op->requests[0]), *op);
  run_blocking(*ctx_, op);
}

std::unique_ptr<CommRequest> MpiCommunicator::send_async(const Tensor& buf, int peer) {
  check_comm_tensor("send", "buf", buf, Device::Kind::CPU, "mpi");
  check_peer(*ctx_, "send", peer);
  auto op = std::make_shared<MpiOp>();
  op->what = "send of " + buf.str() + " to rank " + std::to_string(peer);
  op->waiting_for = waiting_for_peer(peer, false);
  op->buffers.push_back(buf);
  const char* data = static_cast<const char*>(buf.data());
  in_pieces(*ctx_, *op, int64_t(buf.nbytes()), [&](int64_t offset, int n, MPI_Request* r) {
    return MPI_Isend(data + offset, n, MPI_BYTE, peer, kPointToPointTag, ctx_->comm, r);
  });
  return make_request(ctx_, std::move(op));
}

std::unique_ptr<CommRequest> MpiCommunicator::recv_async(Tensor& buf, int peer) {
  check_comm_tensor("recv", "buf", buf, Device::Kind::CPU, "mpi");
  check_peer(*ctx_, "recv", peer);
  auto op = std::make_shared<MpiOp>();
  op->what = "recv of " + buf.str() + " from rank " + std::to_string(peer);
  op->waiting_for = waiting_for_peer(peer, true);
  op->buffers.push_back(buf);
  char* data = static_cast<char*>(buf.data());
  in_pieces(*ctx_, *op, int64_t(buf.nbytes()), [&](int64_t offset, int n, MPI_Request* r) {
    op->expected_bytes.push_back(n);
    return MPI_Irecv(data + offset, n, MPI_BYTE, peer, kPointToPointTag, ctx_->comm, r);
  });
  return make_request(ctx_, std::move(op));
}

void MpiCommunicator::send(const Tensor& buf, int peer) { send_async(buf, peer)->wait(); }

void MpiCommunicator::recv(Tensor& buf, int peer) { recv_async(buf, peer)->wait(); }

void MpiCommunicator::progress() {
  // Any MPI_Test drives MPI's progress engine; testing each live request also retires it.
  std::erase_if(ctx_->live, [&](const std::weak_ptr<MpiOp>& w) {
    std::shared_ptr<MpiOp> op = w.lock();
    return !op || advance(ctx_.get(), *op);
  });
  mpi_progress_kept();
  if (ctx_->live.empty()) {
    int flag = 0;
    MPI_Iprobe(MPI_ANY_SOURCE, MPI_ANY_TAG, ctx_->comm, &flag, MPI_STATUS_IGNORE);
  }
}

std::unique_ptr<Communicator> MpiCommunicator::split(int color, int key) {
  // MPI_Comm_split cannot time out: first make sure every rank is here.
  barrier();
  MPI_Comm part = MPI_COMM_NULL;
  int rc = MPI_Comm_split(ctx_->comm, color < 0 ? MPI_UNDEFINED : color, key, &part);
  VACC_CHECK(rc == MPI_SUCCESS, who(*ctx_), ": split (color ", color, ", key ", key,
             ") failed: ", mpi_error_text(rc));
  if (part == MPI_COMM_NULL) return nullptr;
  std::unique_ptr<MpiCommunicator> c;
  try {
    c = std::make_unique<MpiCommunicator>(part);
  } catch (...) {
    MPI_Comm_free(&part);
    throw;
  }
  MPI_Comm_free(&part);
  c->set_timeout(ctx_->timeout);
  return c;
}

}  // namespace vacc
