// CudaContext: what every CUDA op needs besides its tensors: the device, its caching
// allocator, the compute stream all work is issued on, cuBLASLt with its workspace, and small
// device scratch (reduction partials, the slot where kernels report bad input). CudaBackend
// owns one; ops that are more than a kernel launch (the matrix product's fallbacks, the chunked
// classifier) take it.
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <memory>

#include "vacc/core/tensor.h"
#include "vacc/kernels/cuda/cuda_allocator.h"
#include "vacc/kernels/cuda/cuda_kernels.h"
#include "vacc/kernels/cuda/matmul_cublaslt.h"

namespace vacc::cuda {

class CudaContext {
 public:
  CudaContext(int device_index, size_t budget_bytes);
  ~CudaContext();
  CudaContext(const CudaContext&) = delete;
  CudaContext& operator=(const CudaContext&) = delete;

  int device_index() const { return device_index_; }
  CudaAllocator& allocator() { return allocator_; }
  cudaStream_t stream() const { return stream_; }
  const CublasLtMatmul& matmul() const { return *matmul_; }
  const std::string& device_name() const { return device_name_; }

  // out (M, N) = alpha * op(a) @ op(b) + beta * out (+ bias): cuBLASLt, or a fallback for what
  // it declines (K = 0, f32 inputs with a bf16 output, no algorithm for the alignment).
  void gemm(const void* a, bool trans_a, const void* b, bool trans_b, void* out, int64_t M,
            int64_t N, int64_t K, DType in_dtype, DType out_dtype, float alpha, float beta,
            const float* bias);

  // out (M, N) f32 = op(a) @ op(b) + addend (f32, out's shape; may be out): cuBLASLt reading
  // addend as its C, or a copy and gemm with beta 1 where it declines.
  void gemm_add(const void* a, bool trans_a, const void* b, bool trans_b, const float* addend,
                float* out, int64_t M, int64_t N, int64_t K, DType in_dtype);

  // `batch.count` products of one shape (CublasLtMatmul::run_batched; strides in elements):
  // one cuBLASLt call, or one gemm per product where cuBLASLt declines.
  void gemm_batched(const void* a, bool trans_a, const void* b, bool trans_b, void* out,
                    int64_t M, int64_t N, int64_t K, const CublasLtMatmul::Batch& batch,
                    DType in_dtype, DType out_dtype, float alpha, float beta);

  // Host <-> device copies on the stream; both wait until the copy is done (so the host
  // buffer may be reused at once). download first finishes all work issued before.
  void upload(const void* host, void* device, size_t bytes);
  void download(const void* device, void* host, size_t bytes);
  // Waits for the stream, then throws if a kernel reported bad input (or the device failed).
  void synchronize();

  // CUDA graph capture (cuda_graph.cpp). While capturing, upload, download and synchronize
  // throw (a graph holds device work only) and the allocator serves its graph pool.
  void set_capturing(bool on);
  // The graphs alive: when the last goes (or a capture fails with none alive), the allocator's
  // graph pool returns to ordinary use.
  void graph_created() { ++graphs_; }
  void graph_destroyed();
  void release_unused_graph_pool();

  DeviceError* device_error() { return device_error_.data_as<DeviceError>(); }
  double* reduce_partials() { return reduce_partials_.data_as<double>(); }

  // A scratch tensor for one op (counted as Buffers).
  Tensor scratch(Shape shape, DType dtype, std::string_view what) {
    return Tensor(allocator_, std::move(shape), dtype, MemoryCategory::Buffers, what);
  }
  // Untyped scratch of at least `bytes` (a kernel's own layout; at least one element).
  Tensor scratch_bytes(size_t bytes, std::string_view what) {
    return scratch({std::max<int64_t>(1, int64_t((bytes + 3) / 4))}, DType::F32, what);
  }

 private:
  void check_device_error();
  void refuse_while_capturing(const char* what) const;

  int device_index_;
  std::string device_name_;
  CudaAllocator allocator_;  // declared before every tensor below: destroyed after them
  cudaStream_t stream_ = nullptr;
  Tensor workspace_, reduce_partials_, device_error_;
  std::unique_ptr<CublasLtMatmul> matmul_;
  bool capturing_ = false;
  int graphs_ = 0;
};

}  // namespace vacc::cuda
