#include "vacc/io/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <nlohmann/json.hpp>
#include <set>
#include <utility>

#include "vacc/core/error.h"

namespace vacc {

static_assert(std::endian::native == std::endian::little,
              "safetensors data is little-endian; big-endian hosts are not supported");

namespace {

// A header longer than this is surely not a header (the largest real ones are a few MB).
constexpr uint64_t kMaxHeaderBytes = 100ull << 20;

std::string quoted(const std::string& s) {
  return "\"" + s + "\"";
}

float half_to_float(uint16_t h) {
  const uint32_t sign = uint32_t(h >> 15) << 31;
  const uint32_t exp = (h >> 10) & 0x1f;
  const uint32_t mant = h & 0x3ff;
  uint32_t bits;
  if (exp == 0) {
    if (mant == 0) {
      bits = sign;
    } else {  // subnormal: mant * 2^-24
      float f = std::ldexp(float(mant), -24);
      std::memcpy(&bits, &f, 4);
      bits |= sign;
    }
  } else if (exp == 0x1f) {
    bits = sign | 0x7f800000u | (mant << 13);  // inf / nan
  } else {
    bits = sign | ((exp + 127 - 15) << 23) | (mant << 13);
  }
  float out;
  std::memcpy(&out, &bits, 4);
  return out;
}

// The header's JSON, rejecting duplicate keys in any object (nlohmann keeps the last one
// silently; a duplicated tensor name would hide a tensor).
nlohmann::json parse_header(const std::string& path, const char* begin, const char* end) {
  std::vector<std::set<std::string>> keys;  // one set per open object
  std::string duplicate;
  int duplicate_depth = 0;
  auto callback = [&](int depth, nlohmann::json::parse_event_t event, nlohmann::json& parsed) {
    using E = nlohmann::json::parse_event_t;
    if (event == E::object_start) {
      keys.emplace_back();
    } else if (event == E::object_end) {
      if (!keys.empty()) keys.pop_back();
    } else if (event == E::key && !keys.empty()) {
      const std::string& k = parsed.get_ref<const std::string&>();
      if (!keys.back().insert(k).second && duplicate.empty()) {
        duplicate = k;
        duplicate_depth = depth;
      }
    }
    return true;
  };
  nlohmann::json header;
  try {
    header = nlohmann::json::parse(begin, end, callback);
  } catch (const nlohmann::json::exception& e) {
    fail(path, ": the safetensors header is not valid JSON (", e.what(), ")");
  }
  if (!duplicate.empty()) {
    if (duplicate_depth <= 1)
      fail(path, ": tensor ", quoted(duplicate), " appears more than once in the header");
    fail(path, ": the safetensors header repeats the key ", quoted(duplicate), " inside an entry");
  }
  VACC_CHECK(header.is_object(), path, ": the safetensors header is not a JSON object (got ",
             header.type_name(), ")");
  return header;
}

uint64_t checked_size(const std::string& path, const SafetensorsEntry& e, size_t element) {
  // numel * element size without overflow; beyond 2^62 bytes no file can hold it anyway.
  constexpr uint64_t limit = uint64_t(1) << 62;
  uint64_t n = element;
  for (int64_t d : e.shape) {
    if (d == 0) return 0;
    if (n > limit / uint64_t(d))
      fail(path, ": tensor ", quoted(e.name), " of shape ", shape_str(e.shape),
           " is impossibly large");
    n *= uint64_t(d);
  }
  return n;
}

SafetensorsEntry parse_entry(const std::string& path, const std::string& name,
                             const nlohmann::json& v, uint64_t data_bytes) {
  const std::string where = path + ": tensor " + quoted(name);
  VACC_CHECK(v.is_object(), where, ": expected an object with dtype, shape and data_offsets, got ",
             v.dump());
  SafetensorsEntry e;
  e.name = name;
  VACC_CHECK(v.contains("dtype") && v["dtype"].is_string(), where, ": missing string \"dtype\"");
  e.dtype = v["dtype"].get<std::string>();
  const size_t element = safetensors_dtype_size(e.dtype);
  VACC_CHECK(element > 0, where, ": unknown dtype ", quoted(e.dtype));

  VACC_CHECK(v.contains("shape") && v["shape"].is_array(), where, ": missing array \"shape\"");
  for (const nlohmann::json& d : v["shape"]) {
    VACC_CHECK(d.is_number_integer(), where, ": shape ", v["shape"].dump(),
               " holds a non-integer dimension");
    if (d.is_number_unsigned()) {
      uint64_t u = d.get<uint64_t>();
      VACC_CHECK(u <= uint64_t(std::numeric_limits<int64_t>::max()), where, ": shape ",
                 v["shape"].dump(), " has a dimension too large");
      e.shape.push_back(int64_t(u));
    } else {
      int64_t s = d.get<int64_t>();
      VACC_CHECK(s >= 0, where, ": shape ", v["shape"].dump(), " has a negative dimension");
      e.shape.push_back(s);
    }
  }

  VACC_CHECK(v.contains("data_offsets") && v["data_offsets"].is_array() &&
                 v["data_offsets"].size() == 2 && v["data_offsets"][0].is_number_unsigned() &&
                 v["data_offsets"][1].is_number_unsigned(),
             where, ": \"data_offsets\" must be [begin, end] of non-negative integers, got ",
             v.contains("data_offsets") ? v["data_offsets"].dump() : std::string("nothing"));
  e.begin = v["data_offsets"][0].get<uint64_t>();
  e.end = v["data_offsets"][1].get<uint64_t>();
  VACC_CHECK(e.begin <= e.end, where, ": data_offsets [", e.begin, ", ", e.end,
             "] end before they begin");
  VACC_CHECK(e.end <= data_bytes, where, ": data_offsets [", e.begin, ", ", e.end,
             "] reach beyond the data area of ", data_bytes,
             " bytes (the file is truncated or the header is wrong)");
  const uint64_t want = checked_size(path, e, element);
  VACC_CHECK(e.nbytes() == want, where, ": ", e.dtype, " of shape ", shape_str(e.shape), " needs ",
             want, " bytes but data_offsets [", e.begin, ", ", e.end, "] hold ", e.nbytes());
  return e;
}

std::string errno_text() {
  return std::strerror(errno);
}

}  // namespace

size_t safetensors_dtype_size(const std::string& d) {
  if (d == "F64" || d == "I64" || d == "U64") return 8;
  if (d == "F32" || d == "I32" || d == "U32") return 4;
  if (d == "F16" || d == "BF16" || d == "I16" || d == "U16") return 2;
  if (d == "I8" || d == "U8" || d == "BOOL" || d == "F8_E4M3" || d == "F8_E5M2") return 1;
  return 0;
}

std::string safetensors_dtype(DType dtype) {
  switch (dtype) {
    case DType::F32:
      return "F32";
    case DType::BF16:
      return "BF16";
    case DType::I32:
      return "I32";
  }
  fail("no safetensors name for dtype ", dtype_name(dtype));
}

SafetensorsFile SafetensorsFile::open(const std::string& path) {
  SafetensorsFile f;
  f.path_ = path;
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  VACC_CHECK(fd >= 0, "cannot open safetensors file ", path, ": ", errno_text());
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    std::string why = errno_text();
    ::close(fd);
    fail("cannot stat safetensors file ", path, ": ", why);
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    fail(path, ": not a regular file");
  }
  const uint64_t file_bytes = uint64_t(st.st_size);
  if (file_bytes < 8) {
    ::close(fd);
    fail(path, ": a safetensors file holds at least an 8-byte header length, but this one has ",
         file_bytes, " bytes");
  }
  void* map = ::mmap(nullptr, size_t(file_bytes), PROT_READ, MAP_PRIVATE, fd, 0);
  std::string map_error = map == MAP_FAILED ? errno_text() : std::string();
  ::close(fd);
  VACC_CHECK(map != MAP_FAILED, "cannot map safetensors file ", path, ": ", map_error);
  f.map_ = map;
  f.map_bytes_ = size_t(file_bytes);  // unmapped by the destructor from here on

  const auto* bytes = static_cast<const unsigned char*>(map);
  uint64_t header_bytes = 0;
  std::memcpy(&header_bytes, bytes, 8);
  VACC_CHECK(header_bytes <= kMaxHeaderBytes, path, ": header length ", header_bytes,
             " bytes is over the limit of ", kMaxHeaderBytes, " (not a safetensors file?)");
  VACC_CHECK(header_bytes <= file_bytes - 8, path, ": header length ", header_bytes,
             " bytes reaches beyond the end of the ", file_bytes,
             "-byte file (truncated, or not a safetensors file)");
  const uint64_t data_bytes = file_bytes - 8 - header_bytes;
  f.data_area_ = bytes + 8 + header_bytes;

  const char* text = reinterpret_cast<const char*>(bytes + 8);
  nlohmann::json header = parse_header(path, text, text + header_bytes);

  for (auto it = header.begin(); it != header.end(); ++it) {
    if (it.key() == "__metadata__") {
      const nlohmann::json& m = it.value();
      if (m.is_null()) continue;
      VACC_CHECK(m.is_object(), path, ": \"__metadata__\" must map strings to strings, got ",
                 m.dump());
      for (auto mi = m.begin(); mi != m.end(); ++mi) {
        VACC_CHECK(mi.value().is_string(), path, ": \"__metadata__\" entry ", quoted(mi.key()),
                   " must be a string, got ", mi.value().dump());
        f.metadata_[mi.key()] = mi.value().get<std::string>();
      }
      continue;
    }
    f.tensors_.push_back(parse_entry(path, it.key(), it.value(), data_bytes));
  }

  // The tensors must tile the data area: sorted by offset, each begins where the previous
  // ended, from 0 to the end of the file.
  std::stable_sort(f.tensors_.begin(), f.tensors_.end(),
                   [](const SafetensorsEntry& a, const SafetensorsEntry& b) {
                     return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
                   });
  uint64_t expect = 0;
  const SafetensorsEntry* previous = nullptr;
  for (const SafetensorsEntry& e : f.tensors_) {
    if (e.begin != expect) {
      if (e.begin > expect)
        fail(path, ": tensor ", quoted(e.name), " begins at byte ", e.begin,
             " of the data area but ",
             previous ? "tensor " + quoted(previous->name) + " ends"
                      : std::string("the data begins"),
             " at byte ", expect, " (a hole; offsets must be contiguous)");
      fail(path, ": tensor ", quoted(e.name), " at bytes [", e.begin, ", ", e.end,
           ") overlaps tensor ", quoted(previous->name), " at bytes [", previous->begin, ", ",
           previous->end, ")");
    }
    expect = e.end;
    previous = &e;
  }
  VACC_CHECK(expect == data_bytes, path, ": the tensors cover ", expect,
             " bytes but the data area has ", data_bytes,
             previous ? " (unused bytes after tensor " + quoted(previous->name) + ")"
                      : std::string(" (unused bytes and no tensors)"));
  for (size_t i = 0; i < f.tensors_.size(); ++i) f.index_[f.tensors_[i].name] = i;
  return f;
}

SafetensorsFile::SafetensorsFile(SafetensorsFile&& o) noexcept {
  *this = std::move(o);
}

SafetensorsFile& SafetensorsFile::operator=(SafetensorsFile&& o) noexcept {
  if (this != &o) {
    unmap();
    path_ = std::move(o.path_);
    map_ = std::exchange(o.map_, nullptr);
    map_bytes_ = std::exchange(o.map_bytes_, 0);
    data_area_ = std::exchange(o.data_area_, nullptr);
    tensors_ = std::move(o.tensors_);
    index_ = std::move(o.index_);
    metadata_ = std::move(o.metadata_);
  }
  return *this;
}

SafetensorsFile::~SafetensorsFile() {
  unmap();
}

void SafetensorsFile::unmap() {
  if (map_) ::munmap(map_, map_bytes_);
  map_ = nullptr;
  map_bytes_ = 0;
}

const SafetensorsEntry* SafetensorsFile::find(const std::string& name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &tensors_[it->second];
}

const SafetensorsEntry& SafetensorsFile::at(const std::string& name) const {
  const SafetensorsEntry* e = find(name);
  VACC_CHECK(e, path_, ": no tensor named ", quoted(name));
  return *e;
}

const void* SafetensorsFile::data(const SafetensorsEntry& e) const {
  return data_area_ + e.begin;
}

void SafetensorsFile::read_f32(const SafetensorsEntry& e, float* dst) const {
  read_f32(e, 0, e.numel(), dst);
}

void SafetensorsFile::read_f32(const SafetensorsEntry& e, int64_t first, int64_t count,
                               float* dst) const {
  VACC_CHECK(first >= 0 && count >= 0 && first + count <= e.numel(), path_, ": elements [", first,
             ", ", first + count, ") are outside tensor ", quoted(e.name), " of ", e.numel(),
             " elements");
  const size_t esize = safetensors_dtype_size(e.dtype);
  const unsigned char* src = data_area_ + e.begin + size_t(first) * esize;
  const size_t n = size_t(count);
  if (e.dtype == "F32") {
    std::memcpy(dst, src, n * 4);
  } else if (e.dtype == "BF16") {
    for (size_t i = 0; i < n; ++i) {
      uint16_t b;
      std::memcpy(&b, src + 2 * i, 2);
      dst[i] = bf16_to_float(bf16{b});
    }
  } else if (e.dtype == "F16") {
    for (size_t i = 0; i < n; ++i) {
      uint16_t h;
      std::memcpy(&h, src + 2 * i, 2);
      dst[i] = half_to_float(h);
    }
  } else if (e.dtype == "F64") {
    for (size_t i = 0; i < n; ++i) {
      double d;
      std::memcpy(&d, src + 8 * i, 8);
      dst[i] = float(d);
    }
  } else {
    fail(path_, ": tensor ", quoted(e.name), " has dtype ", e.dtype,
         "; expected a floating-point tensor (F32, BF16, F16 or F64)");
  }
}

std::vector<float> SafetensorsFile::read_f32(const SafetensorsEntry& e) const {
  std::vector<float> out(size_t(e.numel()));
  read_f32(e, out.data());
  return out;
}

void SafetensorsFile::read_i32(const SafetensorsEntry& e, int32_t* dst) const {
  const unsigned char* src = data_area_ + e.begin;
  const size_t n = size_t(e.numel());
  if (e.dtype == "I32") {
    std::memcpy(dst, src, n * 4);
  } else if (e.dtype == "I64") {
    for (size_t i = 0; i < n; ++i) {
      int64_t v;
      std::memcpy(&v, src + 8 * i, 8);
      VACC_CHECK(
          v >= std::numeric_limits<int32_t>::min() && v <= std::numeric_limits<int32_t>::max(),
          path_, ": tensor ", quoted(e.name), " element ", i, " (", v, ") does not fit 32 bits");
      dst[i] = int32_t(v);
    }
  } else {
    fail(path_, ": tensor ", quoted(e.name), " has dtype ", e.dtype,
         "; expected an integer tensor (I32 or I64)");
  }
}

void write_safetensors(const std::string& path, const std::vector<SafetensorsTensorData>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  std::set<std::string> names;
  std::vector<uint64_t> sizes;
  uint64_t offset = 0;
  for (const SafetensorsTensorData& t : tensors) {
    const std::string where = path + ": tensor " + quoted(t.name);
    VACC_CHECK(!t.name.empty() && t.name != "__metadata__", path, ": invalid tensor name ",
               quoted(t.name));
    VACC_CHECK(names.insert(t.name).second, where, " is written twice");
    const size_t element = safetensors_dtype_size(t.dtype);
    VACC_CHECK(element > 0, where, ": unknown dtype ", quoted(t.dtype));
    uint64_t bytes = element;
    for (int64_t d : t.shape) {
      VACC_CHECK(d >= 0, where, ": negative dimension in shape ", shape_str(t.shape));
      bytes *= uint64_t(d);
    }
    VACC_CHECK(t.data != nullptr || bytes == 0, where, ": no data");
    header[t.name] = {
        {"dtype", t.dtype}, {"shape", t.shape}, {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
    sizes.push_back(bytes);
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');
  const uint64_t header_bytes = text.size();

  const std::string tmp = path + ".tmp";
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  VACC_CHECK(fd >= 0, "cannot write ", path, ": cannot create ", tmp, ": ", errno_text());
  auto give_up = [&](const std::string& what) {
    std::string why = errno_text();
    ::close(fd);
    ::unlink(tmp.c_str());
    fail("cannot write ", path, ": ", what, ": ", why);
  };
  auto write_all = [&](const void* p, uint64_t n, const std::string& what) {
    const char* c = static_cast<const char*>(p);
    while (n > 0) {
      ssize_t w = ::write(fd, c, size_t(std::min<uint64_t>(n, 1u << 30)));
      if (w < 0 && errno == EINTR) continue;
      if (w <= 0) give_up(what);
      c += w;
      n -= uint64_t(w);
    }
  };
  write_all(&header_bytes, 8, "writing the header");
  write_all(text.data(), text.size(), "writing the header");
  for (size_t i = 0; i < tensors.size(); ++i)
    write_all(tensors[i].data, sizes[i], "writing tensor " + quoted(tensors[i].name));
  if (::fsync(fd) != 0) give_up("flushing " + tmp);
  if (::close(fd) != 0) {
    std::string why = errno_text();
    ::unlink(tmp.c_str());
    fail("cannot write ", path, ": closing ", tmp, ": ", why);
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    std::string why = errno_text();
    ::unlink(tmp.c_str());
    fail("cannot write ", path, ": renaming ", tmp, " into place: ", why);
  }
}

}  // namespace vacc
