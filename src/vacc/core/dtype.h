// Element types of tensors and the bf16 <-> f32 conversions every backend agrees on.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>

namespace vacc {

enum class DType { F32, BF16, I32 };

constexpr size_t dtype_size(DType t) { return t == DType::BF16 ? 2 : 4; }

inline std::string dtype_name(DType t) {
  switch (t) {
    case DType::F32: return "f32";
    case DType::BF16: return "bf16";
    case DType::I32: return "i32";
  }
  return "?";
}

// Parses "f32" / "bf16" (the --dtype values); throws vacc::Error otherwise.
DType parse_dtype(const std::string& name);

// bfloat16 stored as its 16 raw bits. Conversion from f32 rounds to nearest even.
struct bf16 {
  uint16_t bits;
};

inline float bf16_to_float(bf16 v) {
  uint32_t u = static_cast<uint32_t>(v.bits) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

inline bf16 float_to_bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7f800000u) == 0x7f800000u && (u & 0x7fffffu)) return bf16{uint16_t((u >> 16) | 0x40)};  // NaN
  u += 0x7fffu + ((u >> 16) & 1u);
  return bf16{static_cast<uint16_t>(u >> 16)};
}

}  // namespace vacc
