// Loading and storing f32 or bf16 elements as float, so one kernel body serves both.
#pragma once

#include <cstddef>
#include <cstdint>
#include <type_traits>

#include "vacc/core/dtype.h"
#include "vacc/core/error.h"

namespace vacc::cpu {

inline float load(const float* p, int64_t i) { return p[i]; }
inline float load(const bf16* p, int64_t i) { return bf16_to_float(p[i]); }
inline void store(float* p, int64_t i, float v) { p[i] = v; }
inline void store(bf16* p, int64_t i, float v) { p[i] = float_to_bf16(v); }

// Calls fn with a null pointer of the C++ type of `dtype` (float* or bf16*), to select the
// template instance: dispatch_float(dt, [&](auto tag) { using T = decltype(tag); ... }).
template <typename Fn>
decltype(auto) dispatch_float(DType dtype, Fn&& fn) {
  switch (dtype) {
    case DType::F32: return fn(static_cast<float*>(nullptr));
    case DType::BF16: return fn(static_cast<bf16*>(nullptr));
    default: fail("expected an f32 or bf16 tensor, got ", dtype_name(dtype));
  }
}

// Calls fn with a null pointer of std::nullptr_t when `out` is null, else with `out` as float* or
// bf16* by `dtype`: a kernel's optional second output, tested with `if constexpr (kHas<T>)` so the
// loop without it carries no branch.
template <typename Fn>
decltype(auto) dispatch_optional(void* out, DType dtype, Fn&& fn) {
  if (!out) return fn(nullptr);
  return dispatch_float(dtype, [&](auto tag) {
    return fn(static_cast<std::remove_pointer_t<decltype(tag)>*>(out));
  });
}
template <typename T>
constexpr bool kHas = !std::is_same_v<T, std::nullptr_t>;

}  // namespace vacc::cpu
