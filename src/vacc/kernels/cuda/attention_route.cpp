#include "vacc/kernels/cuda/attention_route.h"

#include <atomic>
#include <cstdlib>
#include <string>
#include <vector>

#include "vacc/core/error.h"
#include "vacc/core/logging.h"
#include "vacc/kernels/cuda/attention_flash_mma.h"

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

bool tensor_core_mma_self_check(CudaContext& ctx) {
  // 0: not run yet, 1: passed, 2: failed. One device model per process (one GPU per rank).
  static std::atomic<int> state{0};
  if (const int s = state.load(); s != 0) return s == 1;
  // Small multiples of 1/4 and 1/8: bf16 holds them exactly and every partial sum is exact in
  // f32, so any correct tensor core gives exactly the host's result. A, B and C are asymmetric,
  // so a transposed or misplaced fragment shows.
  std::vector<float> a(16 * 16), b(16 * 8), c(16 * 8), want(16 * 8), got(16 * 8);
  for (int i = 0; i < 16; ++i)
    for (int k = 0; k < 16; ++k) a[i * 16 + k] = float((i * 5 + k * 3) % 9 - 4) / 4.0f;
  for (int k = 0; k < 16; ++k)
    for (int n = 0; n < 8; ++n) b[k * 8 + n] = float((k * 7 + n * 2) % 11 - 5) / 8.0f;
  for (int i = 0; i < 16; ++i)
    for (int n = 0; n < 8; ++n) {
      c[i * 8 + n] = float(i - 2 * n) / 2.0f;
      float sum = c[i * 8 + n];
      for (int k = 0; k < 16; ++k) sum += a[i * 16 + k] * b[k * 8 + n];
      want[i * 8 + n] = sum;
    }
  Tensor dev = ctx.scratch({16 * 16 + 3 * 16 * 8}, DType::F32, "tensor-core self-check");
  float* da = dev.data_as<float>();
  float *db = da + 16 * 16, *dc = db + 16 * 8, *dd = dc + 16 * 8;
  ctx.upload(a.data(), da, a.size() * sizeof(float));
  ctx.upload(b.data(), db, b.size() * sizeof(float));
  ctx.upload(c.data(), dc, c.size() * sizeof(float));
  int wrong = 0;
  try {
    mma_bf16_tile_product(da, db, dc, dd, ctx.stream());
    ctx.download(dd, got.data(), got.size() * sizeof(float));
  } catch (const Error& e) {
    // E.g. no kernel image for this GPU's architecture: a clean error the device survives
    // (an illegal instruction would not be, and rethrows from the next call anyway).
    log_warn(std::string("attention: the tensor-core self-check could not run (") + e.what() +
             "); bf16 attention uses the cuBLASLt route instead");
    state.store(2);
    return false;
  }
  for (size_t i = 0; i < want.size(); ++i) wrong += got[i] != want[i];
  if (wrong) {
    log_warn("attention: the tensor-core product (mma.m16n8k16 bf16) gave " +
             std::to_string(wrong) + " of 128 wrong elements in its self-check on " +
             ctx.device_name() + "; bf16 attention uses the cuBLASLt route instead");
  }
  state.store(wrong ? 2 : 1);
  return !wrong;
}

AttentionRoute attention_route(CudaContext& ctx, int64_t seq, int64_t head_dim, DType compute) {
  if (compute != DType::BF16) return AttentionRoute::FlashF32;
  const bool mma_fits = attention_flash_mma_supports(head_dim);
  const bool gemm_fits = seq <= kGemmMaxSeq;
  AttentionRoute want = AttentionRoute::FlashMma;
  preferred_route(want);
  if (want == AttentionRoute::FlashF32) return want;
  if (want == AttentionRoute::Gemm && gemm_fits) return want;
  if (mma_fits && tensor_core_mma_self_check(ctx)) return AttentionRoute::FlashMma;
  return gemm_fits ? AttentionRoute::Gemm : AttentionRoute::FlashF32;
}

}  // namespace vacc::cuda
