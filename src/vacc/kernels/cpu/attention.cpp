// Causal self-attention on the CPU, flash-attention style: the scores are computed one
// (key block x query block) tile at a time and never held for a whole head.
//
// Layout trick: every tile is kept *transposed*, keys down and queries across
// (S^T = K_j Q_i^T, shape (keys, queries)), so that
//   - the softmax statistics of a query (max, sum, lse, D_i) are per-column values and the
//     reductions over keys are plain vertical vector operations;
//   - every block product is one register-blocked kernel C (M, N) += A (M, K) B (K, N) with N
//     (the vector dimension) a multiple of 16: queries (padded to 16) or head_dim (padded
//     to 16), while A is read by broadcasts with arbitrary strides (so K^T, V^T, P^T never
//     need a transposed copy).
// The q heads that share a kv head (up to kMaxStack of them) are stacked side by side as
// columns of one tile, so K_j and V_j are streamed once for all of them.
// Forward, per (batch, kv head, query block i), with the online softmax (log2 domain):
//   S^T = K_j (Q_i^T * scale * log2 e); m' = max(m, colmax S^T); P^T = 2^(S^T - m')
//   l = l 2^(m - m') + colsum P^T;  O^T = O^T 2^(m - m') + V_j^T P^T
//   out = (O^T)^T / l;  lse = (m + log2 l) ln 2.
// Backward, per (batch, kv head) (the group's q heads accumulate into the group's dK, dV
// without races), or per (batch, kv head, part of its q heads) into private dK, dV that are
// summed afterwards when there are too few kv heads to keep the threads busy:
//   P^T = 2^(S^T - lse log2 e); dP^T = V_j dO_i^T; dS^T = P^T (dP^T - D_i), D_i = rowsum(dO O)
//   dV_j += P^T dO_i;  dK_j += dS^T Q_i scale;  dQ_i^T += K_j^T dS^T  (times scale at the end)
// All statistics and accumulations are f32.
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <memory>
#include <type_traits>
#include <utility>

#include "vacc/core/error.h"
#include "vacc/kernels/cpu/cpu_kernels.h"
#include "vacc/kernels/cpu/float_io.h"

// gcc warns that passing the vectors below by value depends on the target's ABI; they are
// internal (inlined) values of this file only.
#pragma GCC diagnostic ignored "-Wpsabi"

namespace vacc::cpu {
namespace {

// ---- float vectors of kL lanes (gcc vector extensions), the widest the target has ----
// Every padded dimension is a multiple of 16, hence of kL.
#if defined(__AVX512F__)
constexpr int kL = 16;
#elif defined(__AVX__)
constexpr int kL = 8;
#else
constexpr int kL = 4;
#endif
typedef float vf __attribute__((vector_size(kL * 4)));
typedef uint32_t vu __attribute__((vector_size(kL * 4)));

inline vf loadv(const float* p) {
  vf v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
inline void storev(float* p, vf v) { std::memcpy(p, &v, sizeof v); }
template <size_t... I>
inline vf splat_lanes(float x, std::index_sequence<I...>) {
  return vf{((void)I, x)...};
}
inline vf splat(float x) { return splat_lanes(x, std::make_index_sequence<kL>()); }
inline vf vmax(vf a, vf b) { return a > b ? a : b; }

// 2^x, relative error ~1e-7; exactly 0 for x <= -127 (and x = -inf); NaN stays NaN. x must
// stay below 128 (the callers pass x <= ~0).
inline vf exp2v(vf x) {
  const vf lo = splat(-127.0f);
  vf xc = x < lo ? lo : x;
  // Round to the nearest integer n with the 1.5 * 2^23 trick: t's bit pattern is 0x4B400000 + n.
  const vf shifter = splat(12582912.0f);
  vf t = xc + shifter;
  vf n = t - shifter;
  vf f = xc - n;  // in [-0.5, 0.5]
  // Taylor series of 2^f = e^(f ln 2) to degree 7: truncation error < 1e-8 on [-0.5, 0.5].
  vf p = splat(1.525273380405984e-05f);
  p = p * f + 1.5403530393381608e-04f;
  p = p * f + 1.3333558146428443e-03f;
  p = p * f + 9.618129107628477e-03f;
  p = p * f + 5.550410866482158e-02f;
  p = p * f + 2.402265069591007e-01f;
  p = p * f + 6.931471805599453e-01f;
  p = p * f + 1.0f;
  // 2^n as bits: (n + 127) << 23 = (t_bits + 127) << 23 (0x4B400000 << 23 vanishes mod 2^32);
  // n = -127 gives the bits of 0.0f.
  vu bits;
  std::memcpy(&bits, &t, sizeof bits);
  bits = (bits + 127u) << 23;
  vf scale;
  std::memcpy(&scale, &bits, sizeof scale);
  return p * scale;
}

constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;
constexpr float kInf = std::numeric_limits<float>::infinity();

// ---- the block product ----
// Register block of C: kMR rows x kNV vectors. With AVX-512, 6 x 4 = 24 accumulators, 4 vectors
// of B and a broadcast fit the 32 registers; with 16 registers, 6 x 2 + 2 + 1.
constexpr int kMR = 6;
constexpr int kNV = kL == 16 ? 4 : 2;

// C (MR, kL NV) = [C * cscale] + A (MR, K) B (K, kL NV); A(m, k) = A[m ams + k aks].
// accumulate = false ignores C's old values; cscale (kL NV, per column) scales them if given.
template <int MR, int NV>
void micro_kernel(int64_t K, const float* A, int64_t ams, int64_t aks, const float* B,
                  int64_t ldb, float* C, int64_t ldc, bool accumulate, const float* cscale) {
  vf c[MR][NV];
  if (accumulate) {
#pragma GCC unroll 8
    for (int m = 0; m < MR; ++m)
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) {
        c[m][v] = loadv(C + m * ldc + kL * v);
        if (cscale) c[m][v] *= loadv(cscale + kL * v);
      }
  } else {
#pragma GCC unroll 8
    for (int m = 0; m < MR; ++m)
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) c[m][v] = vf{};
  }
  for (int64_t k = 0; k < K; ++k) {
    const float* b = B + k * ldb;
    const float* a = A + k * aks;
    vf bv[NV];
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) bv[v] = loadv(b + kL * v);
#pragma GCC unroll 8
    for (int m = 0; m < MR; ++m) {
      vf av = splat(a[m * ams]);
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) c[m][v] += av * bv[v];
    }
  }
#pragma GCC unroll 8
  for (int m = 0; m < MR; ++m)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) storev(C + m * ldc + kL * v, c[m][v]);
}

using MicroKernel = void (*)(int64_t, const float*, int64_t, int64_t, const float*, int64_t,
                             float*, int64_t, bool, const float*);

template <int MR>
constexpr MicroKernel kernel_for_nv(int nv) {
  switch (nv) {
    case 1: return micro_kernel<MR, 1>;
    case 2: return micro_kernel<MR, 2>;
    case 3: return micro_kernel<MR, 3>;
    default: return micro_kernel<MR, 4>;
  }
}

MicroKernel kernel_for(int mr, int nv) {
  switch (mr) {
    case 1: return kernel_for_nv<1>(nv);
    case 2: return kernel_for_nv<2>(nv);
    case 3: return kernel_for_nv<3>(nv);
    case 4: return kernel_for_nv<4>(nv);
    case 5: return kernel_for_nv<5>(nv);
    case 6: return kernel_for_nv<6>(nv);
    default: fail("attention: bad micro-kernel rows ", mr);
  }
}

// C (M, N) = [C * cscale] + A (M, K) B (K, N), N a multiple of kL, ldb/ldc in floats.
void block_gemm(int64_t M, int64_t N, int64_t K, const float* A, int64_t ams, int64_t aks,
                const float* B, int64_t ldb, float* C, int64_t ldc, bool accumulate,
                const float* cscale = nullptr) {
  for (int64_t n0 = 0; n0 < N; n0 += kL * kNV) {
    int nv = int(std::min<int64_t>(kNV, (N - n0) / kL));
    MicroKernel full = kernel_for(kMR, nv);
    const float* cs = cscale ? cscale + n0 : nullptr;
    int64_t m0 = 0;
    for (; m0 + kMR <= M; m0 += kMR)
      full(K, A + m0 * ams, ams, aks, B + n0, ldb, C + m0 * ldc + n0, ldc, accumulate, cs);
    if (m0 < M)
      kernel_for(int(M - m0), nv)(K, A + m0 * ams, ams, aks, B + n0, ldb, C + m0 * ldc + n0,
                                  ldc, accumulate, cs);
  }
}

// ---- per-thread scratch, kept between calls (64-byte aligned, grows only) ----
struct Scratch {
  float* data = nullptr;
  size_t size = 0;
  ~Scratch() { std::free(data); }
  float* get(size_t n) {
    if (n > size) {
      std::free(data);
      data = nullptr;
      size = 0;
      size_t bytes = (n * sizeof(float) + 63) / 64 * 64;
      data = static_cast<float*>(std::aligned_alloc(64, bytes));
      VACC_CHECK(data != nullptr, "attention: out of memory for ", bytes, " bytes of scratch");
      size = n;
    }
    return data;
  }
};

Scratch& thread_scratch() {
  thread_local Scratch s;
  return s;
}

// A 64-byte aligned heap array of n floats, freed with the owner.
using AlignedFloats = std::unique_ptr<float, decltype(&std::free)>;
AlignedFloats aligned_floats(size_t n) {
  size_t bytes = (n * sizeof(float) + 63) / 64 * 64;
  float* p = static_cast<float*>(std::aligned_alloc(64, bytes ? bytes : 64));
  VACC_CHECK(p != nullptr, "attention: out of memory for ", bytes, " bytes of scratch");
  return AlignedFloats(p, &std::free);
}

// Carves consecutive 64-byte aligned arrays out of one buffer.
struct Carver {
  size_t offset = 0;
  size_t take(size_t n) {
    size_t at = offset;
    offset += (n + 15) / 16 * 16;
    return at;
  }
};

inline int64_t round16(int64_t n) { return (n + 15) / 16 * 16; }

// Keys per tile: a multiple of the micro-kernel's 6 rows (the key-rows products have no tail).
constexpr int64_t kBlockK = 96;
// Queries per head per tile when nh q heads are stacked: about 128 columns in all (wide enough
// for the 64-column micro-kernel, small enough to stay in cache), 16 to 64 queries per head.
// Smaller query blocks also waste less work on the masked half of the diagonal tiles.
inline int64_t block_q(int64_t nh) { return std::clamp<int64_t>(128 / nh / 16 * 16, 16, 64); }
// At most this many q heads are stacked in one tile (larger groups are split into chunks).
constexpr int64_t kMaxStack = 8;

struct Geometry {
  int64_t batch, seq, q_heads, kv_heads, head_dim;
  int64_t width;     // qkv row width
  int64_t group;     // q heads per kv head
  int64_t dp;        // head_dim rounded up to 16
  float scale;       // 1/sqrt(head_dim)
  Geometry(int64_t b, int64_t t, int64_t hq, int64_t hkv, int64_t d)
      : batch(b), seq(t), q_heads(hq), kv_heads(hkv), head_dim(d), width((hq + 2 * hkv) * d),
        group(hq / hkv), dp(round16(d)), scale(1.0f / std::sqrt(float(d))) {}
  int64_t k_col(int64_t g) const { return (q_heads + g) * head_dim; }
  int64_t v_col(int64_t g) const { return (q_heads + kv_heads + g) * head_dim; }
};

// Copies rows [0, n) of a head's D columns of qkv into a contiguous (n, D) array.
void pack_rows(const float* src, int64_t width, int64_t n, int64_t d, float* dst) {
  for (int64_t t = 0; t < n; ++t) std::memcpy(dst + t * d, src + t * width, size_t(d) * 4);
}

// Sets S^T(c, r) = -inf (r < nqp, row stride ld) where key k0 + c comes after query q0 + r.
void causal_mask(float* st, int64_t ld, int64_t nk, int64_t nqp, int64_t k0, int64_t q0) {
  vf iota;
  for (int l = 0; l < kL; ++l) iota[l] = float(l);
  const vf ninf = splat(-kInf);
  for (int64_t c = 0; c < nk; ++c) {
    int64_t key = k0 + c;
    int64_t rend = std::min(nqp, key - q0);  // queries r < key - q0 are masked
    for (int64_t r = 0; r < rend; r += kL) {
      vf q = iota + float(q0 + r);
      vf s = loadv(st + c * ld + r);
      storev(st + c * ld + r, q < float(key) ? ninf : s);
    }
  }
}

// The q heads that share a kv head are stacked side by side as columns of every tile: column
// hh * nqp + r is query q0 + r of q head h0 + hh. They share K_j and V_j, so each product
// streams K_j / V_j once for all of them.

// ---- forward ----
// One task: query block qb (of bq queries) of the q heads [h0, h0 + nh) of sequence b, which
// use kv head kvh; kp and vp hold that kv head's K and V rows contiguously (T, D).
template <typename OutT>
void forward_block(const Geometry& g, const float* qkv, const float* kp, const float* vp,
                   int64_t b, int64_t h0, int64_t nh, int64_t bq, int64_t qb, OutT* out,
                   float* lse) {
  const int64_t D = g.head_dim, W = g.width, T = g.seq;
  const int64_t q0 = qb * bq, nq = std::min(bq, T - q0), nqp = round16(nq);
  const int64_t ncol = nh * nqp;  // tile width: queries of every stacked head
  const int64_t nkeys = q0 + nq;  // causal: keys [0, q0 + nq)
  const float* base = qkv + b * T * W;

  Carver cv;
  size_t o_qt = cv.take(size_t(D * ncol)), o_ot = cv.take(size_t(D * ncol)),
         o_st = cv.take(size_t(kBlockK * ncol)), o_m = cv.take(size_t(ncol)),
         o_l = cv.take(size_t(ncol)), o_a = cv.take(size_t(ncol));
  float* buf = thread_scratch().get(cv.offset);
  float *qt = buf + o_qt, *ot = buf + o_ot, *st = buf + o_st, *m = buf + o_m, *l = buf + o_l,
        *alpha = buf + o_a;

  // Q^T scaled into the log2 domain; padded query columns are zero.
  const float c1 = g.scale * kLog2e;
  std::fill(qt, qt + D * ncol, 0.0f);
  for (int64_t hh = 0; hh < nh; ++hh)
    for (int64_t r = 0; r < nq; ++r) {
      const float* q = base + (q0 + r) * W + (h0 + hh) * D;
      float* col = qt + hh * nqp + r;
      for (int64_t d = 0; d < D; ++d) col[d * ncol] = q[d] * c1;
    }
  std::fill(ot, ot + D * ncol, 0.0f);
  std::fill(m, m + ncol, -kInf);
  std::fill(l, l + ncol, 0.0f);
  const int64_t nv = ncol / kL;

  for (int64_t k0 = 0; k0 < nkeys; k0 += kBlockK) {
    const int64_t nk = std::min(kBlockK, nkeys - k0);
    const float* kj = kp + k0 * D;
    const float* vj = vp + k0 * D;
    block_gemm(nk, ncol, D, kj, D, 1, qt, ncol, st, ncol, false);  // S^T = K_j Q^T
    if (k0 + nk - 1 > q0)
      for (int64_t hh = 0; hh < nh; ++hh) causal_mask(st + hh * nqp, ncol, nk, nqp, k0, q0);
    for (int64_t v = 0; v < nv; ++v) {
      float* sv = st + kL * v;
      vf mold = loadv(m + kL * v), mnew = mold;
      for (int64_t c = 0; c < nk; ++c) mnew = vmax(mnew, loadv(sv + c * ncol));
      vf sum = vf{};
      for (int64_t c = 0; c < nk; ++c) {
        vf p = exp2v(loadv(sv + c * ncol) - mnew);
        storev(sv + c * ncol, p);
        sum += p;
      }
      vf a = exp2v(mold - mnew);
      storev(alpha + kL * v, a);
      storev(l + kL * v, loadv(l + kL * v) * a + sum);
      storev(m + kL * v, mnew);
    }
    // O^T (D, ncol) = O^T * alpha + V_j^T (D, nk) P^T (nk, ncol).
    block_gemm(D, ncol, nk, vj, 1, D, st, ncol, ot, ncol, true, alpha);
  }

  const int64_t out_width = g.q_heads * D;
  for (int64_t hh = 0; hh < nh; ++hh) {
    const int64_t h = h0 + hh;
    for (int64_t r = 0; r < nq; ++r) {
      const int64_t col = hh * nqp + r;
      const float inv = 1.0f / l[col];
      const int64_t row = (b * T + q0 + r) * out_width + h * D;
      for (int64_t d = 0; d < D; ++d) store(out, row + d, ot[d * ncol + col] * inv);
      lse[(b * g.q_heads + h) * T + q0 + r] = (m[col] + std::log2(l[col])) * kLn2;
    }
  }
}

// ---- backward ----
// The q heads [h0, h0 + nh) of sequence b (all using kv head kvh): dQ written into dqkv, dK
// and dV (T, dp) accumulated into dk, dv. kp and vp hold the kv head's K and V rows (T, D).
template <typename IoT>
void backward_heads(const Geometry& g, const IoT* dout, const float* qkv, const IoT* out,
                    const float* lse, int64_t b, int64_t h0, int64_t nh, const float* kp,
                    const float* vp, float* dk, float* dv, float* dqkv) {
  const int64_t D = g.head_dim, W = g.width, T = g.seq, DP = g.dp;
  const int64_t out_width = g.q_heads * D;
  const float* base = qkv + b * T * W;
  const float c1 = g.scale * kLog2e;

  Carver cv;
  const int64_t bq = block_q(nh), CM = nh * bq;  // most columns
  size_t o_qt = cv.take(size_t(D * CM)), o_qs = cv.take(size_t(CM * DP)),
         o_dot = cv.take(size_t(D * CM)), o_do = cv.take(size_t(CM * DP)),
         o_dqt = cv.take(size_t(D * CM)), o_st = cv.take(size_t(kBlockK * CM)),
         o_dpt = cv.take(size_t(kBlockK * CM)), o_di = cv.take(size_t(CM)),
         o_lse = cv.take(size_t(CM));
  float* buf = thread_scratch().get(cv.offset);
  float *qt = buf + o_qt, *qs = buf + o_qs, *dot = buf + o_dot, *dop = buf + o_do,
        *dqt = buf + o_dqt, *st = buf + o_st, *dpt = buf + o_dpt, *di = buf + o_di,
        *lse2 = buf + o_lse;

  for (int64_t q0 = 0; q0 < T; q0 += bq) {
    const int64_t nq = std::min(bq, T - q0), nqp = round16(nq), ncol = nh * nqp;
    const int64_t nv = ncol / kL, nkeys = q0 + nq;
    // Pack Q^T (log2-domain scale), Q (scale), dO^T, dO; D_i; lse in log2 units.
    std::fill(qt, qt + D * ncol, 0.0f);
    std::fill(dot, dot + D * ncol, 0.0f);
    std::fill(qs, qs + ncol * DP, 0.0f);
    std::fill(dop, dop + ncol * DP, 0.0f);
    std::fill(dqt, dqt + D * ncol, 0.0f);
    for (int64_t hh = 0; hh < nh; ++hh) {
      const int64_t h = h0 + hh;
      for (int64_t r = 0; r < nqp; ++r) {
        const int64_t col = hh * nqp + r;
        if (r >= nq) {
          di[col] = 0.0f;
          lse2[col] = kInf;  // P = 0 in padded columns
          continue;
        }
        const float* q = base + (q0 + r) * W + h * D;
        const int64_t orow = (b * T + q0 + r) * out_width + h * D;
        float dsum = 0.0f;
        for (int64_t d = 0; d < D; ++d) {
          const float go = load(dout, orow + d);
          dsum += go * load(out, orow + d);
          qt[d * ncol + col] = q[d] * c1;
          qs[col * DP + d] = q[d] * g.scale;
          dot[d * ncol + col] = go;
          dop[col * DP + d] = go;
        }
        di[col] = dsum;
        lse2[col] = lse[(b * g.q_heads + h) * T + q0 + r] * kLog2e;
      }
    }

    for (int64_t k0 = 0; k0 < nkeys; k0 += kBlockK) {
      const int64_t nk = std::min(kBlockK, nkeys - k0);
      const float* kj = kp + k0 * D;
      const float* vj = vp + k0 * D;
      block_gemm(nk, ncol, D, kj, D, 1, qt, ncol, st, ncol, false);    // S^T = K_j Q^T
      if (k0 + nk - 1 > q0)
        for (int64_t hh = 0; hh < nh; ++hh) causal_mask(st + hh * nqp, ncol, nk, nqp, k0, q0);
      block_gemm(nk, ncol, D, vj, D, 1, dot, ncol, dpt, ncol, false);  // dP^T = V_j dO^T
      for (int64_t c = 0; c < nk; ++c) {
        float* s = st + c * ncol;
        float* dp = dpt + c * ncol;
        for (int64_t v = 0; v < nv; ++v) {
          const vf p = exp2v(loadv(s + kL * v) - loadv(lse2 + kL * v));
          storev(s + kL * v, p);
          storev(dp + kL * v, p * (loadv(dp + kL * v) - loadv(di + kL * v)));  // dS^T
        }
      }
      block_gemm(nk, DP, ncol, st, ncol, 1, dop, DP, dv + k0 * DP, DP, true);   // dV_j += P^T dO
      block_gemm(nk, DP, ncol, dpt, ncol, 1, qs, DP, dk + k0 * DP, DP, true);   // dK_j += dS^T Q
      block_gemm(D, ncol, nk, kj, 1, D, dpt, ncol, dqt, ncol, true);            // dQ^T += K_j^T dS^T
    }
    for (int64_t hh = 0; hh < nh; ++hh)
      for (int64_t r = 0; r < nq; ++r) {
        float* dq = dqkv + (b * T + q0 + r) * W + (h0 + hh) * D;
        const float* col = dqt + hh * nqp + r;
        for (int64_t d = 0; d < D; ++d) dq[d] = col[d * ncol] * g.scale;
      }
  }
}

// Writes accumulated (T, dp) gradients into a head's D columns of dqkv.
void unpack_rows(const float* src, int64_t dp, int64_t n, int64_t d, float* dst, int64_t width) {
  for (int64_t t = 0; t < n; ++t) std::memcpy(dst + t * width, src + t * dp, size_t(d) * 4);
}

int usable_threads() { return omp_in_parallel() ? 1 : omp_get_max_threads(); }

}  // namespace

void attention_forward(const float* qkv, int64_t batch, int64_t seq, int64_t q_heads,
                       int64_t kv_heads, int64_t head_dim, void* out, DType out_dtype,
                       float* lse) {
  const Geometry g(batch, seq, q_heads, kv_heads, head_dim);
  const int64_t T = seq, D = head_dim, W = g.width;
  const int64_t stack = std::min(g.group, kMaxStack);
  const int64_t chunks = (g.group + stack - 1) / stack;  // per kv head
  const int64_t bq = block_q(stack), nblocks = (seq + bq - 1) / bq;
  const int64_t groups = batch * kv_heads;
  // K and V of every (sequence, kv head) packed contiguously first: read in place, the rows'
  // stride (a multiple of 1 KiB for usual shapes) makes them collide in the L1 cache.
  AlignedFloats kv = aligned_floats(size_t(groups * 2 * T * D));
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t bg = 0; bg < groups; ++bg)
    for (int64_t t = 0; t < T; ++t) {
      const int64_t b = bg / kv_heads, kvh = bg % kv_heads;
      const float* row = qkv + (b * T + t) * W;
      float* kp = kv.get() + bg * 2 * T * D;
      std::memcpy(kp + t * D, row + g.k_col(kvh), size_t(D) * 4);
      std::memcpy(kp + (T + t) * D, row + g.v_col(kvh), size_t(D) * 4);
    }
  dispatch_float(out_dtype, [&](auto tag) {
    using OutT = std::remove_pointer_t<decltype(tag)>;
    OutT* o = static_cast<OutT*>(out);
    // One task per (query block, sequence, kv head, chunk of its q heads), the heads stacked;
    // the longest tasks (last query blocks: most keys) first, so dynamic scheduling balances.
    const int64_t per_block = groups * chunks;
#pragma omp parallel for schedule(dynamic, 1)
    for (int64_t task = 0; task < nblocks * per_block; ++task) {
      const int64_t qb = nblocks - 1 - task / per_block, rest = task % per_block;
      const int64_t bg = rest / chunks, chunk = rest % chunks;
      const int64_t b = bg / kv_heads, kvh = bg % kv_heads;
      const int64_t h0 = kvh * g.group + chunk * stack;
      const int64_t nh = std::min(stack, (kvh + 1) * g.group - h0);
      const float* kp = kv.get() + bg * 2 * T * D;
      forward_block(g, qkv, kp, kp + T * D, b, h0, nh, bq, qb, o, lse);
    }
  });
}

void attention_backward(const void* dout, const float* qkv, const void* out, DType io_dtype,
                        const float* lse, int64_t batch, int64_t seq, int64_t q_heads,
                        int64_t kv_heads, int64_t head_dim, float* dqkv) {
  const Geometry g(batch, seq, q_heads, kv_heads, head_dim);
  const int64_t T = seq, D = head_dim, DP = g.dp, W = g.width;
  const int64_t groups = batch * kv_heads;
  const int64_t threads = usable_threads();
  // Tasks are (sequence, kv head, part of its q heads). Each task sums the dK, dV of its heads
  // (in chunks of at most kMaxStack stacked heads) in private (T, dp) arrays. With one part
  // per kv head, the task writes them straight into dqkv; when there are too few kv heads to
  // keep the threads busy, the q heads are split into parts whose partial sums are added
  // afterwards. All tasks of one call cost about the same.
  int64_t parts = 1;
  if (groups % threads != 0 && groups < 4 * threads)
    parts = std::min(g.group, (threads + groups - 1) / groups);
  const int64_t part_heads = (g.group + parts - 1) / parts;
  parts = (g.group + part_heads - 1) / part_heads;
  AlignedFloats partial = aligned_floats(parts > 1 ? size_t(groups * parts * 2 * T * DP) : 0);
  dispatch_float(io_dtype, [&](auto tag) {
    using IoT = std::remove_pointer_t<decltype(tag)>;
    const IoT* dO = static_cast<const IoT*>(dout);
    const IoT* O = static_cast<const IoT*>(out);
#pragma omp parallel for schedule(dynamic, 1)
    for (int64_t task = 0; task < groups * parts; ++task) {
      const int64_t bg = task / parts, part = task % parts;
      const int64_t b = bg / kv_heads, kvh = bg % kv_heads;
      // K, V packed, and dK, dV (own memory: backward_heads uses the thread scratch).
      AlignedFloats mem = aligned_floats(size_t(T * (2 * D + (parts > 1 ? 0 : 2 * DP))));
      float* kp = mem.get();
      float* vp = kp + T * D;
      float* dk = parts > 1 ? partial.get() + task * 2 * T * DP : vp + T * D;
      float* dv = dk + T * DP;
      const float* base = qkv + b * T * W;
      pack_rows(base + g.k_col(kvh), W, T, D, kp);
      pack_rows(base + g.v_col(kvh), W, T, D, vp);
      std::fill(dk, dk + 2 * T * DP, 0.0f);
      const int64_t h_begin = kvh * g.group + part * part_heads;
      const int64_t h_end = std::min(h_begin + part_heads, (kvh + 1) * g.group);
      for (int64_t h0 = h_begin; h0 < h_end; h0 += kMaxStack)
        backward_heads(g, dO, qkv, O, lse, b, h0, std::min(kMaxStack, h_end - h0), kp, vp, dk,
                       dv, dqkv);
      if (parts == 1) {
        float* dbase = dqkv + b * T * W;
        unpack_rows(dk, DP, T, D, dbase + g.k_col(kvh), W);
        unpack_rows(dv, DP, T, D, dbase + g.v_col(kvh), W);
      }
    }
    if (parts == 1) return;
#pragma omp parallel for collapse(2) schedule(static)
    for (int64_t bg = 0; bg < groups; ++bg)
      for (int64_t t = 0; t < T; ++t) {
        const int64_t b = bg / kv_heads, kvh = bg % kv_heads;
        float* drow = dqkv + (b * T + t) * W;
        for (int64_t which = 0; which < 2; ++which) {  // dK, then dV
          float* dst = drow + (which == 0 ? g.k_col(kvh) : g.v_col(kvh));
          const float* src = partial.get() + (bg * parts * 2 + which) * T * DP + t * DP;
          for (int64_t d = 0; d < D; ++d) dst[d] = src[d];
          for (int64_t part = 1; part < parts; ++part)
            for (int64_t d = 0; d < D; ++d) dst[d] += src[part * 2 * T * DP + d];
        }
      }
  });
}

}  // namespace vacc::cpu
