#include "vacc/core/dtype.h"

#include "vacc/core/error.h"

namespace vacc {

DType parse_dtype(const std::string& name) {
  if (name == "f32" || name == "fp32" || name == "float32") return DType::F32;
  if (name == "bf16" || name == "bfloat16") return DType::BF16;
  fail("unknown dtype '", name, "' (expected f32 or bf16)");
}

}  // namespace vacc
