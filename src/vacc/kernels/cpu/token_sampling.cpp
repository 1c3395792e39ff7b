// Drawing the next token from each row of logits (Backend::sample_rows) by the rule of
// kernels/token_sampling_rule.h: the weights in float, their masses as integers, the nucleus's
// boundary by a radix select on the weights' bits, and the draw in token order.
#include <algorithm>
#include <vector>

#include "vacc/kernels/cpu/cpu_kernels.h"
#include "vacc/kernels/cpu/fast_exp.h"
#include "vacc/kernels/token_sampling_rule.h"

namespace vacc::cpu {

using sampling::Mass;

void token_weights(const float* logits, int64_t cols, float max_logit, float temperature,
                   float* weights) {
  const float inverse = 1.0f / temperature;
  // Plain arithmetic and a select: a SIMD loop (libm's exp in double took 1.3 ms a token over
  // Qwen's 151936 tokens). A NaN logit fails the comparison and weighs nothing.
  for (int64_t i = 0; i < cols; ++i) {
    const float x = sampling::exp_argument(logits[i], max_logit, inverse);
    weights[i] = x >= sampling::kLowestExponent ? fast_exp(x) : 0.0f;
  }
}

namespace {

// One row's draw (its largest logit finite, sampling not greedy). The passes over the whole row
// are plain loops that gcc vectorises, but for the collection of the candidates.
int32_t sample_row(const float* row, int64_t cols, float max_logit, uint64_t bits,
                   float temperature, float top_p) {
  thread_local std::vector<float> weights;
  thread_local std::vector<Mass> masses;
  thread_local std::vector<int32_t> candidates, kept;
  const size_t n = size_t(cols);
  weights.resize(n);
  masses.resize(n);
  token_weights(row, cols, max_logit, temperature, weights.data());
  const double scale = sampling::mass_scale(cols);
  auto key = [&](size_t i) { return float_bits(weights[i]); };
  Mass total = 0;
  for (size_t i = 0; i < n; ++i) {
    masses[i] = sampling::mass_of(weights[i], scale);
    total += masses[i];
  }
  const Mass target = sampling::nucleus_target(total, top_p);

  uint32_t boundary = 0;
  int64_t last_tie = cols - 1;
  Mass nucleus = total;
  if (top_p < 1.0f) {
    // Only the tokens heavier than L = (total - target) / cols can hold the boundary: the others
    // weigh at most total - target together, so the heavier ones (every token heavier than the
    // boundary among them) reach the target. A trained model's logits leave a few hundred of
    // Qwen's 151936 here.
    const Mass light = (total - target) / Mass(cols);
    candidates.resize(n);
    size_t count = 0;
    for (size_t i = 0; i < n; ++i) {  // without a branch: flat logits make it unpredictable
      candidates[count] = int32_t(i);
      count += masses[i] > light;
    }
    candidates.resize(count);
    // The boundary weight's bits, a digit at a time from the top; the candidates still in
    // question (those whose bits so far equal the boundary's) are kept in token order, so that
    // after the last digit they are the boundary's ties in the order the rule counts them.
    // The histograms spread their additions over four copies: most candidates may share a
    // digit, and one copy would wait on each addition to the same counter.
    Mass copies[4][256], hist[256], above = 0;
    for (int shift = 24; shift >= 0; shift -= 8) {
      std::fill(&copies[0][0], &copies[0][0] + 4 * 256, Mass(0));
      for (size_t k = 0; k < candidates.size(); ++k) {
        const size_t i = size_t(candidates[k]);
        copies[k & 3][(key(i) >> shift) & 255] += masses[i];
      }
      for (int d = 0; d < 256; ++d)
        hist[d] = copies[0][d] + copies[1][d] + copies[2][d] + copies[3][d];
      boundary |= uint32_t(sampling::choose_digit(hist, above, target)) << shift;
      kept.resize(candidates.size());
      size_t count_kept = 0;
      for (int32_t i : candidates) {
        kept[count_kept] = i;
        count_kept += key(size_t(i)) >> shift == boundary >> shift;
      }
      kept.resize(count_kept);
      candidates.swap(kept);
    }
    nucleus = above;
    for (int32_t i : candidates) {
      nucleus += masses[size_t(i)];
      if (nucleus >= target) {
        last_tie = i;
        break;
      }
    }
  }
  // The draw: the nucleus's mass summed a block at a time, then the block where it passes the
  // point walked token by token.
  const Mass point = sampling::draw_point(bits, nucleus);
  auto member_mass = [&](size_t i) {
    return sampling::in_nucleus(key(i), int64_t(i), boundary, last_tie) ? masses[i] : Mass(0);
  };
  constexpr size_t kBlock = 256;
  Mass run = 0;
  for (size_t begin = 0; begin < n; begin += kBlock) {
    const size_t end = std::min(n, begin + kBlock);
    Mass block = 0;
    for (size_t i = begin; i < end; ++i) block += member_mass(i);
    if (run + block <= point) {
      run += block;
      continue;
    }
    for (size_t i = begin; i < end; ++i)
      if ((run += member_mass(i)) > point) return int32_t(i);
  }
  return -1;  // unreachable: the nucleus's mass exceeds the point
}

}  // namespace

void sample_rows(const float* logits, int64_t rows, int64_t cols, const uint64_t* random_bits,
                 float temperature, float top_p, int32_t* out) {
  argmax_rows(logits, rows, cols, out);
  if (!(temperature > 0.0f) || !(top_p > 0.0f)) return;  // greedy
  for (int64_t r = 0; r < rows; ++r) {
    if (out[r] < 0) continue;  // the largest logit is not finite
    const float* row = logits + r * cols;
    out[r] = sample_row(row, cols, row[out[r]], random_bits[r], temperature, top_p);
  }
}

}  // namespace vacc::cpu
