#include "vacc/core/tensor.h"

#include <algorithm>
#include <sstream>

#include "vacc/core/error.h"

namespace vacc {

std::string shape_str(const Shape& shape) {
  std::ostringstream out;
  out << "[";
  for (size_t i = 0; i < shape.size(); ++i) out << (i ? ", " : "") << shape[i];
  out << "]";
  return out.str();
}

int64_t shape_numel(const Shape& shape) {
  int64_t n = 1;
  for (int64_t d : shape) {
    VACC_CHECK(d >= 0, "negative dimension in shape ", shape_str(shape));
    VACC_CHECK(!__builtin_mul_overflow(n, d, &n), "shape ", shape_str(shape),
               " has more elements than fit in 64 bits");
  }
  return n;
}

Storage::Storage(DeviceAllocator& allocator, size_t bytes, MemoryCategory category,
                 std::string_view what)
    : allocator_(allocator),
      data_(allocator.allocate(bytes, category, what)),
      bytes_(bytes),
      category_(category) {}

Storage::~Storage() { allocator_.deallocate(data_, bytes_, category_); }

Tensor::Tensor(DeviceAllocator& allocator, Shape shape, DType dtype, MemoryCategory category,
               std::string_view what)
    : shape_(std::move(shape)), dtype_(dtype) {
  for (int64_t d : shape_)
    VACC_CHECK(d >= 0, "tensor ", what, ": negative dimension in shape ", shape_str(shape_));
  VACC_CHECK(size_t(shape_numel(shape_)) <= ~size_t{0} / dtype_size(dtype_), "tensor ", what,
             ": shape ", shape_str(shape_), " is too large to address");
  storage_ = std::make_shared<Storage>(allocator, nbytes(), category, what);
}

int64_t Tensor::size(int64_t axis) const {
  int64_t a = axis < 0 ? axis + dim() : axis;
  VACC_CHECK(a >= 0 && a < dim(), "axis ", axis, " out of range for ", str());
  return shape_[size_t(a)];
}

Device Tensor::device() const { return storage_ ? storage_->device() : Device{}; }

std::string Tensor::str() const {
  return dtype_name(dtype_) + shape_str(shape_) + " on " + device().str();
}

void* Tensor::data() const {
  return storage_ ? static_cast<char*>(storage_->data()) + offset_bytes_ : nullptr;
}

Tensor Tensor::reshape(Shape shape) const {
  VACC_CHECK(shape_numel(shape) == numel(), "cannot reshape ", str(), " to ", shape_str(shape));
  Tensor t = *this;
  t.shape_ = std::move(shape);
  return t;
}

Tensor Tensor::view(int64_t begin, Shape shape) const {
  VACC_CHECK(begin >= 0 && begin + shape_numel(shape) <= numel(), "view of ", shape_numel(shape),
             " elements at ", begin, " is outside ", str());
  Tensor t = *this;
  t.offset_bytes_ += size_t(begin) * dtype_size(dtype_);
  t.shape_ = std::move(shape);
  return t;
}

Tensor Tensor::rows(int64_t begin, int64_t end) const {
  VACC_CHECK(dim() >= 1 && begin >= 0 && begin <= end && end <= shape_[0], "rows [", begin, ", ",
             end, ") outside ", str());
  Shape s = shape_;
  s[0] = end - begin;
  return view(begin * (numel() / std::max<int64_t>(shape_[0], 1)), s);
}

}  // namespace vacc
