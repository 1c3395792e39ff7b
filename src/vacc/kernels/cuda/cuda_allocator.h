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
//
// CUDA graphs (CudaBackend::capture_graph) break that argument: a graph replays its kernels on
// the addresses they had when it was captured, long after the host code that allocated and
// freed them has moved on. So the blocks a capture touches belong to a pool kept for graphs:
// a block allocated or freed while a capture is in progress is never again handed out outside
// one (until release_graph_pool). Graphs share the pool: their replays run on the one stream,
// one after another, and what a captured region allocates and frees is scratch of that region.
// The pool's free blocks are not in use, but count against the budget (reserved_bytes).
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

  // Between these, allocations come from (and frees go to) the graph pool (see above).
  void begin_graph_capture();
  void end_graph_capture();
  // Bytes of the graph pool (its blocks in use and free).
  size_t graph_pool_bytes() const;
  // The pool's free blocks, outside a capture: no tensor outside one may take them, so they
  // count against the budget (a capture reuses them).
  size_t reserved_bytes() const override;
  // Every graph captured from this allocator's blocks is gone: the pool's blocks return to
  // ordinary use.
  void release_graph_pool();

 protected:
  void* raw_allocate(size_t bytes) override;
  void raw_free(void* ptr) override;

 private:
  void release_cached_locked();
  void* take_free_block(std::map<size_t, std::vector<void*>>& free, size_t size);

  int device_index_;
  mutable std::mutex mutex_;
  std::map<size_t, std::vector<void*>> free_blocks_;  // rounded size -> free blocks
  std::unordered_map<void*, size_t> block_sizes_;     // every live or cached block
  size_t cached_bytes_ = 0;
  bool capturing_ = false;
  std::unordered_map<void*, size_t> graph_blocks_;     // the graph pool's blocks (live or free)
  std::map<size_t, std::vector<void*>> graph_free_;   // its free blocks by size
  size_t graph_free_bytes_ = 0;
};

}  // namespace vacc::cuda
