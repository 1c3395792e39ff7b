// Turning CUDA runtime and cuBLASLt status codes into vacc::Error, with the call, file and
// line, so a failure on a GPU reads like every other error in vacc.
#pragma once

#include <cublasLt.h>
#include <cuda_runtime.h>

#include "vacc/core/error.h"

namespace vacc::cuda {

[[noreturn]] inline void throw_cuda_error(cudaError_t err, const char* call, const char* file,
                                          int line) {
  fail("CUDA error ", cudaGetErrorName(err), " (", cudaGetErrorString(err), ") in ", call, " at ",
       file, ":", line);
}

[[noreturn]] inline void throw_cublas_error(cublasStatus_t status, const char* call,
                                            const char* file, int line) {
  fail("cuBLASLt error ", cublasLtGetStatusName(status), " (", cublasLtGetStatusString(status),
       ") in ", call, " at ", file, ":", line);
}

// Checks that the kernel just launched was accepted (bad launch configuration, no device
// image for this GPU); errors while it runs surface at the next synchronising call.
inline void check_launch(const char* kernel, const char* file, int line) {
  cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) throw_cuda_error(err, kernel, file, line);
}

}  // namespace vacc::cuda

#define VACC_CUDA_CHECK(call)                                                        \
  do {                                                                               \
    cudaError_t vacc_cuda_err_ = (call);                                             \
    if (vacc_cuda_err_ != cudaSuccess)                                               \
      ::vacc::cuda::throw_cuda_error(vacc_cuda_err_, #call, __FILE__, __LINE__);     \
  } while (0)

#define VACC_CUBLAS_CHECK(call)                                                      \
  do {                                                                               \
    cublasStatus_t vacc_cublas_status_ = (call);                                     \
    if (vacc_cublas_status_ != CUBLAS_STATUS_SUCCESS)                                \
      ::vacc::cuda::throw_cublas_error(vacc_cublas_status_, #call, __FILE__, __LINE__); \
  } while (0)

#define VACC_CUDA_CHECK_LAUNCH(kernel) ::vacc::cuda::check_launch(kernel, __FILE__, __LINE__)
