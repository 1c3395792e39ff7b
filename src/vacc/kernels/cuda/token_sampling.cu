// Drawing the next token from each row of logits on the device (Backend::sample_rows), by the
// rule of kernels/token_sampling_rule.h, so that a sampled token reads back 4 bytes instead of
// its logits row (600 KB for Qwen) and the host's sampling. One block a row: the row stays in
// the L2 cache across the passes (the largest logit, the total and the first digit, three more
// digits of the boundary weight, its ties, the draw), and each pass recomputes the weights
// rather than storing them. The masses are integers, so their sums do not depend on the order
// of the block's atomics and reductions: the same logits and bits draw the same token every
// time. The histograms are built without piling 64-bit shared atomics onto one address (a flat
// row puts nearly every token in one bin): each warp writes its own copy, and each lane adds up
// its run of tokens in one bin before it writes. With one shared histogram and an atomic per
// token, a 0.5B model's random-weight rows took 2.9 ms each on an H100.
#include <cstdint>

#include "vacc/kernels/cuda/cuda_check.h"
#include "vacc/kernels/cuda/cuda_kernels.h"
#include "vacc/kernels/cuda/device_math.cuh"
#include "vacc/kernels/cuda/launch_with_smem.cuh"
#include "vacc/kernels/token_sampling_rule.h"

namespace vacc::cuda {
namespace {

using sampling::Mass;

constexpr int kThreads = 1024;
constexpr int kWarps = kThreads / 32;
constexpr unsigned kFullMask = 0xffffffffu;
constexpr int kBins = 256;
// Dynamic shared memory: one histogram per warp.
constexpr size_t kWarpHistogramBytes = size_t(kWarps) * kBins * sizeof(sampling::Mass);

__device__ __forceinline__ Mass warp_sum_mass(Mass v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(kFullMask, v, o);
  return v;
}
__device__ __forceinline__ int warp_min_int(int v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    const int other = __shfl_xor_sync(kFullMask, v, o);
    v = other < v ? other : v;
  }
  return v;
}
// Each lane's sum of the values of lanes 0..lane.
__device__ __forceinline__ Mass warp_inclusive_scan(Mass v) {
  const int lane = int(threadIdx.x) & 31;
#pragma unroll
  for (int o = 1; o < 32; o <<= 1) {
    const Mass from = __shfl_up_sync(kFullMask, v, o);
    if (lane >= o) v += from;
  }
  return v;
}

// What the block's passes share.
struct RowShared {
  Mass hist[kBins];
  Mass warp_part[kWarps];
  Mass total, above, base, run_at_hit;
  float max_partial[kWarps];
  float max_logit;
  uint32_t boundary;
  int hit_warp;
  int64_t hit_index;
};

// The first index, in token order, where `start` plus the running sum of mass(i) reaches
// `threshold` (exceeds it where `strict`); its running sum in s.run_at_hit. Every thread of the
// block calls it. Each warp sums a contiguous share of the row, thread 0 finds the share where
// the threshold falls, and that warp walks it 32 tokens at a time.
template <typename MassOf>
__device__ int64_t first_crossing(int64_t cols, Mass start, Mass threshold, bool strict,
                                  MassOf mass, RowShared& s) {
  const int warp = int(threadIdx.x) / 32, lane = int(threadIdx.x) & 31;
  const int64_t share = (cols + kWarps - 1) / kWarps;
  const int64_t begin = int64_t(warp) * share < cols ? int64_t(warp) * share : cols;
  const int64_t end = begin + share < cols ? begin + share : cols;
  auto reached = [&](Mass sum) { return strict ? sum > threshold : sum >= threshold; };
  Mass part = 0;
  for (int64_t i = begin + lane; i < end; i += 32) part += mass(i);
  part = warp_sum_mass(part);
  if (lane == 0) s.warp_part[warp] = part;
  __syncthreads();
  if (threadIdx.x == 0) {
    Mass run = start;
    int w = 0;
    while (w < kWarps - 1 && !reached(run + s.warp_part[w])) run += s.warp_part[w++];
    s.hit_warp = w;
    s.base = run;
    s.hit_index = -1;
  }
  __syncthreads();
  if (warp == s.hit_warp) {
    Mass run = s.base;
    for (int64_t first = begin; first < end; first += 32) {  // the same trips for every lane
      const int64_t i = first + lane;
      const Mass inclusive = warp_inclusive_scan(i < end ? mass(i) : 0);
      const int hit = warp_min_int(i < end && reached(run + inclusive) ? lane : 32);
      if (hit < 32) {
        if (lane == hit) {
          s.hit_index = i;
          s.run_at_hit = run + inclusive;
        }
        break;
      }
      run += __shfl_sync(kFullMask, inclusive, 31);
    }
  }
  __syncthreads();
  return s.hit_index;
}

// s.hist[bin] = the sum of mass over the row's tokens, where entry(i, bin) gives token i's mass
// (0: not counted) and sets its bin. Every thread of the block calls it; warp_hist (kWarps
// copies of kBins, zero) is zero again on return.
template <typename Entry>
__device__ void build_histogram(int64_t cols, Entry entry, Mass* warp_hist, RowShared& s) {
  Mass* mine = warp_hist + (threadIdx.x / 32) * kBins;
  int run_bin = 0;
  Mass run = 0;
  for (int64_t i = threadIdx.x; i < cols; i += kThreads) {
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
    for (int w = 0; w < kWarps; ++w) {
      sum += warp_hist[w * kBins + k];
      warp_hist[w * kBins + k] = 0;
    }
    s.hist[k] = sum;
  }
  __syncthreads();
}

__global__ void __launch_bounds__(kThreads)
    sample_rows_kernel(const float* logits, int64_t cols, const Mass* random_bits,
                       float temperature, float top_p, int32_t* out) {
  __shared__ RowShared s;
  extern __shared__ Mass warp_hist[];
  const float* row = logits + int64_t(blockIdx.x) * cols;
  const int warp = int(threadIdx.x) / 32, lane = int(threadIdx.x) & 31;

  // The largest logit (fmaxf passes over NaNs).
  float m = kNegInf;
  for (int64_t i = threadIdx.x; i < cols; i += kThreads) m = fmaxf(m, row[i]);
  m = warp_max(m);
  if (lane == 0) s.max_partial[warp] = m;
  for (int k = int(threadIdx.x); k < kWarps * kBins; k += kThreads) warp_hist[k] = 0;
  if (threadIdx.x == 0) s.total = 0, s.above = 0, s.boundary = 0;
  __syncthreads();
  if (threadIdx.x == 0) {
    float largest = kNegInf;
    for (int w = 0; w < kWarps; ++w) largest = fmaxf(largest, s.max_partial[w]);
    s.max_logit = largest;
  }
  __syncthreads();
  const float max_logit = s.max_logit;
  if (!isfinite(max_logit)) {
    if (threadIdx.x == 0) out[blockIdx.x] = -1;
    return;  // the whole block
  }
  const float inverse = 1.0f / temperature;
  const double scale = double(1ull << sampling::mass_shift(cols));
  auto weight = [&](int64_t i) {
    const float x = sampling::exp_argument(row[i], max_logit, inverse);
    return x >= sampling::kLowestExponent ? expf(x) : 0.0f;
  };

  // The total and the first digit's masses.
  Mass total = 0;
  build_histogram(
      cols,
      [&](int64_t i, int& bin) {
        const float w = weight(i);
        const Mass q = sampling::mass_of(w, scale);
        total += q;
        bin = int(__float_as_uint(w) >> 24);
        return q;
      },
      warp_hist, s);
  total = warp_sum_mass(total);
  if (lane == 0) atomicAdd(&s.total, total);
  __syncthreads();
  total = s.total;
  const Mass target = sampling::nucleus_target(total, top_p);

  uint32_t boundary = 0;
  int64_t last_tie = cols - 1;
  Mass nucleus = total;
  if (top_p < 1.0f) {
    // The boundary weight's bits, a digit at a time from the top, over the tokens whose bits so
    // far equal the boundary's.
    for (int shift = 24; shift >= 0; shift -= 8) {
      if (shift < 24) {
        const uint32_t prefix = s.boundary >> (shift + 8);
        build_histogram(
            cols,
            [&](int64_t i, int& bin) {
              const float w = weight(i);
              const uint32_t key = __float_as_uint(w);
              bin = int((key >> shift) & 255);
              return key >> (shift + 8) == prefix ? sampling::mass_of(w, scale) : Mass(0);
            },
            warp_hist, s);
      }
      if (threadIdx.x == 0)
        s.boundary |= uint32_t(sampling::choose_digit(s.hist, s.above, target)) << shift;
      __syncthreads();
    }
    boundary = s.boundary;
    // The ties, in token order, until the nucleus's mass reaches the target.
    last_tie = first_crossing(
        cols, s.above, target, false,
        [&](int64_t i) {
          const float w = weight(i);
          return __float_as_uint(w) == boundary ? sampling::mass_of(w, scale) : Mass(0);
        },
        s);
    nucleus = s.run_at_hit;
  }
  const Mass point = sampling::draw_point(random_bits[blockIdx.x], nucleus);
  const int64_t token = first_crossing(
      cols, 0, point, true,
      [&](int64_t i) {
        const float w = weight(i);
        return sampling::in_nucleus(__float_as_uint(w), i, boundary, last_tie)
                   ? sampling::mass_of(w, scale)
                   : Mass(0);
      },
      s);
  if (threadIdx.x == 0) out[blockIdx.x] = int32_t(token);
}

}  // namespace

void sample_rows(const float* logits, int64_t rows, int64_t cols, const uint64_t* random_bits,
                 float temperature, float top_p, int32_t* out, cudaStream_t stream) {
  if (rows == 0) return;
  if (!(temperature > 0.0f) || !(top_p > 0.0f)) {  // greedy
    argmax_rows(logits, rows, cols, out, stream);
    return;
  }
  launch_with_smem<kThreads>(sample_rows_kernel, "sample_rows", rows, kWarpHistogramBytes, stream,
                             logits, cols, reinterpret_cast<const Mass*>(random_bits),
                             temperature, top_p, out);
}

}  // namespace vacc::cuda
