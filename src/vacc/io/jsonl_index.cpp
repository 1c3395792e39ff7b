#include "vacc/io/jsonl_index.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <utility>

#include "vacc/core/error.h"

namespace vacc {

namespace {

bool is_blank(const char* begin, const char* end) {
  for (const char* p = begin; p < end; ++p)
    if (*p != ' ' && *p != '\t' && *p != '\r') return false;
  return true;
}

}  // namespace

JsonlIndex::JsonlIndex(const std::string& path) : path_(path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  VACC_CHECK(fd >= 0, "cannot open data file ", path, ": ", std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    fail("data file ", path, " is not a regular file");
  }
  bytes_ = uint64_t(st.st_size);
  if (bytes_ > 0) {
    void* map = ::mmap(nullptr, size_t(bytes_), PROT_READ, MAP_PRIVATE, fd, 0);
    const int mmap_errno = errno;
    ::close(fd);
    VACC_CHECK(map != MAP_FAILED, "cannot map data file ", path, ": ", std::strerror(mmap_errno));
    data_ = static_cast<const char*>(map);
    ::madvise(map, size_t(bytes_), MADV_SEQUENTIAL);
  } else {
    ::close(fd);
  }

  const char* const end = data_ + bytes_;
  const char* p = data_;
  if (bytes_ >= 3 && std::memcmp(p, "\xEF\xBB\xBF", 3) == 0) p += 3;  // UTF-8 byte-order mark
  int64_t line = 1;
  while (p < end) {
    const char* nl = static_cast<const char*>(std::memchr(p, '\n', size_t(end - p)));
    const char* line_end = nl ? nl : end;
    if (!is_blank(p, line_end)) {
      begin_.push_back(uint64_t(p - data_));
      line_.push_back(line);
    }
    ++line;
    p = nl ? nl + 1 : end;
  }
  // Records are read in order after indexing, mostly once each.
  if (data_) ::madvise(const_cast<char*>(data_), size_t(bytes_), MADV_NORMAL);
}

JsonlIndex::JsonlIndex(JsonlIndex&& other) noexcept
    : path_(std::move(other.path_)),
      data_(std::exchange(other.data_, nullptr)),
      bytes_(std::exchange(other.bytes_, 0)),
      begin_(std::move(other.begin_)),
      line_(std::move(other.line_)) {}

JsonlIndex& JsonlIndex::operator=(JsonlIndex&& other) noexcept {
  if (this != &other) {
    unmap();
    path_ = std::move(other.path_);
    data_ = std::exchange(other.data_, nullptr);
    bytes_ = std::exchange(other.bytes_, 0);
    begin_ = std::move(other.begin_);
    line_ = std::move(other.line_);
  }
  return *this;
}

JsonlIndex::~JsonlIndex() {
  unmap();
}

void JsonlIndex::unmap() {
  if (data_) ::munmap(const_cast<char*>(data_), size_t(bytes_));
  data_ = nullptr;
}

std::string_view JsonlIndex::record(int64_t i) const {
  VACC_CHECK(i >= 0 && i < size(), "record ", i, " outside ", path_, " (", size(), " records)");
  const char* begin = data_ + begin_[size_t(i)];
  const char* end = data_ + bytes_;
  const char* nl = static_cast<const char*>(std::memchr(begin, '\n', size_t(end - begin)));
  if (nl) end = nl;
  while (end > begin && end[-1] == '\r') --end;
  return {begin, size_t(end - begin)};
}

int64_t JsonlIndex::line_number(int64_t i) const {
  VACC_CHECK(i >= 0 && i < size(), "record ", i, " outside ", path_, " (", size(), " records)");
  return line_[size_t(i)];
}

}  // namespace vacc
