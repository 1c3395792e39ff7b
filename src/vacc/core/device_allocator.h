// DeviceAllocator: every byte a tensor holds comes from here. It enforces a per-device
// memory budget, keeps the bytes in use per category, and records the high-water mark
// (the figure the planner's memory model is checked against).
#pragma once

#include <array>
#include <cstddef>
#include <mutex>
#include <string>
#include <string_view>

#include "vacc/core/device.h"

namespace vacc {

enum class MemoryCategory { Parameters, Gradients, OptimizerState, Activations, Buffers, Count };

std::string_view memory_category_name(MemoryCategory c);

// Formats a byte count for people: "1.50 GiB", "12.0 MiB", "512 B".
std::string format_bytes(size_t bytes);

class DeviceAllocator {
 public:
  static constexpr size_t kUnlimited = ~size_t{0};

  DeviceAllocator(Device device, size_t budget_bytes);
  virtual ~DeviceAllocator() = default;
  DeviceAllocator(const DeviceAllocator&) = delete;
  DeviceAllocator& operator=(const DeviceAllocator&) = delete;

  // Returns device memory of at least `bytes` (64-byte aligned). Over budget, throws
  // vacc::Error naming `what`, the request, the budget and the bytes in use by category.
  void* allocate(size_t bytes, MemoryCategory category, std::string_view what);
  void deallocate(void* ptr, size_t bytes, MemoryCategory category);

  Device device() const { return device_; }
  size_t budget() const { return budget_; }
  size_t in_use() const;
  size_t in_use(MemoryCategory c) const;
  size_t high_water_mark() const;
  // The most bytes held against the budget: in use plus reserved_bytes() (the blocks kept for
  // CUDA graphs), sampled at each allocation. The high-water mark where nothing is reserved.
  size_t held_high_water_mark() const;
  // In-use bytes per category at the moment the high-water mark was reached.
  std::array<size_t, size_t(MemoryCategory::Count)> breakdown_at_high_water() const;
  void reset_high_water_mark();
  std::string usage_report() const;

  // Bytes a derived allocator keeps for a purpose of its own, which no new tensor may take
  // (the CUDA allocator's blocks kept for graphs): counted against the budget beside the bytes
  // in use, but not in use, per category or in the high-water mark.
  virtual size_t reserved_bytes() const { return 0; }

 protected:
  virtual void* raw_allocate(size_t bytes) = 0;
  virtual void raw_free(void* ptr) = 0;

 private:
  Device device_;
  size_t budget_;
  mutable std::mutex mutex_;
  size_t in_use_ = 0;
  size_t high_water_ = 0;
  size_t held_high_water_ = 0;
  std::array<size_t, size_t(MemoryCategory::Count)> by_category_{};
  std::array<size_t, size_t(MemoryCategory::Count)> at_high_water_{};
};

// Host memory (the CPU device).
class HostAllocator final : public DeviceAllocator {
 public:
  explicit HostAllocator(size_t budget_bytes = kUnlimited, int index = 0)
      : DeviceAllocator(Device{Device::Kind::CPU, index}, budget_bytes) {}

 protected:
  void* raw_allocate(size_t bytes) override;
  void raw_free(void* ptr) override;
};

}  // namespace vacc
