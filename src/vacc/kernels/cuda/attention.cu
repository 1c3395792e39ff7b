// Causal self-attention on the GPU, flash-attention style (tiles of 32 queries x 32 keys in
// shared memory, online softmax, no (T, T) matrix), with grouped-query heads. All arithmetic is
// f32. Correctness first: the products run on CUDA cores, not tensor cores.
//
// Every kernel uses blocks of 4 warps and tiles of kTile = 32 rows, so that a warp's 32 lanes
// map onto the 32 keys (or queries) of a tile when computing scores, and onto the head
// dimensions (d = lane + 32 i, i < NI) when accumulating outputs. Each warp owns 8 rows of
// the block's 32. Shared-memory rows that are read by lane-indexed row (lane * ld + d) use an
// odd stride ld, so those reads do not collide in a bank.
//
// Forward, per (sequence, q head, query tile), key tiles 0..qt:
//   s = (q * scale) . k; m' = max(m, max_tile s); p = exp(s - m'); l = l e^(m - m') + sum p;
//   o = o e^(m - m') + sum p v;  out = o / l;  lse = m + log l.
// Backward, as in FlashAttention but in two kernels so that no two blocks write one element:
//   prep: D_i = rowsum(dO_i * O_i) (and dO in f32 when it is bf16);
//   dK/dV: per (sequence, kv head, key tile) over the group's q heads and query tiles qt >= kt:
//     p = exp(s - lse); ds = p (dO . v - D_i); dV += p dO; dK += ds q (times scale at the end);
//   dQ: per (sequence, q head, query tile) over key tiles kt <= qt: dQ += ds k (times scale).
#include "vacc/core/error.h"
#include "vacc/kernels/cuda/cuda_check.h"
#include "vacc/kernels/cuda/cuda_kernels.h"
#include "vacc/kernels/cuda/device_math.cuh"
#include "vacc/kernels/cuda/launch_with_smem.cuh"

namespace vacc::cuda {
namespace {

constexpr int kTile = 32;
constexpr int kWarps = 4;
constexpr int kThreads = kWarps * 32;
constexpr int kRowsPerWarp = kTile / kWarps;  // 8
constexpr unsigned kFull = 0xffffffffu;

// An odd row stride of at least d floats.
__host__ __device__ inline int odd_stride(int d) { return d + 1 - (d & 1); }

// The tile's rows r in [0, kTile) of one head's D columns of a (rows, width) matrix, zero past
// row `limit`: dst[r * ld + d] = src[(row0 + r) * width + d]. Every thread of the block calls it.
__device__ __forceinline__ void load_tile(const float* src, int64_t width, int64_t row0,
                                          int64_t limit, int D, float* dst, int ld) {
  for (int e = threadIdx.x; e < kTile * D; e += blockDim.x) {
    const int r = e / D, d = e % D;
    const int64_t t = row0 + r;
    dst[r * ld + d] = t < limit ? src[t * width + d] : 0.0f;
  }
}

template <int NI, typename OutT>
__global__ void __launch_bounds__(kThreads)
    attention_forward_kernel(const float* qkv, int64_t T, int Hq, int Hkv, int D, float scale,
                             int64_t num_tiles, int64_t bh_count, OutT* out, float* lse) {
  extern __shared__ float smem[];
  const int ldk = odd_stride(D);
  float* Qs = smem;                // [kTile][D], pre-scaled
  float* Ks = Qs + kTile * D;      // [kTile][ldk]
  float* Vs = Ks + kTile * ldk;    // [kTile][D]
  // The last query tiles (the most keys) are scheduled first.
  const int64_t bh = blockIdx.x % bh_count, qt = num_tiles - 1 - blockIdx.x / bh_count;
  const int64_t b = bh / Hq;
  const int h = int(bh % Hq), g = h / (Hq / Hkv);
  const int64_t W = int64_t(Hq + 2 * Hkv) * D, q0 = qt * kTile;
  const float* base = qkv + b * T * W;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;

  for (int e = threadIdx.x; e < kTile * D; e += blockDim.x) {
    const int r = e / D, d = e % D;
    const int64_t t = q0 + r;
    Qs[r * D + d] = t < T ? base[t * W + int64_t(h) * D + d] * scale : 0.0f;
  }

  float m[kRowsPerWarp], l[kRowsPerWarp], o[kRowsPerWarp][NI];
#pragma unroll
  for (int j = 0; j < kRowsPerWarp; ++j) {
    m[j] = kNegInf;
    l[j] = 0.0f;
#pragma unroll
    for (int i = 0; i < NI; ++i) o[j][i] = 0.0f;
  }

  for (int64_t kt = 0; kt <= qt; ++kt) {
    const int64_t k0 = kt * kTile;
    __syncthreads();  // the previous tile's K, V are no longer read
    load_tile(base + int64_t(Hq + g) * D, W, k0, T, D, Ks, ldk);
    load_tile(base + int64_t(Hq + Hkv + g) * D, W, k0, T, D, Vs, D);
    __syncthreads();
    const int64_t key = k0 + lane;
    const float* krow = Ks + lane * ldk;
#pragma unroll
    for (int j = 0; j < kRowsPerWarp; ++j) {
      const int r = warp * kRowsPerWarp + j;
      const int64_t q = q0 + r;
      if (q >= T) continue;  // the same for the whole warp
      const float* qrow = Qs + r * D;
      float s = 0.0f;
#pragma unroll 4
      for (int d = 0; d < D; ++d) s += qrow[d] * krow[d];
      if (key > q) s = kNegInf;
      const float m_new = fmaxf(m[j], warp_max(s));
      const float p = s == kNegInf ? 0.0f : expf(s - m_new);
      const float alpha = m[j] == kNegInf ? 0.0f : expf(m[j] - m_new);
      l[j] = l[j] * alpha + warp_sum(p);
      m[j] = m_new;
#pragma unroll
      for (int i = 0; i < NI; ++i) o[j][i] *= alpha;
#pragma unroll 4
      for (int src = 0; src < kTile; ++src) {
        const float ps = __shfl_sync(kFull, p, src);
        const float* vrow = Vs + src * D;
#pragma unroll
        for (int i = 0; i < NI; ++i) {
          const int d = lane + 32 * i;
          if (d < D) o[j][i] += ps * vrow[d];
        }
      }
    }
  }

  const int64_t out_width = int64_t(Hq) * D;
#pragma unroll
  for (int j = 0; j < kRowsPerWarp; ++j) {
    const int64_t q = q0 + warp * kRowsPerWarp + j;
    if (q >= T) continue;
    const float inv = 1.0f / l[j];
#pragma unroll
    for (int i = 0; i < NI; ++i) {
      const int d = lane + 32 * i;
      if (d < D) store(out, (b * T + q) * out_width + int64_t(h) * D + d, o[j][i] * inv);
    }
    if (lane == 0) lse[(b * Hq + h) * T + q] = m[j] + logf(l[j]);
  }
}

// One warp per (token row, q head): D_i = sum_d dO * O; dO copied to f32 if dout_f32 is given.
template <typename IoT>
__global__ void attention_backward_prep_kernel(const IoT* dout, const IoT* out, int64_t rows,
                                               int64_t T, int Hq, int D, float* di,
                                               float* dout_f32) {
  const int64_t w = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) >> 5;
  const int lane = threadIdx.x & 31;
  if (w >= rows * Hq) return;  // the whole warp
  const int64_t row = w / Hq;
  const int h = int(w % Hq);
  const int64_t at = row * Hq * D + int64_t(h) * D;
  float s = 0.0f;
  for (int d = lane; d < D; d += 32) {
    const float go = load(dout, at + d);
    s += go * load(out, at + d);
    if (dout_f32) dout_f32[at + d] = go;
  }
  s = warp_sum(s);
  const int64_t b = row / T, t = row % T;
  if (lane == 0) di[(b * Hq + h) * T + t] = s;
}

template <int NI>
__global__ void __launch_bounds__(kThreads)
    attention_dkdv_kernel(const float* qkv, const float* dout, const float* lse, const float* di,
                          int64_t T, int Hq, int Hkv, int D, float scale, int64_t num_tiles,
                          int64_t bg_count, float* dqkv) {
  extern __shared__ float smem[];
  const int ld = odd_stride(D);
  float* Ks = smem;               // [kTile][D]: this block's keys
  float* Vs = Ks + kTile * D;     // [kTile][D]
  float* Qs = Vs + kTile * D;     // [kTile][ld]
  float* dOs = Qs + kTile * ld;   // [kTile][ld]
  // The first key tiles (the most queries) are scheduled first.
  const int64_t bg = blockIdx.x % bg_count, kt = blockIdx.x / bg_count;
  const int64_t b = bg / Hkv;
  const int g = int(bg % Hkv), group = Hq / Hkv;
  const int64_t W = int64_t(Hq + 2 * Hkv) * D, k0 = kt * kTile, out_width = int64_t(Hq) * D;
  const float* base = qkv + b * T * W;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;

  load_tile(base + int64_t(Hq + g) * D, W, k0, T, D, Ks, D);
  load_tile(base + int64_t(Hq + Hkv + g) * D, W, k0, T, D, Vs, D);

  float dk[kRowsPerWarp][NI], dv[kRowsPerWarp][NI];
#pragma unroll
  for (int j = 0; j < kRowsPerWarp; ++j)
#pragma unroll
    for (int i = 0; i < NI; ++i) dk[j][i] = dv[j][i] = 0.0f;

  for (int hh = 0; hh < group; ++hh) {
    const int h = g * group + hh;
    for (int64_t qt = kt; qt < num_tiles; ++qt) {
      const int64_t q0 = qt * kTile;
      __syncthreads();  // the previous tile's Q, dO are no longer read
      load_tile(base + int64_t(h) * D, W, q0, T, D, Qs, ld);
      load_tile(dout + b * T * out_width + int64_t(h) * D, out_width, q0, T, D, dOs, ld);
      __syncthreads();
      const int64_t q = q0 + lane;
      const bool valid = q < T;
      const float lse_q = valid ? lse[(b * Hq + h) * T + q] : 0.0f;
      const float di_q = valid ? di[(b * Hq + h) * T + q] : 0.0f;
      const float* qrow = Qs + lane * ld;
      const float* dorow = dOs + lane * ld;
#pragma unroll
      for (int j = 0; j < kRowsPerWarp; ++j) {
        const int kr = warp * kRowsPerWarp + j;
        const int64_t key = k0 + kr;
        if (key >= T) continue;  // the same for the whole warp
        const float* krow = Ks + kr * D;
        const float* vrow = Vs + kr * D;
        float s = 0.0f, dp = 0.0f;
#pragma unroll 4
        for (int d = 0; d < D; ++d) {
          s += qrow[d] * krow[d];
          dp += dorow[d] * vrow[d];
        }
        const float p = valid && q >= key ? expf(s * scale - lse_q) : 0.0f;
        const float ds = p * (dp - di_q);
#pragma unroll 4
        for (int src = 0; src < kTile; ++src) {
          const float ps = __shfl_sync(kFull, p, src);
          const float dss = __shfl_sync(kFull, ds, src);
          const float* qr = Qs + src * ld;
          const float* dor = dOs + src * ld;
#pragma unroll
          for (int i = 0; i < NI; ++i) {
            const int d = lane + 32 * i;
            if (d < D) {
              dv[j][i] += ps * dor[d];
              dk[j][i] += dss * qr[d];
            }
          }
        }
      }
    }
  }

#pragma unroll
  for (int j = 0; j < kRowsPerWarp; ++j) {
    const int64_t key = k0 + warp * kRowsPerWarp + j;
    if (key >= T) continue;
    float* row = dqkv + (b * T + key) * W;
#pragma unroll
    for (int i = 0; i < NI; ++i) {
      const int d = lane + 32 * i;
      if (d < D) {
        row[int64_t(Hq + g) * D + d] = dk[j][i] * scale;
        row[int64_t(Hq + Hkv + g) * D + d] = dv[j][i];
      }
    }
  }
}

template <int NI>
__global__ void __launch_bounds__(kThreads)
    attention_dq_kernel(const float* qkv, const float* dout, const float* lse, const float* di,
                        int64_t T, int Hq, int Hkv, int D, float scale, int64_t num_tiles,
                        int64_t bh_count, float* dqkv) {
  extern __shared__ float smem[];
  const int ld = odd_stride(D);
  float* Qs = smem;               // [kTile][D]: this block's queries
  float* dOs = Qs + kTile * D;    // [kTile][D]
  float* Ks = dOs + kTile * D;    // [kTile][ld]
  float* Vs = Ks + kTile * ld;    // [kTile][ld]
  const int64_t bh = blockIdx.x % bh_count, qt = num_tiles - 1 - blockIdx.x / bh_count;
  const int64_t b = bh / Hq;
  const int h = int(bh % Hq), g = h / (Hq / Hkv);
  const int64_t W = int64_t(Hq + 2 * Hkv) * D, q0 = qt * kTile, out_width = int64_t(Hq) * D;
  const float* base = qkv + b * T * W;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;

  load_tile(base + int64_t(h) * D, W, q0, T, D, Qs, D);
  load_tile(dout + b * T * out_width + int64_t(h) * D, out_width, q0, T, D, dOs, D);

  float dq[kRowsPerWarp][NI], lse_r[kRowsPerWarp], di_r[kRowsPerWarp];
#pragma unroll
  for (int j = 0; j < kRowsPerWarp; ++j) {
    const int64_t q = q0 + warp * kRowsPerWarp + j;
    lse_r[j] = q < T ? lse[(b * Hq + h) * T + q] : 0.0f;
    di_r[j] = q < T ? di[(b * Hq + h) * T + q] : 0.0f;
#pragma unroll
    for (int i = 0; i < NI; ++i) dq[j][i] = 0.0f;
  }

  for (int64_t kt = 0; kt <= qt; ++kt) {
    const int64_t k0 = kt * kTile;
    __syncthreads();  // the previous tile's K, V are no longer read (and Q, dO are loaded)
    load_tile(base + int64_t(Hq + g) * D, W, k0, T, D, Ks, ld);
    load_tile(base + int64_t(Hq + Hkv + g) * D, W, k0, T, D, Vs, ld);
    __syncthreads();
    const int64_t key = k0 + lane;
    const float* krow = Ks + lane * ld;
    const float* vrow = Vs + lane * ld;
#pragma unroll
    for (int j = 0; j < kRowsPerWarp; ++j) {
      const int r = warp * kRowsPerWarp + j;
      const int64_t q = q0 + r;
      if (q >= T) continue;  // the same for the whole warp
      const float* qrow = Qs + r * D;
      const float* dorow = dOs + r * D;
      float s = 0.0f, dp = 0.0f;
#pragma unroll 4
      for (int d = 0; d < D; ++d) {
        s += qrow[d] * krow[d];
        dp += dorow[d] * vrow[d];
      }
      const float p = key <= q ? expf(s * scale - lse_r[j]) : 0.0f;
      const float ds = p * (dp - di_r[j]);
#pragma unroll 4
      for (int src = 0; src < kTile; ++src) {
        const float dss = __shfl_sync(kFull, ds, src);
        const float* kr = Ks + src * ld;
#pragma unroll
        for (int i = 0; i < NI; ++i) {
          const int d = lane + 32 * i;
          if (d < D) dq[j][i] += dss * kr[d];
        }
      }
    }
  }

#pragma unroll
  for (int j = 0; j < kRowsPerWarp; ++j) {
    const int64_t q = q0 + warp * kRowsPerWarp + j;
    if (q >= T) continue;
    float* row = dqkv + (b * T + q) * W + int64_t(h) * D;
#pragma unroll
    for (int i = 0; i < NI; ++i) {
      const int d = lane + 32 * i;
      if (d < D) row[d] = dq[j][i] * scale;
    }
  }
}

// Calls fn with std::integral_constant<int, NI>: the per-lane column count for head_dim.
template <typename Fn>
void dispatch_ni(int64_t head_dim, Fn&& fn) {
  VACC_CHECK(head_dim > 0 && head_dim <= kMaxHeadDim, "attention: head_dim ", head_dim,
             " is not supported by the CUDA kernels (at most ", kMaxHeadDim, ")");
  if (head_dim <= 64)
    fn(std::integral_constant<int, 2>());
  else if (head_dim <= 128)
    fn(std::integral_constant<int, 4>());
  else
    fn(std::integral_constant<int, 8>());
}

size_t align256(size_t bytes) { return (bytes + 255) / 256 * 256; }

}  // namespace

void attention_forward(const float* qkv, int64_t batch, int64_t seq, int64_t q_heads,
                       int64_t kv_heads, int64_t head_dim, void* out, DType out_dtype, float* lse,
                       cudaStream_t stream) {
  const int D = int(head_dim);
  const int64_t num_tiles = (seq + kTile - 1) / kTile, bh = batch * q_heads;
  const size_t smem = sizeof(float) * size_t(kTile) * size_t(2 * D + odd_stride(D));
  const float scale = 1.0f / sqrtf(float(D));
  dispatch_ni(head_dim, [&](auto ni) {
    constexpr int NI = decltype(ni)::value;
    if (out_dtype == DType::F32)
      launch_with_smem<kThreads>(attention_forward_kernel<NI, float>, "attention_forward_kernel",
                                 num_tiles * bh, smem, stream, qkv, seq, int(q_heads),
                                 int(kv_heads), D, scale, num_tiles, bh, static_cast<float*>(out),
                                 lse);
    else if (out_dtype == DType::BF16)
      launch_with_smem<kThreads>(attention_forward_kernel<NI, bf16>, "attention_forward_kernel",
                                 num_tiles * bh, smem, stream, qkv, seq, int(q_heads),
                                 int(kv_heads), D, scale, num_tiles, bh, static_cast<bf16*>(out),
                                 lse);
    else
      fail("attention_forward: out must be f32 or bf16, got ", dtype_name(out_dtype));
  });
}

size_t attention_backward_scratch_bytes(int64_t batch, int64_t seq, int64_t q_heads,
                                        int64_t head_dim, DType io_dtype) {
  const size_t di = align256(sizeof(float) * size_t(batch * q_heads * seq));
  const size_t dout = io_dtype == DType::F32 ? 0 : sizeof(float) * size_t(batch * seq * q_heads * head_dim);
  return di + dout;
}

void attention_backward(const void* dout, const float* qkv, const void* out, DType io_dtype,
                        const float* lse, int64_t batch, int64_t seq, int64_t q_heads,
                        int64_t kv_heads, int64_t head_dim, float* dqkv, void* scratch,
                        cudaStream_t stream) {
  const int D = int(head_dim);
  const int64_t rows = batch * seq;
  float* di = static_cast<float*>(scratch);
  float* dout_f32 = io_dtype == DType::F32
                        ? nullptr
                        : reinterpret_cast<float*>(static_cast<char*>(scratch) +
                                                   align256(sizeof(float) * size_t(rows * q_heads)));
  const unsigned prep_blocks = grid_for(rows * q_heads * 32, 256, int64_t(1) << 30);
  if (io_dtype == DType::F32)
    attention_backward_prep_kernel<<<prep_blocks, 256, 0, stream>>>(
        static_cast<const float*>(dout), static_cast<const float*>(out), rows, seq, int(q_heads),
        D, di, nullptr);
  else if (io_dtype == DType::BF16)
    attention_backward_prep_kernel<<<prep_blocks, 256, 0, stream>>>(
        static_cast<const bf16*>(dout), static_cast<const bf16*>(out), rows, seq, int(q_heads), D,
        di, dout_f32);
  else
    fail("attention_backward: out and dout must be f32 or bf16, got ", dtype_name(io_dtype));
  VACC_CUDA_CHECK_LAUNCH("attention_backward_prep_kernel");
  const float* dO = dout_f32 ? dout_f32 : static_cast<const float*>(dout);

  const int64_t num_tiles = (seq + kTile - 1) / kTile;
  const size_t smem = sizeof(float) * size_t(kTile) * size_t(2 * D + 2 * odd_stride(D));
  const float scale = 1.0f / sqrtf(float(D));
  dispatch_ni(head_dim, [&](auto ni) {
    constexpr int NI = decltype(ni)::value;
    launch_with_smem<kThreads>(attention_dkdv_kernel<NI>, "attention_dkdv_kernel",
                               num_tiles * batch * kv_heads, smem, stream, qkv, dO, lse,
                               static_cast<const float*>(di), seq, int(q_heads), int(kv_heads), D,
                               scale, num_tiles, batch * kv_heads, dqkv);
    launch_with_smem<kThreads>(attention_dq_kernel<NI>, "attention_dq_kernel",
                               num_tiles * batch * q_heads, smem, stream, qkv, dO, lse,
                               static_cast<const float*>(di), seq, int(q_heads), int(kv_heads), D,
                               scale, num_tiles, batch * q_heads, dqkv);
  });
}

}  // namespace vacc::cuda
