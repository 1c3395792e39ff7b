#include "vacc/core/device_allocator.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <sstream>

#include "vacc/core/error.h"

namespace vacc {

std::string_view memory_category_name(MemoryCategory c) {
  switch (c) {
    case MemoryCategory::Parameters: return "parameters";
    case MemoryCategory::Gradients: return "gradients";
    case MemoryCategory::OptimizerState: return "optimizer state";
    case MemoryCategory::Activations: return "activations";
    case MemoryCategory::Buffers: return "buffers";
    case MemoryCategory::Count: break;
  }
  return "?";
}

std::string format_bytes(size_t bytes) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double v = double(bytes);
  int u = 0;
  while (v >= 1024.0 && u < 4) {
    v /= 1024.0;
    ++u;
  }
  char buf[32];
  if (u == 0)
    std::snprintf(buf, sizeof buf, "%zu B", bytes);
  else
    std::snprintf(buf, sizeof buf, "%.2f %s", v, units[u]);
  return buf;
}

DeviceAllocator::DeviceAllocator(Device device, size_t budget_bytes)
    : device_(device), budget_(budget_bytes) {}

void* DeviceAllocator::allocate(size_t bytes, MemoryCategory category, std::string_view what) {
  const size_t reserved = reserved_bytes();
  std::unique_lock lock(mutex_);
  const size_t held = in_use_ + reserved;
  if (bytes > budget_ || held > budget_ - bytes) {
    std::ostringstream msg;
    msg << "out of memory on " << device_.str() << ": allocating " << format_bytes(bytes) << " for "
        << what << " (" << memory_category_name(category) << ") would exceed the budget of "
        << format_bytes(budget_) << "; in use: " << format_bytes(in_use_);
    for (size_t c = 0; c < by_category_.size(); ++c)
      if (by_category_[c])
        msg << ", " << memory_category_name(MemoryCategory(c)) << " "
            << format_bytes(by_category_[c]);
    if (reserved) msg << "; kept for graphs: " << format_bytes(reserved);
    throw Error(msg.str());
  }
  void* p = raw_allocate(bytes == 0 ? 1 : bytes);
  if (!p)
    fail("the system refused ", format_bytes(bytes), " for ", what, " on ", device_.str(),
         " (in use: ", format_bytes(in_use_), ")");
  in_use_ += bytes;
  by_category_[size_t(category)] += bytes;
  if (in_use_ > high_water_) {
    high_water_ = in_use_;
    at_high_water_ = by_category_;
  }
  held_high_water_ = std::max(held_high_water_, in_use_ + reserved);
  return p;
}

void DeviceAllocator::deallocate(void* ptr, size_t bytes, MemoryCategory category) {
  if (!ptr) return;
  raw_free(ptr);
  std::unique_lock lock(mutex_);
  in_use_ -= bytes;
  by_category_[size_t(category)] -= bytes;
}

size_t DeviceAllocator::in_use() const {
  std::unique_lock lock(mutex_);
  return in_use_;
}

size_t DeviceAllocator::in_use(MemoryCategory c) const {
  std::unique_lock lock(mutex_);
  return by_category_[size_t(c)];
}

size_t DeviceAllocator::high_water_mark() const {
  std::unique_lock lock(mutex_);
  return high_water_;
}

std::array<size_t, size_t(MemoryCategory::Count)> DeviceAllocator::breakdown_at_high_water() const {
  std::unique_lock lock(mutex_);
  return at_high_water_;
}

size_t DeviceAllocator::held_high_water_mark() const {
  std::unique_lock lock(mutex_);
  return held_high_water_;
}

void DeviceAllocator::reset_high_water_mark() {
  const size_t reserved = reserved_bytes();
  std::unique_lock lock(mutex_);
  high_water_ = in_use_;
  held_high_water_ = in_use_ + reserved;
  at_high_water_ = by_category_;
}

std::string DeviceAllocator::usage_report() const {
  std::unique_lock lock(mutex_);
  std::ostringstream out;
  out << device_.str() << ": in use " << format_bytes(in_use_) << ", peak " << format_bytes(high_water_);
  if (const size_t reserved = reserved_bytes()) out << ", kept for graphs " << format_bytes(reserved);
  if (budget_ != kUnlimited) out << ", budget " << format_bytes(budget_);
  out << " (at peak:";
  for (size_t c = 0; c < at_high_water_.size(); ++c)
    out << (c ? ", " : " ") << memory_category_name(MemoryCategory(c)) << " "
        << format_bytes(at_high_water_[c]);
  out << ")";
  return out.str();
}

void* HostAllocator::raw_allocate(size_t bytes) {
  if (bytes > ~size_t{0} - 63) return nullptr;
  return std::aligned_alloc(64, (bytes + 63) / 64 * 64);
}

void HostAllocator::raw_free(void* ptr) { std::free(ptr); }

}  // namespace vacc
