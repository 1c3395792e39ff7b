// Causal self-attention on the tensor cores, FlashAttention-2 style: no (T, T) matrix in memory,
// grouped-query heads, head_dim 64 or 128. The path of bf16 (mixed-precision) attention; see
// attention_route.h for when it is taken.
//
// Q, K and V are rounded to bf16 as they are loaded from the f32 qkv rows; the products run as
// m16n8k16 bf16 mma's (mma_bf16.cuh) accumulating in f32; softmax statistics are f32; the
// probabilities P are rounded to bf16 before the P V product, as FlashAttention does.
//
// Blocks of 4 warps. A warp owns 16 rows (one mma's M) of the block's 64-row tile, so a row's
// softmax needs only the 4 lanes of a quad (lanes 4g..4g+3 hold row g of every accumulator).
// Shared tiles are row-major bf16 rows padded by kPad elements: the row stride is then 4 words
// (mod 32), so an ldmatrix phase (8 rows x 4 words) touches 32 different banks. Fragments come
// from the tiles by ldmatrix (mma_bf16.cuh); an operand needed with its pairs of elements along
// a column (V in P V, Q and dO in dK and dV, K in dQ) by ldmatrix's transposing form, so no tile
// is stored twice.
//
// The element-wise work between the products is kept to what FlashAttention-2 does, since it,
// not the tensor cores, bounded these kernels (about 25 instructions per mma in the forward's
// tile before): exponentials as one `ex2` of an FMA (the scale and log2(e) folded in, lse kept in
// log2 units where it is read per element), P and dS rounded by one paired conversion, and the
// causal mask (in 32-bit offsets) only on the tiles that reach the diagonal or T; the forward's
// tiles before the diagonal are a separate loop with no branch around an mma.
// bench/kernel_instruction_mix.py counts the instructions per tile.
//
// Forward, per (sequence, q head, query tile of 64), key tiles kt <= qt:
//   S = Q K^T * scale; m' = max(m, rowmax S); P = exp(S - m'); l = l e^(m - m') + rowsum P;
//   O = O e^(m - m') + bf16(P) V;  out = O / l;  lse = m + log l (natural log, (B, Hq, T)).
// Backward, as in FlashAttention-2 but deterministic (two kernels, no atomics):
//   prep: D_i = rowsum(dO_i * O_i);
//   dK/dV: per (sequence, q head, 64 keys) over query tiles of 32. With grouped heads each q
//   head's share goes to an f32 partial buffer and a last kernel sums a group's shares in a
//   fixed order: a block per kv head would leave the GPU idle (at 7 q heads per kv head, 2 kv
//   heads and batch 8: 256 blocks, the first of them 7 x 32 query tiles long);
//   dQ: per (sequence, q head, 64 queries) over key tiles of 32 (S and dP computed again).
#include "vacc/kernels/cuda/attention_flash_mma.h"

#include <type_traits>

#include "vacc/core/error.h"
#include "vacc/kernels/cuda/cuda_check.h"
#include "vacc/kernels/cuda/cp_async.cuh"
#include "vacc/kernels/cuda/cuda_kernels.h"
#include "vacc/kernels/cuda/device_math.cuh"
#include "vacc/kernels/cuda/launch_with_smem.cuh"
#include "vacc/kernels/cuda/mma_bf16.cuh"

namespace vacc::cuda {
namespace {

constexpr int kWarps = 4;
constexpr int kThreads = kWarps * 32;
constexpr int kWarpRows = 16;                  // an mma's M
constexpr int kTile = kWarps * kWarpRows;      // 64 rows of queries (forward) or keys
constexpr int kPad = 8;                        // bf16 elements after each shared row

// The A fragment of the 16x16 block at (r0, c0) of a row-major bf16 tile: matrices (r0, c0),
// (r0 + 8, c0), (r0, c0 + 8), (r0 + 8, c0 + 8) are a[0..3].
__device__ __forceinline__ void load_a(uint32_t a[4], const uint16_t* tile, int stride, int r0,
                                       int c0) {
  const int lane = threadIdx.x & 31, i = lane >> 3;
  ldmatrix_x4(a, tile + (r0 + (lane & 7) + 8 * (i & 1)) * stride + c0 + 8 * (i >> 1));
}

// The B fragments of two groups of 8 columns, n0 and n0 + 8, over k0..k0+15, from a tile holding
// B transposed (row n of the tile is column n of B, so its k pairs are adjacent): matrices
// (n0, k0), (n0, k0 + 8) are b0, (n0 + 8, k0), (n0 + 8, k0 + 8) are b1.
__device__ __forceinline__ void load_b_pair(uint32_t b0[2], uint32_t b1[2], const uint16_t* tile_t,
                                            int stride, int n0, int k0) {
  const int lane = threadIdx.x & 31, i = lane >> 3;
  uint32_t r[4];
  ldmatrix_x4(r, tile_t + (n0 + (lane & 7) + 8 * (i >> 1)) * stride + k0 + 8 * (i & 1));
  b0[0] = r[0], b0[1] = r[1], b1[0] = r[2], b1[1] = r[3];
}

// The same two B fragments from a row-major tile of B itself (row k, column n), transposed by
// ldmatrix: matrices (k0, n0), (k0 + 8, n0) are b0, (k0, n0 + 8), (k0 + 8, n0 + 8) are b1.
__device__ __forceinline__ void load_b_pair_rows(uint32_t b0[2], uint32_t b1[2],
                                                 const uint16_t* tile, int stride, int k0,
                                                 int n0) {
  const int lane = threadIdx.x & 31, i = lane >> 3;
  uint32_t r[4];
  ldmatrix_x4_trans(r, tile + (k0 + (lane & 7) + 8 * (i & 1)) * stride + n0 + 8 * (i >> 1));
  b0[0] = r[0], b0[1] = r[1], b1[0] = r[2], b1[1] = r[3];
}

// Whether rows of `width` elements from `src` can be read four at a time (16-byte f32, 8-byte
// bf16 loads): the same answer in every thread of the block.
template <typename SrcT>
__device__ __forceinline__ bool rows_vec4(const SrcT* src, int64_t width) {
  return width % 4 == 0 && reinterpret_cast<uintptr_t>(src) % (4 * sizeof(SrcT)) == 0;
}

// Whether rows of bf16 can be copied 16 bytes (eight elements) at a time: always the packed
// qkv. A shared row is (D + kPad) * 2 bytes, a multiple of 16.
template <typename SrcT>
__device__ __forceinline__ bool copyable_bf16_rows(const SrcT* src, int64_t width) {
  if constexpr (std::is_same_v<SrcT, bf16>)
    return width % 8 == 0 && reinterpret_cast<uintptr_t>(src) % 16 == 0;
  return false;
}

// Calls copy(r, c, t, valid) for this thread's 16-byte pieces of a tile of Rows x D bf16: tile
// row r, columns c..c+7, from source row t = row0 + r, which exists when valid (t < limit).
template <int D, int Rows, typename Copy>
__device__ __forceinline__ void for_each_piece(int64_t row0, int64_t limit, Copy&& copy) {
#pragma unroll 2
  for (int e = threadIdx.x; e < Rows * D / 8; e += kThreads) {
    const int r = e / (D / 8), c = 8 * (e % (D / 8));
    const int64_t t = row0 + r;
    copy(r, c, t, t < limit);
  }
}

// tile[r][c] = bf16(src[(row0 + r) * width + c]) for r < Rows, c < D; zero from row `limit`.
// Every thread of the block calls it.
template <int D, int Rows, typename SrcT>
__device__ __forceinline__ void load_rows(const SrcT* src, int64_t width, int64_t row0,
                                          int64_t limit, uint16_t* tile, int stride) {
  if (copyable_bf16_rows(src, width)) {  // already bf16: copied, not converted
    for_each_piece<D, Rows>(row0, limit, [&](int r, int c, int64_t t, bool valid) {
      *reinterpret_cast<uint4*>(tile + r * stride + c) =
          valid ? *reinterpret_cast<const uint4*>(src + t * width + c) : uint4{0u, 0u, 0u, 0u};
    });
    return;
  }
  if (rows_vec4(src, width)) {
    // Four columns per thread: one wide load, one 8-byte shared store (stride and c even).
    for (int e = threadIdx.x; e < Rows * D / 4; e += kThreads) {
      const int r = e / (D / 4), c = 4 * (e % (D / 4));
      const int64_t t = row0 + r;
      const Vec4 v = t < limit ? load4(src + t * width + c, 0) : Vec4{0.0f, 0.0f, 0.0f, 0.0f};
      *reinterpret_cast<uint2*>(tile + r * stride + c) =
          uint2{pack_bf16x2(v.x, v.y), pack_bf16x2(v.z, v.w)};
    }
    return;
  }
  for (int e = threadIdx.x; e < Rows * D / 2; e += kThreads) {
    const int r = e / (D / 2), c = 2 * (e % (D / 2));
    const int64_t t = row0 + r;
    float lo = 0.0f, hi = 0.0f;
    if (t < limit) {
      lo = load(src, t * width + c);
      hi = load(src, t * width + c + 1);
    }
    *reinterpret_cast<uint32_t*>(tile + r * stride + c) = pack_bf16x2(lo, hi);
  }
}

// Starts loading the same rows as load_rows: by cp.async where the source is bf16 rows the copies
// can take (16-byte aligned, width a multiple of 8: always the packed qkv), else at once through
// load_rows. The caller commits, waits and synchronises before reading the tile.
template <int D, int Rows, typename SrcT>
__device__ __forceinline__ void stage_rows(const SrcT* src, int64_t width, int64_t row0,
                                           int64_t limit, uint16_t* tile, int stride) {
  if (copyable_bf16_rows(src, width)) {
    for_each_piece<D, Rows>(row0, limit, [&](int r, int c, int64_t t, bool valid) {
      cp_async_16(tile + r * stride + c, valid ? src + t * width + c : src, valid);
    });
    return;
  }
  load_rows<D, Rows>(src, width, row0, limit, tile, stride);
}

// One turn of a double-buffered loop over K and V tiles of Rows rows: with a next tile (from
// source row `next_row0`), starts its copies into the free buffers and waits for all but them;
// without, waits for everything. The caller then synchronises before reading this tile.
template <int D, int Rows>
__device__ __forceinline__ void prefetch_kv(bool has_next, const bf16* k_src, const bf16* v_src,
                                            int64_t width, int64_t next_row0, int64_t limit,
                                            uint16_t* next_k, uint16_t* next_v, int stride) {
  if (has_next) {
    stage_rows<D, Rows>(k_src, width, next_row0, limit, next_k, stride);
    stage_rows<D, Rows>(v_src, width, next_row0, limit, next_v, stride);
    cp_async_commit();
    cp_async_wait<1>();  // all but the next tile's copies: this tile is in
  } else {
    cp_async_wait<0>();
  }
}

// Two adjacent groups of 8 accumulator columns (groups 2k and 2k+1), rounded to bf16, as the A
// fragment of those 16 columns: the C layout of the pair is exactly A's layout of its 16 k.
struct AFragment {
  uint32_t r[4];
};
__device__ __forceinline__ AFragment accumulators_as_a(const float (&lo)[4],
                                                       const float (&hi)[4]) {
  return {{pack_bf16x2(lo[0], lo[1]), pack_bf16x2(lo[2], lo[3]), pack_bf16x2(hi[0], hi[1]),
           pack_bf16x2(hi[2], hi[3])}};
}

// The A fragments (D/16 of them) of the warp's 16 rows of a tile that stays in shared memory for
// the whole block (K and V in dK/dV, Q and dO in dQ): with Held, loaded once into registers (D/4
// of them), which saves their ldmatrix on every inner tile; else read at each use.
template <int D, bool Held>
struct RowFragments {
  uint32_t held[Held ? D / 16 : 1][4];
  const uint16_t* tile;
  int stride, row;

  // Every thread of the block calls it once the tile is in shared memory for all of them.
  __device__ __forceinline__ RowFragments(const uint16_t* t, int tile_stride, int first_row)
      : tile(t), stride(tile_stride), row(first_row) {
    if constexpr (Held) {
#pragma unroll
      for (int kd = 0; kd < D / 16; ++kd) load_a(held[kd], tile, stride, row, kd * 16);
    }
  }
  // The fragment of columns [16 kd, 16 kd + 16).
  __device__ __forceinline__ void get(int kd, uint32_t (&a)[4]) const {
    if constexpr (Held) {
#pragma unroll
      for (int i = 0; i < 4; ++i) a[i] = held[kd][i];
    } else {
      load_a(a, tile, stride, row, kd * 16);
    }
  }
};

// The backward's two products of one step, zeroed first: for the warp's 16 rows of A1 and A2
// and the Groups x 8 rows of B1 and B2 (tiles of stride `stride`), over D columns:
// acc1[j] = A1 B1[j]^T, acc2[j] = A2 B2[j]^T. (dK/dV: S^T and dP^T from K, V against Q, dO;
// dQ: S and dP from Q, dO against K, V.)
template <int D, int Groups, bool Held>
__device__ __forceinline__ void paired_products(float (&acc1)[Groups][4], float (&acc2)[Groups][4],
                                                const RowFragments<D, Held>& a1,
                                                const RowFragments<D, Held>& a2,
                                                const uint16_t* b1, const uint16_t* b2,
                                                int stride) {
#pragma unroll
  for (int j = 0; j < Groups; ++j)
#pragma unroll
    for (int i = 0; i < 4; ++i) acc1[j][i] = acc2[j][i] = 0.0f;
#pragma unroll
  for (int kd = 0; kd < D / 16; ++kd) {
    uint32_t fa1[4], fa2[4];
    a1.get(kd, fa1);
    a2.get(kd, fa2);
#pragma unroll
    for (int j = 0; j < Groups; j += 2) {
      uint32_t f1[2], f1_next[2], f2[2], f2_next[2];
      load_b_pair(f1, f1_next, b1, stride, j * 8, kd * 16);
      mma_m16n8k16_bf16(acc1[j], fa1, f1, acc1[j]);
      mma_m16n8k16_bf16(acc1[j + 1], fa1, f1_next, acc1[j + 1]);
      load_b_pair(f2, f2_next, b2, stride, j * 8, kd * 16);
      mma_m16n8k16_bf16(acc2[j], fa2, f2, acc2[j]);
      mma_m16n8k16_bf16(acc2[j + 1], fa2, f2_next, acc2[j + 1]);
    }
  }
}

// Quad (4 lanes of one accumulator row) reductions.
__device__ __forceinline__ float quad_max(float v) {
  v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 1));
  return fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 2));
}
__device__ __forceinline__ float quad_sum(float v) {
  v += __shfl_xor_sync(0xffffffffu, v, 1);
  return v + __shfl_xor_sync(0xffffffffu, v, 2);
}

// Blocks per SM the forward is compiled for: 3 (168 registers) at head_dim 64, 2 (239) at 128.
// With 4 and 3 (128 and 168 registers) the compiler spilled 68-80 bytes a thread once the tile's
// element-wise work had been cut down (it keeps more fragments in flight); on an H200 the 4-block
// variant ran 0.102 ms a layer against 0.104 at head_dim 64, within the noise of a change.
template <int D, typename OutT>
__global__ void __launch_bounds__(kThreads, D == 64 ? 3 : 2)
    flash_mma_forward_kernel(const bf16* qkv, int64_t T, int Hq, int Hkv, float scale,
                             int64_t num_tiles, int64_t bh_count, OutT* out, float* lse,
                             bf16* out_bf16) {
  constexpr int kStride = D + kPad;
  constexpr int kDimSteps = D / 16, kKeyGroups = kTile / 8, kOutGroups = D / 8;
  extern __shared__ uint4 flash_smem[];  // uint4: 16-byte aligned (the bf16 tile copies)
  // Two buffers of K and V tiles ([kTile][kStride] each): key tile kt in buffer kt % 2, the
  // next one loading while this one is used. Q passes through K's buffer 1 first.
  uint16_t* const tiles = reinterpret_cast<uint16_t*>(flash_smem);
  // (Computed, not an array of pointers: indexing that by a variable puts it in local memory.)
  auto Ks = [=](int i) { return tiles + i * 2 * kTile * kStride; };
  auto Vs = [=](int i) { return tiles + (2 * i + 1) * kTile * kStride; };
  // The last query tiles (the most keys) are scheduled first.
  const int64_t bh = blockIdx.x % bh_count, qt = num_tiles - 1 - blockIdx.x / bh_count;
  const int64_t b = bh / Hq;
  const int h = int(bh % Hq), g = h / (Hq / Hkv);
  const int64_t W = int64_t(Hq + 2 * Hkv) * D, q0 = qt * kTile;
  const bf16* base = qkv + b * T * W;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, quad_col = 2 * (lane & 3);
  // Positions in the sequence in 32 bits (the host checks T < 2^31): registers are what limits
  // this kernel's occupancy.
  const int seq = int(T);
  const int row_lo = int(q0) + warp * kWarpRows + (lane >> 2), row_hi = row_lo + 8;
  const int warp_last_row = int(q0) + warp * kWarpRows + kWarpRows - 1;
  const float scale_log2 = scale * kLog2e;

  const bf16* k_src = base + int64_t(Hq + g) * D;
  const bf16* v_src = base + int64_t(Hq + Hkv + g) * D;
  stage_rows<D, kTile>(k_src, W, 0, T, Ks(0), kStride);
  stage_rows<D, kTile>(v_src, W, 0, T, Vs(0), kStride);
  cp_async_commit();

  // The warp's 16 query rows stay in registers as A fragments.
  uint32_t qa[kDimSteps][4];
  load_rows<D, kTile>(base + int64_t(h) * D, W, q0, T, Ks(1), kStride);
  __syncthreads();
#pragma unroll
  for (int kd = 0; kd < kDimSteps; ++kd)
    load_a(qa[kd], Ks(1), kStride, warp * kWarpRows, kd * 16);

  float o[kOutGroups][4], m[2] = {kNegInf, kNegInf}, l[2] = {0.0f, 0.0f};
#pragma unroll
  for (int n = 0; n < kOutGroups; ++n) o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.0f;

  // One key tile, held in buffer buf: S, the online softmax and O += P V. Compiled twice: for
  // the tiles before the diagonal, with every key visible and no branch (a branch around an
  // mma costs a warp synchronisation and keeps the compiler from interleaving), and for the
  // diagonal tile, which masks and skips the groups of keys after the warp's rows.
  auto tile = [&](int k0, int buf, auto diagonal_tag) {
    constexpr bool kDiagonal = decltype(diagonal_tag)::value;
    // Whole mma steps of 16 keys the warp's rows can see, the same for the whole warp.
    int key_steps = kTile / 16;
    if constexpr (kDiagonal) {
      const int visible_steps = (warp_last_row - k0) / 16 + 1;
      key_steps = visible_steps < kTile / 16 ? visible_steps : kTile / 16;
    }
    const int key_groups = 2 * key_steps;

    float s[kKeyGroups][4];
#pragma unroll
    for (int j = 0; j < kKeyGroups; ++j) s[j][0] = s[j][1] = s[j][2] = s[j][3] = 0.0f;
#pragma unroll
    for (int kd = 0; kd < kDimSteps; ++kd)
#pragma unroll
      for (int j = 0; j < kKeyGroups; j += 2)
        if (!kDiagonal || j < key_groups) {  // key_groups is even
          uint32_t kb[2], kb_next[2];
          load_b_pair(kb, kb_next, Ks(buf), kStride, j * 8, kd * 16);
          mma_m16n8k16_bf16(s[j], qa[kd], kb, s[j]);
          mma_m16n8k16_bf16(s[j + 1], qa[kd], kb_next, s[j + 1]);
        }

    // Mask the keys after each row (and past T): only the diagonal tile has any (the last key
    // tile of the sequence is the last query tile's diagonal), and there also the groups not
    // computed (their keys follow the warp's last row). Relative offsets in 32 bits: key
    // j*8 + quad_col + (i&1) of the tile is visible to row r when at most last[r] (the row's
    // offset from k0, or T-1's when less).
    if constexpr (kDiagonal) {
      const int last[2] = {(row_lo < seq ? row_lo : seq - 1) - k0,
                           (row_hi < seq ? row_hi : seq - 1) - k0};
#pragma unroll
      for (int j = 0; j < kKeyGroups; ++j)
#pragma unroll
        for (int i = 0; i < 4; ++i)
          if (j * 8 + quad_col + (i & 1) > last[i >> 1]) s[j][i] = kNegInf;
    }
    // Row maxima of the raw scores (scale > 0 keeps the order); every row sees key k0
    // (k0 <= q0 <= row and k0 < T), so m_new is finite. The exponentials are exp2 of the raw
    // scores times scale log2(e), the subtraction folded into one FMA.
    float mx[2] = {kNegInf, kNegInf};
#pragma unroll
    for (int j = 0; j < kKeyGroups; ++j)
#pragma unroll
      for (int i = 0; i < 4; ++i) mx[i >> 1] = fmaxf(mx[i >> 1], s[j][i]);
    float alpha[2], m_scaled[2];
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      const float m_new = fmaxf(m[r], quad_max(mx[r]));
      alpha[r] = fast_exp2((m[r] - m_new) * scale_log2);  // 0 on the first tile (m = -inf)
      m[r] = m_new;
      m_scaled[r] = m_new * scale_log2;
      l[r] *= alpha[r];
    }
#pragma unroll
    for (int j = 0; j < kKeyGroups; ++j)
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const float p = fast_exp2(fmaf(s[j][i], scale_log2, -m_scaled[i >> 1]));  // 0 if masked
        s[j][i] = p;
        l[i >> 1] += p;  // this lane's part of the row sum; the quad's are added at the end
      }
#pragma unroll
    for (int n = 0; n < kOutGroups; ++n) {
      o[n][0] *= alpha[0];
      o[n][1] *= alpha[0];
      o[n][2] *= alpha[1];
      o[n][3] *= alpha[1];
    }

    // O += P V: the accumulators of key groups 2kk and 2kk+1 are exactly the A fragment of
    // keys [16 kk, 16 kk + 16).
#pragma unroll
    for (int kk = 0; kk < kTile / 16; ++kk)
      if (!kDiagonal || kk < key_steps) {
        const AFragment pa = accumulators_as_a(s[2 * kk], s[2 * kk + 1]);
#pragma unroll
        for (int n = 0; n < kOutGroups; n += 2) {
          uint32_t vb[2], vb_next[2];
          load_b_pair_rows(vb, vb_next, Vs(buf), kStride, kk * 16, n * 8);
          mma_m16n8k16_bf16(o[n], pa.r, vb, o[n]);
          mma_m16n8k16_bf16(o[n + 1], pa.r, vb_next, o[n + 1]);
        }
      }
  };

  // Key tile kt into buffer kt % 2 for every thread, the next one's copies started.
  auto wait_for_tile = [&](int64_t kt) {
    const int buf = int(kt & 1);
    __syncthreads();  // Q's fragments or the previous tile are read: buffer buf ^ 1 is free
    prefetch_kv<D, kTile>(kt < qt, k_src, v_src, W, (kt + 1) * kTile, T, Ks(buf ^ 1),
                          Vs(buf ^ 1), kStride);
    __syncthreads();  // tile kt is in buffer buf for every thread
  };
  for (int64_t kt = 0; kt < qt; ++kt) {
    wait_for_tile(kt);
    tile(int(kt * kTile), int(kt & 1), std::false_type());
  }
  wait_for_tile(qt);
  tile(int(qt * kTile), int(qt & 1), std::true_type());

  const int64_t out_width = int64_t(Hq) * D;
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int64_t row = r == 0 ? row_lo : row_hi;
    const float total = quad_sum(l[r]);
    if (row >= seq) continue;
    const float inv = 1.0f / total;
    const int64_t at = (b * T + row) * out_width + int64_t(h) * D + quad_col;
#pragma unroll
    for (int n = 0; n < kOutGroups; ++n) {
      const float v0 = o[n][2 * r] * inv, v1 = o[n][2 * r + 1] * inv;
      store(out, at + n * 8, v0);
      store(out, at + n * 8 + 1, v1);
      if (out_bf16)  // a pair at an even column: one 32-bit store, rounded as convert() does
        *reinterpret_cast<uint32_t*>(out_bf16 + at + n * 8) =
            uint32_t(to_bf16(v0).bits) | uint32_t(to_bf16(v1).bits) << 16;
    }
    if ((lane & 3) == 0) lse[(b * Hq + h) * T + row] = m[r] * scale + logf(total);
  }
}

// The backward's inner tiles (queries for dK/dV, keys for dQ) are 32 rows: half the score
// accumulators of the forward's 64, leaving registers for the two (D)-wide accumulators.
constexpr int kInnerTile = 32;
// Whether dK/dV holds its warp's K and V fragments in registers, and dQ its Q and dO fragments
// (RowFragments), instead of reading them from shared memory at every inner tile. Measured on
// an H200 at head_dim 64 (backward per layer, cuda_ops_bench): neither 0.410 ms, dQ's alone
// 0.390, dK/dV's alone 0.467, both 0.447. dK/dV at 234 registers slows down when it holds
// them though its blocks per SM stay 2; head_dim 128 keeps what it had (not measured).
template <int D>
constexpr bool kHoldDkdvRows = false;
template <int D>
constexpr bool kHoldDqRows = true;

// One warp per (token row, q head): di = rowsum(dO * O), laid out (B, Hq, T) like lse. From the
// bf16 dO the mma products read (why: attention_gemm.cu's pack_dout_kernel).
template <typename IoT>
__global__ void flash_mma_backward_prep_kernel(const IoT* dout, const IoT* out, int64_t rows,
                                               int64_t T, int Hq, int D, float* di) {
  const int64_t w = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) >> 5;
  const int lane = threadIdx.x & 31;
  if (w >= rows * Hq) return;  // the whole warp
  const int64_t row = w / Hq;
  const int h = int(w % Hq);
  const int64_t at = row * Hq * D + int64_t(h) * D;
  float s = 0.0f;
  for (int d = lane; d < D; d += 32) s += bf16_rounded(load(dout, at + d)) * load(out, at + d);
  s = warp_sum(s);
  if (lane == 0) di[((row / T) * Hq + h) * T + row % T] = s;
}

// P^T into st (exp2 of S^T scale log2(e) - lse log2(e): one FMA) and dS^T = P^T (dP^T - D) into
// dpt, for the warp's accumulators over a query tile: query c of the tile (column j*8 +
// quad_col + (i&1)) is visible to key row r (i >> 1) when first[r] <= c <= last. lse2 is lse
// log2(e) and di D, per query of the tile. A function, so that the tiles with every query
// visible (first 0, last the tile's) compile without the compares.
template <int Groups>
__device__ __forceinline__ void dkdv_softmax_grad(float (&st)[Groups][4], float (&dpt)[Groups][4],
                                                  const float* lse2, const float* di,
                                                  float scale_log2, int quad_col,
                                                  const int (&first)[2], int last) {
#pragma unroll
  for (int j = 0; j < Groups; ++j)
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const int c = j * 8 + quad_col + (i & 1);
      float p = fast_exp2(fmaf(st[j][i], scale_log2, -lse2[c]));
      if (c < first[i >> 1] || c > last) p = 0.0f;
      st[j][i] = p;
      dpt[j][i] = p * (dpt[j][i] - di[c]);
    }
}

// One q head's share of dK and dV for one (sequence, q head, tile of 64 keys), summed over the
// query tiles at or after the keys; a warp owns 16 keys. Transposed products, so that the keys
// are the mma's M: S^T = K Q^T, P^T = exp(S^T scale - lse), dP^T = V dO^T,
// dS^T = P^T (dP^T - D); dV += bf16(P^T) dO, dK += bf16(dS^T) Q (times scale at the end).
// Written to row (b T + key) of dk and dv, `stride` floats apart, at column (per_q_head ? h :
// kv head) x D: the partial buffers (B T, Hq D), or dqkv's dK and dV columns when each kv head
// has one q head.
// MinBlocks: the blocks per SM its registers must allow, one per variant of
// attention_flash_mma_dkdv_variants. 0 leaves ptxas free (178 registers at head_dim 64, sm_90:
// 2 blocks); 1 is not the same, it gave 219.
template <int D, typename IoT, int MinBlocks>
__global__ void __launch_bounds__(kThreads, MinBlocks)
    flash_mma_dkdv_kernel(const bf16* qkv, const IoT* dout, const float* lse, const float* di,
                          int64_t T, int Hq, int Hkv, float scale, int64_t bh_count,
                          float* dk_out, float* dv_out, int64_t stride, bool per_q_head) {
  constexpr int kStride = D + kPad;
  constexpr int kQueryGroups = kInnerTile / 8, kOutGroups = D / 8;
  extern __shared__ uint4 flash_smem[];  // uint4: 16-byte aligned (the bf16 tile copies)
  // K and V of the block's keys ([kTile][kStride]), then two buffers of a query tile's Q and dO
  // ([kInnerTile][kStride]) and lse and D ([kInnerTile] floats): the next tile loads while this
  // one is used.
  uint16_t* const Ks = reinterpret_cast<uint16_t*>(flash_smem);
  uint16_t* const Vs = Ks + kTile * kStride;
  uint16_t* const inner = Vs + kTile * kStride;
  float* const rows_f = reinterpret_cast<float*>(inner + 4 * kInnerTile * kStride);
  auto Qs = [=](int i) { return inner + i * 2 * kInnerTile * kStride; };
  auto dOs = [=](int i) { return inner + (2 * i + 1) * kInnerTile * kStride; };
  auto lse_s = [=](int i) { return rows_f + i * 2 * kInnerTile; };  // lse log2(e)
  auto di_s = [=](int i) { return rows_f + (2 * i + 1) * kInnerTile; };
  // The first key tiles (the most queries) are scheduled first.
  const int64_t bh = blockIdx.x % bh_count, kt = blockIdx.x / bh_count;
  const int64_t b = bh / Hq;
  const int h = int(bh % Hq), g = h / (Hq / Hkv);
  const int64_t W = int64_t(Hq + 2 * Hkv) * D, out_width = int64_t(Hq) * D, k0 = kt * kTile;
  const bf16* base = qkv + b * T * W;
  const IoT* dbase = dout + b * T * out_width;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, quad_col = 2 * (lane & 3);
  const int64_t warp_first_key = k0 + warp * kWarpRows;
  const int64_t key_lo = warp_first_key + (lane >> 2), key_hi = key_lo + 8;
  const float scale_log2 = scale * kLog2e;

  load_rows<D, kTile>(base + int64_t(Hq + g) * D, W, k0, T, Ks, kStride);
  load_rows<D, kTile>(base + int64_t(Hq + Hkv + g) * D, W, k0, T, Vs, kStride);
  __syncthreads();  // K and V are in shared memory for every thread
  const RowFragments<D, kHoldDkdvRows<D>> k_rows(Ks, kStride, warp * kWarpRows),
      v_rows(Vs, kStride, warp * kWarpRows);

  float dk[kOutGroups][4], dv[kOutGroups][4];
#pragma unroll
  for (int n = 0; n < kOutGroups; ++n)
#pragma unroll
    for (int i = 0; i < 4; ++i) dk[n][i] = dv[n][i] = 0.0f;

  const int64_t num_query_tiles = (T + kInnerTile - 1) / kInnerTile;
  const float* lse_h = lse + (b * Hq + h) * T;
  const float* di_h = di + (b * Hq + h) * T;
  // Starts loading query tile qt into buffer `to` (lse and D at once).
  auto stage_query_tile = [&](int64_t qt, int to) {
    const int64_t q0 = qt * kInnerTile;
    stage_rows<D, kInnerTile>(base + int64_t(h) * D, W, q0, T, Qs(to), kStride);
    stage_rows<D, kInnerTile>(dbase + int64_t(h) * D, out_width, q0, T, dOs(to), kStride);
    cp_async_commit();
    for (int r = threadIdx.x; r < kInnerTile; r += kThreads) {
      const int64_t q = q0 + r;
      lse_s(to)[r] = q < T ? lse_h[q] * kLog2e : 0.0f;  // in log2 units, for exp2
      di_s(to)[r] = q < T ? di_h[q] : 0.0f;
    }
  };
  const int64_t first_tile = k0 / kInnerTile;
  stage_query_tile(first_tile, 0);
  for (int64_t qt = first_tile; qt < num_query_tiles; ++qt) {
    const int64_t q0 = qt * kInnerTile;
    const int buf = int((qt - first_tile) & 1);
    __syncthreads();  // the previous tile is read: buffer buf ^ 1 is free
    if (qt + 1 < num_query_tiles) {
      stage_query_tile(qt + 1, buf ^ 1);
      cp_async_wait<1>();  // all but the next tile's copies: tile qt is in
    } else {
      cp_async_wait<0>();
    }
    __syncthreads();  // tile qt (and K, V) are in shared memory for every thread
    if (q0 + kInnerTile - 1 < warp_first_key) continue;  // every query precedes the warp's keys

    float st[kQueryGroups][4], dpt[kQueryGroups][4];
    paired_products<D>(st, dpt, k_rows, v_rows, Qs(buf), dOs(buf), kStride);
    // Queries before each key, and past T, are zeroed: only a tile that reaches the warp's
    // keys or T has any. Query c of the tile is visible to key row r when first[r] <= c <= last.
    if (q0 < warp_first_key + kWarpRows - 1 || q0 + kInnerTile > T) {
      const int first[2] = {int(key_lo > q0 ? key_lo - q0 : 0), int(key_hi > q0 ? key_hi - q0 : 0)};
      const int last = int(T - 1 - q0 < kInnerTile ? T - 1 - q0 : kInnerTile - 1);
      dkdv_softmax_grad(st, dpt, lse_s(buf), di_s(buf), scale_log2, quad_col, first, last);
    } else {
      const int all[2] = {0, 0};
      dkdv_softmax_grad(st, dpt, lse_s(buf), di_s(buf), scale_log2, quad_col, all, kInnerTile);
    }
    // The accumulators of query groups 2kq and 2kq+1 are the A fragment of queries
    // [16 kq, 16 kq + 16).
#pragma unroll
    for (int kq = 0; kq < kInnerTile / 16; ++kq) {
      const AFragment pa = accumulators_as_a(st[2 * kq], st[2 * kq + 1]);
      const AFragment dsa = accumulators_as_a(dpt[2 * kq], dpt[2 * kq + 1]);
#pragma unroll
      for (int n = 0; n < kOutGroups; n += 2) {
        uint32_t ob[2], ob_next[2], qb[2], qb_next[2];
        load_b_pair_rows(ob, ob_next, dOs(buf), kStride, kq * 16, n * 8);
        mma_m16n8k16_bf16(dv[n], pa.r, ob, dv[n]);
        mma_m16n8k16_bf16(dv[n + 1], pa.r, ob_next, dv[n + 1]);
        load_b_pair_rows(qb, qb_next, Qs(buf), kStride, kq * 16, n * 8);
        mma_m16n8k16_bf16(dk[n], dsa.r, qb, dk[n]);
        mma_m16n8k16_bf16(dk[n + 1], dsa.r, qb_next, dk[n + 1]);
      }
    }
  }

  const int64_t column0 = int64_t(per_q_head ? h : g) * D + quad_col;
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int64_t key = r == 0 ? key_lo : key_hi;
    if (key >= T) continue;
    float* dk_row = dk_out + (b * T + key) * stride + column0;
    float* dv_row = dv_out + (b * T + key) * stride + column0;
#pragma unroll
    for (int n = 0; n < kOutGroups; ++n) {
      *reinterpret_cast<float2*>(dk_row + n * 8) =
          float2{dk[n][2 * r] * scale, dk[n][2 * r + 1] * scale};
      *reinterpret_cast<float2*>(dv_row + n * 8) = float2{dv[n][2 * r], dv[n][2 * r + 1]};
    }
  }
}

// dqkv's dK and dV columns of kv head g: the sums of the group's q heads' partials (B T, Hq D),
// in head order. Four columns per thread (D is a multiple of 4).
__global__ void flash_mma_sum_group_kernel(const float* dk_partial, const float* dv_partial,
                                           int64_t rows, int Hq, int Hkv, int D, float* dqkv) {
  const int64_t quads = rows * Hkv * D / 4;
  const int64_t e = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (e >= quads) return;
  const int64_t row = e / (Hkv * D / 4);
  const int rest = int(e % (Hkv * D / 4));
  const int g = rest / (D / 4), c = 4 * (rest % (D / 4)), group = Hq / Hkv;
  const int64_t W = int64_t(Hq + 2 * Hkv) * D;
  const float* dk_row = dk_partial + row * Hq * D + int64_t(g) * group * D + c;
  const float* dv_row = dv_partial + row * Hq * D + int64_t(g) * group * D + c;
  float4 dk = *reinterpret_cast<const float4*>(dk_row);
  float4 dv = *reinterpret_cast<const float4*>(dv_row);
  for (int hh = 1; hh < group; ++hh) {
    const float4 k = *reinterpret_cast<const float4*>(dk_row + hh * D);
    const float4 v = *reinterpret_cast<const float4*>(dv_row + hh * D);
    dk = float4{dk.x + k.x, dk.y + k.y, dk.z + k.z, dk.w + k.w};
    dv = float4{dv.x + v.x, dv.y + v.y, dv.z + v.z, dv.w + v.w};
  }
  *reinterpret_cast<float4*>(dqkv + row * W + int64_t(Hq + g) * D + c) = dk;
  *reinterpret_cast<float4*>(dqkv + row * W + int64_t(Hq + Hkv + g) * D + c) = dv;
}

// P (exp2 of S scale log2(e) - lse log2(e): one FMA) and dS = P (dP - D) into s, for the warp's
// accumulators over a key tile: key c of the tile (column j*8 + quad_col + (i&1)) is visible to
// row r (i >> 1) when c <= last[r]. lse2 (lse log2(e)) and di are the warp's two rows'. A
// function, so that the tiles with every key visible compile without the compares.
template <int Groups>
__device__ __forceinline__ void dq_softmax_grad(float (&s)[Groups][4], const float (&dp)[Groups][4],
                                                const float (&lse2)[2], const float (&di)[2],
                                                float scale_log2, int quad_col,
                                                const int (&last)[2]) {
#pragma unroll
  for (int j = 0; j < Groups; ++j)
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      float p = fast_exp2(fmaf(s[j][i], scale_log2, -lse2[i >> 1]));
      if (j * 8 + quad_col + (i & 1) > last[i >> 1]) p = 0.0f;
      s[j][i] = p * (dp[j][i] - di[i >> 1]);
    }
}

// dQ of one (sequence, q head, tile of 64 queries) over the key tiles up to the diagonal; a
// warp owns 16 queries. S = Q K^T and dP = dO V^T again, dS = P (dP - D), dQ += bf16(dS) K
// (times scale at the end). No two blocks write one element: no atomics, a fixed order.
template <int D, typename IoT>
__global__ void __launch_bounds__(kThreads)
    flash_mma_dq_kernel(const bf16* qkv, const IoT* dout, const float* lse, const float* di,
                        int64_t T, int Hq, int Hkv, float scale, int64_t num_tiles,
                        int64_t bh_count, float* dqkv) {
  constexpr int kStride = D + kPad;
  constexpr int kKeyGroups = kInnerTile / 8, kOutGroups = D / 8;
  extern __shared__ uint4 flash_smem[];  // uint4: 16-byte aligned (the bf16 tile copies)
  // Q and dO of the block's queries ([kTile][kStride]), then two buffers of a key tile's K and V
  // ([kInnerTile][kStride]): the next tile loads while this one is used.
  uint16_t* const Qs = reinterpret_cast<uint16_t*>(flash_smem);
  uint16_t* const dOs = Qs + kTile * kStride;
  uint16_t* const inner = dOs + kTile * kStride;
  auto Ks = [=](int i) { return inner + i * 2 * kInnerTile * kStride; };
  auto Vs = [=](int i) { return inner + (2 * i + 1) * kInnerTile * kStride; };
  // The last query tiles (the most keys) are scheduled first.
  const int64_t bh = blockIdx.x % bh_count, qt = num_tiles - 1 - blockIdx.x / bh_count;
  const int64_t b = bh / Hq;
  const int h = int(bh % Hq), g = h / (Hq / Hkv);
  const int64_t W = int64_t(Hq + 2 * Hkv) * D, out_width = int64_t(Hq) * D, q0 = qt * kTile;
  const bf16* base = qkv + b * T * W;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, quad_col = 2 * (lane & 3);
  const int64_t row_lo = q0 + warp * kWarpRows + (lane >> 2), row_hi = row_lo + 8;
  const int64_t warp_first_row = q0 + warp * kWarpRows;
  const int64_t warp_last_row = warp_first_row + kWarpRows - 1;
  const float scale_log2 = scale * kLog2e;

  load_rows<D, kTile>(base + int64_t(h) * D, W, q0, T, Qs, kStride);
  load_rows<D, kTile>(dout + b * T * out_width + int64_t(h) * D, out_width, q0, T, dOs, kStride);
  __syncthreads();  // Q and dO are in shared memory for every thread
  const RowFragments<D, kHoldDqRows<D>> q_rows(Qs, kStride, warp * kWarpRows),
      do_rows(dOs, kStride, warp * kWarpRows);
  float lse_r[2], di_r[2];
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int64_t row = r == 0 ? row_lo : row_hi;
    lse_r[r] = row < T ? lse[(b * Hq + h) * T + row] * kLog2e : 0.0f;  // log2 units, for exp2
    di_r[r] = row < T ? di[(b * Hq + h) * T + row] : 0.0f;
  }
  float dq[kOutGroups][4];
#pragma unroll
  for (int n = 0; n < kOutGroups; ++n) dq[n][0] = dq[n][1] = dq[n][2] = dq[n][3] = 0.0f;

  const bf16* k_src = base + int64_t(Hq + g) * D;
  const bf16* v_src = base + int64_t(Hq + Hkv + g) * D;
  stage_rows<D, kInnerTile>(k_src, W, 0, T, Ks(0), kStride);
  stage_rows<D, kInnerTile>(v_src, W, 0, T, Vs(0), kStride);
  cp_async_commit();
  const int64_t last_key = (q0 + kTile < T ? q0 + kTile : T) - 1;
  for (int64_t k0 = 0; k0 <= last_key; k0 += kInnerTile) {
    const int buf = int((k0 / kInnerTile) & 1);
    __syncthreads();  // the previous tile is read: buffer buf ^ 1 is free
    prefetch_kv<D, kInnerTile>(k0 + kInnerTile <= last_key, k_src, v_src, W, k0 + kInnerTile, T,
                               Ks(buf ^ 1), Vs(buf ^ 1), kStride);
    __syncthreads();  // tile k0 (and Q, dO) are in shared memory for every thread
    if (k0 > warp_last_row) continue;  // every key follows the warp's queries

    float s[kKeyGroups][4], dp[kKeyGroups][4];
    paired_products<D>(s, dp, q_rows, do_rows, Ks(buf), Vs(buf), kStride);
    // Keys after each row, and past T, are zeroed: only a tile that reaches the warp's first
    // row or T has any. Key c of the tile is visible to row r when c <= last[r] (may be < 0).
    if (k0 + kInnerTile - 1 > warp_first_row || k0 + kInnerTile > T) {
      const int last[2] = {int((row_lo < T ? row_lo : T - 1) - k0),
                           int((row_hi < T ? row_hi : T - 1) - k0)};
      dq_softmax_grad(s, dp, lse_r, di_r, scale_log2, quad_col, last);
    } else {
      const int all[2] = {kInnerTile, kInnerTile};
      dq_softmax_grad(s, dp, lse_r, di_r, scale_log2, quad_col, all);
    }
#pragma unroll
    for (int kk = 0; kk < kInnerTile / 16; ++kk) {
      const AFragment dsa = accumulators_as_a(s[2 * kk], s[2 * kk + 1]);
#pragma unroll
      for (int n = 0; n < kOutGroups; n += 2) {
        uint32_t kb[2], kb_next[2];
        load_b_pair_rows(kb, kb_next, Ks(buf), kStride, kk * 16, n * 8);
        mma_m16n8k16_bf16(dq[n], dsa.r, kb, dq[n]);
        mma_m16n8k16_bf16(dq[n + 1], dsa.r, kb_next, dq[n + 1]);
      }
    }
  }

#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int64_t row = r == 0 ? row_lo : row_hi;
    if (row >= T) continue;
    float* out = dqkv + (b * T + row) * W + int64_t(h) * D + quad_col;
#pragma unroll
    for (int n = 0; n < kOutGroups; ++n) {
      out[n * 8] = dq[n][2 * r] * scale;
      out[n * 8 + 1] = dq[n][2 * r + 1] * scale;
    }
  }
}

// One warp: d = bf16(a) bf16(b) + c with a (16x16), b (16x8), c and d (16x8) row-major f32.
__global__ void mma_tile_product_kernel(const float* a, const float* b, const float* c,
                                        float* d) {
  const int lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
  const uint32_t af[4] = {pack_bf16x2(a[g * 16 + 2 * t], a[g * 16 + 2 * t + 1]),
                          pack_bf16x2(a[(g + 8) * 16 + 2 * t], a[(g + 8) * 16 + 2 * t + 1]),
                          pack_bf16x2(a[g * 16 + 2 * t + 8], a[g * 16 + 2 * t + 9]),
                          pack_bf16x2(a[(g + 8) * 16 + 2 * t + 8], a[(g + 8) * 16 + 2 * t + 9])};
  const uint32_t bf[2] = {pack_bf16x2(b[(2 * t) * 8 + g], b[(2 * t + 1) * 8 + g]),
                          pack_bf16x2(b[(2 * t + 8) * 8 + g], b[(2 * t + 9) * 8 + g])};
  float acc[4] = {c[g * 8 + 2 * t], c[g * 8 + 2 * t + 1], c[(g + 8) * 8 + 2 * t],
                  c[(g + 8) * 8 + 2 * t + 1]};
  mma_m16n8k16_bf16(acc, af, bf, acc);
  d[g * 8 + 2 * t] = acc[0];
  d[g * 8 + 2 * t + 1] = acc[1];
  d[(g + 8) * 8 + 2 * t] = acc[2];
  d[(g + 8) * 8 + 2 * t + 1] = acc[3];
}

// Calls fn with std::integral_constant<int, D> for a supported head_dim.
template <typename Fn>
void dispatch_head_dim(int64_t head_dim, Fn&& fn) {
  VACC_CHECK(attention_flash_mma_supports(head_dim), "attention (tensor-core flash): head_dim ",
             head_dim, " is not supported (64 or 128)");
  if (head_dim == 64)
    fn(std::integral_constant<int, 64>());
  else
    fn(std::integral_constant<int, 128>());
}

// The kernels read q, k and v as bf16: an f32 qkv is rounded once here (exactly as they would
// round each element of a tile), to be read in half the bytes and without converting, though
// every key tile is read by every query tile of its sequence. A bf16 qkv is read as it is.
const bf16* packed_qkv(const void* qkv, DType qkv_dtype, int64_t batch, int64_t seq,
                       int64_t q_heads, int64_t kv_heads, int64_t head_dim, void* packed,
                       cudaStream_t stream) {
  if (qkv_dtype == DType::BF16) return static_cast<const bf16*>(qkv);
  VACC_CHECK(qkv_dtype == DType::F32,
             "attention (tensor-core flash): qkv must be f32 or bf16, got ", dtype_name(qkv_dtype));
  convert(qkv, DType::F32, packed, DType::BF16, batch * seq * (q_heads + 2 * kv_heads) * head_dim,
          stream);
  return static_cast<const bf16*>(packed);
}

// The backward's scratch, each part at a 256-byte boundary: D_i (batch x q_heads x seq floats)
// at 0, then an f32 qkv packed in bf16, then with grouped heads the dK and dV partials (batch
// seq x q_heads head_dim floats each). Offsets and the total in bytes.
struct BackwardScratch {
  size_t packed = 0, dk = 0, dv = 0, total = 0;
};
BackwardScratch backward_scratch(int64_t batch, int64_t seq, int64_t q_heads, int64_t kv_heads,
                                 int64_t head_dim, DType qkv_dtype) {
  auto round_up_256 = [](size_t bytes) { return (bytes + 255) / 256 * 256; };
  const size_t shares = sizeof(float) * size_t(batch * seq * q_heads * head_dim);
  const size_t partial = q_heads == kv_heads ? 0 : round_up_256(shares);
  BackwardScratch s;
  s.packed = round_up_256(sizeof(float) * size_t(batch * q_heads * seq));
  s.dk = s.packed + round_up_256(attention_flash_mma_forward_scratch_bytes(
                        batch, seq, q_heads, kv_heads, head_dim, qkv_dtype));
  s.dv = s.dk + partial;
  s.total = s.dv + partial;
  return s;
}

}  // namespace

bool attention_flash_mma_supports(int64_t head_dim) { return head_dim == 64 || head_dim == 128; }

int attention_flash_mma_dkdv_variants(int64_t head_dim) { return head_dim == 64 ? 2 : 1; }

size_t attention_flash_mma_forward_scratch_bytes(int64_t batch, int64_t seq, int64_t q_heads,
                                                 int64_t kv_heads, int64_t head_dim,
                                                 DType qkv_dtype) {
  if (qkv_dtype == DType::BF16) return 0;
  return sizeof(bf16) * size_t(batch * seq * (q_heads + 2 * kv_heads) * head_dim);
}

void attention_flash_mma_forward(const void* qkv_in, DType qkv_dtype, int64_t batch, int64_t seq,
                                 int64_t q_heads, int64_t kv_heads, int64_t head_dim, void* out,
                                 DType out_dtype, float* lse, void* scratch,
                                 cudaStream_t stream, bf16* out_bf16) {
  if (batch * seq == 0) return;
  VACC_CHECK(seq < (int64_t(1) << 31), "attention (tensor-core flash): sequence of ", seq,
             " tokens, the limit is 2^31 - 1");
  const int64_t num_tiles = (seq + kTile - 1) / kTile, bh = batch * q_heads;
  const float scale = 1.0f / sqrtf(float(head_dim));
  const bf16* qkv =
      packed_qkv(qkv_in, qkv_dtype, batch, seq, q_heads, kv_heads, head_dim, scratch, stream);
  dispatch_head_dim(head_dim, [&](auto d) {
    constexpr int D = decltype(d)::value;
    const size_t smem = 2 * size_t(4 * kTile * (D + kPad));  // two buffers of K and V
    if (out_dtype == DType::F32)
      launch_with_smem<kThreads>(flash_mma_forward_kernel<D, float>, "flash_mma_forward_kernel",
                                 num_tiles * bh, smem, stream, qkv, seq, int(q_heads),
                                 int(kv_heads), scale, num_tiles, bh, static_cast<float*>(out),
                                 lse, out_bf16);
    else if (out_dtype == DType::BF16)
      launch_with_smem<kThreads>(flash_mma_forward_kernel<D, bf16>, "flash_mma_forward_kernel",
                                 num_tiles * bh, smem, stream, qkv, seq, int(q_heads),
                                 int(kv_heads), scale, num_tiles, bh, static_cast<bf16*>(out), lse,
                                 out_bf16);
    else
      fail("attention_forward: out must be f32 or bf16, got ", dtype_name(out_dtype));
  });
}

size_t attention_flash_mma_backward_scratch_bytes(int64_t batch, int64_t seq, int64_t q_heads,
                                                  int64_t kv_heads, int64_t head_dim,
                                                  DType qkv_dtype) {
  return backward_scratch(batch, seq, q_heads, kv_heads, head_dim, qkv_dtype).total;
}
void attention_flash_mma_backward(const void* dout, const void* qkv_in, DType qkv_dtype,
                                  const void* out, DType io_dtype, const float* lse,
                                  int64_t batch, int64_t seq, int64_t q_heads, int64_t kv_heads,
                                  int64_t head_dim, float* dqkv, void* scratch,
                                  cudaStream_t stream, int dkdv_variant) {
  VACC_CHECK(dkdv_variant >= 0 && dkdv_variant < attention_flash_mma_dkdv_variants(head_dim),
             "attention (tensor-core flash): no dK/dV variant ", dkdv_variant, " at head_dim ",
             head_dim);
  const int64_t rows = batch * seq;
  if (rows == 0) return;
  const BackwardScratch layout =
      backward_scratch(batch, seq, q_heads, kv_heads, head_dim, qkv_dtype);
  char* const base = static_cast<char*>(scratch);
  float* di = reinterpret_cast<float*>(base);
  const bf16* qkv = packed_qkv(qkv_in, qkv_dtype, batch, seq, q_heads, kv_heads, head_dim,
                               base + layout.packed, stream);
  // Grouped heads: each q head's share of dK, dV into partials, summed by the group afterwards.
  const bool per_q_head = q_heads != kv_heads;
  float* dk_out =
      per_q_head ? reinterpret_cast<float*>(base + layout.dk) : dqkv + q_heads * head_dim;
  float* dv_out = per_q_head ? reinterpret_cast<float*>(base + layout.dv)
                             : dqkv + (q_heads + kv_heads) * head_dim;
  const int64_t out_stride = per_q_head ? q_heads * head_dim : (q_heads + 2 * kv_heads) * head_dim;
  const int64_t num_tiles = (seq + kTile - 1) / kTile, bh = batch * q_heads;
  const float scale = 1.0f / sqrtf(float(head_dim));
  const int64_t prep_blocks = grid_for(rows * q_heads * 32, kThreads, int64_t(1) << 30);
  dispatch_head_dim(head_dim, [&](auto d) {
    constexpr int D = decltype(d)::value;
    // One tile pair of the outer rows, two buffers of the inner tile pair (and, dK/dV, of lse, D).
    const size_t dkdv_smem = 2 * size_t(2 * kTile * (D + kPad) + 4 * kInnerTile * (D + kPad)) +
                             4 * sizeof(float) * kInnerTile;
    const size_t dq_smem = 2 * size_t(2 * kTile * (D + kPad) + 4 * kInnerTile * (D + kPad));
    auto run = [&](auto* typed_dout, auto* typed_out) {
      using IoT = std::remove_cv_t<std::remove_pointer_t<decltype(typed_dout)>>;
      launch_with_smem<kThreads>(flash_mma_backward_prep_kernel<IoT>,
                                 "flash_mma_backward_prep_kernel", prep_blocks, 0, stream,
                                 typed_dout, typed_out, rows, seq, int(q_heads), D, di);
      // Variant 1 (head_dim 64 only) fits 3 blocks per SM in registers, with spills.
      auto* dkdv = flash_mma_dkdv_kernel<D, IoT, 0>;
      if constexpr (D == 64)
        if (dkdv_variant == 1) dkdv = flash_mma_dkdv_kernel<D, IoT, 3>;
      launch_with_smem<kThreads>(dkdv, "flash_mma_dkdv_kernel", num_tiles * bh, dkdv_smem, stream,
                                 qkv, typed_dout, lse, static_cast<const float*>(di), seq,
                                 int(q_heads), int(kv_heads), scale, bh, dk_out, dv_out,
                                 out_stride, per_q_head);
      if (per_q_head)
        launch_with_smem<256>(flash_mma_sum_group_kernel, "flash_mma_sum_group_kernel",
                              grid_for(rows * kv_heads * D / 4, 256, int64_t(1) << 30), 0, stream,
                              static_cast<const float*>(dk_out), static_cast<const float*>(dv_out),
                              rows, int(q_heads), int(kv_heads), D, dqkv);
      launch_with_smem<kThreads>(flash_mma_dq_kernel<D, IoT>, "flash_mma_dq_kernel", num_tiles * bh,
                                 dq_smem, stream, qkv, typed_dout, lse,
                                 static_cast<const float*>(di), seq, int(q_heads), int(kv_heads),
                                 scale, num_tiles, bh, dqkv);
    };
    if (io_dtype == DType::F32)
      run(static_cast<const float*>(dout), static_cast<const float*>(out));
    else if (io_dtype == DType::BF16)
      run(static_cast<const bf16*>(dout), static_cast<const bf16*>(out));
    else
      fail("attention_backward: out must be f32 or bf16, got ", dtype_name(io_dtype));
  });
}

void mma_bf16_tile_product(const float* a, const float* b, const float* c, float* d,
                           cudaStream_t stream) {
  mma_tile_product_kernel<<<1, 32, 0, stream>>>(a, b, c, d);
  check_launch("mma_tile_product_kernel", __FILE__, __LINE__);
}

}  // namespace vacc::cuda
