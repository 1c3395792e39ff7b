// Per chunk of R counted rows (rows labelled -100 are skipped, not computed):
//   logits (R, V) = x_chunk @ W^T                         (cuBLASLt, f32 accumulation, scratch
//                                                          buffer in x's dtype: f32, or bf16 in
//                                                          mixed precision)
//   per row (softmax_cross_entropy.cu): max, sum exp (in f32), then
//     whole vocabulary: loss = log(sum) + max - logit[label], dlogits = grad_scale * (softmax -
//     onehot); vocabulary shard, forward: lse and the label's logit; vocabulary shard,
//     backward: dlogits = grad_scale * (exp(logit - lse_global) - onehot)
//     (in place, in the logits' dtype)
//   dx_chunk (R, C) = dlogits @ W                         (cuBLASLt)
//   dW (V, C) += dlogits^T @ x_chunk                      (cuBLASLt, beta = 1)
// The labels are read on the host first (one small copy that waits for the stream): they are
// validated with the CPU backend's messages before any output is touched, and they decide which
// rows are counted. A chunk's rows that are not contiguous in x are gathered first (and its dx
// rows scattered back). The row losses are summed in double in a fixed order.
#include "vacc/kernels/cuda/classifier_cross_entropy.h"

#include <algorithm>
#include <vector>

#include "vacc/core/classifier_chunks.h"
#include "vacc/core/error.h"
#include "vacc/core/gpu_scratch.h"

namespace vacc::cuda {
namespace {

constexpr int32_t kIgnoreLabel = -100;

}  // namespace

// The logits chunk (f32, or bf16 in mixed precision; the gradient overwrites it) is the
// classifier's largest scratch. More rows per chunk keep the GPU busy in the gradient products
// (dx = dlogits @ W has only R rows) and read and write dweight (V x C in f32) fewer times: on
// the H200, 128 MiB chunks (220 f32 rows of a 151936 vocabulary) ran the whole classifier at 168
// TFLOP/s. So a chunk is 1/64 of the device's memory budget, between 128 MiB and 1 GiB (1 GiB
// is 1766 such rows in f32, 3533 in bf16; an 80 GiB GPU reaches it): gpu_classifier_chunk_bytes,
// which the memory model counts too. The CPU simulator's build caps it
// (VACC_CLASSIFIER_CHUNK_BYTES) so that its small tests cross chunks.
int64_t classifier_chunk_bytes(CudaContext& ctx) {
#ifdef VACC_CLASSIFIER_CHUNK_BYTES
  (void)ctx;
  return VACC_CLASSIFIER_CHUNK_BYTES;
#else
  return gpu_classifier_chunk_bytes(ctx.allocator().budget());
#endif
}

namespace {

// The counted rows of a call in chunks, with each chunk's rows of x on the device (gathered
// when they are not contiguous) and the scratch every chunk reuses.
class RowChunks {
 public:
  // shard_vocab: labels may be any non-negative id (vocabulary-parallel pieces) rather than
  // < v (the whole vocabulary); the message is the CPU backend's either way.
  RowChunks(CudaContext& ctx, const char* op, const Tensor& x, const Tensor& labels, int64_t v,
            bool shard_vocab)
      : ctx_(ctx), x_(x), c_(x.size(1)), esize_(dtype_size(x.dtype())) {
    const int64_t n = x.size(0);
    VACC_CHECK(v > 0, op, ": bad sizes N=", n, " C=", c_, shard_vocab ? " V_shard=" : " V=", v);
    std::vector<int32_t> host(static_cast<size_t>(n));
    ctx.download(labels.data(), host.data(), size_t(n) * sizeof(int32_t));
    rows_.reserve(size_t(n));
    for (int64_t i = 0; i < n; ++i) {
      const int32_t l = host[size_t(i)];
      if (l == kIgnoreLabel) continue;
      if (shard_vocab)
        VACC_CHECK(l >= 0, op, ": label ", l, " of row ", i,
                   " is negative (and is not the ignore label -100)");
      else
        VACC_CHECK(l >= 0 && int64_t(l) < v, op, ": label ", l, " of row ", i,
                   " is outside the vocabulary [0, ", v, ") (and is not the ignore label -100)");
      rows_.push_back(int32_t(i));
    }
    const int64_t m = counted();
    if (m == 0) return;
    chunk_rows_ = classifier_chunk_rows(m, v, classifier_chunk_bytes(ctx), int64_t(esize_));
    rows_dev_ = ctx.scratch({m}, DType::I32, "classifier row list");
    ctx.upload(rows_.data(), rows_dev_.data(), size_t(m) * sizeof(int32_t));
    logits_ = ctx.scratch({chunk_rows_, v}, x.dtype(), "classifier logits chunk");
  }

  int64_t counted() const { return int64_t(rows_.size()); }
  int64_t chunk_rows() const { return chunk_rows_; }
  int64_t row(int64_t k) const { return rows_[size_t(k)]; }
  // Counted rows [r0, r0 + R) are one row range of x?
  bool contiguous(int64_t r0, int64_t R) const { return row(r0 + R - 1) - row(r0) == R - 1; }
  // The device list of the input rows of counted rows [r0, ...).
  const int32_t* rows_dev(int64_t r0) const { return rows_dev_.data_as<int32_t>() + r0; }
  // The chunk's logits, in x's dtype; the gradient overwrites them.
  void* logits() const { return logits_.data(); }
  DType dtype() const { return x_.dtype(); }

  // logits (R, V) = the (R, C) rows `xc` @ W^T, in x's dtype (f32 accumulation).
  void logits_product(const void* xc, int64_t R, const Tensor& weight) {
    ctx_.gemm(xc, false, weight.data(), true, logits(), R, weight.size(0), c_, dtype(), dtype(),
              1.0f, 0.0f, nullptr);
  }

  // The (R, C) rows of x for counted rows [r0, r0 + R).
  const void* x_chunk(int64_t r0, int64_t R) {
    if (contiguous(r0, R))
      return static_cast<const char*>(x_.data()) + size_t(row(r0)) * size_t(c_) * esize_;
    if (!xgather_.defined())
      xgather_ = ctx_.scratch({chunk_rows_, c_}, x_.dtype(), "classifier x rows");
    gather_rows(x_.data(), rows_dev(r0), R, c_, esize_, xgather_.data(), ctx_.stream());
    return xgather_.data();
  }

  // The gradient products of a chunk whose dlogits (R, V) have overwritten its logits:
  // dx rows = dlog @ W (overwrite), dweight += dlog^T @ x_chunk.
  void backward_products(int64_t r0, int64_t R, const void* xc, const Tensor& weight, Tensor* dx,
                         Tensor* dweight) {
    const int64_t v = weight.size(0);
    const DType dt = x_.dtype();
    const void* dlog = logits();
    if (dx) {
      if (contiguous(r0, R)) {
        ctx_.gemm(dlog, false, weight.data(), false, dx->data_as<float>() + row(r0) * c_, R, c_,
                  v, dt, DType::F32, 1.0f, 0.0f, nullptr);
      } else {
        if (!dxgather_.defined())
          dxgather_ = ctx_.scratch({chunk_rows_, c_}, DType::F32, "classifier dx rows");
        ctx_.gemm(dlog, false, weight.data(), false, dxgather_.data(), R, c_, v, dt, DType::F32,
                  1.0f, 0.0f, nullptr);
        scatter_rows(dxgather_.data_as<float>(), rows_dev(r0), R, c_, dx->data_as<float>(),
                     ctx_.stream());
      }
    }
    if (dweight)
      ctx_.gemm(dlog, true, xc, false, dweight->data(), v, c_, R, dt, DType::F32, 1.0f, 1.0f,
                nullptr);
  }

 private:
  CudaContext& ctx_;
  const Tensor& x_;
  int64_t c_;
  size_t esize_;
  std::vector<int32_t> rows_;
  int64_t chunk_rows_ = 1;
  Tensor rows_dev_, logits_, xgather_, dxgather_;
};

}  // namespace

void classifier_cross_entropy(CudaContext& ctx, const Tensor& x, const Tensor& weight,
                              const Tensor& labels, float grad_scale, Tensor& loss_sum,
                              Tensor* dx, Tensor* dweight) {
  const int64_t n = x.size(0), c = x.size(1), v = weight.size(0);
  cudaStream_t stream = ctx.stream();
  RowChunks chunks(ctx, "classifier_cross_entropy", x, labels, v, false);
  const int64_t m = chunks.counted();
  const bool want_grad = dx != nullptr || dweight != nullptr;
  if (dx && m < n) zero_ignored_rows(dx->data_as<float>(), labels.data_as<int32_t>(), n, c, stream);
  if (m == 0) return;

  const int64_t rows = chunks.chunk_rows();
  Tensor row_loss = ctx.scratch({m}, DType::F32, "classifier row losses");
  for (int64_t r0 = 0; r0 < m; r0 += rows) {
    const int64_t R = std::min(rows, m - r0);
    const void* xc = chunks.x_chunk(r0, R);
    chunks.logits_product(xc, R, weight);
    softmax_cross_entropy_rows(chunks.logits(), chunks.dtype(), R, v, chunks.rows_dev(r0),
                               labels.data_as<int32_t>(), want_grad, grad_scale,
                               row_loss.data_as<float>() + r0, stream);
    if (want_grad) chunks.backward_products(r0, R, xc, weight, dx, dweight);
  }
  add_loss_sum(row_loss.data_as<float>(), m, loss_sum.data_as<float>(), stream);
}

void classifier_logsumexp(CudaContext& ctx, const Tensor& x, const Tensor& weight,
                          int64_t vocab_start, const Tensor& labels, Tensor& lse,
                          Tensor& target_logit) {
  const int64_t n = x.size(0), v = weight.size(0);
  cudaStream_t stream = ctx.stream();
  RowChunks chunks(ctx, "classifier_logsumexp", x, labels, v, true);
  fill(lse.data(), DType::F32, 0.0f, n, stream);
  fill(target_logit.data(), DType::F32, 0.0f, n, stream);
  const int64_t m = chunks.counted(), rows = chunks.chunk_rows();
  for (int64_t r0 = 0; r0 < m; r0 += rows) {
    const int64_t R = std::min(rows, m - r0);
    chunks.logits_product(chunks.x_chunk(r0, R), R, weight);
    shard_logsumexp_rows(chunks.logits(), chunks.dtype(), R, v, chunks.rows_dev(r0),
                         labels.data_as<int32_t>(), vocab_start, lse.data_as<float>(),
                         target_logit.data_as<float>(), stream);
  }
}

void classifier_cross_entropy_backward(CudaContext& ctx, const Tensor& x, const Tensor& weight,
                                       int64_t vocab_start, const Tensor& labels,
                                       const Tensor& lse_global, float grad_scale, Tensor* dx,
                                       Tensor* dweight) {
  const int64_t n = x.size(0), c = x.size(1), v = weight.size(0);
  cudaStream_t stream = ctx.stream();
  RowChunks chunks(ctx, "classifier_cross_entropy_backward", x, labels, v, true);
  if (!dx && !dweight) return;
  const int64_t m = chunks.counted(), rows = chunks.chunk_rows();
  if (dx && m < n) zero_ignored_rows(dx->data_as<float>(), labels.data_as<int32_t>(), n, c, stream);
  if (m == 0) return;
  for (int64_t r0 = 0; r0 < m; r0 += rows) {
    const int64_t R = std::min(rows, m - r0);
    const void* xc = chunks.x_chunk(r0, R);
    chunks.logits_product(xc, R, weight);
    shard_softmax_grad_rows(chunks.logits(), chunks.dtype(), R, v, chunks.rows_dev(r0),
                            labels.data_as<int32_t>(), vocab_start, lse_global.data_as<float>(),
                            grad_scale, stream);
    chunks.backward_products(r0, R, xc, weight, dx, dweight);
  }
}

}  // namespace vacc::cuda
