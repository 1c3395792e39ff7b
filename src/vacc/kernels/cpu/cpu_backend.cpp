// CpuBackend: the Backend interface on host memory. Each method checks its tensors (shape,
// dtype, device) with a message naming the op and the tensor, then calls the raw kernel.
#include <omp.h>

#include <cstring>
#include <vector>

#include "vacc/core/error.h"
#include "vacc/kernels/backend.h"
#include "vacc/kernels/cpu/cpu_kernels.h"
#include "vacc/kernels/tensor_checks.h"

namespace vacc {
namespace {

using namespace checks;  // argument checks shared with the other backends

// t's values as f32: its own data, or (bf16) widened into `wide` (kept by the caller between
// calls: a fresh buffer would be zeroed and faulted in every time).
const float* as_f32(const Tensor& t, std::vector<float>& wide) {
  if (t.dtype() == DType::F32) return t.data_as<float>();
  if (wide.size() < size_t(t.numel())) wide.resize(size_t(t.numel()));
  cpu::convert(t.data(), t.dtype(), wide.data(), DType::F32, t.numel());
  return wide.data();
}

class CpuBackend final : public Backend {
 public:
  CpuBackend(size_t budget, int num_threads) : allocator_(budget) {
    if (num_threads > 0) omp_set_num_threads(num_threads);
  }

  Device device() const override { return allocator_.device(); }
  DeviceAllocator& allocator() override { return allocator_; }
  std::string name() const override {
    return "cpu (" + std::to_string(omp_get_max_threads()) + " threads, oneDNN)";
  }
  void synchronize() override {}

  void upload(const void* host, Tensor& dst) override {
    std::memcpy(dst.data(), host, dst.nbytes());
  }
  void download(const Tensor& src, void* host) override {
    std::memcpy(host, src.data(), src.nbytes());
  }
  void copy(const Tensor& src, Tensor& dst) override {
    expect(dst.defined() && dst.numel() == src.numel(), "copy", "dst", dst,
           ("as many elements as " + src.str()).c_str());
    if (src.dtype() == dst.dtype()) {
      std::memmove(dst.data(), src.data(), src.nbytes());
      return;
    }
    expect_float("copy", "src", src);
    expect_float("copy", "dst", dst);
    cpu::convert(src.data(), src.dtype(), dst.data(), dst.dtype(), src.numel());
  }
  void fill(Tensor& dst, float value) override {
    cpu::fill(dst.data(), dst.dtype(), value, dst.numel());
  }

  void add(const Tensor& a, const Tensor& b, Tensor& out) override {
    expect_dtype("add", "a", a, DType::F32);
    expect_shape("add", "b", b, a.shape());
    expect_dtype("add", "b", b, DType::F32);
    expect_shape("add", "out", out, a.shape());
    expect_dtype("add", "out", out, DType::F32);
    cpu::add(a.data_as<float>(), b.data_as<float>(), out.data_as<float>(), a.numel());
  }
  void scale(Tensor& x, float s) override {
    expect_dtype("scale", "x", x, DType::F32);
    cpu::scale(x.data_as<float>(), s, x.numel());
  }
  void sum_of_squares(const Tensor& x, Tensor& acc) override {
    expect_dtype("sum_of_squares", "x", x, DType::F32);
    expect_shape("sum_of_squares", "acc", acc, {1});
    expect_dtype("sum_of_squares", "acc", acc, DType::F32);
    acc.data_as<float>()[0] += float(cpu::sum_of_squares(x.data_as<float>(), x.numel()));
  }

  void matmul(const Tensor& a, bool trans_a, const Tensor& b, bool trans_b, Tensor& out,
              float alpha, float beta, const Tensor* bias) override {
    const char* op = "matmul";
    expect_2d(op, "a", a);
    expect_2d(op, "b", b);
    expect_2d(op, "out", out);
    expect_float(op, "a", a);
    expect(b.dtype() == a.dtype(), op, "b", b, ("the dtype of a, " + dtype_name(a.dtype())).c_str());
    expect_float(op, "out", out);
    int64_t M = trans_a ? a.size(1) : a.size(0), K = trans_a ? a.size(0) : a.size(1);
    int64_t Kb = trans_b ? b.size(1) : b.size(0), N = trans_b ? b.size(0) : b.size(1);
    expect(Kb == K, op, "b", b, ("an inner dimension of " + std::to_string(K)).c_str());
    expect_shape(op, "out", out, {M, N});
    if (bias) {
      expect_shape(op, "bias", *bias, {N});
      expect_dtype(op, "bias", *bias, DType::F32);
    }
    cpu::matmul(a.data(), trans_a, b.data(), trans_b, out.data(), M, N, K, a.dtype(), out.dtype(),
                alpha, beta, bias ? bias->data_as<float>() : nullptr);
  }
  void bias_backward(const Tensor& dy, Tensor& dbias) override {
    expect_2d("bias_backward", "dy", dy);
    expect_dtype("bias_backward", "dy", dy, DType::F32);
    expect_shape("bias_backward", "dbias", dbias, {dy.size(1)});
    expect_dtype("bias_backward", "dbias", dbias, DType::F32);
    cpu::bias_backward(dy.data_as<float>(), dbias.data_as<float>(), dy.size(0), dy.size(1));
  }

  void embedding_forward(const Tensor& ids, const Tensor& table, int64_t vocab_start,
                         Tensor& out) override {
    const char* op = "embedding_forward";
    expect_dtype(op, "ids", ids, DType::I32);
    expect_2d(op, "table", table);
    expect_dtype(op, "table", table, DType::F32);
    expect_shape(op, "out", out, {ids.numel(), table.size(1)});
    expect_dtype(op, "out", out, DType::F32);
    cpu::embedding_forward(ids.data_as<int32_t>(), table.data_as<float>(), vocab_start,
                           table.size(0), ids.numel(), table.size(1), out.data_as<float>());
  }
  void embedding_backward(const Tensor& ids, const Tensor& dout, int64_t vocab_start,
                          Tensor& dtable) override {
    const char* op = "embedding_backward";
    expect_dtype(op, "ids", ids, DType::I32);
    expect_2d(op, "dtable", dtable);
    expect_dtype(op, "dtable", dtable, DType::F32);
    expect_shape(op, "dout", dout, {ids.numel(), dtable.size(1)});
    expect_dtype(op, "dout", dout, DType::F32);
    cpu::embedding_backward(ids.data_as<int32_t>(), dout.data_as<float>(), vocab_start,
                            dtable.size(0), ids.numel(), dtable.size(1), dtable.data_as<float>());
  }

  void rmsnorm_forward(const Tensor& x, const Tensor& weight, float eps, Tensor& out,
                       Tensor& rstd) override {
    const char* op = "rmsnorm_forward";
    expect_2d(op, "x", x);
    expect_dtype(op, "x", x, DType::F32);
    expect_shape(op, "weight", weight, {x.size(1)});
    expect_dtype(op, "weight", weight, DType::F32);
    expect_shape(op, "out", out, x.shape());
    expect_float(op, "out", out);
    expect_shape(op, "rstd", rstd, {x.size(0)});
    expect_dtype(op, "rstd", rstd, DType::F32);
    cpu::rmsnorm_forward(x.data_as<float>(), weight.data_as<float>(), eps, x.size(0), x.size(1),
                         out.data(), out.dtype(), rstd.data_as<float>());
  }
  void rmsnorm_backward(const Tensor& dout, const Tensor& x, const Tensor& weight,
                        const Tensor& rstd, const Tensor* residual, Tensor& dx, Tensor* dx_copy,
                        Tensor& dweight) override {
    checks::expect_rmsnorm_backward(dout, x, weight, rstd, residual, dx, dx_copy, dweight);
    cpu::rmsnorm_backward(dout.data_as<float>(), x.data_as<float>(), weight.data_as<float>(),
                          rstd.data_as<float>(), x.size(0), x.size(1),
                          residual ? residual->data_as<float>() : nullptr, dx.data_as<float>(),
                          dx_copy ? dx_copy->data() : nullptr,
                          dx_copy ? dx_copy->dtype() : DType::F32, dweight.data_as<float>());
  }

  void rope(Tensor& x, const Tensor& positions, const Tensor& cos, const Tensor& sin,
            int64_t num_heads, int64_t head_dim, bool inverse, Tensor* copy) override {
    checks::expect_rope(x, positions, cos, sin, num_heads, head_dim, copy);
    cpu::rope(x.data(), x.dtype(), x.size(0), x.size(1), positions.data_as<int32_t>(),
              cos.data_as<float>(), sin.data_as<float>(), cos.size(0), num_heads, head_dim,
              inverse, copy ? copy->data() : nullptr, copy ? copy->dtype() : DType::F32);
  }

  void swiglu_forward(const Tensor& gate_up, Tensor& out) override {
    const char* op = "swiglu_forward";
    expect_2d(op, "gate_up", gate_up);
    expect_float(op, "gate_up", gate_up);
    expect(gate_up.size(1) % 2 == 0, op, "gate_up", gate_up, "an even number of columns");
    expect_shape(op, "out", out, {gate_up.size(0), gate_up.size(1) / 2});
    expect_float(op, "out", out);
    cpu::swiglu_forward(gate_up.data(), gate_up.dtype(), gate_up.size(0), gate_up.size(1) / 2,
                        out.data(), out.dtype());
  }
  void swiglu_backward(const Tensor& dout, const Tensor& gate_up, Tensor& dgate_up) override {
    const char* op = "swiglu_backward";
    expect_2d(op, "gate_up", gate_up);
    expect_float(op, "gate_up", gate_up);
    expect(gate_up.size(1) % 2 == 0, op, "gate_up", gate_up, "an even number of columns");
    expect_shape(op, "dout", dout, {gate_up.size(0), gate_up.size(1) / 2});
    expect_dtype(op, "dout", dout, gate_up.dtype());
    expect_shape(op, "dgate_up", dgate_up, gate_up.shape());
    expect_float(op, "dgate_up", dgate_up);
    cpu::swiglu_backward(dout.data(), gate_up.data(), gate_up.dtype(), gate_up.size(0),
                         gate_up.size(1) / 2, dgate_up.data(), dgate_up.dtype());
  }

  void attention_forward(const Tensor& qkv, const AttentionShape& s, Tensor& out, Tensor& lse,
                         Tensor* out_copy) override {
    const char* op = "attention_forward";
    s.check();
    expect_shape(op, "qkv", qkv, {s.batch * s.seq, s.qkv_width()});
    expect_float(op, "qkv", qkv);
    expect_shape(op, "out", out, {s.batch * s.seq, s.q_heads * s.head_dim});
    expect_float(op, "out", out);
    expect_shape(op, "lse", lse, {s.batch, s.q_heads, s.seq});
    expect_dtype(op, "lse", lse, DType::F32);
    if (out_copy) {
      expect_shape(op, "out_copy", *out_copy, out.shape());
      expect_float(op, "out_copy", *out_copy);
    }
    cpu::attention_forward(as_f32(qkv, widened_qkv_), s.batch, s.seq, s.q_heads, s.kv_heads,
                           s.head_dim, out.data(), out.dtype(), lse.data_as<float>());
    if (out_copy) copy(out, *out_copy);
  }
  void attention_backward(const Tensor& dout, const Tensor& qkv, const Tensor& out,
                          const Tensor& lse, const AttentionShape& s, Tensor& dqkv) override {
    const char* op = "attention_backward";
    s.check();
    expect_shape(op, "qkv", qkv, {s.batch * s.seq, s.qkv_width()});
    expect_float(op, "qkv", qkv);
    expect_shape(op, "out", out, {s.batch * s.seq, s.q_heads * s.head_dim});
    expect_float(op, "out", out);
    expect_shape(op, "dout", dout, out.shape());
    expect(dout.dtype() == out.dtype(), op, "dout", dout, "the dtype of out");
    expect_shape(op, "lse", lse, {s.batch, s.q_heads, s.seq});
    expect_shape(op, "dqkv", dqkv, qkv.shape());
    expect_dtype(op, "dqkv", dqkv, DType::F32);
    cpu::attention_backward(dout.data(), as_f32(qkv, widened_qkv_), out.data(), out.dtype(),
                            lse.data_as<float>(), s.batch, s.seq, s.q_heads, s.kv_heads,
                            s.head_dim, dqkv.data_as<float>());
  }

  void attention_decode(const Tensor& qkv, Tensor& k_cache, Tensor& v_cache,
                        const Tensor& positions, const AttentionShape& s, Tensor& out) override {
    const char* op = "attention_decode";
    s.check();
    VACC_CHECK(s.batch == 1, op, ": decodes one sequence (batch 1), got batch ", s.batch);
    expect_shape(op, "qkv", qkv, {s.seq, s.qkv_width()});
    expect_dtype(op, "qkv", qkv, DType::F32);
    expect_shape(op, "positions", positions, {s.seq});
    expect_dtype(op, "positions", positions, DType::I32);
    const int32_t* pos = positions.data_as<int32_t>();
    const int64_t past_len = s.seq > 0 ? pos[0] : 0;
    for (int64_t i = 1; i < s.seq; ++i)
      VACC_CHECK(pos[i] == past_len + i, op, ": positions must follow each other (the new tokens ",
                 "of one sequence), got ", pos[i - 1], " then ", pos[i]);
    expect(k_cache.defined() && k_cache.dim() == 2 && k_cache.size(1) == s.kv_heads * s.head_dim,
           op, "k_cache", k_cache, "(max_len, kv_heads*head_dim)");
    expect_dtype(op, "k_cache", k_cache, DType::F32);
    expect_shape(op, "v_cache", v_cache, k_cache.shape());
    expect_dtype(op, "v_cache", v_cache, DType::F32);
    VACC_CHECK(past_len >= 0 && past_len + s.seq <= k_cache.size(0), op, ": ", s.seq,
               " new tokens after ", past_len, " cached ones do not fit a KV cache of ",
               k_cache.size(0), " positions");
    expect_shape(op, "out", out, {s.seq, s.q_heads * s.head_dim});
    expect_float(op, "out", out);
    cpu::attention_decode(qkv.data_as<float>(), s.seq, s.q_heads, s.kv_heads, s.head_dim,
                          k_cache.data_as<float>(), v_cache.data_as<float>(), past_len, out.data(),
                          out.dtype());
  }

  void argmax_rows(const Tensor& x, Tensor& out) override {
    expect_token_rows("argmax_rows", x, out);
    cpu::argmax_rows(x.data_as<float>(), x.size(0), x.size(1), out.data_as<int32_t>());
  }
  void sample_rows(const Tensor& logits, const Tensor& random_bits, float temperature,
                   float top_p, Tensor& out) override {
    expect_token_rows("sample_rows", logits, out, &random_bits);
    cpu::sample_rows(logits.data_as<float>(), logits.size(0), logits.size(1),
                     static_cast<const uint64_t*>(random_bits.data()), temperature, top_p,
                     out.data_as<int32_t>());
  }

  void classifier_cross_entropy(const Tensor& x, const Tensor& weight, const Tensor& labels,
                                float grad_scale, Tensor& loss_sum, Tensor* dx,
                                Tensor* dweight) override {
    const char* op = "classifier_cross_entropy";
    expect_classifier_shard(op, x, weight, 0, labels);
    expect_shape(op, "loss_sum", loss_sum, {1});
    expect_dtype(op, "loss_sum", loss_sum, DType::F32);
    if (dx) {
      expect_shape(op, "dx", *dx, x.shape());
      expect_dtype(op, "dx", *dx, DType::F32);
    }
    if (dweight) {
      expect_shape(op, "dweight", *dweight, weight.shape());
      expect_dtype(op, "dweight", *dweight, DType::F32);
    }
    double loss = cpu::classifier_cross_entropy(
        x.data(), weight.data(), x.dtype(), labels.data_as<int32_t>(), x.size(0), x.size(1),
        weight.size(0), grad_scale, dx ? dx->data_as<float>() : nullptr,
        dweight ? dweight->data_as<float>() : nullptr);
    loss_sum.data_as<float>()[0] += float(loss);
  }

  void classifier_logsumexp(const Tensor& x, const Tensor& weight, int64_t vocab_start,
                            const Tensor& labels, Tensor& lse, Tensor& target_logit) override {
    const char* op = "classifier_logsumexp";
    expect_classifier_shard(op, x, weight, vocab_start, labels);
    expect_shape(op, "lse", lse, {x.size(0)});
    expect_dtype(op, "lse", lse, DType::F32);
    expect_shape(op, "target_logit", target_logit, {x.size(0)});
    expect_dtype(op, "target_logit", target_logit, DType::F32);
    cpu::classifier_logsumexp(x.data(), weight.data(), x.dtype(), labels.data_as<int32_t>(),
                              x.size(0), x.size(1), weight.size(0), vocab_start,
                              lse.data_as<float>(), target_logit.data_as<float>());
  }
  void classifier_cross_entropy_backward(const Tensor& x, const Tensor& weight,
                                         int64_t vocab_start, const Tensor& labels,
                                         const Tensor& lse_global, float grad_scale, Tensor* dx,
                                         Tensor* dweight) override {
    const char* op = "classifier_cross_entropy_backward";
    expect_classifier_shard(op, x, weight, vocab_start, labels);
    expect_shape(op, "lse_global", lse_global, {x.size(0)});
    expect_dtype(op, "lse_global", lse_global, DType::F32);
    if (dx) {
      expect_shape(op, "dx", *dx, x.shape());
      expect_dtype(op, "dx", *dx, DType::F32);
    }
    if (dweight) {
      expect_shape(op, "dweight", *dweight, weight.shape());
      expect_dtype(op, "dweight", *dweight, DType::F32);
    }
    cpu::classifier_cross_entropy_backward(
        x.data(), weight.data(), x.dtype(), labels.data_as<int32_t>(), x.size(0), x.size(1),
        weight.size(0), vocab_start, lse_global.data_as<float>(), grad_scale,
        dx ? dx->data_as<float>() : nullptr, dweight ? dweight->data_as<float>() : nullptr);
  }

  void adamw_step(Tensor& param, const Tensor& grad, Tensor& m, Tensor& v,
                  const AdamWParams& p) override {
    expect_adamw("adamw_step", param, grad, m, v);
    cpu::adamw_step(param.data_as<float>(), grad.data_as<float>(), m.data_as<float>(),
                    v.data_as<float>(), param.numel(), p.lr, p.beta1, p.beta2, p.eps,
                    p.weight_decay, p.step, p.grad_scale);
  }
  // Each segment's update writes its bf16 copy in the same loop (no second pass).
  void adamw_step_segments(Tensor& param, const Tensor& grad, Tensor& m, Tensor& v,
                           const std::vector<AdamWSegment>& segments, const AdamWParams& p,
                           Tensor* param_copy) override {
    const char* op = "adamw_step_segments";
    expect_adamw(op, param, grad, m, v, param_copy);
    for (const AdamWSegment& s : segments) {
      VACC_CHECK(s.offset >= 0 && s.numel >= 0 && s.offset + s.numel <= param.numel(), op,
                 ": segment [", s.offset, ", ", s.offset + s.numel, ") outside the ",
                 param.numel(), " parameters");
      char* copy = param_copy ? static_cast<char*>(param_copy->data()) +
                                    s.offset * int64_t(dtype_size(param_copy->dtype()))
                              : nullptr;
      cpu::adamw_step(param.data_as<float>() + s.offset, grad.data_as<float>() + s.offset,
                      m.data_as<float>() + s.offset, v.data_as<float>() + s.offset, s.numel,
                      p.lr, p.beta1, p.beta2, p.eps, s.decay ? p.weight_decay : 0.0f, p.step,
                      p.grad_scale, copy, param_copy ? param_copy->dtype() : DType::F32);
    }
  }

 private:
  // Attention's f32 copy of a bf16 qkv (as_f32): host memory outside the allocator's count,
  // at most one micro-batch's qkv (N x W floats).
  std::vector<float> widened_qkv_;

  HostAllocator allocator_;
};

}  // namespace

std::unique_ptr<Backend> make_cpu_backend(size_t memory_budget_bytes, int num_threads) {
  return std::make_unique<CpuBackend>(memory_budget_bytes, num_threads);
}

}  // namespace vacc
