#include "vacc/kernels/cuda/cuda_allocator.h"

#include <cuda_runtime.h>

#include "vacc/core/gpu_scratch.h"
#include "vacc/kernels/cuda/cuda_check.h"

namespace vacc::cuda {

CudaAllocator::CudaAllocator(int device_index, size_t budget_bytes)
    : DeviceAllocator(Device{Device::Kind::CUDA, device_index}, budget_bytes),
      device_index_(device_index) {}

CudaAllocator::~CudaAllocator() {
  std::unique_lock lock(mutex_);
  // Only cached blocks: a block still owned by a tensor would be a tensor outliving its
  // backend, which the tensor's own destructor would then hand back to a dead allocator. (No
  // graph outlives its backend either: the pool's free blocks go too.)
  for (auto& [size, blocks] : graph_free_)
    for (void* p : blocks) free_blocks_[size].push_back(p);
  graph_free_.clear();
  if (cudaSetDevice(device_index_) == cudaSuccess) release_cached_locked();
  cudaGetLastError();
}

size_t CudaAllocator::block_size(size_t bytes) { return gpu_block_bytes(bytes); }

void* CudaAllocator::take_free_block(std::map<size_t, std::vector<void*>>& free, size_t size) {
  auto it = free.find(size);
  if (it == free.end() || it->second.empty()) return nullptr;
  void* p = it->second.back();
  it->second.pop_back();
  cached_bytes_ -= size;
  return p;
}

void* CudaAllocator::raw_allocate(size_t bytes) {
  const size_t size = block_size(bytes);
  if (size == 0) return nullptr;
  std::unique_lock lock(mutex_);
  if (capturing_) {
    if (void* p = take_free_block(graph_free_, size)) {
      graph_free_bytes_ -= size;
      return p;
    }
    // An ordinary cached block joins the pool: the work that used it was issued before.
    if (void* p = take_free_block(free_blocks_, size)) {
      graph_blocks_.emplace(p, size);
      return p;
    }
  } else if (void* p = take_free_block(free_blocks_, size)) {
    return p;
  }
  VACC_CUDA_CHECK(cudaSetDevice(device_index_));
  void* p = nullptr;
  cudaError_t err;
  if (capturing_) {
    // cudaMalloc is not part of the graph (the block stays the pool's), so the capture allows
    // it; its default mode would refuse the call and invalidate the capture. No retry after
    // releasing the cache either: that waits for the device, which a capture cannot.
    cudaStreamCaptureMode mode = cudaStreamCaptureModeRelaxed;
    VACC_CUDA_CHECK(cudaThreadExchangeStreamCaptureMode(&mode));
    err = cudaMalloc(&p, size);
    VACC_CUDA_CHECK(cudaThreadExchangeStreamCaptureMode(&mode));
    if (err == cudaSuccess) graph_blocks_.emplace(p, size);
  } else {
    err = cudaMalloc(&p, size);
  }
  if (err == cudaErrorMemoryAllocation && !capturing_) {
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
  // A block freed during a capture may be read by the graph before this point of it: the pool's.
  if (capturing_) graph_blocks_.emplace(ptr, it->second);
  const bool pool = graph_blocks_.count(ptr) > 0;
  (pool ? graph_free_ : free_blocks_)[it->second].push_back(ptr);
  cached_bytes_ += it->second;
  if (pool) graph_free_bytes_ += it->second;
}

size_t CudaAllocator::reserved_bytes() const {
  std::unique_lock lock(mutex_);
  return capturing_ ? 0 : graph_free_bytes_;
}

void CudaAllocator::begin_graph_capture() {
  std::unique_lock lock(mutex_);
  capturing_ = true;
}

void CudaAllocator::end_graph_capture() {
  std::unique_lock lock(mutex_);
  capturing_ = false;
}

size_t CudaAllocator::graph_pool_bytes() const {
  std::unique_lock lock(mutex_);
  size_t total = 0;
  for (const auto& [p, size] : graph_blocks_) total += size;
  return total;
}

void CudaAllocator::release_graph_pool() {
  std::unique_lock lock(mutex_);
  for (auto& [size, blocks] : graph_free_)
    for (void* p : blocks) free_blocks_[size].push_back(p);
  graph_free_.clear();
  graph_free_bytes_ = 0;
  graph_blocks_.clear();  // live blocks go back to the ordinary list when freed
}

size_t CudaAllocator::cached_bytes() const {
  std::unique_lock lock(mutex_);
  return cached_bytes_;
}

void CudaAllocator::release_cached() {
  std::unique_lock lock(mutex_);
  release_cached_locked();
}

// The graph pool's free blocks stay: a graph may replay on them.
void CudaAllocator::release_cached_locked() {
  if (free_blocks_.empty()) return;
  // No kernel may still use a cached block when it goes back to the driver.
  cudaDeviceSynchronize();
  for (auto& [size, blocks] : free_blocks_) {
    for (void* p : blocks) {
      cudaFree(p);
      block_sizes_.erase(p);
      cached_bytes_ -= size;
    }
  }
  free_blocks_.clear();
}

}  // namespace vacc::cuda
