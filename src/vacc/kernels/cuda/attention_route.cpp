#include "vacc/kernels/cuda/attention_route.h"

#include <cstdlib>
#include <string>

#include "vacc/core/error.h"
#include "vacc/kernels/cuda/attention_flash_mma.h"
#include "vacc/kernels/cuda/attention_self_check.h"

namespace vacc::cuda {
namespace {

// Longer sequences would need more than 256 MiB of scores per head on the gemm route.
constexpr int64_t kGemmMaxSeq = 8192;

// The route VACC_ATTENTION asks for, if any.
bool preferred_route(AttentionRoute& route) {
  const char* env = std::getenv("VACC_ATTENTION");
  if (!env || !*env) return false;
  const std::string name = env;
  for (AttentionRoute r : {AttentionRoute::FlashF32, AttentionRoute::Gemm, AttentionRoute::FlashMma})
    if (name == attention_route_name(r)) {
      route = r;
      return true;
    }
  fail("VACC_ATTENTION=", name, ": expected flash_mma, gemm or flash_f32");
}

}  // namespace

const char* attention_route_name(AttentionRoute route) {
  switch (route) {
    case AttentionRoute::FlashF32: return "flash_f32";
    case AttentionRoute::Gemm: return "gemm";
    case AttentionRoute::FlashMma: return "flash_mma";
  }
  return "?";
}

AttentionRoute attention_route(CudaContext& ctx, int64_t seq, int64_t head_dim, DType compute) {
  if (compute != DType::BF16) return AttentionRoute::FlashF32;
  const bool mma_fits = attention_flash_mma_supports(head_dim);
  const bool gemm_fits = seq <= kGemmMaxSeq;
  AttentionRoute want = AttentionRoute::FlashMma;
  preferred_route(want);
  if (want == AttentionRoute::FlashF32) return want;
  if (want == AttentionRoute::Gemm && gemm_fits) return want;
  if (mma_fits && flash_mma_self_check(ctx, head_dim)) return AttentionRoute::FlashMma;
  return gemm_fits ? AttentionRoute::Gemm : AttentionRoute::FlashF32;
}

}  // namespace vacc::cuda
