// The NCCL functions NcclCommunicator calls, implemented over MPI for the simulator build
// (cuda_sim.h), where a GPU's memory is host memory and every stream finishes an operation before
// returning: each NCCL call runs at once as the matching MPI operation on the same buffers. So
// `vacc_sim train --flavor gpu-N` exercises vacc's whole multi-GPU path (communicator creation
// and splits, the buffers, counts, types, roots and peers of every collective) without a GPU;
// what it cannot show is NCCL's own behaviour or two streams running at once.
//
// ncclCommInitRank must span MPI_COMM_WORLD (vacc creates one NCCL communicator over the job
// and splits it). Sums are formed in double and rounded once to the type (exact for i32).
#include <mpi.h>
#include <nccl.h>

#include <cstring>
#include <string>
#include <vector>

#include "vacc/core/dtype.h"

struct ncclComm {
  MPI_Comm mpi = MPI_COMM_NULL;
  int rank = 0, size = 1;
  std::string last_error;
};

namespace {

size_t element_bytes(ncclDataType_t t) {
  switch (t) {
    case ncclInt8: case ncclUint8: return 1;
    case ncclFloat16: case ncclBfloat16: return 2;
    case ncclInt32: case ncclUint32: case ncclFloat32: return 4;
    default: return 8;
  }
}

// A call's failure, remembered for ncclGetLastError.
ncclResult_t failed(ncclComm_t comm, ncclResult_t r, std::string why) {
  if (comm) comm->last_error = "simulated NCCL: " + why;
  return r;
}

ncclResult_t from_mpi(ncclComm_t comm, int err, const char* what) {
  if (err == MPI_SUCCESS) return ncclSuccess;
  char text[MPI_MAX_ERROR_STRING];
  int len = 0;
  MPI_Error_string(err, text, &len);
  return failed(comm, ncclSystemError, std::string(what) + ": " + std::string(text, size_t(len)));
}

// The values of a buffer as doubles (exact for the types vacc reduces: f32, bf16, i32).
std::vector<double> as_doubles(const void* p, size_t n, ncclDataType_t t) {
  std::vector<double> v(n);
  if (t == ncclFloat32)
    for (size_t i = 0; i < n; ++i) v[i] = static_cast<const float*>(p)[i];
  if (t == ncclBfloat16)
    for (size_t i = 0; i < n; ++i) v[i] = vacc::bf16_to_float(static_cast<const vacc::bf16*>(p)[i]);
  if (t == ncclInt32)
    for (size_t i = 0; i < n; ++i) v[i] = static_cast<const int32_t*>(p)[i];
  return v;
}
void store_doubles(const std::vector<double>& v, void* p, ncclDataType_t t) {
  for (size_t i = 0; i < v.size(); ++i) {
    if (t == ncclFloat32) static_cast<float*>(p)[i] = float(v[i]);
    if (t == ncclBfloat16) static_cast<vacc::bf16*>(p)[i] = vacc::float_to_bf16(float(v[i]));
    if (t == ncclInt32) static_cast<int32_t*>(p)[i] = int32_t(v[i]);
  }
}

ncclResult_t check_sum(ncclComm_t comm, ncclDataType_t t, ncclRedOp_t op, size_t count) {
  if (!comm) return ncclInvalidArgument;
  if (op != ncclSum) return failed(comm, ncclInvalidArgument, "only ncclSum is simulated");
  if (t != ncclFloat32 && t != ncclBfloat16 && t != ncclInt32)
    return failed(comm, ncclInvalidArgument, "reductions are simulated for f32, bf16, i32 only");
  if (count * comm->size > size_t(1) << 30)
    return failed(comm, ncclInvalidArgument, "too many elements for the simulation");
  return ncclSuccess;
}

bool bytes_fit(size_t bytes) { return bytes <= size_t(1) << 30; }

struct PointToPoint {
  bool send;
  void* buf;
  size_t bytes;
  int peer;
  ncclComm_t comm;
};
int group_depth = 0;
std::vector<PointToPoint> grouped_p2p;  // posted by the outermost ncclGroupEnd

ncclResult_t point_to_point(bool send, void* buf, size_t count, ncclDataType_t t, int peer,
                            ncclComm_t comm) {
  if (!comm) return ncclInvalidArgument;
  const size_t bytes = count * element_bytes(t);
  if (!bytes_fit(bytes)) return failed(comm, ncclInvalidArgument, "too many bytes for the simulation");
  if (group_depth > 0) {
    grouped_p2p.push_back({send, buf, bytes, peer, comm});
    return ncclSuccess;
  }
  if (send) return from_mpi(comm, MPI_Send(buf, int(bytes), MPI_BYTE, peer, 0, comm->mpi), "send");
  return from_mpi(comm, MPI_Recv(buf, int(bytes), MPI_BYTE, peer, 0, comm->mpi, MPI_STATUS_IGNORE),
                  "recv");
}

}  // namespace

extern "C" {

ncclResult_t ncclGetUniqueId(ncclUniqueId* id) {
  std::memset(id, 0, sizeof *id);
  std::strcpy(id->internal, "vacc simulated NCCL");
  return ncclSuccess;
}

ncclResult_t ncclCommInitRank(ncclComm_t* comm, int nranks, ncclUniqueId, int rank) {
  int world = 0, me = 0;
  MPI_Comm_size(MPI_COMM_WORLD, &world);
  MPI_Comm_rank(MPI_COMM_WORLD, &me);
  if (nranks != world || rank != me) return ncclInvalidUsage;  // see the file's comment
  auto* c = new ncclComm;
  if (MPI_Comm_dup(MPI_COMM_WORLD, &c->mpi) != MPI_SUCCESS) {
    delete c;
    return ncclSystemError;
  }
  c->rank = rank;
  c->size = nranks;
  *comm = c;
  return ncclSuccess;
}

ncclResult_t ncclCommSplit(ncclComm_t comm, int color, int key, ncclComm_t* newcomm,
                           ncclConfig_t*) {
  MPI_Comm part = MPI_COMM_NULL;
  if (const ncclResult_t r = from_mpi(
          comm, MPI_Comm_split(comm->mpi, color == NCCL_SPLIT_NOCOLOR ? MPI_UNDEFINED : color, key, &part),
          "split");
      r != ncclSuccess)
    return r;
  *newcomm = nullptr;
  if (part == MPI_COMM_NULL) return ncclSuccess;
  auto* c = new ncclComm;
  c->mpi = part;
  MPI_Comm_rank(part, &c->rank);
  MPI_Comm_size(part, &c->size);
  *newcomm = c;
  return ncclSuccess;
}

ncclResult_t ncclCommDestroy(ncclComm_t comm) {
  if (comm) MPI_Comm_free(&comm->mpi);
  delete comm;
  return ncclSuccess;
}
// After a failure the peers may be gone: leave the MPI communicator alone.
ncclResult_t ncclCommAbort(ncclComm_t comm) {
  delete comm;
  return ncclSuccess;
}
ncclResult_t ncclCommGetAsyncError(ncclComm_t, ncclResult_t* error) {
  *error = ncclSuccess;  // every operation has finished, with its result, when it returns
  return ncclSuccess;
}
const char* ncclGetErrorString(ncclResult_t r) {
  return r == ncclSuccess ? "no error" : "simulated NCCL error";
}
const char* ncclGetLastError(ncclComm_t comm) { return comm ? comm->last_error.c_str() : ""; }

// Collectives run as soon as they are called. Sends and receives inside a group are posted
// together when the outermost group ends (MPI_Isend / MPI_Irecv, then MPI_Waitall), so that
// they progress together as NCCL's do.
ncclResult_t ncclGroupStart() {
  ++group_depth;
  return ncclSuccess;
}
ncclResult_t ncclGroupEnd() {
  if (group_depth == 0) return ncclInvalidUsage;
  if (--group_depth > 0) return ncclSuccess;
  std::vector<PointToPoint> ops = std::move(grouped_p2p);
  grouped_p2p.clear();
  std::vector<MPI_Request> requests(ops.size());
  for (size_t i = 0; i < ops.size(); ++i) {
    const PointToPoint& op = ops[i];
    const int err = op.send ? MPI_Isend(op.buf, int(op.bytes), MPI_BYTE, op.peer, 0, op.comm->mpi,
                                        &requests[i])
                            : MPI_Irecv(op.buf, int(op.bytes), MPI_BYTE, op.peer, 0, op.comm->mpi,
                                        &requests[i]);
    if (err != MPI_SUCCESS) return from_mpi(op.comm, err, op.send ? "send" : "recv");
  }
  if (ops.empty()) return ncclSuccess;
  return from_mpi(ops[0].comm, MPI_Waitall(int(requests.size()), requests.data(),
                                           MPI_STATUSES_IGNORE),
                  "send/recv group");
}

ncclResult_t ncclAllReduce(const void* send, void* recv, size_t count, ncclDataType_t t,
                           ncclRedOp_t op, ncclComm_t comm, cudaStream_t) {
  if (const ncclResult_t r = check_sum(comm, t, op, count); r != ncclSuccess) return r;
  std::vector<double> v = as_doubles(send, count, t);
  const ncclResult_t r = from_mpi(
      comm, MPI_Allreduce(MPI_IN_PLACE, v.data(), int(count), MPI_DOUBLE, MPI_SUM, comm->mpi),
      "all_reduce");
  if (r == ncclSuccess) store_doubles(v, recv, t);
  return r;
}

ncclResult_t ncclReduceScatter(const void* send, void* recv, size_t count, ncclDataType_t t,
                               ncclRedOp_t op, ncclComm_t comm, cudaStream_t) {
  if (const ncclResult_t r = check_sum(comm, t, op, count); r != ncclSuccess) return r;
  std::vector<double> all = as_doubles(send, count * size_t(comm->size), t), mine(count);
  const ncclResult_t r = from_mpi(comm, MPI_Reduce_scatter_block(all.data(), mine.data(), int(count),
                                                                MPI_DOUBLE, MPI_SUM, comm->mpi),
                                  "reduce_scatter");
  if (r == ncclSuccess) store_doubles(mine, recv, t);
  return r;
}

ncclResult_t ncclReduce(const void* send, void* recv, size_t count, ncclDataType_t t,
                        ncclRedOp_t op, int root, ncclComm_t comm, cudaStream_t) {
  if (const ncclResult_t r = check_sum(comm, t, op, count); r != ncclSuccess) return r;
  std::vector<double> v = as_doubles(send, count, t), sum(count);
  const ncclResult_t r = from_mpi(
      comm, MPI_Reduce(v.data(), sum.data(), int(count), MPI_DOUBLE, MPI_SUM, root, comm->mpi),
      "reduce");
  if (r == ncclSuccess && comm->rank == root) store_doubles(sum, recv, t);
  return r;
}

ncclResult_t ncclAllGather(const void* send, void* recv, size_t count, ncclDataType_t t,
                           ncclComm_t comm, cudaStream_t) {
  if (!comm) return ncclInvalidArgument;
  const size_t bytes = count * element_bytes(t);
  if (!bytes_fit(bytes * size_t(comm->size)))
    return failed(comm, ncclInvalidArgument, "too many bytes for the simulation");
  // A copy of the part: in place, it already lies inside recv.
  const std::vector<char> part(static_cast<const char*>(send), static_cast<const char*>(send) + bytes);
  return from_mpi(comm, MPI_Allgather(part.data(), int(bytes), MPI_BYTE, recv, int(bytes), MPI_BYTE,
                                      comm->mpi),
                  "all_gather");
}

ncclResult_t ncclBroadcast(const void* send, void* recv, size_t count, ncclDataType_t t, int root,
                           ncclComm_t comm, cudaStream_t) {
  if (!comm) return ncclInvalidArgument;
  const size_t bytes = count * element_bytes(t);
  if (!bytes_fit(bytes)) return failed(comm, ncclInvalidArgument, "too many bytes for the simulation");
  if (comm->rank == root && send != recv) std::memmove(recv, send, bytes);
  return from_mpi(comm, MPI_Bcast(recv, int(bytes), MPI_BYTE, root, comm->mpi), "broadcast");
}

// Outside a group NCCL's send and recv block the stream until the peer's match: blocking MPI
// calls (a rendezvous beyond MPI's eager size, about NCCL's behaviour beyond its buffers).
ncclResult_t ncclSend(const void* send, size_t count, ncclDataType_t t, int peer, ncclComm_t comm,
                      cudaStream_t) {
  return point_to_point(true, const_cast<void*>(send), count, t, peer, comm);
}
ncclResult_t ncclRecv(void* recv, size_t count, ncclDataType_t t, int peer, ncclComm_t comm,
                      cudaStream_t) {
  return point_to_point(false, recv, count, t, peer, comm);
}

}  // extern "C"
