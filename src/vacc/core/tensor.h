// Tensor: a typed, shaped, contiguous view into device memory owned by a DeviceAllocator.
// Tensors are cheap handles (the storage is shared); views never copy. Model code passes
// tensors to the kernel interface and never dereferences their data itself: on a GPU the
// pointer is a device address.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <memory>
#include <string>
#include <vector>

#include "vacc/core/device_allocator.h"
#include "vacc/core/dtype.h"

namespace vacc {

using Shape = std::vector<int64_t>;

std::string shape_str(const Shape& shape);
int64_t shape_numel(const Shape& shape);

// A block of device memory; returned to its allocator when the last tensor using it goes.
class Storage {
 public:
  Storage(DeviceAllocator& allocator, size_t bytes, MemoryCategory category, std::string_view what);
  ~Storage();
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;

  void* data() const { return data_; }
  size_t bytes() const { return bytes_; }
  Device device() const { return allocator_.device(); }

 private:
  DeviceAllocator& allocator_;
  void* data_;
  size_t bytes_;
  MemoryCategory category_;
};

class Tensor {
 public:
  Tensor() = default;
  // A new tensor with its own (uninitialised) storage.
  Tensor(DeviceAllocator& allocator, Shape shape, DType dtype, MemoryCategory category,
         std::string_view what);

  bool defined() const { return storage_ != nullptr; }
  const Shape& shape() const { return shape_; }
  int64_t dim() const { return int64_t(shape_.size()); }
  int64_t size(int64_t axis) const;  // negative axis counts from the end
  int64_t numel() const { return shape_numel(shape_); }
  DType dtype() const { return dtype_; }
  size_t nbytes() const { return size_t(numel()) * dtype_size(dtype_); }
  Device device() const;
  std::string str() const;  // "bf16[4, 512] on cpu:0"

  // Raw device address, for kernel implementations only.
  void* data() const;
  template <typename T>
  T* data_as() const {
    return static_cast<T*>(data());
  }

  // Same memory, new shape (same number of elements).
  Tensor reshape(Shape shape) const;
  // Elements [begin, begin + numel(shape)) of this tensor as a new shape.
  Tensor view(int64_t begin, Shape shape) const;
  // Rows [begin, end) along the first axis.
  Tensor rows(int64_t begin, int64_t end) const;
  // The whole tensor as one dimension.
  Tensor flat() const { return reshape({numel()}); }

 private:
  std::shared_ptr<Storage> storage_;
  size_t offset_bytes_ = 0;
  Shape shape_;
  DType dtype_ = DType::F32;
};

}  // namespace vacc
