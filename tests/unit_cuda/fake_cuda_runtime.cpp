// The CUDA runtime and cuBLASLt functions the CUDA backend calls, implemented on the host for
// the simulator build (cuda_sim.h): simulated devices (VACC_SIM_GPUS) whose memory is host
// memory, streams that finish every operation before returning (or, while a stream is being
// captured into a graph, record it for cudaGraphLaunch to run), and a cuBLASLt whose matrix
// product follows the library's documented column-major contract with plain loops (so the
// backend's row-major mapping onto it is checked, not mirrored). It declines (no algorithm) a
// bf16 output with a bias epilogue and any operand aligned to less than 4 bytes, so the
// backend's fallbacks run too.
#include <cublasLt.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <utility>
#include <vector>

#include "fake_cuda_runtime.h"
#include "vacc/core/dtype.h"

namespace {

// ---- streams and graph capture ----
// A stream being captured records its operations instead of running them. As on a GPU, a
// capture in the global or thread-local mode is invalidated (and the call fails with
// cudaErrorStreamCaptureUnsupported) by what a graph cannot hold or what would wait for the
// capturing stream: cudaMalloc and cudaFree, synchronisation, and copies between host and
// device. (A GPU captures a copy from pinned host memory; this simulator refuses every
// host-device copy, as the backend never means to capture one.)
using Operation = std::function<void()>;
struct FakeStream {
  std::vector<Operation>* capture = nullptr;  // non-null while capturing
  bool invalidated = false;
};
struct FakeGraph {
  std::vector<Operation> ops;
};
cudaStreamCaptureMode thread_capture_mode = cudaStreamCaptureModeGlobal;
int captures_in_progress = 0;

struct FakeEvent {
  double clock_ms = 0.0;
};
double simulated_clock_ms = 0.0;

// cuBLASLt's algorithms (fake_cuda_runtime.h, set_cublaslt_algorithms).
int algorithms = 1;
std::vector<int64_t> algorithm_runs;

FakeStream* stream_of(cudaStream_t s) { return reinterpret_cast<FakeStream*>(s); }
bool capturing(cudaStream_t s) { return s && stream_of(s)->capture; }

}  // namespace

namespace vacc_sim {
// Records op when `stream` is being captured and returns true; else returns false (cuda_sim.h
// declares it for the kernel launches, but redefines CUDA's keywords and is not included here).
bool record_if_capturing(cudaStream_t stream, std::function<void()> op) {
  if (!capturing(stream)) return false;
  stream_of(stream)->capture->emplace_back(std::move(op));
  return true;
}

void set_cublaslt_algorithms(int count) {
  algorithms = count;
  algorithm_runs.assign(size_t(count), 0);
}
int64_t cublaslt_runs_of_algorithm(int index) {
  return index < int(algorithm_runs.size()) ? algorithm_runs[size_t(index)] : 0;
}
}  // namespace vacc_sim

namespace {

// Runs op now, or records it when `stream` is capturing.
cudaError_t issue(cudaStream_t stream, std::function<void()> op) {
  if (!vacc_sim::record_if_capturing(stream, op)) op();
  return cudaSuccess;
}

std::vector<FakeStream*>& live_streams() {
  static std::vector<FakeStream*> streams;
  return streams;
}

// A call a capture cannot hold: invalidates every capture (unless this thread chose the
// relaxed mode) and fails, as the CUDA runtime does.
bool unsafe_during_capture() {
  if (captures_in_progress == 0 || thread_capture_mode == cudaStreamCaptureModeRelaxed)
    return false;
  for (FakeStream* s : live_streams())
    if (s->capture) s->invalidated = true;
  return true;
}

struct FakeDesc {
  cublasComputeType_t compute;
  cudaDataType_t scale;
  cublasOperation_t transa = CUBLAS_OP_N, transb = CUBLAS_OP_N;
  cublasLtEpilogue_t epilogue = CUBLASLT_EPILOGUE_DEFAULT;
  const void* bias = nullptr;
  int32_t bias_type = -1;
};
struct FakeLayout {
  cudaDataType_t type;
  uint64_t rows, cols;
  int64_t ld;
  int32_t batch = 1;
  int64_t stride = 0;  // elements between the matrices of a batch
};
struct FakePreference {
  uint64_t workspace = 0;
  uint32_t align[4] = {256, 256, 256, 256};  // A, B, C, D
};

FakeDesc& desc_of(cublasLtMatmulDesc_t d) { return *reinterpret_cast<FakeDesc*>(d); }
FakeLayout& layout_of(cublasLtMatrixLayout_t l) { return *reinterpret_cast<FakeLayout*>(l); }
FakePreference& pref_of(cublasLtMatmulPreference_t p) { return *reinterpret_cast<FakePreference*>(p); }

float load(const void* p, cudaDataType_t t, int64_t i) {
  if (t == CUDA_R_32F) return static_cast<const float*>(p)[i];
  return vacc::bf16_to_float(static_cast<const vacc::bf16*>(p)[i]);
}
void store(void* p, cudaDataType_t t, int64_t i, float v) {
  if (t == CUDA_R_32F)
    static_cast<float*>(p)[i] = v;
  else
    static_cast<vacc::bf16*>(p)[i] = vacc::float_to_bf16(v);
}

// m, n, k of D = op(A) op(B), or false when the layouts do not fit together.
bool shapes(const FakeDesc& d, const FakeLayout& a, const FakeLayout& b, const FakeLayout& c,
            uint64_t* m, uint64_t* n, uint64_t* k) {
  *m = c.rows;
  *n = c.cols;
  const uint64_t am = d.transa == CUBLAS_OP_N ? a.rows : a.cols;
  *k = d.transa == CUBLAS_OP_N ? a.cols : a.rows;
  const uint64_t bk = d.transb == CUBLAS_OP_N ? b.rows : b.cols;
  const uint64_t bn = d.transb == CUBLAS_OP_N ? b.cols : b.rows;
  return am == *m && bk == *k && bn == *n && a.ld >= int64_t(a.rows) && b.ld >= int64_t(b.rows) &&
         c.ld >= int64_t(c.rows) && a.batch == c.batch && b.batch == c.batch;
}

}  // namespace

struct cublasLtContext {
  int unused;
};

extern "C" {

// ---- CUDA runtime ----
// VACC_SIM_GPUS devices (default 1), each of 16 GiB; they share the host's memory.
cudaError_t cudaGetDeviceCount(int* count) {
  const char* env = std::getenv("VACC_SIM_GPUS");
  *count = env && std::atoi(env) > 0 ? std::atoi(env) : 1;
  return cudaSuccess;
}
cudaError_t cudaSetDevice(int) { return cudaSuccess; }
cudaError_t cudaGetDeviceProperties(cudaDeviceProp* prop, int) {
  std::memset(prop, 0, sizeof *prop);
  std::strcpy(prop->name, "vacc_sim CPU simulator");
  prop->totalGlobalMem = size_t(16) << 30;
  prop->major = 9;
  return cudaSuccess;
}
cudaError_t cudaStreamCreateWithFlags(cudaStream_t* stream, unsigned int) {
  auto* s = new FakeStream{};
  live_streams().push_back(s);
  *stream = reinterpret_cast<cudaStream_t>(s);
  return cudaSuccess;
}
cudaError_t cudaStreamDestroy(cudaStream_t stream) {
  auto& streams = live_streams();
  std::erase(streams, stream_of(stream));
  if (stream && stream_of(stream)->capture) --captures_in_progress;
  if (stream) delete stream_of(stream)->capture;
  delete stream_of(stream);
  return cudaSuccess;
}
cudaError_t cudaStreamSynchronize(cudaStream_t stream) {
  if (capturing(stream) || unsafe_during_capture()) {
    if (capturing(stream)) stream_of(stream)->invalidated = true;
    return cudaErrorStreamCaptureUnsupported;
  }
  return cudaSuccess;
}
cudaError_t cudaStreamQuery(cudaStream_t) { return cudaSuccess; }

// ---- graphs ----
cudaError_t cudaStreamBeginCapture(cudaStream_t stream, cudaStreamCaptureMode) {
  if (!stream || capturing(stream)) return cudaErrorIllegalState;
  stream_of(stream)->capture = new std::vector<Operation>;
  stream_of(stream)->invalidated = false;
  ++captures_in_progress;
  return cudaSuccess;
}
cudaError_t cudaStreamEndCapture(cudaStream_t stream, cudaGraph_t* graph) {
  *graph = nullptr;
  if (!capturing(stream)) return cudaErrorIllegalState;
  FakeStream& s = *stream_of(stream);
  std::vector<Operation>* ops = std::exchange(s.capture, nullptr);
  --captures_in_progress;
  if (s.invalidated) {
    delete ops;
    return cudaErrorStreamCaptureInvalidated;
  }
  *graph = reinterpret_cast<cudaGraph_t>(new FakeGraph{std::move(*ops)});
  delete ops;
  return cudaSuccess;
}
cudaError_t cudaStreamIsCapturing(cudaStream_t stream, cudaStreamCaptureStatus* status) {
  *status = !capturing(stream)                ? cudaStreamCaptureStatusNone
            : stream_of(stream)->invalidated ? cudaStreamCaptureStatusInvalidated
                                              : cudaStreamCaptureStatusActive;
  return cudaSuccess;
}
cudaError_t cudaThreadExchangeStreamCaptureMode(cudaStreamCaptureMode* mode) {
  std::swap(*mode, thread_capture_mode);
  return cudaSuccess;
}
cudaError_t cudaGraphInstantiate(cudaGraphExec_t* exec, cudaGraph_t graph, unsigned long long) {
  if (!graph) return cudaErrorInvalidValue;
  *exec = reinterpret_cast<cudaGraphExec_t>(
      new FakeGraph{reinterpret_cast<FakeGraph*>(graph)->ops});
  return cudaSuccess;
}
cudaError_t cudaGraphLaunch(cudaGraphExec_t exec, cudaStream_t stream) {
  if (!exec) return cudaErrorInvalidValue;
  const FakeGraph* g = reinterpret_cast<const FakeGraph*>(exec);
  return issue(stream, [g] {
    for (const Operation& op : g->ops) op();
  });
}
cudaError_t cudaGraphDestroy(cudaGraph_t graph) {
  delete reinterpret_cast<FakeGraph*>(graph);
  return cudaSuccess;
}
cudaError_t cudaGraphExecDestroy(cudaGraphExec_t exec) {
  delete reinterpret_cast<FakeGraph*>(exec);
  return cudaSuccess;
}
// Events: every operation has finished when its call returns, so an event is always complete.
// An event records the simulated clock (advanced by the products' algorithms only), so that
// cudaEventElapsedTime times cuBLASLt's candidates as the backend's autotuning asks.
cudaError_t cudaEventCreateWithFlags(cudaEvent_t* event, unsigned int) {
  *event = reinterpret_cast<cudaEvent_t>(new FakeEvent{});
  return cudaSuccess;
}
cudaError_t cudaEventDestroy(cudaEvent_t event) {
  delete reinterpret_cast<FakeEvent*>(event);
  return cudaSuccess;
}
cudaError_t cudaEventRecord(cudaEvent_t event, cudaStream_t stream) {
  FakeEvent* e = reinterpret_cast<FakeEvent*>(event);
  return issue(stream, [e] { e->clock_ms = simulated_clock_ms; });
}
cudaError_t cudaEventQuery(cudaEvent_t) { return cudaSuccess; }
cudaError_t cudaEventSynchronize(cudaEvent_t) {
  return unsafe_during_capture() ? cudaErrorStreamCaptureUnsupported : cudaSuccess;
}
cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t start, cudaEvent_t end) {
  *ms = float(reinterpret_cast<FakeEvent*>(end)->clock_ms -
              reinterpret_cast<FakeEvent*>(start)->clock_ms);
  return cudaSuccess;
}
cudaError_t cudaStreamWaitEvent(cudaStream_t, cudaEvent_t, unsigned int) { return cudaSuccess; }
cudaError_t cudaDeviceSynchronize() {
  return unsafe_during_capture() ? cudaErrorStreamCaptureUnsupported : cudaSuccess;
}
cudaError_t cudaMalloc(void** p, size_t size) {
  *p = nullptr;
  if (unsafe_during_capture()) return cudaErrorStreamCaptureUnsupported;
  *p = std::aligned_alloc(256, (size + 255) / 256 * 256);
  return *p ? cudaSuccess : cudaErrorMemoryAllocation;
}
cudaError_t cudaFree(void* p) {
  if (unsafe_during_capture()) return cudaErrorStreamCaptureUnsupported;
  std::free(p);
  return cudaSuccess;
}
cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t count, cudaMemcpyKind kind,
                            cudaStream_t stream) {
  if (capturing(stream) && kind != cudaMemcpyDeviceToDevice) {
    stream_of(stream)->invalidated = true;
    return cudaErrorStreamCaptureUnsupported;
  }
  return issue(stream, [=] { std::memmove(dst, src, count); });
}
cudaError_t cudaMemcpy(void* dst, const void* src, size_t count, cudaMemcpyKind) {
  if (unsafe_during_capture()) return cudaErrorStreamCaptureUnsupported;
  std::memmove(dst, src, count);
  return cudaSuccess;
}
cudaError_t cudaMemsetAsync(void* p, int value, size_t count, cudaStream_t stream) {
  return issue(stream, [=] { std::memset(p, value, count); });
}
cudaError_t cudaGetLastError() { return cudaSuccess; }
const char* cudaGetErrorName(cudaError_t e) { return e == cudaSuccess ? "cudaSuccess" : "cudaError"; }
const char* cudaGetErrorString(cudaError_t) { return "(simulated CUDA runtime)"; }

// ---- cuBLASLt ----
cublasStatus_t cublasLtCreate(cublasLtHandle_t* handle) {
  *handle = new cublasLtContext{};
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtDestroy(cublasLtHandle_t handle) {
  delete handle;
  return CUBLAS_STATUS_SUCCESS;
}
const char* cublasLtGetStatusName(cublasStatus_t) { return "CUBLAS_STATUS_(simulated)"; }
const char* cublasLtGetStatusString(cublasStatus_t) { return "(simulated cuBLASLt)"; }

cublasStatus_t cublasLtMatmulDescCreate(cublasLtMatmulDesc_t* desc, cublasComputeType_t compute,
                                        cudaDataType_t scale) {
  auto* d = new FakeDesc{};
  d->compute = compute;
  d->scale = scale;
  *desc = reinterpret_cast<cublasLtMatmulDesc_t>(d);
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulDescDestroy(cublasLtMatmulDesc_t desc) {
  delete &desc_of(desc);
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulDescSetAttribute(cublasLtMatmulDesc_t desc,
                                              cublasLtMatmulDescAttributes_t attr,
                                              const void* buf, size_t size) {
  FakeDesc& d = desc_of(desc);
  auto get = [&](auto& field) {
    if (size != sizeof field) return CUBLAS_STATUS_INVALID_VALUE;
    std::memcpy(&field, buf, size);
    return CUBLAS_STATUS_SUCCESS;
  };
  switch (attr) {
    case CUBLASLT_MATMUL_DESC_TRANSA: return get(d.transa);
    case CUBLASLT_MATMUL_DESC_TRANSB: return get(d.transb);
    case CUBLASLT_MATMUL_DESC_EPILOGUE: return get(d.epilogue);
    case CUBLASLT_MATMUL_DESC_BIAS_POINTER: return get(d.bias);
    case CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE: return get(d.bias_type);
    default: return CUBLAS_STATUS_NOT_SUPPORTED;
  }
}

cublasStatus_t cublasLtMatrixLayoutCreate(cublasLtMatrixLayout_t* layout, cudaDataType type,
                                          uint64_t rows, uint64_t cols, int64_t ld) {
  *layout = reinterpret_cast<cublasLtMatrixLayout_t>(new FakeLayout{type, rows, cols, ld});
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatrixLayoutSetAttribute(cublasLtMatrixLayout_t layout,
                                                cublasLtMatrixLayoutAttribute_t attr,
                                                const void* buf, size_t size) {
  FakeLayout& l = layout_of(layout);
  if (attr == CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT && size == sizeof l.batch) {
    std::memcpy(&l.batch, buf, size);
    return l.batch >= 1 ? CUBLAS_STATUS_SUCCESS : CUBLAS_STATUS_INVALID_VALUE;
  }
  if (attr == CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET && size == sizeof l.stride) {
    std::memcpy(&l.stride, buf, size);
    return CUBLAS_STATUS_SUCCESS;
  }
  return CUBLAS_STATUS_NOT_SUPPORTED;
}
cublasStatus_t cublasLtMatrixLayoutDestroy(const cublasLtMatrixLayout_t layout) {
  delete &layout_of(layout);
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmulPreferenceCreate(cublasLtMatmulPreference_t* pref) {
  *pref = reinterpret_cast<cublasLtMatmulPreference_t>(new FakePreference{});
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulPreferenceDestroy(cublasLtMatmulPreference_t pref) {
  delete &pref_of(pref);
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulPreferenceSetAttribute(cublasLtMatmulPreference_t pref,
                                                    cublasLtMatmulPreferenceAttributes_t attr,
                                                    const void* buf, size_t size) {
  FakePreference& p = pref_of(pref);
  if (attr == CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES && size == 8) {
    std::memcpy(&p.workspace, buf, 8);
    return CUBLAS_STATUS_SUCCESS;
  }
  if (attr >= CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES &&
      attr <= CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES && size == 4) {
    std::memcpy(&p.align[attr - CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES], buf, 4);
    return CUBLAS_STATUS_SUCCESS;
  }
  return CUBLAS_STATUS_NOT_SUPPORTED;
}

cublasStatus_t cublasLtMatmulAlgoGetHeuristic(cublasLtHandle_t, cublasLtMatmulDesc_t desc,
                                              cublasLtMatrixLayout_t a, cublasLtMatrixLayout_t b,
                                              cublasLtMatrixLayout_t c, cublasLtMatrixLayout_t d,
                                              cublasLtMatmulPreference_t pref, int requested,
                                              cublasLtMatmulHeuristicResult_t results[],
                                              int* count) {
  *count = 0;
  if (requested <= 0) return CUBLAS_STATUS_INVALID_VALUE;
  const FakeDesc& dd = desc_of(desc);
  uint64_t m, n, k;
  if (a == nullptr || b == nullptr || c != d || !shapes(dd, layout_of(a), layout_of(b), layout_of(c), &m, &n, &k))
    return CUBLAS_STATUS_INVALID_VALUE;
  if (dd.compute != CUBLAS_COMPUTE_32F || dd.scale != CUDA_R_32F) return CUBLAS_STATUS_NOT_SUPPORTED;
  const bool bias = dd.epilogue == CUBLASLT_EPILOGUE_BIAS;
  // The bias has the output's type (the default, -1, means that); the real cuBLASLt (CUDA 13,
  // H200) answers an f32 bias beside a bf16 output with INVALID_VALUE.
  if (bias && dd.bias_type != -1 && dd.bias_type != layout_of(c).type)
    return CUBLAS_STATUS_INVALID_VALUE;
  for (uint32_t al : pref_of(pref).align)
    if (al < 4) return CUBLAS_STATUS_NOT_SUPPORTED;
  *count = std::min(requested, algorithms);
  for (int i = 0; i < *count; ++i) {
    std::memset(&results[i], 0, sizeof results[i]);
    results[i].algo.data[0] = uint64_t(i);
    results[i].state = CUBLAS_STATUS_SUCCESS;
  }
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmul(cublasLtHandle_t, cublasLtMatmulDesc_t desc, const void* alpha,
                              const void* A, cublasLtMatrixLayout_t adesc, const void* B,
                              cublasLtMatrixLayout_t bdesc, const void* beta, const void* C,
                              cublasLtMatrixLayout_t cdesc, void* D, cublasLtMatrixLayout_t ddesc,
                              const cublasLtMatmulAlgo_t* algo, void*, size_t,
                              cudaStream_t stream) {
  // Copies of the descriptors and scalars (host pointer mode): a captured product keeps the
  // values of the call, as cuBLASLt's captured kernels do.
  const FakeDesc d = desc_of(desc);
  const FakeLayout a = layout_of(adesc), b = layout_of(bdesc), c = layout_of(cdesc),
                   dl = layout_of(ddesc);
  uint64_t m, n, k;
  if (!shapes(d, a, b, dl, &m, &n, &k) || c.rows != dl.rows || c.cols != dl.cols)
    return CUBLAS_STATUS_INVALID_VALUE;
  const float al = *static_cast<const float*>(alpha), be = *static_cast<const float*>(beta);
  const bool bias = d.epilogue == CUBLASLT_EPILOGUE_BIAS;
  if (bias && (!d.bias || (d.bias_type != -1 && d.bias_type != dl.type)))
    return CUBLAS_STATUS_INVALID_VALUE;
  if (dl.batch != c.batch || (bias && dl.batch > 1)) return CUBLAS_STATUS_INVALID_VALUE;
  const int index = algo ? int(algo->data[0]) : 0;
  if (index < 0 || index >= algorithms) return CUBLAS_STATUS_INVALID_VALUE;
  issue(stream, [=] {
    if (size_t(index) < algorithm_runs.size()) ++algorithm_runs[size_t(index)];
    simulated_clock_ms += double(algorithms - index);
    // Each output element is one float sum over k in a fixed order; odd algorithms sum over k
    // backwards: like a GPU's algorithms, they round apart.
    auto k_at = [&](uint64_t step) { return index % 2 ? k - 1 - step : step; };
    // The products ran as such per-element loops at 0.5 GFLOP/s, most of the simulator's time.
    // Now A is first widened to float as k rows of its m values, so that a column of D
    // accumulates as one vector loop over its m elements per k; but for fewer than 4 columns
    // (a classifier's one-row chunks of a 151936-row weight) widening A costs more than it saves.
    // The buffers are kept between products (a fresh one's page faults took longer).
    static thread_local std::vector<float> a_rows, acc;
    const bool widen = n >= 4;
    if (widen && a_rows.size() < m * k) a_rows.resize(m * k);
    if (acc.size() < m) acc.resize(m);
    for (int64_t q = 0; q < dl.batch; ++q) {
      const int64_t oa = q * a.stride, ob = q * b.stride, oc = q * c.stride, od = q * dl.stride;
      auto a_at = [&](uint64_t i, uint64_t p) {
        return d.transa == CUBLAS_OP_N ? load(A, a.type, oa + int64_t(i + p * a.ld))
                                       : load(A, a.type, oa + int64_t(p + i * a.ld));
      };
      auto b_at = [&](uint64_t p, uint64_t j) {
        return d.transb == CUBLAS_OP_N ? load(B, b.type, ob + int64_t(p + j * b.ld))
                                       : load(B, b.type, ob + int64_t(j + p * b.ld));
      };
      // In 64 x 64 tiles: a transposed A is read along its rows and written across them.
      if (widen)
        for (uint64_t i0 = 0; i0 < m; i0 += 64)
          for (uint64_t p0 = 0; p0 < k; p0 += 64)
            for (uint64_t i = i0; i < std::min(m, i0 + 64); ++i)
              for (uint64_t p = p0; p < std::min(k, p0 + 64); ++p) a_rows[p * m + i] = a_at(i, p);
      for (uint64_t j = 0; j < n; ++j) {
        std::fill(acc.begin(), acc.begin() + std::ptrdiff_t(m), 0.0f);
        if (widen) {
          for (uint64_t step = 0; step < k; ++step) {
            const uint64_t p = k_at(step);
            const float y = b_at(p, j);
            const float* x = a_rows.data() + p * m;
            for (uint64_t i = 0; i < m; ++i) acc[i] += x[i] * y;
          }
        } else {  // 8 elements at a time: 8 independent sums
          for (uint64_t i0 = 0; i0 < m; i0 += 8) {
            const uint64_t w = std::min<uint64_t>(8, m - i0);
            float sum[8] = {};
            for (uint64_t step = 0; step < k; ++step) {
              const uint64_t p = k_at(step);
              const float y = b_at(p, j);
              for (uint64_t e = 0; e < w; ++e) sum[e] += a_at(i0 + e, p) * y;
            }
            std::copy(sum, sum + w, acc.begin() + std::ptrdiff_t(i0));
          }
        }
        for (uint64_t i = 0; i < m; ++i) {
          float v = al * acc[i];
          if (be != 0.0f) v += be * load(C, c.type, oc + int64_t(i + j * c.ld));
          if (bias) v += load(d.bias, dl.type, int64_t(i));
          store(D, dl.type, od + int64_t(i + j * dl.ld), v);
        }
      }
    }
  });
  return CUBLAS_STATUS_SUCCESS;
}

}  // extern "C"
