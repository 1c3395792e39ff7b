#include "vacc/kernels/cuda/matmul_cublaslt.h"

#include <algorithm>
#include <string>

#include "vacc/core/gpu_scratch.h"
#include "vacc/core/logging.h"
#include "vacc/kernels/cuda/cuda_check.h"
#include "vacc/kernels/cuda/matmul_autotune.h"

namespace vacc::cuda {
namespace {

cudaDataType_t cuda_type(DType t) {
  switch (t) {
    case DType::F32: return CUDA_R_32F;
    case DType::BF16: return CUDA_R_16BF;
    default: fail("matmul: unsupported dtype ", dtype_name(t));
  }
}

// The largest power of two (at most 256) that divides the address.
unsigned alignment_of(const void* p) {
  const auto u = reinterpret_cast<uintptr_t>(p);
  unsigned a = 1;
  while (a < 256 && (u % (2 * a)) == 0) a *= 2;
  return a;
}

template <typename T>
void set_desc(cublasLtMatmulDesc_t desc, cublasLtMatmulDescAttributes_t attr, const T& value) {
  VACC_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(desc, attr, &value, sizeof value));
}

// `count` matrices, each `stride` elements after the previous.
void set_batch(cublasLtMatrixLayout_t layout, int64_t count, int64_t stride) {
  const int32_t n = int32_t(count);
  VACC_CUBLAS_CHECK(cublasLtMatrixLayoutSetAttribute(layout, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT,
                                                     &n, sizeof n));
  VACC_CUBLAS_CHECK(cublasLtMatrixLayoutSetAttribute(
      layout, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &stride, sizeof stride));
}

template <typename T>
void set_pref(cublasLtMatmulPreference_t pref, cublasLtMatmulPreferenceAttributes_t attr,
              const T& value) {
  VACC_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, attr, &value, sizeof value));
}

}  // namespace

CublasLtMatmul::CublasLtMatmul(void* workspace, size_t workspace_bytes, Scratch scratch)
    : workspace_(workspace),
      workspace_bytes_(workspace_bytes),
      scratch_(std::move(scratch)),
      candidates_(std::max(1, autotune_candidates())) {
  VACC_CUBLAS_CHECK(cublasLtCreate(&handle_));
}

CublasLtMatmul::~CublasLtMatmul() {
  for (auto& [key, plan] : plans_) destroy(plan);
  if (handle_) cublasLtDestroy(handle_);
}

void CublasLtMatmul::destroy(Plan& plan) {
  if (plan.a) cublasLtMatrixLayoutDestroy(plan.a);
  if (plan.b) cublasLtMatrixLayoutDestroy(plan.b);
  if (plan.c) cublasLtMatrixLayoutDestroy(plan.c);
  if (plan.desc) cublasLtMatmulDescDestroy(plan.desc);
  plan = Plan{};
}

CublasLtMatmul::Plan& CublasLtMatmul::plan_for(const Key& key, const void* bias) {
  auto it = plans_.find(key);
  if (it != plans_.end()) return it->second;
  auto [M, N, K, trans_a, trans_b, in_dtype, out_dtype, has_bias, align_a, align_b, align_out,
        align_bias, batch, stride_a, stride_b, stride_out] = key;
  (void)align_bias;
  Plan plan;
  try {
    // Column-major view: D (N, M) = opA(b) (N, K) * opB(a) (K, M).
    VACC_CUBLAS_CHECK(cublasLtMatmulDescCreate(&plan.desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    const cublasOperation_t op_b = trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
    const cublasOperation_t op_a = trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;
    set_desc(plan.desc, CUBLASLT_MATMUL_DESC_TRANSA, op_b);
    set_desc(plan.desc, CUBLASLT_MATMUL_DESC_TRANSB, op_a);
    if (has_bias) {
      set_desc(plan.desc, CUBLASLT_MATMUL_DESC_EPILOGUE, CUBLASLT_EPILOGUE_BIAS);
      set_desc(plan.desc, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, int32_t(cuda_type(out_dtype)));
      // The heuristic looks at the bias pointer's alignment (it is part of the key).
      set_desc(plan.desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, bias);
    }
    // b: row-major (K, N) is column-major (N, K), ld N; stored (N, K) when trans_b: (K, N), ld K.
    VACC_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&plan.b, cuda_type(in_dtype), trans_b ? K : N,
                                                 trans_b ? N : K, trans_b ? K : N));
    // a: row-major (M, K) is column-major (K, M), ld K; stored (K, M) when trans_a: (M, K), ld M.
    VACC_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&plan.a, cuda_type(in_dtype), trans_a ? M : K,
                                                 trans_a ? K : M, trans_a ? M : K));
    // out: row-major (M, N) is column-major (N, M), ld N.
    VACC_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&plan.c, cuda_type(out_dtype), N, M, N));
    if (batch > 1) {
      set_batch(plan.b, batch, stride_b);
      set_batch(plan.a, batch, stride_a);
      set_batch(plan.c, batch, stride_out);
    }

    cublasLtMatmulPreference_t pref = nullptr;
    VACC_CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref));
    std::vector<cublasLtMatmulHeuristicResult_t> results(static_cast<size_t>(candidates_));
    int count = 0;
    cublasStatus_t status = CUBLAS_STATUS_SUCCESS;
    try {
      set_pref(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, uint64_t(workspace_bytes_));
      // cuBLASLt's "A" is b, its "B" is a; C and D are out.
      set_pref(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, uint32_t(align_b));
      set_pref(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, uint32_t(align_a));
      set_pref(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, uint32_t(align_out));
      set_pref(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, uint32_t(align_out));
      status = cublasLtMatmulAlgoGetHeuristic(handle_, plan.desc, plan.b, plan.a, plan.c, plan.c,
                                              pref, candidates_, results.data(), &count);
    } catch (...) {
      cublasLtMatmulPreferenceDestroy(pref);
      throw;
    }
    cublasLtMatmulPreferenceDestroy(pref);
    // The real cuBLASLt (CUDA 13, H200) answers INVALID_VALUE for some small misaligned
    // products where the documented contract suggests NOT_SUPPORTED; those take the fallback,
    // loudly (the warning below names the product), never quietly.
    if (status == CUBLAS_STATUS_SUCCESS)
      for (int i = 0; i < count; ++i)
        if (results[size_t(i)].state == CUBLAS_STATUS_SUCCESS)
          plan.algos.push_back(results[size_t(i)].algo);
    const size_t out_elements =
        batch > 1 ? size_t((batch - 1) * stride_out + M * N) : size_t(M * N);
    plan.out_bytes = out_elements * dtype_size(out_dtype);
    if (!plan.found()) {
      log_warn(std::string("matmul: cuBLASLt has no algorithm") +
               (status == CUBLAS_STATUS_INVALID_VALUE ? " (INVALID_VALUE)" : "") +
               " for M=" + std::to_string(M) + " N=" + std::to_string(N) +
               " K=" + std::to_string(K) +
               (batch > 1 ? " x" + std::to_string(batch) : std::string()) + " (" +
               dtype_name(in_dtype) +
               " -> " + dtype_name(out_dtype) + (has_bias ? ", bias" : "") + ", alignments " +
               std::to_string(align_a) + "/" + std::to_string(align_b) + "/" +
               std::to_string(align_out) + " bytes); using a slower route");
    }
  } catch (...) {
    destroy(plan);
    throw;
  }
  return plans_.emplace(key, plan).first->second;
}

bool CublasLtMatmul::run(const void* a, bool trans_a, const void* b, bool trans_b, void* out,
                         int64_t M, int64_t N, int64_t K, DType in_dtype, DType out_dtype,
                         float alpha, float beta, const void* bias, cudaStream_t stream,
                         const void* c) {
  if (!c) c = out;
  // C and D share one layout, so the plan is for the alignment both have.
  const Key key{M, N, K, trans_a, trans_b, in_dtype, out_dtype, bias != nullptr,
                alignment_of(a), alignment_of(b), std::min(alignment_of(out), alignment_of(c)),
                bias ? alignment_of(bias) : 0u, 1, 0, 0, 0};
  Plan& plan = plan_for(key, bias);
  if (!plan.found()) return false;
  if (bias) set_desc(plan.desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, bias);
  issue(plan, a, b, c, out, alpha, beta, stream);
  return true;
}

bool CublasLtMatmul::run_batched(const void* a, bool trans_a, const void* b, bool trans_b,
                                 void* out, int64_t M, int64_t N, int64_t K, const Batch& batch,
                                 DType in_dtype, DType out_dtype, float alpha, float beta,
                                 cudaStream_t stream) {
  if (batch.count == 1)
    return run(a, trans_a, b, trans_b, out, M, N, K, in_dtype, out_dtype, alpha, beta, nullptr,
               stream);
  // Every matrix of the batch is only as aligned as both the first and the stride keep it.
  auto align = [](const void* p, int64_t stride, DType t) {
    const uintptr_t step = uintptr_t(stride) * dtype_size(t);
    return std::min(alignment_of(p), alignment_of(reinterpret_cast<const void*>(step)));
  };
  const Key key{M, N, K, trans_a, trans_b, in_dtype, out_dtype, false,
                align(a, batch.stride_a, in_dtype), align(b, batch.stride_b, in_dtype),
                align(out, batch.stride_out, out_dtype), 0u, batch.count, batch.stride_a,
                batch.stride_b, batch.stride_out};
  Plan& plan = plan_for(key, nullptr);
  if (!plan.found()) return false;
  issue(plan, a, b, out, out, alpha, beta, stream);
  return true;
}

void CublasLtMatmul::issue(Plan& plan, const void* a, const void* b, const void* c, void* out,
                           float alpha, float beta, cudaStream_t stream) {
  if (!plan.tuned) tune(plan, a, b, c, out, alpha, beta, stream);
  VACC_CUBLAS_CHECK(cublasLtMatmul(handle_, plan.desc, &alpha, b, plan.b, a, plan.a, &beta, c,
                                   plan.c, out, plan.c, &plan.algos.front(), workspace_,
                                   workspace_bytes_, stream));
}

void CublasLtMatmul::tune(Plan& plan, const void* a, const void* b, const void* c, void* out,
                          float alpha, float beta, cudaStream_t stream) {
  auto keep = [&](size_t index) {
    plan.algos = {plan.algos[index]};
    plan.tuned = true;
  };
  if (plan.algos.size() == 1) return keep(0);
  // A plan's algorithm never changes once it has run: one first run inside a graph capture keeps
  // the heuristic's choice (the graph holds it), so eager runs and replays agree bitwise.
  cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
  VACC_CUDA_CHECK(cudaStreamIsCapturing(stream, &capture));
  if (capture != cudaStreamCaptureStatusNone) return keep(0);
  void* trial_out = out;
  Tensor trial_scratch;
  if (beta != 0.0f && c == out) {
    if (plan.out_bytes > kMatmulAutotuneScratchBytes) return keep(0);
    try {
      trial_scratch = scratch_(plan.out_bytes);
    } catch (const std::exception& e) {
      // No room to time it: the heuristic's choice, as without autotuning.
      log_warn(std::string("matmul: not autotuning a product (") + e.what() + ")");
      return keep(0);
    }
    trial_out = trial_scratch.data();
  }
  const int fastest = fastest_candidate(
      int(plan.algos.size()),
      [&](int i) {
        return cublasLtMatmul(handle_, plan.desc, &alpha, b, plan.b, a, plan.a, &beta, c, plan.c,
                              trial_out, plan.c, &plan.algos[size_t(i)], workspace_,
                              workspace_bytes_, stream) == CUBLAS_STATUS_SUCCESS;
      },
      stream);
  ++tuned_plans_;
  if (fastest > 0) ++changed_plans_;
  keep(size_t(std::max(fastest, 0)));
}

}  // namespace vacc::cuda
