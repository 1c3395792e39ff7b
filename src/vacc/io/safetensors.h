// safetensors files (Hugging Face's tensor format): reading through a read-only memory
// map, and writing through a temporary file renamed into place.
//
// Format: u64 little-endian header length N, N bytes of UTF-8 JSON
//   {name: {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}, ...,
//    "__metadata__": {string: string}}
// then the data area; offsets are relative to the data area, row-major, little-endian,
// and tile it with no holes or overlaps. Writers pad the header with spaces to a multiple
// of 8 bytes.
//
// Opening validates the whole header; every failure is a vacc::Error naming the file and,
// where one is involved, the tensor.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "vacc/core/dtype.h"
#include "vacc/core/tensor.h"

namespace vacc {

// One tensor of a safetensors file.
struct SafetensorsEntry {
  std::string name;
  std::string dtype;  // "F32", "BF16", "F16", "I32", ... as in the file
  Shape shape;
  uint64_t begin = 0;  // byte range [begin, end) within the data area
  uint64_t end = 0;
  int64_t numel() const { return shape_numel(shape); }
  uint64_t nbytes() const { return end - begin; }
};

// Bytes per element of a safetensors dtype name; 0 when the name is unknown.
size_t safetensors_dtype_size(const std::string& dtype);
// The safetensors name of a vacc dtype: "F32", "BF16", "I32".
std::string safetensors_dtype(DType dtype);

class SafetensorsFile {
 public:
  // Maps the file read-only and validates its header; throws vacc::Error naming the file.
  static SafetensorsFile open(const std::string& path);

  SafetensorsFile(SafetensorsFile&& other) noexcept;
  SafetensorsFile& operator=(SafetensorsFile&& other) noexcept;
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;
  ~SafetensorsFile();

  const std::string& path() const { return path_; }
  // In the order of their data offsets.
  const std::vector<SafetensorsEntry>& tensors() const { return tensors_; }
  // nullptr when absent.
  const SafetensorsEntry* find(const std::string& name) const;
  // Throws vacc::Error naming the file and the tensor when absent.
  const SafetensorsEntry& at(const std::string& name) const;
  const std::map<std::string, std::string>& metadata() const { return metadata_; }

  // The tensor's raw bytes (entry.nbytes() of them) inside the mapping.
  const void* data(const SafetensorsEntry& entry) const;
  // Copies the tensor into dst (numel floats), converting F32, F16, BF16 and F64 to f32;
  // other dtypes throw vacc::Error.
  void read_f32(const SafetensorsEntry& entry, float* dst) const;
  std::vector<float> read_f32(const SafetensorsEntry& entry) const;
  // Elements [first, first + count) of the tensor (row-major), converted the same way.
  void read_f32(const SafetensorsEntry& entry, int64_t first, int64_t count, float* dst) const;
  // Copies an I32 or I64 tensor into dst (numel int32s); values must fit 32 bits.
  void read_i32(const SafetensorsEntry& entry, int32_t* dst) const;

 private:
  SafetensorsFile() = default;
  void unmap();

  std::string path_;
  void* map_ = nullptr;
  size_t map_bytes_ = 0;
  const unsigned char* data_area_ = nullptr;  // first byte after the header
  std::vector<SafetensorsEntry> tensors_;
  std::map<std::string, size_t> index_;
  std::map<std::string, std::string> metadata_;
};

// A tensor to write: `data` holds numel(shape) elements of `dtype` (a safetensors dtype
// name such as "F32", "BF16", "I32"; see safetensors_dtype(DType)).
struct SafetensorsTensorData {
  std::string name;
  std::string dtype;
  Shape shape;
  const void* data = nullptr;
};

// Writes the tensors (data in the given order) and metadata to `path`: first to
// `path + ".tmp"`, then renamed into place, so an existing file is replaced only by a
// complete one. Throws vacc::Error naming the file (and tensor) on failure.
void write_safetensors(const std::string& path, const std::vector<SafetensorsTensorData>& tensors,
                       const std::map<std::string, std::string>& metadata = {});

}  // namespace vacc
