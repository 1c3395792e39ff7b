// Launches a kernel with `smem` bytes of dynamic shared memory, raising the kernel's limit
// above the default 48 KiB when needed (sm_80 allows 163 KiB, sm_90 227 KiB), and checks the
// launch. The simulator's build inlines this file into each .cu that includes it
// (tests/unit_cuda/cu_to_sim.py rewrites launches there).
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "vacc/kernels/cuda/cuda_check.h"

namespace vacc::cuda {

template <int Threads, typename Kernel, typename... Args>
void launch_with_smem(Kernel kernel, const char* name, int64_t blocks, size_t smem,
                      cudaStream_t stream, Args... args) {
  if (blocks == 0) return;
  if (smem > 48 * 1024)
    VACC_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                         int(smem)));
  kernel<<<unsigned(blocks), Threads, smem, stream>>>(args...);
  check_launch(name, __FILE__, __LINE__);
}

}  // namespace vacc::cuda
