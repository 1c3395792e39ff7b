// CudaAllocator: device memory of one GPU for the DeviceAllocator interface, so the budget,
// the bytes per category and the high-water mark in core count GPU tensors exactly as they
// count host ones (they count the bytes asked for, not the rounded block sizes).
//
// cudaMalloc and cudaFree are slow (cudaFree also waits for the whole device), so freed
// blocks are kept in a free list keyed by their rounded size and handed out again. This is
// safe without events because every kernel of a CudaBackend runs on its one stream: work that
// uses a block after it is handed out again is issued after, and so runs after, all work
// issued while the block belonged to its previous tensor. (A second stream, e.g. for
// communication, will need a record-event-on-free scheme before it may free memory.)
#pragma once

#include <cstddef>
#include <map>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "vacc/core/device_allocator.h"

namespace vacc::cuda {

class CudaAllocator final : public DeviceAllocator {
 public:
  CudaAllocator(int device_index, size_t budget_bytes);
  ~CudaAllocator() override;

  // Bytes held in cached free blocks (not counted as in use).
  size_t cached_bytes() const;
  // Returns every cached block to the driver.
  void release_cached();

  // The size a request is rounded up to: 512 B steps below 1 MiB, 2 MiB steps above.
  static size_t block_size(size_t bytes);

 protected:
  void* raw_allocate(size_t bytes) override;
  void raw_free(void* ptr) override;

 private:
  void release_cached_locked();

  int device_index_;
  mutable std::mutex mutex_;
  std::map<size_t, std::vector<void*>> free_blocks_;  // rounded size -> free blocks
  std::unordered_map<void*, size_t> block_sizes_;     // every live or cached block
  size_t cached_bytes_ = 0;
};

}  // namespace vacc::cuda
