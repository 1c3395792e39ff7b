// JsonlIndex: a JSON Lines file of any size, read through a read-only memory map and indexed
// by the byte offsets of its records, so that record i is found without reading the others
// and the file is never copied into memory as a whole.
//
// A record is a non-blank line: lines holding only spaces, tabs or '\r' are not records (but
// still count for line numbers). A trailing '\r' (CRLF files) is not part of a record, nor is
// a UTF-8 byte-order mark at the start of the file. The last line needs no '\n'.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace vacc {

class JsonlIndex {
 public:
  // Maps `path` and indexes its records; throws vacc::Error naming the file when it cannot be
  // opened, is not a regular file, or cannot be mapped.
  explicit JsonlIndex(const std::string& path);
  JsonlIndex(JsonlIndex&& other) noexcept;
  JsonlIndex& operator=(JsonlIndex&& other) noexcept;
  JsonlIndex(const JsonlIndex&) = delete;
  JsonlIndex& operator=(const JsonlIndex&) = delete;
  ~JsonlIndex();

  const std::string& path() const { return path_; }
  // Number of records (non-blank lines).
  int64_t size() const { return int64_t(begin_.size()); }
  // The text of record i (0-based), without its line ending; valid while the index lives.
  std::string_view record(int64_t i) const;
  // The 1-based line number of record i in the file, for messages.
  int64_t line_number(int64_t i) const;
  // Bytes in the file.
  uint64_t file_bytes() const { return bytes_; }

 private:
  void unmap();

  std::string path_;
  const char* data_ = nullptr;  // the mapping (nullptr for an empty file)
  uint64_t bytes_ = 0;
  std::vector<uint64_t> begin_;  // byte offset of each record
  std::vector<int64_t> line_;    // 1-based line number of each record
};

}  // namespace vacc
