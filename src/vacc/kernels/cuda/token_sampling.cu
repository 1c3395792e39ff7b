// Drawing the next token from each row of logits on the device (Backend::sample_rows), by the
// rule of kernels/token_sampling_rule.h, so that a sampled token reads back 4 bytes instead of
// its logits row (600 KB for Qwen) and the host's sampling.
//
// A row is split into shares of kShare tokens, one block each, and the rule's steps are passes
// over the shares, one launch each, with a one-block step between them that combines the
// shares' results (the total and a digit's histogram; where the ties and the draw cross their
// thresholds). One block a row, as first written, ran about six passes over 151936 logits on
// one SM: 0.4 ms a token on an H100. The masses are integers, so their sums do not depend on
// the order of the atomics and reductions: the same logits and bits draw the same token every
// time, and the CPU's token (cpu::sample_rows) wherever the two exponentials agree.
//
// The histograms are built without piling 64-bit shared atomics onto one address (a flat row
// puts nearly every token in one bin): each warp writes its own copy, and each lane adds up its
// run of tokens in one bin before it writes. With one histogram and an atomic per token, a
// random model's rows took 2.9 ms each on an H100.
#include <cstdint>

#include "vacc/core/error.h"
#include "vacc/kernels/cuda/cuda_check.h"
#include "vacc/kernels/cuda/cuda_kernels.h"
#include "vacc/kernels/cuda/device_math.cuh"
#include "vacc/kernels/token_sampling_rule.h"

namespace vacc::cuda {
namespace {

using sampling::Mass;

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
constexpr int kBins = 256;
constexpr int64_t kShare = 4096;  // tokens per block: 16 per thread
constexpr unsigned kFullMask = 0xffffffffu;

// What the passes of one row share, between launches (device memory).
struct RowState {
  float max_logit;
  uint32_t boundary;  // the nucleus's boundary weight's bits, a digit at a time
  Mass total, target, above, nucleus;
  int64_t last_tie;
};

// The scratch of a call: the rows' states, then per row and share a histogram, a mass and a
// largest logit.
struct Scratch {
  RowState* state;
  Mass* hist;  // [rows][shares][kBins]
  Mass* sums;  // [rows][shares]
  float* maxima;  // [rows][shares]
};

int64_t shares_of(int64_t cols) { return cols <= 0 ? 1 : (cols + kShare - 1) / kShare; }

Scratch carve(void* scratch, int64_t rows, int64_t shares) {
  char* p = static_cast<char*>(scratch);
  Scratch s;
  s.state = reinterpret_cast<RowState*>(p);
  p += rows * sizeof(RowState);
  s.hist = reinterpret_cast<Mass*>(p);
  p += rows * shares * kBins * sizeof(Mass);
  s.sums = reinterpret_cast<Mass*>(p);
  p += rows * shares * sizeof(Mass);
  s.maxima = reinterpret_cast<float*>(p);
  return s;
}

// The block's share of row r: [begin, end).
struct Share {
  int64_t begin, end;
};
__device__ Share share_of(int64_t cols, int64_t b) {
  const int64_t begin = b * kShare;
  return {begin, begin + kShare < cols ? begin + kShare : cols};
}

// The weight of a logit: exp((x - max) / T), 0 below the rule's lowest exponent.
__device__ __forceinline__ float weight_of(float x, float max_logit, float inverse) {
  const float a = sampling::exp_argument(x, max_logit, inverse);
  return a >= sampling::kLowestExponent ? expf(a) : 0.0f;
}

// Writes the histogram of the share's entries to `out` (kBins masses): entry(i, bin) gives token
// i's mass (0: not counted) and sets its bin. Every thread of the block calls it.
template <typename Entry>
__device__ void share_histogram(Share sh, Entry entry, Mass* out) {
  __shared__ Mass warp_hist[kWarps * kBins];
  for (int k = int(threadIdx.x); k < kWarps * kBins; k += kThreads) warp_hist[k] = 0;
  __syncthreads();
  Mass* mine = warp_hist + (threadIdx.x / 32) * kBins;
  int run_bin = 0;
  Mass run = 0;
  for (int64_t i = sh.begin + threadIdx.x; i < sh.end; i += kThreads) {
    int bin = 0;
    const Mass q = entry(i, bin);
    if (q == 0) continue;
    if (bin != run_bin && run != 0) {
      atomicAdd(&mine[run_bin], run);
      run = 0;
    }
    run_bin = bin;
    run += q;
  }
  if (run != 0) atomicAdd(&mine[run_bin], run);
  __syncthreads();
  for (int k = int(threadIdx.x); k < kBins; k += kThreads) {
    Mass sum = 0;
    for (int w = 0; w < kWarps; ++w) sum += warp_hist[w * kBins + k];
    out[k] = sum;
  }
}

// Pass 1: each share's largest logit (fmaxf passes over NaNs).
__global__ void __launch_bounds__(kThreads)
    share_max_kernel(const float* logits, int64_t cols, Scratch s) {
  __shared__ float partial[kWarps];
  const int64_t r = blockIdx.x, b = blockIdx.y, shares = gridDim.y;
  const float* row = logits + r * cols;
  const Share sh = share_of(cols, b);
  float m = kNegInf;
  for (int64_t i = sh.begin + threadIdx.x; i < sh.end; i += kThreads) m = fmaxf(m, row[i]);
  m = block_max(m, partial);
  if (threadIdx.x == 0) s.maxima[r * shares + b] = m;
}

// Pass 2: the row's largest logit (every block from the shares' maxima; the first block keeps
// it), and each share's total mass and histogram of its weights' top 8 bits.
__global__ void __launch_bounds__(kThreads)
    share_total_kernel(const float* logits, int64_t cols, float inverse, Scratch s) {
  __shared__ Mass scratch[kWarps];
  const int64_t r = blockIdx.x, b = blockIdx.y, shares = gridDim.y;
  float max_logit = kNegInf;
  for (int64_t k = 0; k < shares; ++k) max_logit = fmaxf(max_logit, s.maxima[r * shares + k]);
  if (b == 0 && threadIdx.x == 0) s.state[r].max_logit = max_logit;
  const float* row = logits + r * cols;
  const Share sh = share_of(cols, b);
  Mass* hist = s.hist + (r * shares + b) * kBins;
  if (!isfinite(max_logit)) {  // no draw (the select step writes -1)
    for (int k = int(threadIdx.x); k < kBins; k += kThreads) hist[k] = 0;
    if (threadIdx.x == 0) s.sums[r * shares + b] = 0;
    return;  // the whole block
  }
  const double scale = sampling::mass_scale(cols);
  Mass total = 0;
  share_histogram(
      sh,
      [&](int64_t i, int& bin) {
        const float w = weight_of(row[i], max_logit, inverse);
        const Mass q = sampling::mass_of(w, scale);
        total += q;
        bin = int(__float_as_uint(w) >> 24);
        return q;
      },
      hist);
  total = block_sum(total, scratch);
  if (threadIdx.x == 0) s.sums[r * shares + b] = total;
}

// One block a row: the shares' histograms summed, and the next digit of the boundary chosen
// (`choose`; at shift 24 it first takes the total and the nucleus's target). Without a nucleus
// (top_p 1) it only sets the total, which is then the nucleus's mass.
__global__ void __launch_bounds__(kThreads)
    select_digit_kernel(int64_t shares, int shift, float top_p, bool choose, int64_t cols,
                        Scratch s) {
  __shared__ Mass hist[kBins];
  const int64_t r = blockIdx.x;
  RowState& st = s.state[r];
  if (shift == 24 && threadIdx.x == 0) {
    Mass total = 0;
    for (int64_t k = 0; k < shares; ++k) total += s.sums[r * shares + k];
    st.total = total;
    st.target = sampling::nucleus_target(total, top_p);
    st.above = 0;
    st.boundary = 0;
    st.nucleus = total;
    st.last_tie = cols - 1;
  }
  if (!choose) return;
  for (int k = int(threadIdx.x); k < kBins; k += kThreads) {
    Mass sum = 0;
    for (int64_t b = 0; b < shares; ++b) sum += s.hist[(r * shares + b) * kBins + k];
    hist[k] = sum;
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    Mass above = st.above;
    st.boundary |= uint32_t(sampling::choose_digit(hist, above, st.target)) << shift;
    st.above = above;
  }
}

// Passes 3-5: each share's histogram of the next 8 bits, over the tokens whose higher bits are
// the boundary's so far.
__global__ void __launch_bounds__(kThreads)
    share_digit_kernel(const float* logits, int64_t cols, float inverse, int shift, Scratch s) {
  const int64_t r = blockIdx.x, b = blockIdx.y, shares = gridDim.y;
  const RowState st = s.state[r];
  Mass* hist = s.hist + (r * shares + b) * kBins;
  if (!isfinite(st.max_logit)) return;  // the whole block
  const float* row = logits + r * cols;
  const double scale = sampling::mass_scale(cols);
  const uint32_t prefix = st.boundary >> (shift + 8);
  share_histogram(
      share_of(cols, b),
      [&](int64_t i, int& bin) {
        const float w = weight_of(row[i], st.max_logit, inverse);
        const uint32_t key = __float_as_uint(w);
        bin = int((key >> shift) & 255);
        return key >> (shift + 8) == prefix ? sampling::mass_of(w, scale) : Mass(0);
      },
      hist);
}

// Which masses a crossing walks: the boundary's ties (to find the last tie in the nucleus) or
// the nucleus (to find the drawn token).
enum class Walk { Ties, Nucleus };

__device__ __forceinline__ Mass walked_mass(Walk walk, const float* row, int64_t i,
                                            const RowState& st, float inverse, double scale) {
  const float w = weight_of(row[i], st.max_logit, inverse);
  const uint32_t key = __float_as_uint(w);
  const bool counted = walk == Walk::Ties
                           ? key == st.boundary
                           : sampling::in_nucleus(key, i, st.boundary, st.last_tie);
  return counted ? sampling::mass_of(w, scale) : Mass(0);
}

// Each share's sum of the walked masses.
__global__ void __launch_bounds__(kThreads)
    share_mass_kernel(const float* logits, int64_t cols, float inverse, Walk walk, Scratch s) {
  __shared__ Mass scratch[kWarps];
  const int64_t r = blockIdx.x, b = blockIdx.y, shares = gridDim.y;
  const RowState st = s.state[r];
  if (!isfinite(st.max_logit)) return;  // the whole block
  const float* row = logits + r * cols;
  const double scale = sampling::mass_scale(cols);
  const Share sh = share_of(cols, b);
  Mass sum = 0;
  for (int64_t i = sh.begin + threadIdx.x; i < sh.end; i += kThreads)
    sum += walked_mass(walk, row, i, st, inverse, scale);
  sum = block_sum(sum, scratch);
  if (threadIdx.x == 0) s.sums[r * shares + b] = sum;
}

// One block a row: the first index, in token order, where the running sum of the walked masses
// from `start` reaches the threshold (exceeds it for the draw). Ties: from the mass above the
// boundary to the target; the last tie and the nucleus's mass go to the state. Nucleus: from 0
// to the draw's point in the nucleus's mass; the token goes to out[r] (-1 for a row without a
// finite logit). The shares' sums find the share; the block walks it kThreads tokens at a time.
__global__ void __launch_bounds__(kThreads)
    crossing_kernel(const float* logits, int64_t cols, float inverse, Walk walk, int64_t shares,
                    const Mass* random_bits, Scratch s, int32_t* out) {
  __shared__ Mass warp_total[kWarps];
  __shared__ int warp_hit[kWarps];
  __shared__ Mass base;
  __shared__ int64_t share, hit;
  __shared__ Mass run_at_hit;
  const int64_t r = blockIdx.x;
  const RowState st = s.state[r];
  const int warp = int(threadIdx.x) / 32, lane = int(threadIdx.x) & 31;
  if (!isfinite(st.max_logit)) {
    if (walk == Walk::Nucleus && threadIdx.x == 0) out[r] = -1;
    return;  // the whole block
  }
  const bool strict = walk == Walk::Nucleus;
  const Mass start = walk == Walk::Ties ? st.above : 0;
  const Mass threshold =
      walk == Walk::Ties ? st.target : sampling::draw_point(random_bits[r], st.nucleus);
  auto reached = [&](Mass sum) { return strict ? sum > threshold : sum >= threshold; };
  if (threadIdx.x == 0) {
    Mass run = start;
    int64_t b = 0;
    while (b < shares - 1 && !reached(run + s.sums[r * shares + b])) run += s.sums[r * shares + b++];
    share = b;
    base = run;
    hit = -1;
  }
  __syncthreads();
  const float* row = logits + r * cols;
  const double scale = sampling::mass_scale(cols);
  const Share sh = share_of(cols, share);
  Mass run = base;
  for (int64_t first = sh.begin; first < sh.end; first += kThreads) {  // the same trips for all
    const int64_t i = first + threadIdx.x;
    const Mass mass = i < sh.end ? walked_mass(walk, row, i, st, inverse, scale) : Mass(0);
    Mass chunk = 0;
    const Mass inclusive = run + block_inclusive_scan(mass, warp_total, chunk);
    const bool here = i < sh.end && reached(inclusive);
    // The lowest lane that reached it, per warp; the lowest warp that has one.
    int lowest = here ? lane : 32;
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
      const int other = __shfl_xor_sync(kFullMask, lowest, o);
      lowest = other < lowest ? other : lowest;
    }
    if (lane == 0) warp_hit[warp] = lowest;
    __syncthreads();
    int hit_warp = kWarps;
    for (int w = kWarps - 1; w >= 0; --w)
      if (warp_hit[w] < 32) hit_warp = w;
    if (warp == hit_warp && lane == warp_hit[warp]) {
      hit = i;
      run_at_hit = inclusive;
    }
    __syncthreads();  // before warp_total and warp_hit are written again, and hit is read
    if (hit_warp < kWarps) break;
    run += chunk;
  }
  if (threadIdx.x != 0) return;
  if (walk == Walk::Ties) {
    s.state[r].last_tie = hit;
    s.state[r].nucleus = run_at_hit;
  } else {
    out[r] = int32_t(hit);
  }
}

}  // namespace

size_t sample_rows_scratch_bytes(int64_t rows, int64_t cols) {
  const int64_t shares = shares_of(cols);
  return size_t(rows) * (sizeof(RowState) + size_t(shares) * (kBins * sizeof(Mass) +
                                                              sizeof(Mass) + sizeof(float)));
}

void sample_rows(const float* logits, int64_t rows, int64_t cols, const uint64_t* random_bits,
                 float temperature, float top_p, int32_t* out, void* scratch,
                 cudaStream_t stream) {
  if (rows == 0) return;
  if (!(temperature > 0.0f) || !(top_p > 0.0f)) {  // greedy
    argmax_rows(logits, rows, cols, out, stream);
    return;
  }
  const int64_t shares = shares_of(cols);
  VACC_CHECK(shares <= 65535, "sample_rows: ", cols, " columns are more than 65535 blocks of ",
             kShare, " (a grid's second dimension) can take");
  VACC_CHECK(rows <= 0x7fffffff, "sample_rows: ", rows, " rows are more than a grid can take");
  const Scratch s = carve(scratch, rows, shares);
  const float inverse = 1.0f / temperature;
  const dim3 grid{unsigned(rows), unsigned(shares), 1u};  // rows in x: up to 2^31 - 1
  const auto* bits = reinterpret_cast<const Mass*>(random_bits);
  const bool nucleus = top_p < 1.0f;
  share_max_kernel<<<grid, kThreads, 0, stream>>>(logits, cols, s);
  VACC_CUDA_CHECK_LAUNCH("sample_rows: share_max_kernel");
  share_total_kernel<<<grid, kThreads, 0, stream>>>(logits, cols, inverse, s);
  VACC_CUDA_CHECK_LAUNCH("sample_rows: share_total_kernel");
  select_digit_kernel<<<unsigned(rows), kThreads, 0, stream>>>(shares, 24, top_p, nucleus, cols,
                                                               s);
  VACC_CUDA_CHECK_LAUNCH("sample_rows: select_digit_kernel");
  if (nucleus) {
    for (int shift = 16; shift >= 0; shift -= 8) {
      share_digit_kernel<<<grid, kThreads, 0, stream>>>(logits, cols, inverse, shift, s);
      VACC_CUDA_CHECK_LAUNCH("sample_rows: share_digit_kernel");
      select_digit_kernel<<<unsigned(rows), kThreads, 0, stream>>>(shares, shift, top_p, true,
                                                                   cols, s);
      VACC_CUDA_CHECK_LAUNCH("sample_rows: select_digit_kernel");
    }
    share_mass_kernel<<<grid, kThreads, 0, stream>>>(logits, cols, inverse, Walk::Ties, s);
    VACC_CUDA_CHECK_LAUNCH("sample_rows: share_mass_kernel");
    crossing_kernel<<<unsigned(rows), kThreads, 0, stream>>>(logits, cols, inverse, Walk::Ties,
                                                             shares, bits, s, out);
    VACC_CUDA_CHECK_LAUNCH("sample_rows: crossing_kernel");
  }
  share_mass_kernel<<<grid, kThreads, 0, stream>>>(logits, cols, inverse, Walk::Nucleus, s);
  VACC_CUDA_CHECK_LAUNCH("sample_rows: share_mass_kernel");
  crossing_kernel<<<unsigned(rows), kThreads, 0, stream>>>(logits, cols, inverse, Walk::Nucleus,
                                                           shares, bits, s, out);
  VACC_CUDA_CHECK_LAUNCH("sample_rows: crossing_kernel");
}

}  // namespace vacc::cuda
