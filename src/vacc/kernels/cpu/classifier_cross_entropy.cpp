// Output projection fused with cross-entropy, in row chunks, so the (N, V) logits are never
// held for all rows at once. Per chunk of R counted rows (rows labelled -100 are skipped, not
// computed):
//   logits (R, V) = x_chunk @ W^T                       (oneDNN, f32 out; rounded to bf16
//                                                        values in mixed precision, as the
//                                                        GPU's bf16 logits and PyTorch's)
//   per row: max, sum exp, loss = log(sum) + max - logit[label],
//            dlogits = grad_scale * (softmax - onehot)  (in place, or into a bf16 buffer)
//   dx_chunk (R, C) = dlogits @ W                       (oneDNN)
//   dW (V, C) += dlogits^T @ x_chunk                    (oneDNN, beta = 1)
// The softmax math is f32 with a vectorised exp; each row's loss is kept and the rows are summed
// in order in double, so the result does not depend on the thread count.
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "vacc/core/classifier_chunks.h"
#include "vacc/core/error.h"
#include "vacc/kernels/cpu/cpu_kernels.h"
#include "vacc/kernels/cpu/fast_exp.h"

namespace vacc::cpu {
namespace {

constexpr int32_t kIgnoreLabel = -100;
// The f32 logits chunk stays within this many bytes. The CPU keeps its logits in f32 in mixed
// precision too (rounded to bf16 values, below).
constexpr int64_t kChunkBytes = int64_t(32) << 20;
constexpr int64_t kLogitBytes = int64_t(sizeof(float));

// The softmax's arguments are never positive.
inline float exp_nonpositive(float x) { return fast_exp(x); }

// f32 -> bf16 bits, round to nearest even (NaN stays NaN), vectorisable.
inline uint16_t to_bf16_bits(float f) {
  uint32_t u = float_bits(f);
  uint32_t rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
  bool nan = (u & 0x7fffffffu) > 0x7f800000u;
  return uint16_t(nan ? ((u >> 16) | 0x40u) : rounded);
}

// Mixed precision keeps the logits in bf16 (the GPU's product writes them so: half the traffic
// of the largest tensor of the step, and what PyTorch's bf16 models do); the CPU rounds its f32
// products' values the same way, so that both backends compute the same function.
inline void round_to_bf16_values(float* row, int64_t v) {
#pragma omp simd
  for (int64_t j = 0; j < v; ++j) row[j] = bits_float(uint32_t(to_bf16_bits(row[j])) << 16);
}

// One row of logits: returns its loss and, if want_grad, writes grad_scale * (softmax - onehot)
// into dlog (f32, possibly the logits row itself) or dlog_bf16. kBf16Out: mixed precision (the
// logits are rounded to bf16 values first).
template <bool kBf16Out>
float row_softmax_xent(float* logits, int64_t v, int32_t label, bool want_grad, float grad_scale,
                       float* dlog, uint16_t* dlog_bf16) {
  if constexpr (kBf16Out) round_to_bf16_values(logits, v);
  float mx = -INFINITY;
#pragma omp simd reduction(max : mx)
  for (int64_t j = 0; j < v; ++j) mx = std::max(mx, logits[j]);
  const float label_logit = logits[label];
  float sum = 0.0f;
  if (want_grad) {
#pragma omp simd reduction(+ : sum)
    for (int64_t j = 0; j < v; ++j) {
      float e = exp_nonpositive(logits[j] - mx);
      logits[j] = e;
      sum += e;
    }
  } else {
#pragma omp simd reduction(+ : sum)
    for (int64_t j = 0; j < v; ++j) sum += exp_nonpositive(logits[j] - mx);
  }
  const float loss = std::log(sum) + mx - label_logit;
  if (want_grad) {
    const float k = grad_scale / sum;
    const float at_label = logits[label] * k - grad_scale;
    if constexpr (kBf16Out) {
#pragma omp simd
      for (int64_t j = 0; j < v; ++j) dlog_bf16[j] = to_bf16_bits(logits[j] * k);
      dlog_bf16[label] = to_bf16_bits(at_label);
    } else {
#pragma omp simd
      for (int64_t j = 0; j < v; ++j) dlog[j] = logits[j] * k;
      dlog[label] = at_label;
    }
  }
  return loss;
}

}  // namespace

double classifier_cross_entropy(const void* x, const void* weight, DType in_dtype,
                                const int32_t* labels, int64_t n, int64_t c, int64_t v,
                                float grad_scale, float* dx, float* dweight) {
  VACC_CHECK(in_dtype == DType::F32 || in_dtype == DType::BF16,
             "classifier_cross_entropy: x and weight must be f32 or bf16, got ",
             dtype_name(in_dtype));
  VACC_CHECK(n >= 0 && c >= 0 && v > 0, "classifier_cross_entropy: bad sizes N=", n, " C=", c,
             " V=", v);
  // Validate every label before touching any output, and list the counted rows.
  std::vector<int64_t> rows;
  rows.reserve(size_t(n));
  for (int64_t i = 0; i < n; ++i) {
    int32_t l = labels[i];
    if (l == kIgnoreLabel) continue;
    VACC_CHECK(l >= 0 && int64_t(l) < v, "classifier_cross_entropy: label ", l, " of row ", i,
               " is outside the vocabulary [0, ", v, ") (and is not the ignore label -100)");
    rows.push_back(i);
  }
  const bool want_grad = dx != nullptr || dweight != nullptr;
  if (dx && int64_t(rows.size()) < n) {  // ignored rows get a zero gradient
    for (int64_t i = 0; i < n; ++i) {
      if (labels[i] == kIgnoreLabel)
        std::memset(dx + size_t(i) * size_t(c), 0, size_t(c) * sizeof(float));
    }
  }
  const int64_t m = int64_t(rows.size());
  if (m == 0) return 0.0;

  const bool bf16_mode = in_dtype == DType::BF16;
  const size_t esize = dtype_size(in_dtype);
  const auto* xb = static_cast<const unsigned char*>(x);

  const int64_t chunk_rows = classifier_chunk_rows(m, v, kChunkBytes, kLogitBytes);

  std::vector<float> logits(size_t(chunk_rows) * size_t(v));
  std::vector<uint16_t> dlog_bf16(want_grad && bf16_mode ? size_t(chunk_rows) * size_t(v) : 0);
  std::vector<unsigned char> xgather;  // the chunk's rows of x when they are not contiguous
  std::vector<float> dxgather;         // and its rows of dx
  std::vector<float> row_loss(static_cast<size_t>(m));

  for (int64_t r0 = 0; r0 < m; r0 += chunk_rows) {
    const int64_t R = std::min(chunk_rows, m - r0);
    const int64_t first = rows[size_t(r0)];
    const bool contiguous = rows[size_t(r0 + R - 1)] - first == R - 1;
    const void* xc;
    if (contiguous) {
      xc = xb + size_t(first) * size_t(c) * esize;
    } else {
      xgather.resize(size_t(chunk_rows) * size_t(c) * esize);
      const size_t row_bytes = size_t(c) * esize;
      for (int64_t r = 0; r < R; ++r)
        std::memcpy(xgather.data() + size_t(r) * row_bytes,
                    xb + size_t(rows[size_t(r0 + r)]) * row_bytes, row_bytes);
      xc = xgather.data();
    }

    matmul(xc, false, weight, true, logits.data(), R, v, c, in_dtype, DType::F32, 1.0f, 0.0f,
           nullptr);

#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < R; ++r) {
      float* lr = logits.data() + size_t(r) * size_t(v);
      int32_t label = labels[rows[size_t(r0 + r)]];
      row_loss[size_t(r0 + r)] =
          bf16_mode ? row_softmax_xent<true>(lr, v, label, want_grad, grad_scale, nullptr,
                                             want_grad ? dlog_bf16.data() + size_t(r) * size_t(v)
                                                       : nullptr)
                    : row_softmax_xent<false>(lr, v, label, want_grad, grad_scale, lr, nullptr);
    }
    if (!want_grad) continue;

    const void* dlog = bf16_mode ? static_cast<const void*>(dlog_bf16.data())
                                 : static_cast<const void*>(logits.data());
    if (dx) {
      if (contiguous) {
        matmul(dlog, false, weight, false, dx + size_t(first) * size_t(c), R, c, v, in_dtype,
               DType::F32, 1.0f, 0.0f, nullptr);
      } else {
        dxgather.resize(size_t(chunk_rows) * size_t(c));
        matmul(dlog, false, weight, false, dxgather.data(), R, c, v, in_dtype, DType::F32, 1.0f,
               0.0f, nullptr);
        for (int64_t r = 0; r < R; ++r)
          std::memcpy(dx + size_t(rows[size_t(r0 + r)]) * size_t(c),
                      dxgather.data() + size_t(r) * size_t(c), size_t(c) * sizeof(float));
      }
    }
    if (dweight)
      matmul(dlog, true, xc, false, dweight, v, c, R, in_dtype, DType::F32, 1.0f, 1.0f, nullptr);
  }

  double total = 0.0;
  for (float l : row_loss) total += double(l);
  return total;
}

}  // namespace vacc::cpu

// ---- vocabulary-parallel pieces ----
// The same row chunks over a shard of the vocabulary: the forward pass keeps per row only the
// shard's log-sum-exp and the label's logit; the backward pass recomputes the chunk's logits
// and turns them into dlogits with the global log-sum-exp the caller combined from every
// shard.

namespace vacc::cpu {
namespace {

// The counted rows of a vocabulary shard's call, in row chunks, with each chunk's rows of x
// (gathered when they are not contiguous).
class ShardRowChunks {
 public:
  ShardRowChunks(const char* op, const void* x, DType in_dtype, const int32_t* labels, int64_t n,
                 int64_t c, int64_t v)
      : x_(static_cast<const unsigned char*>(x)), c_(c), esize_(dtype_size(in_dtype)) {
    VACC_CHECK(in_dtype == DType::F32 || in_dtype == DType::BF16, op,
               ": x and weight must be f32 or bf16, got ", dtype_name(in_dtype));
    VACC_CHECK(n >= 0 && c >= 0 && v > 0, op, ": bad sizes N=", n, " C=", c, " V_shard=", v);
    rows_.reserve(size_t(n));
    for (int64_t i = 0; i < n; ++i) {
      const int32_t l = labels[i];
      if (l == kIgnoreLabel) continue;
      VACC_CHECK(l >= 0, op, ": label ", l, " of row ", i,
                 " is negative (and is not the ignore label -100)");
      rows_.push_back(i);
    }
    const int64_t m = counted();
    chunk_rows_ = std::max<int64_t>(1, classifier_chunk_rows(m, v, kChunkBytes, kLogitBytes));
  }

  int64_t counted() const { return int64_t(rows_.size()); }
  int64_t chunk_rows() const { return chunk_rows_; }
  int64_t row(int64_t k) const { return rows_[size_t(k)]; }
  // Counted rows [r0, r0 + R) are one row range of x?
  bool contiguous(int64_t r0, int64_t R) const { return row(r0 + R - 1) - row(r0) == R - 1; }
  // The (R, C) rows of x for counted rows [r0, r0 + R).
  const void* x_chunk(int64_t r0, int64_t R) {
    const size_t row_bytes = size_t(c_) * esize_;
    if (contiguous(r0, R)) return x_ + size_t(row(r0)) * row_bytes;
    gather_.resize(size_t(chunk_rows_) * row_bytes);
    for (int64_t r = 0; r < R; ++r)
      std::memcpy(gather_.data() + size_t(r) * row_bytes, x_ + size_t(row(r0 + r)) * row_bytes,
                  row_bytes);
    return gather_.data();
  }

 private:
  const unsigned char* x_;
  int64_t c_;
  size_t esize_;
  std::vector<int64_t> rows_;
  int64_t chunk_rows_ = 1;
  std::vector<unsigned char> gather_;
};

// The shard's column of a label, or -1 when the label is outside [vocab_start, + v).
inline int64_t shard_column(int32_t label, int64_t vocab_start, int64_t v) {
  const int64_t j = int64_t(label) - vocab_start;
  return j >= 0 && j < v ? j : -1;
}

}  // namespace

void classifier_logsumexp(const void* x, const void* weight, DType in_dtype,
                          const int32_t* labels, int64_t n, int64_t c, int64_t v,
                          int64_t vocab_start, float* lse, float* target_logit) {
  ShardRowChunks chunks("classifier_logsumexp", x, in_dtype, labels, n, c, v);
  std::fill(lse, lse + n, 0.0f);
  std::fill(target_logit, target_logit + n, 0.0f);
  const int64_t m = chunks.counted();
  if (m == 0) return;
  std::vector<float> logits(size_t(chunks.chunk_rows()) * size_t(v));
  for (int64_t r0 = 0; r0 < m; r0 += chunks.chunk_rows()) {
    const int64_t R = std::min(chunks.chunk_rows(), m - r0);
    matmul(chunks.x_chunk(r0, R), false, weight, true, logits.data(), R, v, c, in_dtype,
           DType::F32, 1.0f, 0.0f, nullptr);
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < R; ++r) {
      float* lr = logits.data() + size_t(r) * size_t(v);
      if (in_dtype == DType::BF16) round_to_bf16_values(lr, v);
      const int64_t i = chunks.row(r0 + r);
      float mx = -INFINITY;
#pragma omp simd reduction(max : mx)
      for (int64_t j = 0; j < v; ++j) mx = std::max(mx, lr[j]);
      float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
      for (int64_t j = 0; j < v; ++j) sum += exp_nonpositive(lr[j] - mx);
      lse[i] = std::log(sum) + mx;
      const int64_t col = shard_column(labels[i], vocab_start, v);
      target_logit[i] = col >= 0 ? lr[col] : 0.0f;
    }
  }
}

void classifier_cross_entropy_backward(const void* x, const void* weight, DType in_dtype,
                                       const int32_t* labels, int64_t n, int64_t c, int64_t v,
                                       int64_t vocab_start, const float* lse_global,
                                       float grad_scale, float* dx, float* dweight) {
  ShardRowChunks chunks("classifier_cross_entropy_backward", x, in_dtype, labels, n, c, v);
  if (!dx && !dweight) return;
  const int64_t m = chunks.counted();
  if (dx && m < n) {  // ignored rows get a zero gradient
    for (int64_t i = 0; i < n; ++i)
      if (labels[i] == kIgnoreLabel)
        std::memset(dx + size_t(i) * size_t(c), 0, size_t(c) * sizeof(float));
  }
  if (m == 0) return;
  const bool bf16_mode = in_dtype == DType::BF16;
  const int64_t rows = chunks.chunk_rows();
  std::vector<float> logits(size_t(rows) * size_t(v));
  std::vector<uint16_t> dlog_bf16(bf16_mode ? size_t(rows) * size_t(v) : 0);
  std::vector<float> dxgather;
  for (int64_t r0 = 0; r0 < m; r0 += rows) {
    const int64_t R = std::min(rows, m - r0);
    const void* xc = chunks.x_chunk(r0, R);
    matmul(xc, false, weight, true, logits.data(), R, v, c, in_dtype, DType::F32, 1.0f, 0.0f,
           nullptr);
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < R; ++r) {
      float* lr = logits.data() + size_t(r) * size_t(v);
      if (bf16_mode) round_to_bf16_values(lr, v);
      const int64_t i = chunks.row(r0 + r);
      const float g = lse_global[i];
      const int64_t col = shard_column(labels[i], vocab_start, v);
      // logits - lse_global is at most rounding above 0: fast_exp's range covers it.
#pragma omp simd
      for (int64_t j = 0; j < v; ++j) lr[j] = grad_scale * fast_exp(lr[j] - g);
      if (col >= 0) lr[col] -= grad_scale;
      if (bf16_mode) {
        uint16_t* d = dlog_bf16.data() + size_t(r) * size_t(v);
#pragma omp simd
        for (int64_t j = 0; j < v; ++j) d[j] = to_bf16_bits(lr[j]);
      }
    }
    const void* dlog = bf16_mode ? static_cast<const void*>(dlog_bf16.data())
                                 : static_cast<const void*>(logits.data());
    if (dx) {
      if (chunks.contiguous(r0, R)) {
        matmul(dlog, false, weight, false, dx + size_t(chunks.row(r0)) * size_t(c), R, c, v,
               in_dtype, DType::F32, 1.0f, 0.0f, nullptr);
      } else {
        dxgather.resize(size_t(rows) * size_t(c));
        matmul(dlog, false, weight, false, dxgather.data(), R, c, v, in_dtype, DType::F32, 1.0f,
               0.0f, nullptr);
        for (int64_t r = 0; r < R; ++r)
          std::memcpy(dx + size_t(chunks.row(r0 + r)) * size_t(c),
                      dxgather.data() + size_t(r) * size_t(c), size_t(c) * sizeof(float));
      }
    }
    if (dweight)
      matmul(dlog, true, xc, false, dweight, v, c, R, in_dtype, DType::F32, 1.0f, 1.0f, nullptr);
  }
}

}  // namespace vacc::cpu
