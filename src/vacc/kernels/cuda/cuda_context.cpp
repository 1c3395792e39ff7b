#include "vacc/kernels/cuda/cuda_context.h"

#include "vacc/core/gpu_scratch.h"
#include "vacc/kernels/cuda/cuda_check.h"
#include "vacc/kernels/cuda/matmul_fallback.h"

namespace vacc::cuda {

CudaContext::CudaContext(int device_index, size_t budget_bytes)
    : device_index_(device_index), allocator_(device_index, budget_bytes) {
  int count = 0;
  VACC_CUDA_CHECK(cudaGetDeviceCount(&count));
  VACC_CHECK(device_index >= 0 && device_index < count, "CUDA device ", device_index,
             " does not exist: this machine has ", count, " CUDA device(s)");
  VACC_CUDA_CHECK(cudaSetDevice(device_index));
  cudaDeviceProp prop{};
  VACC_CUDA_CHECK(cudaGetDeviceProperties(&prop, device_index));
  device_name_ = prop.name;
  VACC_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
  try {
    workspace_ = scratch_bytes(kCublasLtWorkspaceBytes, "cuBLASLt workspace");
    reduce_partials_ = scratch({int64_t(kSumPartials) * 2}, DType::F32, "reduction partials");
    device_error_ = scratch({int64_t(sizeof(DeviceError) / 4)}, DType::F32, "device error slot");
    VACC_CUDA_CHECK(cudaMemsetAsync(device_error_.data(), 0, sizeof(DeviceError), stream_));
    matmul_ = std::make_unique<CublasLtMatmul>(
        workspace_.data(), kCublasLtWorkspaceBytes,
        [this](size_t bytes) { return scratch_bytes(bytes, "matmul autotuning trial output"); });
    VACC_CUDA_CHECK(cudaStreamSynchronize(stream_));
  } catch (...) {
    cudaStreamDestroy(stream_);
    throw;
  }
}

CudaContext::~CudaContext() {
  cudaSetDevice(device_index_);
  cudaStreamSynchronize(stream_);
  matmul_.reset();
  cudaStreamDestroy(stream_);
  cudaGetLastError();
}

void CudaContext::gemm(const void* a, bool trans_a, const void* b, bool trans_b, void* out,
                       int64_t M, int64_t N, int64_t K, DType in_dtype, DType out_dtype,
                       float alpha, float beta, const float* bias) {
  if (M == 0 || N == 0) return;
  if (K == 0) {  // an empty product: out = beta * out (+ bias)
    scale_add_bias(out, out_dtype, beta, bias, M, N, stream_);
    return;
  }
  // The product in f32 (with an f32 bias), rounded once into the bf16 out.
  auto round_f32_product = [&] {
    Tensor tmp = scratch({M, N}, DType::F32, "matmul f32 result");
    gemm(a, trans_a, b, trans_b, tmp.data(), M, N, K, in_dtype, DType::F32, alpha, 0.0f, bias);
    convert(tmp.data(), DType::F32, out, DType::BF16, M * N, stream_);
  };
  if (in_dtype == DType::F32 && out_dtype == DType::BF16) {
    round_f32_product();  // cuBLASLt has no f32 x f32 -> bf16 product
    return;
  }
  const bool bf16_bias = bias && out_dtype == DType::BF16;
  {
    // cuBLASLt's bias epilogue reads a bias of the output's dtype: for a bf16 output a bf16 copy
    // (N values), added to the f32 accumulator before the one rounding, as autocast's bf16
    // linear does. The copy is released before any other route's scratch.
    Tensor bias_copy;
    const void* epilogue_bias = bias;
    if (bf16_bias) {
      bias_copy = scratch({N}, DType::BF16, "matmul bf16 bias");
      convert(bias, DType::F32, bias_copy.data(), DType::BF16, N, stream_);
      epilogue_bias = bias_copy.data();
    }
    if (matmul_->run(a, trans_a, b, trans_b, out, M, N, K, in_dtype, out_dtype, alpha, beta,
                     epilogue_bias, stream_))
      return;
  }
  if (bf16_bias) {
    // No bias epilogue for this bf16 output: add the f32 bias to an f32 product and round once
    // (rounding the product first and then its sum with the bias loses the digits the bias
    // cancels).
    round_f32_product();
    return;
  }
  if (bias && matmul_->run(a, trans_a, b, trans_b, out, M, N, K, in_dtype, out_dtype, alpha, beta,
                           nullptr, stream_)) {
    add_bias_rows(out, out_dtype, bias, M, N, stream_);
    return;
  }
  matmul_fallback(a, trans_a, b, trans_b, out, M, N, K, in_dtype, out_dtype, alpha, beta, bias,
                  stream_);
}

void CudaContext::gemm_add(const void* a, bool trans_a, const void* b, bool trans_b,
                           const float* addend, float* out, int64_t M, int64_t N, int64_t K,
                           DType in_dtype) {
  if (M == 0 || N == 0) return;
  if (K > 0 && matmul_->run(a, trans_a, b, trans_b, out, M, N, K, in_dtype, DType::F32, 1.0f,
                            1.0f, nullptr, stream_, addend))
    return;
  if (addend != out)
    VACC_CUDA_CHECK(cudaMemcpyAsync(out, addend, sizeof(float) * size_t(M * N),
                                    cudaMemcpyDeviceToDevice, stream_));
  gemm(a, trans_a, b, trans_b, out, M, N, K, in_dtype, DType::F32, 1.0f, 1.0f, nullptr);
}

void CudaContext::gemm_batched(const void* a, bool trans_a, const void* b, bool trans_b,
                               void* out, int64_t M, int64_t N, int64_t K,
                               const CublasLtMatmul::Batch& batch, DType in_dtype,
                               DType out_dtype, float alpha, float beta) {
  if (batch.count == 0 || M == 0 || N == 0) return;
  if (K > 0 && !(in_dtype == DType::F32 && out_dtype == DType::BF16) &&
      matmul_->run_batched(a, trans_a, b, trans_b, out, M, N, K, batch, in_dtype, out_dtype,
                           alpha, beta, stream_))
    return;
  const size_t in_size = dtype_size(in_dtype), out_size = dtype_size(out_dtype);
  for (int64_t i = 0; i < batch.count; ++i)
    gemm(static_cast<const char*>(a) + i * batch.stride_a * in_size, trans_a,
         static_cast<const char*>(b) + i * batch.stride_b * in_size, trans_b,
         static_cast<char*>(out) + i * batch.stride_out * out_size, M, N, K, in_dtype, out_dtype,
         alpha, beta, nullptr);
}

void CudaContext::set_capturing(bool on) {
  capturing_ = on;
  if (on)
    allocator_.begin_graph_capture();
  else
    allocator_.end_graph_capture();
}

void CudaContext::graph_destroyed() {
  --graphs_;
  release_unused_graph_pool();
}

void CudaContext::release_unused_graph_pool() {
  if (graphs_ == 0 && !capturing_) allocator_.release_graph_pool();
}

void CudaContext::refuse_while_capturing(const char* what) const {
  VACC_CHECK(!capturing_, what,
             " inside a CUDA graph capture: a graph replays device work only, so the captured "
             "region must not copy between host and device or wait for the device");
}

void CudaContext::upload(const void* host, void* device, size_t bytes) {
  refuse_while_capturing("a copy from the host to the device");
  if (bytes == 0) return;
  VACC_CUDA_CHECK(cudaMemcpyAsync(device, host, bytes, cudaMemcpyHostToDevice, stream_));
  VACC_CUDA_CHECK(cudaStreamSynchronize(stream_));
}

void CudaContext::download(const void* device, void* host, size_t bytes) {
  refuse_while_capturing("a copy from the device to the host");
  if (bytes > 0) {
    VACC_CUDA_CHECK(cudaMemcpyAsync(host, device, bytes, cudaMemcpyDeviceToHost, stream_));
  }
  synchronize();
}

void CudaContext::synchronize() {
  refuse_while_capturing("waiting for the device");
  VACC_CUDA_CHECK(cudaStreamSynchronize(stream_));
  check_device_error();
}

void CudaContext::check_device_error() {
  DeviceError e{};
  VACC_CUDA_CHECK(cudaMemcpyAsync(&e, device_error_.data(), sizeof e, cudaMemcpyDeviceToHost,
                                  stream_));
  VACC_CUDA_CHECK(cudaStreamSynchronize(stream_));
  if (e.code == kNoError) return;
  VACC_CUDA_CHECK(cudaMemsetAsync(device_error_.data(), 0, sizeof(DeviceError), stream_));
  VACC_CUDA_CHECK(cudaStreamSynchronize(stream_));
  switch (e.code) {
    case kRopePositionOutOfRange:
      fail("rope: position ", e.a, " of token ", e.b, " is outside the table of ", e.c,
           " positions");
    case kDecodeCacheFull:
      fail("attention_decode: ", e.a, " new tokens after ", e.b,
           " cached ones do not fit a KV cache of ", e.c, " positions");
    default: fail("a CUDA kernel reported error code ", e.code);
  }
}

}  // namespace vacc::cuda
