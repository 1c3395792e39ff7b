#include "vacc/kernels/cuda/cuda_allocator.h"

#include <cuda_runtime.h>

#include "vacc/kernels/cuda/cuda_check.h"

namespace vacc::cuda {

CudaAllocator::CudaAllocator(int device_index, size_t budget_bytes)
    : DeviceAllocator(Device{Device::Kind::CUDA, device_index}, budget_bytes),
      device_index_(device_index) {}

CudaAllocator::~CudaAllocator() {
  std::unique_lock lock(mutex_);
  // Only cached blocks: a block still owned by a tensor would be a tensor outliving its
  // backend, which the tensor's own destructor would then hand back to a dead allocator.
  if (cudaSetDevice(device_index_) == cudaSuccess) release_cached_locked();
  cudaGetLastError();
}

size_t CudaAllocator::block_size(size_t bytes) {
  constexpr size_t kSmallStep = 512, kLargeStep = size_t(2) << 20, kSmallLimit = size_t(1) << 20;
  if (bytes == 0) bytes = 1;
  const size_t step = bytes < kSmallLimit ? kSmallStep : kLargeStep;
  if (bytes > ~size_t{0} - step) return 0;
  return (bytes + step - 1) / step * step;
}

void* CudaAllocator::raw_allocate(size_t bytes) {
  const size_t size = block_size(bytes);
  if (size == 0) return nullptr;
  std::unique_lock lock(mutex_);
  auto it = free_blocks_.find(size);
  if (it != free_blocks_.end() && !it->second.empty()) {
    void* p = it->second.back();
    it->second.pop_back();
    cached_bytes_ -= size;
    return p;
  }
  VACC_CUDA_CHECK(cudaSetDevice(device_index_));
  void* p = nullptr;
  cudaError_t err = cudaMalloc(&p, size);
  if (err == cudaErrorMemoryAllocation) {
    // The cache may hold the memory in blocks of other sizes: give it back and try again.
    cudaGetLastError();
    release_cached_locked();
    err = cudaMalloc(&p, size);
  }
  if (err == cudaErrorMemoryAllocation) {
    cudaGetLastError();
    return nullptr;  // DeviceAllocator reports it with the bytes in use by category
  }
  VACC_CUDA_CHECK(err);
  block_sizes_.emplace(p, size);
  return p;
}

void CudaAllocator::raw_free(void* ptr) {
  std::unique_lock lock(mutex_);
  auto it = block_sizes_.find(ptr);
  if (it == block_sizes_.end()) return;  // not ours: nothing to do (never happens)
  free_blocks_[it->second].push_back(ptr);
  cached_bytes_ += it->second;
}

size_t CudaAllocator::cached_bytes() const {
  std::unique_lock lock(mutex_);
  return cached_bytes_;
}

void CudaAllocator::release_cached() {
  std::unique_lock lock(mutex_);
  release_cached_locked();
}

void CudaAllocator::release_cached_locked() {
  if (free_blocks_.empty()) return;
  // No kernel may still use a cached block when it goes back to the driver.
  cudaDeviceSynchronize();
  for (auto& [size, blocks] : free_blocks_) {
    for (void* p : blocks) {
      cudaFree(p);
      block_sizes_.erase(p);
    }
  }
  free_blocks_.clear();
  cached_bytes_ = 0;
}

}  // namespace vacc::cuda
