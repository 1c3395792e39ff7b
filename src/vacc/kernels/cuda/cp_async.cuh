// Asynchronous copies from global to shared memory (PTX `cp.async`, sm_80 and later): a block
// starts loading its next tile, computes on the current one while the copy is in flight, and
// waits for it only when it needs it. Each thread issues its copies, commits them as a group,
// and later waits until at most N of its groups are pending; a __syncthreads() after the wait
// makes every thread's copies visible to the block.
//
// Without an sm_80 device target (the CPU simulator) a copy happens at once and the waits do
// nothing: the simulator checks what is copied where, not the overlap.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <cstring>

namespace vacc::cuda {

// 16 bytes from `global` (16-byte aligned) to `shared` (16-byte aligned); zeros instead when
// !valid (then `global` is not read).
__device__ __forceinline__ void cp_async_16(void* shared, const void* global, bool valid) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  const unsigned address = static_cast<unsigned>(__cvta_generic_to_shared(shared));
  const int source_bytes = valid ? 16 : 0;
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(address), "l"(global),
               "r"(source_bytes)
               : "memory");
#else
  if (valid)
    std::memcpy(shared, global, 16);
  else
    std::memset(shared, 0, 16);
#endif
}

// Closes the group of this thread's copies issued since the last commit.
__device__ __forceinline__ void cp_async_commit() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("cp.async.commit_group;\n" ::: "memory");
#endif
}

// Waits until at most `Pending` of this thread's committed groups are still in flight.
template <int Pending>
__device__ __forceinline__ void cp_async_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("cp.async.wait_group %0;\n" ::"n"(Pending) : "memory");
#endif
}

}  // namespace vacc::cuda
