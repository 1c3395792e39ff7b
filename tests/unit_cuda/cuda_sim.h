// A CPU simulator for this project's CUDA kernels, so their indexing, tiling, reductions and
// synchronisation are checked on machines without a GPU (CI). cu_to_sim.py rewrites a .cu file
// into plain C++ that includes this header first: kernel launches K<<<grid, block, smem,
// stream>>>(args) become vacc_sim::launch(grid, block, smem, stream, [=] { K(args); }), and
// `extern __shared__` arrays become a per-block buffer.
//
// Each block runs on one OS thread, its CUDA threads as fibers (cooperative, one at a time, in a
// shuffled order); the blocks run one after another, also in a shuffled order (another on each
// launch). A fiber runs until it reaches __syncthreads() or a warp shuffle and then waits; a
// barrier opens when every thread of the block (of the warp, for shuffles) that has not exited
// waits at it. Barriers reached by only part of a block or warp (divergent synchronisation, a
// bug on a GPU) stop the simulation with a message. __shared__ variables are
// static: shared by the block's threads, and blocks do not overlap. Atomics are plain
// operations (fibers never interleave between two instructions).
//
// What it cannot check: the memory model (a missing barrier shows only when the shuffled order
// happens to run the reader before the writer), resource limits
// (registers, shared memory sizes, launch bounds), and speed.
#pragma once

// Before cuda_runtime.h, which keeps definitions it finds.
#define __shared__ static
#define __global__
#define __device__
#define __host__
#define __launch_bounds__(...)

#include <cuda_runtime.h>

#include <atomic>
#include <cstdint>
#include <cstring>
#include <functional>

extern uint3 threadIdx, blockIdx;
extern dim3 blockDim, gridDim;

namespace vacc_sim {

enum class Wait { Block, Warp };
// Suspends the current fiber at a barrier until it opens.
void wait(Wait what);
// The block's dynamic shared memory (the launch's smem bytes, 16-byte aligned, zeroed).
void* dynamic_shared_bytes();
template <typename T>
T* dynamic_shared() {
  return static_cast<T*>(dynamic_shared_bytes());
}
// Runs body as every thread of every block of the grid (or, on a stream being captured into a
// graph, records the launch; body holds copies of the arguments, as a launch does).
void launch(dim3 grid, dim3 block, size_t smem_bytes, cudaStream_t stream,
            const std::function<void()>& body);
// Records op when `stream` is being captured (fake_cuda_runtime.cpp) and returns true; else
// returns false and the caller runs it.
bool record_if_capturing(cudaStream_t stream, std::function<void()> op);

inline unsigned linear_thread() {
  return threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
}
// This thread's warp's exchange slots (32 x 8 bytes).
uint64_t* warp_slots();

template <typename T>
T shuffle_from(T v, unsigned src_lane) {
  static_assert(sizeof(T) <= 8);
  uint64_t* slots = warp_slots();
  std::memcpy(&slots[linear_thread() % 32], &v, sizeof(T));
  wait(Wait::Warp);
  T r;
  std::memcpy(&r, &slots[src_lane % 32], sizeof(T));
  wait(Wait::Warp);  // nobody overwrites the slots before every lane has read
  return r;
}

inline cudaError_t func_set_attribute(...) { return cudaSuccess; }
inline void check_launch(const char*, const char*, int) {}

}  // namespace vacc_sim

#define VACC_SIM_CHECK_LAUNCH(kernel) ((void)0)

inline void __syncthreads() { vacc_sim::wait(vacc_sim::Wait::Block); }
template <typename T>
T __shfl_sync(unsigned, T v, int src_lane, int = 32) {
  return vacc_sim::shuffle_from(v, unsigned(src_lane));
}
template <typename T>
T __shfl_xor_sync(unsigned, T v, int lane_mask, int = 32) {
  return vacc_sim::shuffle_from(v, (vacc_sim::linear_thread() % 32) ^ unsigned(lane_mask));
}
template <typename T>
T __shfl_up_sync(unsigned, T v, unsigned delta, int = 32) {
  const unsigned lane = vacc_sim::linear_thread() % 32;
  return vacc_sim::shuffle_from(v, lane >= delta ? lane - delta : lane);
}
inline float __uint_as_float(unsigned u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
inline unsigned __float_as_uint(float f) {
  unsigned u;
  std::memcpy(&u, &f, 4);
  return u;
}
inline float __int_as_float(int i) {
  float f;
  std::memcpy(&f, &i, 4);
  return f;
}
inline float atomicAdd(float* p, float v) {
  const float old = *p;
  *p = old + v;
  return old;
}
inline unsigned long long atomicAdd(unsigned long long* p, unsigned long long v) {
  const unsigned long long old = *p;
  *p = old + v;
  return old;
}
inline int atomicCAS(int* p, int compare, int value) {
  const int old = *p;
  if (old == compare) *p = value;
  return old;
}
