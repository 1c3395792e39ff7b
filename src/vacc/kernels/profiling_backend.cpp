#include "vacc/kernels/profiling_backend.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <vector>

namespace vacc {

template <typename Fn>
void ProfilingBackend::timed(const std::string& op, double flops, Fn&& fn,
                             const std::string& shape) {
  inner_.synchronize();
  auto t0 = std::chrono::steady_clock::now();
  fn();
  inner_.synchronize();
  double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  OpProfile& p = by_op_[op];
  p.calls++;
  p.seconds += s;
  p.flops += flops;
  if (!shape.empty()) {
    OpProfile& q = by_shape_[shape];
    q.calls++;
    q.seconds += s;
    q.flops += flops;
  }
}

std::string ProfilingBackend::report(double total_seconds) const {
  auto table = [&](const std::map<std::string, OpProfile>& rows, const char* title) {
    std::vector<std::pair<std::string, OpProfile>> sorted(rows.begin(), rows.end());
    std::sort(sorted.begin(), sorted.end(),
              [](auto& a, auto& b) { return a.second.seconds > b.second.seconds; });
    std::string out;
    char line[256];
    std::snprintf(line, sizeof line, "%-40s %8s %10s %7s %10s\n", title, "calls", "ms", "share",
                  "GFLOP/s");
    out += line;
    for (auto& [name, p] : sorted) {
      std::snprintf(line, sizeof line, "%-40s %8lld %10.1f %6.1f%% %10s\n", name.c_str(),
                    (long long)p.calls, 1e3 * p.seconds, 100.0 * p.seconds / total_seconds,
                    p.flops > 0 ? std::to_string(int(p.flops / p.seconds / 1e9)).c_str() : "");
      out += line;
    }
    return out;
  };
  return table(by_op_, "op") + "\n" + table(by_shape_, "matmul (M x N x K, dtype)");
}

void ProfilingBackend::upload(const void* host, Tensor& dst) {
  timed("upload", 0, [&] { inner_.upload(host, dst); });
}
void ProfilingBackend::download(const Tensor& src, void* host) {
  timed("download", 0, [&] { inner_.download(src, host); });
}
void ProfilingBackend::copy(const Tensor& src, Tensor& dst) {
  timed(src.dtype() == dst.dtype() ? "copy" : "convert " + dtype_name(src.dtype()) + "->" +
                                                  dtype_name(dst.dtype()),
        0, [&] { inner_.copy(src, dst); });
}
void ProfilingBackend::fill(Tensor& dst, float value) {
  timed("fill", 0, [&] { inner_.fill(dst, value); });
}
void ProfilingBackend::add(const Tensor& a, const Tensor& b, Tensor& out) {
  timed("add", 0, [&] { inner_.add(a, b, out); });
}
void ProfilingBackend::scale(Tensor& x, float s) {
  timed("scale", 0, [&] { inner_.scale(x, s); });
}
void ProfilingBackend::sum_of_squares(const Tensor& x, Tensor& acc) {
  timed("sum_of_squares", 0, [&] { inner_.sum_of_squares(x, acc); });
}
namespace {
// "M x N x K bf16 Ta": a product's row in the profile's table of shapes.
std::string product_shape(const Tensor& a, bool trans_a, bool trans_b, const Tensor& out) {
  const int64_t K = trans_a ? a.size(0) : a.size(1);
  return std::to_string(out.size(0)) + " x " + std::to_string(out.size(1)) + " x " +
         std::to_string(K) + " " + dtype_name(a.dtype()) + (trans_a ? " Ta" : "") +
         (trans_b ? " Tb" : "");
}
double product_flops(const Tensor& a, bool trans_a, const Tensor& out) {
  return 2.0 * double(out.size(0)) * double(out.size(1)) * double(trans_a ? a.size(0) : a.size(1));
}
}  // namespace

void ProfilingBackend::matmul(const Tensor& a, bool trans_a, const Tensor& b, bool trans_b,
                              Tensor& out, float alpha, float beta, const Tensor* bias) {
  timed("matmul " + dtype_name(a.dtype()), product_flops(a, trans_a, out),
        [&] { inner_.matmul(a, trans_a, b, trans_b, out, alpha, beta, bias); },
        product_shape(a, trans_a, trans_b, out));
}
void ProfilingBackend::matmul_add(const Tensor& a, bool trans_a, const Tensor& b, bool trans_b,
                                  const Tensor& addend, Tensor& out) {
  // Counted with the products: the add is in the epilogue.
  timed("matmul " + dtype_name(a.dtype()), product_flops(a, trans_a, out),
        [&] { inner_.matmul_add(a, trans_a, b, trans_b, addend, out); },
        product_shape(a, trans_a, trans_b, out) + " + addend");
}
void ProfilingBackend::bias_backward(const Tensor& dy, Tensor& dbias) {
  timed("bias_backward", 0, [&] { inner_.bias_backward(dy, dbias); });
}
void ProfilingBackend::embedding_forward(const Tensor& ids, const Tensor& table,
                                         int64_t vocab_start, Tensor& out) {
  timed("embedding_forward", 0, [&] { inner_.embedding_forward(ids, table, vocab_start, out); });
}
void ProfilingBackend::embedding_backward(const Tensor& ids, const Tensor& dout,
                                          int64_t vocab_start, Tensor& dtable) {
  timed("embedding_backward", 0,
        [&] { inner_.embedding_backward(ids, dout, vocab_start, dtable); });
}
void ProfilingBackend::rmsnorm_forward(const Tensor& x, const Tensor& weight, float eps,
                                       Tensor& out, Tensor& rstd) {
  timed("rmsnorm_forward", 0, [&] { inner_.rmsnorm_forward(x, weight, eps, out, rstd); });
}
void ProfilingBackend::rmsnorm_backward(const Tensor& dout, const Tensor& x, const Tensor& weight,
                                        const Tensor& rstd, const Tensor* residual,
                                        Tensor& dx, Tensor* dx_copy, Tensor& dweight) {
  timed("rmsnorm_backward", 0, [&] {
    inner_.rmsnorm_backward(dout, x, weight, rstd, residual, dx, dx_copy, dweight);
  });
}
void ProfilingBackend::rope_backward_with_bias(Tensor& dx, const Tensor& positions,
                                               const Tensor& cos, const Tensor& sin,
                                               int64_t num_heads, int64_t head_dim, Tensor* copy,
                                               Tensor& dbias) {
  timed("rope_backward_with_bias", 0, [&] {
    inner_.rope_backward_with_bias(dx, positions, cos, sin, num_heads, head_dim, copy, dbias);
  });
}
void ProfilingBackend::rope(Tensor& x, const Tensor& positions, const Tensor& cos,
                            const Tensor& sin, int64_t num_heads, int64_t head_dim,
                            bool inverse, Tensor* copy) {
  timed(inverse ? "rope_backward" : "rope_forward", 0,
        [&] { inner_.rope(x, positions, cos, sin, num_heads, head_dim, inverse, copy); });
}
void ProfilingBackend::swiglu_forward(const Tensor& gate_up, Tensor& out) {
  timed("swiglu_forward", 0, [&] { inner_.swiglu_forward(gate_up, out); });
}
void ProfilingBackend::swiglu_backward(const Tensor& dout, const Tensor& gate_up,
                                       Tensor& dgate_up) {
  timed("swiglu_backward", 0, [&] { inner_.swiglu_backward(dout, gate_up, dgate_up); });
}
namespace {
// Causal attention FLOPs of the two products (QK^T and PV) over the lower triangle.
double attention_flops(const AttentionShape& s) {
  return 2.0 * double(s.batch * s.q_heads) * double(s.seq) * double(s.seq) * double(s.head_dim);
}
}  // namespace
void ProfilingBackend::attention_forward(const Tensor& qkv, const AttentionShape& shape,
                                         Tensor& out, Tensor& lse, Tensor* out_copy) {
  timed("attention_forward", attention_flops(shape),
        [&] { inner_.attention_forward(qkv, shape, out, lse, out_copy); });
}
void ProfilingBackend::attention_backward(const Tensor& dout, const Tensor& qkv,
                                          const Tensor& out, const Tensor& lse,
                                          const AttentionShape& shape, Tensor& dqkv) {
  // Backward recomputes QK^T and computes dV, dP, dQ, dK: 5 products vs forward's 2.
  timed("attention_backward", 2.5 * attention_flops(shape),
        [&] { inner_.attention_backward(dout, qkv, out, lse, shape, dqkv); });
}
void ProfilingBackend::attention_decode(const Tensor& qkv, Tensor& k_cache, Tensor& v_cache,
                                        const Tensor& positions, const AttentionShape& shape,
                                        Tensor& out) {
  // New token i sees past_len + i + 1 keys; two products of 2 FLOPs per key and dimension.
  // (The profile waits for every op anyway: reading past_len costs it nothing more.)
  int32_t past_len = 0;
  if (positions.defined() && positions.numel() > 0)
    inner_.download(positions.view(0, {1}), &past_len);
  const double n = double(shape.seq);
  const double keys = n * double(past_len) + n * (n + 1) / 2;
  timed("attention_decode", 4.0 * double(shape.q_heads * shape.head_dim) * keys,
        [&] { inner_.attention_decode(qkv, k_cache, v_cache, positions, shape, out); });
}
void ProfilingBackend::argmax_rows(const Tensor& x, Tensor& out) {
  timed("argmax_rows", 0.0, [&] { inner_.argmax_rows(x, out); });
}
void ProfilingBackend::sample_rows(const Tensor& logits, const Tensor& random_bits,
                                   float temperature, float top_p, Tensor& out) {
  timed("sample_rows", 0.0,
        [&] { inner_.sample_rows(logits, random_bits, temperature, top_p, out); });
}
void ProfilingBackend::classifier_cross_entropy(const Tensor& x, const Tensor& weight,
                                                const Tensor& labels, float grad_scale,
                                                Tensor& loss_sum, Tensor* dx, Tensor* dweight) {
  double products = 1 + (dx ? 1 : 0) + (dweight ? 1 : 0);
  timed("classifier_cross_entropy",
        products * 2.0 * double(x.size(0)) * double(x.size(1)) * double(weight.size(0)),
        [&] { inner_.classifier_cross_entropy(x, weight, labels, grad_scale, loss_sum, dx, dweight); });
}
void ProfilingBackend::classifier_logsumexp(const Tensor& x, const Tensor& weight,
                                            int64_t vocab_start, const Tensor& labels, Tensor& lse,
                                            Tensor& target_logit) {
  timed("classifier_logsumexp",
        2.0 * double(x.size(0)) * double(x.size(1)) * double(weight.size(0)),
        [&] { inner_.classifier_logsumexp(x, weight, vocab_start, labels, lse, target_logit); });
}
void ProfilingBackend::classifier_cross_entropy_backward(const Tensor& x, const Tensor& weight,
                                                         int64_t vocab_start,
                                                         const Tensor& labels,
                                                         const Tensor& lse_global,
                                                         float grad_scale, Tensor* dx,
                                                         Tensor* dweight) {
  // The logits are recomputed, then one product per gradient.
  double products = 1 + (dx ? 1 : 0) + (dweight ? 1 : 0);
  timed("classifier_cross_entropy_backward",
        products * 2.0 * double(x.size(0)) * double(x.size(1)) * double(weight.size(0)), [&] {
          inner_.classifier_cross_entropy_backward(x, weight, vocab_start, labels, lse_global,
                                                   grad_scale, dx, dweight);
        });
}
void ProfilingBackend::adamw_step(Tensor& param, const Tensor& grad, Tensor& m, Tensor& v,
                                  const AdamWParams& p) {
  timed("adamw_step", 0, [&] { inner_.adamw_step(param, grad, m, v, p); });
}
void ProfilingBackend::adamw_step_segments(Tensor& param, const Tensor& grad, Tensor& m,
                                           Tensor& v, const std::vector<AdamWSegment>& segments,
                                           const AdamWParams& p, Tensor* param_copy) {
  timed("adamw_step", 0,
        [&] { inner_.adamw_step_segments(param, grad, m, v, segments, p, param_copy); });
}

}  // namespace vacc
