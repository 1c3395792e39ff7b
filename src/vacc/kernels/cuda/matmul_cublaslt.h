// Matrix products through cuBLASLt, on row-major matrices. cuBLASLt is column-major; a
// row-major (R, C) matrix is the column-major (C, R) matrix with the same leading dimension,
// so out = op(a) op(b) (row-major) is computed as out^T = op(b)^T op(a)^T (column-major):
// cuBLASLt's "A" is our b and its "B" is our a, with the transposes carried over unchanged.
// The bias epilogue adds a vector along cuBLASLt's rows, which are our columns: exactly
// out (M, N) += bias (N) broadcast over rows. The bias has the output's dtype (cuBLASLt's
// default bias type, and the one it has algorithms for: an f32 bias beside a bf16 output is
// declined with INVALID_VALUE on an H200); it is added to the f32 accumulator before the one
// rounding to the output's dtype.
//
// Descriptors and the algorithm are cached per shape, dtype, transposes, bias and pointer
// alignment: building them costs more than running a small product. The algorithm is the
// fastest of the heuristic's first few, timed at the plan's first eager run (matmul_autotune.h).
#pragma once

#include <cublasLt.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <functional>
#include <map>
#include <tuple>
#include <vector>

#include "vacc/core/dtype.h"
#include "vacc/core/tensor.h"

namespace vacc::cuda {

class CublasLtMatmul {
 public:
  // `workspace` is device memory of `workspace_bytes` that outlives this object. `scratch`
  // gives device memory of at least the bytes asked for (it may throw): autotuning writes the
  // trials of a product that accumulates into its output there.
  using Scratch = std::function<Tensor(size_t bytes)>;
  CublasLtMatmul(void* workspace, size_t workspace_bytes, Scratch scratch);
  ~CublasLtMatmul();
  CublasLtMatmul(const CublasLtMatmul&) = delete;
  CublasLtMatmul& operator=(const CublasLtMatmul&) = delete;

  // out (M, N) = alpha * op(a) @ op(b) + beta * out (+ bias (N)), accumulated in f32. a and b
  // have dtype in_dtype (F32 or BF16), out and bias have out_dtype (F32, or BF16 with beta 0).
  // Returns false (having issued nothing) when cuBLASLt has no algorithm for the combination;
  // the caller then takes another route. With `c`, beta scales c (out's shape and dtype)
  // instead of out: out = alpha * op(a) @ op(b) + beta * c, the residual add read in the
  // epilogue.
  bool run(const void* a, bool trans_a, const void* b, bool trans_b, void* out, int64_t M,
           int64_t N, int64_t K, DType in_dtype, DType out_dtype, float alpha, float beta,
           const void* bias, cudaStream_t stream, const void* c = nullptr);

  // `count` independent products of the same shape in one call, the i-th on a + i * stride_a,
  // b + i * stride_b and out + i * stride_out (strides in elements), each densely stored as
  // in run(). No bias. Returns false (having issued nothing) when cuBLASLt declines.
  struct Batch {
    int64_t count = 1, stride_a = 0, stride_b = 0, stride_out = 0;
  };
  bool run_batched(const void* a, bool trans_a, const void* b, bool trans_b, void* out, int64_t M,
                   int64_t N, int64_t K, const Batch& batch, DType in_dtype, DType out_dtype,
                   float alpha, float beta, cudaStream_t stream);

  // How many plans were autotuned, and in how many the fastest was not the heuristic's first.
  int64_t tuned_plans() const { return tuned_plans_; }
  int64_t plans_not_the_heuristics_first() const { return changed_plans_; }

 private:
  struct Plan {
    cublasLtMatmulDesc_t desc = nullptr;
    cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
    // The heuristic's candidates, best first; after tuning, the fastest alone.
    std::vector<cublasLtMatmulAlgo_t> algos;
    bool tuned = false;
    size_t out_bytes = 0;  // the output's extent (every matrix of a batch)
    bool found() const { return !algos.empty(); }
  };
  // M, N, K, trans_a, trans_b, in, out, has bias, alignments of a, b, out, bias; batch count
  // and strides of a, b, out.
  using Key = std::tuple<int64_t, int64_t, int64_t, bool, bool, DType, DType, bool, unsigned,
                         unsigned, unsigned, unsigned, int64_t, int64_t, int64_t, int64_t>;
  Plan& plan_for(const Key& key, const void* bias);
  // D = out, C = c (out itself unless a residual is read in the epilogue).
  void issue(Plan& plan, const void* a, const void* b, const void* c, void* out, float alpha,
             float beta, cudaStream_t stream);
  // Times the plan's candidates on this call's operands and keeps the fastest. Not while the
  // stream is captured into a graph: the plan then keeps the heuristic's first choice. Trials
  // of a product that accumulates into out (beta != 0, C = D) write to scratch: out must stay
  // as it was.
  void tune(Plan& plan, const void* a, const void* b, const void* c, void* out, float alpha,
            float beta, cudaStream_t stream);
  static void destroy(Plan& plan);

  cublasLtHandle_t handle_ = nullptr;
  void* workspace_;
  size_t workspace_bytes_;
  Scratch scratch_;
  int candidates_;  // autotune_candidates() at construction
  std::map<Key, Plan> plans_;
  int64_t tuned_plans_ = 0, changed_plans_ = 0;
};

}  // namespace vacc::cuda
