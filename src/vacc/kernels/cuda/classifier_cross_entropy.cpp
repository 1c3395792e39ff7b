// Per chunk of R counted rows (rows labelled -100 are skipped, not computed):
//   logits (R, V) = x_chunk @ W^T                         (cuBLASLt, f32 out, scratch buffer)
//   per row (softmax_cross_entropy.cu): max, sum exp, loss = log(sum) + max - logit[label],
//     dlogits = grad_scale * (softmax - onehot)           (in place, or into a bf16 buffer)
//   dx_chunk (R, C) = dlogits @ W                         (cuBLASLt)
//   dW (V, C) += dlogits^T @ x_chunk                      (cuBLASLt, beta = 1)
// The labels are read on the host first (one small copy that waits for the stream): they are
// validated with the CPU backend's message before any output is touched, and they decide which
// rows are counted. A chunk's rows that are not contiguous in x are gathered first (and its dx
// rows scattered back). The row losses are summed in double in a fixed order.
#include "vacc/kernels/cuda/classifier_cross_entropy.h"

#include <algorithm>
#include <vector>

#include "vacc/core/error.h"

namespace vacc::cuda {
namespace {

constexpr int32_t kIgnoreLabel = -100;
// The f32 logits chunk stays within this many bytes (the CPU backend uses 32 MiB; a GPU needs
// more rows per product to be busy). The CPU simulator's build makes it small, so that its tests
// cross chunks.
#ifndef VACC_CLASSIFIER_CHUNK_BYTES
#define VACC_CLASSIFIER_CHUNK_BYTES (int64_t(128) << 20)
#endif
constexpr int64_t kChunkBytes = VACC_CLASSIFIER_CHUNK_BYTES;

const char* at_row(const void* base, int64_t row, int64_t width, size_t elem_size) {
  return static_cast<const char*>(base) + size_t(row) * size_t(width) * elem_size;
}

}  // namespace

void classifier_cross_entropy(CudaContext& ctx, const Tensor& x, const Tensor& weight,
                              const Tensor& labels, float grad_scale, Tensor& loss_sum,
                              Tensor* dx, Tensor* dweight) {
  const int64_t n = x.size(0), c = x.size(1), v = weight.size(0);
  const DType in_dtype = x.dtype();
  const size_t esize = dtype_size(in_dtype);
  cudaStream_t stream = ctx.stream();
  VACC_CHECK(v > 0, "classifier_cross_entropy: bad sizes N=", n, " C=", c, " V=", v);

  std::vector<int32_t> host_labels(static_cast<size_t>(n));
  ctx.download(labels.data(), host_labels.data(), size_t(n) * sizeof(int32_t));
  std::vector<int32_t> rows;
  rows.reserve(size_t(n));
  for (int64_t i = 0; i < n; ++i) {
    const int32_t l = host_labels[size_t(i)];
    if (l == kIgnoreLabel) continue;
    VACC_CHECK(l >= 0 && int64_t(l) < v, "classifier_cross_entropy: label ", l, " of row ", i,
               " is outside the vocabulary [0, ", v, ") (and is not the ignore label -100)");
    rows.push_back(int32_t(i));
  }
  const int64_t m = int64_t(rows.size());
  const bool want_grad = dx != nullptr || dweight != nullptr;
  if (dx && m < n) zero_ignored_rows(dx->data_as<float>(), labels.data_as<int32_t>(), n, c, stream);
  if (m == 0) return;

  // Chunks of equal size (the last no larger), at most kChunkBytes of f32 logits each.
  const int64_t max_rows = std::max<int64_t>(1, kChunkBytes / (v * int64_t(sizeof(float))));
  const int64_t num_chunks = (m + max_rows - 1) / max_rows;
  const int64_t chunk_rows = (m + num_chunks - 1) / num_chunks;

  Tensor rows_dev = ctx.scratch({m}, DType::I32, "classifier row list");
  ctx.upload(rows.data(), rows_dev.data(), size_t(m) * sizeof(int32_t));
  Tensor logits = ctx.scratch({chunk_rows, v}, DType::F32, "classifier logits chunk");
  Tensor dlog_bf16;
  if (want_grad && in_dtype == DType::BF16)
    dlog_bf16 = ctx.scratch({chunk_rows, v}, DType::BF16, "classifier bf16 logit gradients");
  Tensor row_loss = ctx.scratch({m}, DType::F32, "classifier row losses");
  Tensor xgather, dxgather;  // allocated when a chunk's rows are not contiguous

  for (int64_t r0 = 0; r0 < m; r0 += chunk_rows) {
    const int64_t R = std::min(chunk_rows, m - r0);
    const int64_t first = rows[size_t(r0)];
    const bool contiguous = rows[size_t(r0 + R - 1)] - first == R - 1;
    const int32_t* chunk_rows_dev = rows_dev.data_as<int32_t>() + r0;
    const void* xc;
    if (contiguous) {
      xc = at_row(x.data(), first, c, esize);
    } else {
      if (!xgather.defined()) xgather = ctx.scratch({chunk_rows, c}, in_dtype, "classifier x rows");
      gather_rows(x.data(), chunk_rows_dev, R, c, esize, xgather.data(), stream);
      xc = xgather.data();
    }

    ctx.gemm(xc, false, weight.data(), true, logits.data(), R, v, c, in_dtype, DType::F32, 1.0f,
             0.0f, nullptr);
    softmax_cross_entropy_rows(logits.data_as<float>(), R, v, chunk_rows_dev,
                               labels.data_as<int32_t>(), want_grad, grad_scale,
                               dlog_bf16.defined() ? dlog_bf16.data_as<bf16>() : nullptr,
                               row_loss.data_as<float>() + r0, stream);
    if (!want_grad) continue;

    const void* dlog = dlog_bf16.defined() ? dlog_bf16.data() : logits.data();
    if (dx) {
      if (contiguous) {
        ctx.gemm(dlog, false, weight.data(), false, dx->data_as<float>() + first * c, R, c, v,
                 in_dtype, DType::F32, 1.0f, 0.0f, nullptr);
      } else {
        if (!dxgather.defined())
          dxgather = ctx.scratch({chunk_rows, c}, DType::F32, "classifier dx rows");
        ctx.gemm(dlog, false, weight.data(), false, dxgather.data(), R, c, v, in_dtype,
                 DType::F32, 1.0f, 0.0f, nullptr);
        scatter_rows(dxgather.data_as<float>(), chunk_rows_dev, R, c, dx->data_as<float>(),
                     stream);
      }
    }
    if (dweight)
      ctx.gemm(dlog, true, xc, false, dweight->data(), v, c, R, in_dtype, DType::F32, 1.0f, 1.0f,
               nullptr);
  }
  add_loss_sum(row_loss.data_as<float>(), m, loss_sum.data_as<float>(), stream);
}

}  // namespace vacc::cuda
