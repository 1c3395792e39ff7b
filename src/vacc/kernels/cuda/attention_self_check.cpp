#include "vacc/kernels/cuda/attention_self_check.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "vacc/core/error.h"
#include "vacc/core/logging.h"
#include "vacc/kernels/cuda/attention_flash_mma.h"

namespace vacc::cuda {
namespace {

// The self-check problem (flash_mma_agreement's comment).
constexpr int64_t kSeq = 80, kQHeads = 2, kKvHeads = 1;

// Deterministic values in [-scale, scale] (no RNG state shared with anything else).
std::vector<float> check_values(size_t n, uint32_t seed, float scale) {
  std::vector<float> v(n);
  uint32_t x = seed * 2654435761u + 1;
  for (float& e : v) {
    x = x * 1664525u + 1013904223u;
    e = scale * (float(x >> 8) / float(1u << 24) * 2.0f - 1.0f);
  }
  return v;
}

std::vector<float> bf16_to_floats(const std::vector<bf16>& v) {
  std::vector<float> f(v.size());
  std::transform(v.begin(), v.end(), f.begin(), bf16_to_float);
  return f;
}

double max_abs(const std::vector<float>& v) {
  double m = 0;
  for (float e : v) m = std::max(m, double(std::fabs(e)));
  return m;
}

// Largest |got - want|, over the largest |want| (or 1 where `absolute`).
double difference(const std::vector<float>& got, const std::vector<float>& want, bool absolute) {
  double worst = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    const double d = std::fabs(double(got[i]) - double(want[i]));
    worst = std::max(worst, std::isnan(d) ? INFINITY : d);
  }
  const double scale = absolute ? 1.0 : std::max(max_abs(want), 1e-30);
  return worst / scale;
}

// A device buffer of n elements of T, filled from the host where `host` is given.
template <typename T>
T* device_array(CudaContext& ctx, std::vector<Tensor>& keep, size_t n, const char* what,
                const std::vector<T>* host = nullptr) {
  keep.push_back(ctx.scratch_bytes(n * sizeof(T), what));
  T* p = static_cast<T*>(keep.back().data());
  if (host) ctx.upload(host->data(), p, n * sizeof(T));
  return p;
}

template <typename T>
std::vector<T> download(CudaContext& ctx, const T* p, size_t n) {
  std::vector<T> v(n);
  ctx.download(p, v.data(), n * sizeof(T));
  return v;
}

}  // namespace

double FlashMmaAgreement::worst() const {
  // NaN compares false: count it as the worst.
  for (double e : {out, lse, dqkv})
    if (std::isnan(e)) return INFINITY;
  return std::max({out, lse, dqkv});
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


FlashMmaAgreement flash_mma_agreement(CudaContext& ctx, int64_t head_dim) {
  VACC_CHECK(attention_flash_mma_supports(head_dim), "flash_mma_agreement: head_dim ", head_dim,
             " is not one the tensor-core kernels take");
  const int64_t T = kSeq, D = head_dim, width = (kQHeads + 2 * kKvHeads) * D;
  const size_t n_qkv = size_t(T * width), n_out = size_t(T * kQHeads * D),
               n_lse = size_t(kQHeads * T);
  const std::vector<float> qkv_host = check_values(n_qkv, 1, 1.5f);
  std::vector<bf16> dout_host(n_out);
  for (size_t i = 0; const float v : check_values(n_out, 2, 1.0f)) dout_host[i++] = float_to_bf16(v);

  std::vector<Tensor> keep;
  const float* qkv = device_array(ctx, keep, n_qkv, "self-check qkv", &qkv_host);
  const bf16* dout = device_array(ctx, keep, n_out, "self-check dout", &dout_host);
  float* out_ref = device_array<float>(ctx, keep, n_out, "self-check reference out");
  float* lse_ref = device_array<float>(ctx, keep, n_lse, "self-check reference lse");
  bf16* out_mma = device_array<bf16>(ctx, keep, n_out, "self-check out");
  float* lse_mma = device_array<float>(ctx, keep, n_lse, "self-check lse");
  float* dqkv_ref = device_array<float>(ctx, keep, n_qkv, "self-check reference dqkv");
  float* dqkv_mma = device_array<float>(ctx, keep, n_qkv, "self-check dqkv");
  const size_t scratch_bytes =
      std::max({attention_flash_mma_forward_scratch_bytes(1, T, kQHeads, kKvHeads, D, DType::F32),
                attention_flash_mma_backward_scratch_bytes(1, T, kQHeads, kKvHeads, D, DType::F32),
                attention_backward_scratch_bytes(1, T, kQHeads, D, DType::BF16)});
  void* scratch = device_array<char>(ctx, keep, scratch_bytes, "self-check scratch");

  cudaStream_t s = ctx.stream();
  attention_forward(qkv, 1, T, kQHeads, kKvHeads, D, out_ref, DType::F32, lse_ref, s);
  attention_flash_mma_forward(qkv, DType::F32, 1, T, kQHeads, kKvHeads, D, out_mma, DType::BF16,
                              lse_mma, scratch, s);
  // Both backwards see the same bf16 out and dout and the reference's lse, as in training.
  attention_backward(dout, qkv, out_mma, DType::BF16, lse_ref, 1, T, kQHeads, kKvHeads, D,
                     dqkv_ref, scratch, s);
  attention_flash_mma_backward(dout, qkv, DType::F32, out_mma, DType::BF16, lse_ref, 1, T,
                               kQHeads, kKvHeads, D, dqkv_mma, scratch, s);

  FlashMmaAgreement a;
  const std::vector<float> dqkv_got = download(ctx, dqkv_mma, n_qkv);
  float* dqkv_variant = device_array<float>(ctx, keep, n_qkv, "self-check dqkv (variant)");
  for (int v = 1; v < attention_flash_mma_dkdv_variants(D); ++v) {
    attention_flash_mma_backward(dout, qkv, DType::F32, out_mma, DType::BF16, lse_ref, 1, T,
                                 kQHeads, kKvHeads, D, dqkv_variant, scratch, s, v);
    if (download(ctx, dqkv_variant, n_qkv) != dqkv_got) break;
    a.dkdv_variants_alike = v + 1;
  }
  a.out = difference(bf16_to_floats(download(ctx, out_mma, n_out)), download(ctx, out_ref, n_out),
                     false);
  a.lse = difference(download(ctx, lse_mma, n_lse), download(ctx, lse_ref, n_lse), true);
  a.dqkv = difference(dqkv_got, download(ctx, dqkv_ref, n_qkv), false);
  return a;
}

namespace {
// Per head_dim (each is its own instantiation of the kernels): 0 not run, 1 passed, 2 failed;
// and how many dK/dV variants agreed.
std::atomic<int> self_check_state[2] = {0, 0};
std::atomic<int> dkdv_variants_alike[2] = {1, 1};
}  // namespace

bool flash_mma_self_check(CudaContext& ctx, int64_t head_dim) {
  if (!attention_flash_mma_supports(head_dim) || !tensor_core_mma_self_check(ctx)) return false;
  std::atomic<int>& st = self_check_state[head_dim == 64 ? 0 : 1];
  if (const int s = st.load(); s != 0) return s == 1;
  const std::string what = "attention: the tensor-core flash kernels (head_dim " +
                           std::to_string(head_dim) + ") on " + ctx.device_name();
  const char* fallback = "; bf16 attention uses the cuBLASLt route instead";
  try {
    const FlashMmaAgreement a = flash_mma_agreement(ctx, head_dim);
    const bool ok = a.worst() <= kFlashMmaSelfCheckTolerance;
    if (!ok) {
      char buf[160];
      std::snprintf(buf, sizeof buf, " differ from the f32 kernels by %.3g (out), %.3g (lse), "
                    "%.3g (dqkv) in their self-check, over the bound %.3g", a.out, a.lse, a.dqkv,
                    kFlashMmaSelfCheckTolerance);
      log_warn(what + buf + fallback);
    }
    const int variants = attention_flash_mma_dkdv_variants(head_dim);
    if (ok && a.dkdv_variants_alike < variants)
      log_warn(what + ": the backward's dK/dV variant " + std::to_string(a.dkdv_variants_alike) +
               " does not give variant 0's bits in the self-check; only the first " +
               std::to_string(a.dkdv_variants_alike) + " are timed");
    dkdv_variants_alike[head_dim == 64 ? 0 : 1].store(a.dkdv_variants_alike);
    st.store(ok ? 1 : 2);
    return ok;
  } catch (const Error& e) {
    log_warn(what + " could not run their self-check (" + e.what() + ")" + fallback);
    st.store(2);
    return false;
  }
}

int flash_mma_dkdv_variants_checked(CudaContext& ctx, int64_t head_dim) {
  if (!flash_mma_self_check(ctx, head_dim)) return 1;
  return dkdv_variants_alike[head_dim == 64 ? 0 : 1].load();
}

}  // namespace vacc::cuda
