// CudaBackend: the Backend interface on one GPU. Each method checks its tensors (shape, dtype,
// device) with the CPU backend's messages, then issues the op's kernels on the context's
// stream without waiting (upload, download and synchronize wait).
#include "vacc/kernels/cuda/cuda_backend.h"

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <initializer_list>
#include <utility>
#include <vector>

#include "vacc/core/error.h"
#include "vacc/kernels/cuda/attention_flash_mma.h"
#include "vacc/kernels/cuda/attention_gemm.h"
#include "vacc/kernels/cuda/attention_route.h"
#include "vacc/kernels/cuda/attention_tuning.h"
#include "vacc/kernels/cuda/classifier_cross_entropy.h"
#include "vacc/kernels/cuda/cuda_check.h"
#include "vacc/kernels/cuda/cuda_context.h"
#include "vacc/kernels/cuda/cuda_graph.h"
#include "vacc/kernels/cuda/cuda_kernels.h"
#include "vacc/kernels/tensor_checks.h"

namespace vacc {
namespace {

using namespace checks;

class CudaBackend final : public Backend {
 public:
  CudaBackend(int device_index, size_t budget) : ctx_(device_index, budget) {}

  Device device() const override { return Device{Device::Kind::CUDA, ctx_.device_index()}; }
  DeviceAllocator& allocator() override { return ctx_.allocator(); }
  std::string name() const override {
    return "cuda:" + std::to_string(ctx_.device_index()) + " (" + ctx_.device_name() +
           ", cuBLASLt)";
  }
  void synchronize() override { ctx_.synchronize(); }
  std::string tuning_summary() const override {
    const cuda::CublasLtMatmul& m = ctx_.matmul();
    std::string out;
    if (m.tuned_plans() > 0)
      out = "cuBLASLt algorithms timed for " + std::to_string(m.tuned_plans()) +
            " product shape(s); in " + std::to_string(m.plans_not_the_heuristics_first()) +
            " of them another than the heuristic's first choice was faster "
            "(VACC_MATMUL_AUTOTUNE=0 turns the timing off)";
    const cuda::FlashMmaBackwardTuning& a = attention_tuning_;
    if (a.tuned_problems() > 0)
      out += std::string(out.empty() ? "" : "; ") +
             "attention backward's dK/dV variants timed for " +
             std::to_string(a.tuned_problems()) + " problem(s), another than the first kept in " +
             std::to_string(a.kept_other_than_first()) +
             " (VACC_ATTENTION_AUTOTUNE=0 turns it off)";
    return out;
  }

  bool supports_graphs() const override { return true; }
  std::unique_ptr<OpGraph> capture_graph(const std::function<void()>& issue) override {
    return cuda::capture_graph(ctx_, issue);
  }

  void upload(const void* host, Tensor& dst) override {
    on_device("upload", "dst", dst);
    ctx_.upload(host, dst.data(), dst.nbytes());
  }
  void download(const Tensor& src, void* host) override {
    on_device("download", "src", src);
    ctx_.download(src.data(), host, src.nbytes());
  }
  void copy(const Tensor& src, Tensor& dst) override {
    on_device("copy", "src", src);
    on_device("copy", "dst", dst);
    expect(dst.defined() && dst.numel() == src.numel(), "copy", "dst", dst,
           ("as many elements as " + src.str()).c_str());
    if (src.dtype() == dst.dtype()) {
      if (src.data() != dst.data() && src.nbytes() > 0)
        VACC_CUDA_CHECK(cudaMemcpyAsync(dst.data(), src.data(), src.nbytes(),
                                        cudaMemcpyDeviceToDevice, stream()));
      return;
    }
    expect_float("copy", "src", src);
    expect_float("copy", "dst", dst);
    cuda::convert(src.data(), src.dtype(), dst.data(), dst.dtype(), src.numel(), stream());
  }
  void fill(Tensor& dst, float value) override {
    on_device("fill", "dst", dst);
    cuda::fill(dst.data(), dst.dtype(), value, dst.numel(), stream());
  }

  void add(const Tensor& a, const Tensor& b, Tensor& out) override {
    on_device("add", "a", a);
    on_device("add", "b", b);
    on_device("add", "out", out);
    expect_dtype("add", "a", a, DType::F32);
    expect_shape("add", "b", b, a.shape());
    expect_dtype("add", "b", b, DType::F32);
    expect_shape("add", "out", out, a.shape());
    expect_dtype("add", "out", out, DType::F32);
    cuda::add(a.data_as<float>(), b.data_as<float>(), out.data_as<float>(), a.numel(), stream());
  }
  void scale(Tensor& x, float s) override {
    on_device("scale", "x", x);
    expect_dtype("scale", "x", x, DType::F32);
    cuda::scale(x.data_as<float>(), s, x.numel(), stream());
  }
  void sum_of_squares(const Tensor& x, Tensor& acc) override {
    on_device("sum_of_squares", "x", x);
    on_device("sum_of_squares", "acc", acc);
    expect_dtype("sum_of_squares", "x", x, DType::F32);
    expect_shape("sum_of_squares", "acc", acc, {1});
    expect_dtype("sum_of_squares", "acc", acc, DType::F32);
    cuda::sum_of_squares(x.data_as<float>(), x.numel(), acc.data_as<float>(),
                         ctx_.reduce_partials(), stream());
  }

  void matmul(const Tensor& a, bool trans_a, const Tensor& b, bool trans_b, Tensor& out,
              float alpha, float beta, const Tensor* bias) override {
    const char* op = "matmul";
    const ProductShape p = check_product(op, a, trans_a, b, trans_b, out);
    expect_float(op, "out", out);
    if (bias) {
      on_device(op, "bias", *bias);
      expect_shape(op, "bias", *bias, {p.N});
      expect_dtype(op, "bias", *bias, DType::F32);
    }
    VACC_CHECK(!(bias && alpha != 1.0f),
               "matmul: a bias together with alpha != 1 is not supported");
    VACC_CHECK(!(beta != 0.0f && out.dtype() != DType::F32),
               "matmul: beta != 0 needs an f32 output");
    ctx_.gemm(a.data(), trans_a, b.data(), trans_b, out.data(), p.M, p.N, p.K, a.dtype(),
              out.dtype(), alpha, beta, bias ? bias->data_as<float>() : nullptr);
  }
  void matmul_add(const Tensor& a, bool trans_a, const Tensor& b, bool trans_b,
                  const Tensor& addend, Tensor& out) override {
    const char* op = "matmul_add";
    const ProductShape p = check_product(op, a, trans_a, b, trans_b, out);
    expect_dtype(op, "out", out, DType::F32);
    on_device(op, "addend", addend);
    expect_shape(op, "addend", addend, out.shape());
    expect_dtype(op, "addend", addend, DType::F32);
    ctx_.gemm_add(a.data(), trans_a, b.data(), trans_b, addend.data_as<float>(),
                  out.data_as<float>(), p.M, p.N, p.K, a.dtype());
  }
  void bias_backward(const Tensor& dy, Tensor& dbias) override {
    on_device("bias_backward", "dy", dy);
    on_device("bias_backward", "dbias", dbias);
    expect_2d("bias_backward", "dy", dy);
    expect_dtype("bias_backward", "dy", dy, DType::F32);
    expect_shape("bias_backward", "dbias", dbias, {dy.size(1)});
    expect_dtype("bias_backward", "dbias", dbias, DType::F32);
    Tensor partials = column_partials(dy.size(0), dy.size(1));
    cuda::column_sums(dy.data_as<float>(), nullptr, nullptr, dy.size(0), dy.size(1),
                      partials.data_as<float>(), dbias.data_as<float>(), stream());
  }

  void embedding_forward(const Tensor& ids, const Tensor& table, int64_t vocab_start,
                         Tensor& out) override {
    const char* op = "embedding_forward";
    on_device(op, "ids", ids);
    on_device(op, "table", table);
    on_device(op, "out", out);
    expect_dtype(op, "ids", ids, DType::I32);
    expect_2d(op, "table", table);
    expect_dtype(op, "table", table, DType::F32);
    expect_shape(op, "out", out, {ids.numel(), table.size(1)});
    expect_dtype(op, "out", out, DType::F32);
    cuda::embedding_forward(ids.data_as<int32_t>(), table.data_as<float>(), vocab_start,
                            table.size(0), ids.numel(), table.size(1), out.data_as<float>(),
                            stream());
  }
  void embedding_backward(const Tensor& ids, const Tensor& dout, int64_t vocab_start,
                          Tensor& dtable) override {
    const char* op = "embedding_backward";
    on_device(op, "ids", ids);
    on_device(op, "dout", dout);
    on_device(op, "dtable", dtable);
    expect_dtype(op, "ids", ids, DType::I32);
    expect_2d(op, "dtable", dtable);
    expect_dtype(op, "dtable", dtable, DType::F32);
    expect_shape(op, "dout", dout, {ids.numel(), dtable.size(1)});
    expect_dtype(op, "dout", dout, DType::F32);
    cuda::embedding_backward(ids.data_as<int32_t>(), dout.data_as<float>(), vocab_start,
                             dtable.size(0), ids.numel(), dtable.size(1), dtable.data_as<float>(),
                             stream());
  }

  void rmsnorm_forward(const Tensor& x, const Tensor& weight, float eps, Tensor& out,
                       Tensor& rstd) override {
    const char* op = "rmsnorm_forward";
    on_device(op, "x", x);
    on_device(op, "weight", weight);
    on_device(op, "out", out);
    on_device(op, "rstd", rstd);
    expect_2d(op, "x", x);
    expect_dtype(op, "x", x, DType::F32);
    expect_shape(op, "weight", weight, {x.size(1)});
    expect_dtype(op, "weight", weight, DType::F32);
    expect_shape(op, "out", out, x.shape());
    expect_float(op, "out", out);
    expect_shape(op, "rstd", rstd, {x.size(0)});
    expect_dtype(op, "rstd", rstd, DType::F32);
    cuda::rmsnorm_forward(x.data_as<float>(), weight.data_as<float>(), eps, x.size(0), x.size(1),
                          out.data(), out.dtype(), rstd.data_as<float>(), stream());
  }
  void rmsnorm_backward(const Tensor& dout, const Tensor& x, const Tensor& weight,
                        const Tensor& rstd, const Tensor* residual, Tensor& dx, Tensor* dx_copy,
                        Tensor& dweight) override {
    const char* op = "rmsnorm_backward";
    using Named = std::pair<const char*, const Tensor*>;
    for (const Named& t : {Named{"dout", &dout}, Named{"x", &x}, Named{"weight", &weight},
                           Named{"rstd", &rstd}, Named{"residual", residual}, Named{"dx", &dx},
                           Named{"dx_copy", dx_copy}, Named{"dweight", &dweight}})
      if (t.second) on_device(op, t.first, *t.second);
    checks::expect_rmsnorm_backward(dout, x, weight, rstd, residual, dx, dx_copy, dweight);
    Tensor scratch = ctx_.scratch(
        {std::max<int64_t>(1, cuda::rmsnorm_backward_scratch_floats(x.size(0), x.size(1)))},
        DType::F32, "rmsnorm weight-gradient partials");
    cuda::rmsnorm_backward(dout.data_as<float>(), x.data_as<float>(), weight.data_as<float>(),
                           rstd.data_as<float>(), x.size(0), x.size(1),
                           residual ? residual->data_as<float>() : nullptr, dx.data_as<float>(),
                           dx_copy ? dx_copy->data() : nullptr,
                           dx_copy ? dx_copy->dtype() : DType::F32, dweight.data_as<float>(),
                           scratch.data_as<float>(), stream());
  }

  void rope(Tensor& x, const Tensor& positions, const Tensor& cos, const Tensor& sin,
            int64_t num_heads, int64_t head_dim, bool inverse, Tensor* copy) override {
    const char* op = "rope";
    using Named = std::pair<const char*, const Tensor*>;
    for (const Named& t : {Named{"x", &x}, Named{"positions", &positions}, Named{"cos", &cos},
                           Named{"sin", &sin}, Named{"copy", copy}})
      if (t.second) on_device(op, t.first, *t.second);
    checks::expect_rope(x, positions, cos, sin, num_heads, head_dim, copy);
    // A position outside the tables is reported by the next synchronising call.
    cuda::rope(x.data(), x.dtype(), x.size(0), x.size(1), positions.data_as<int32_t>(),
               cos.data_as<float>(), sin.data_as<float>(), cos.size(0), num_heads, head_dim,
               inverse, copy ? copy->data() : nullptr, copy ? copy->dtype() : DType::F32,
               ctx_.device_error(), stream());
  }

  void rope_backward_with_bias(Tensor& dx, const Tensor& positions, const Tensor& cos,
                               const Tensor& sin, int64_t num_heads, int64_t head_dim,
                               Tensor* copy, Tensor& dbias) override {
    const char* op = "rope_backward_with_bias";
    using Named = std::pair<const char*, const Tensor*>;
    for (const Named& t : {Named{"dx", &dx}, Named{"positions", &positions}, Named{"cos", &cos},
                           Named{"sin", &sin}, Named{"copy", copy}, Named{"dbias", &dbias}})
      if (t.second) on_device(op, t.first, *t.second);
    checks::expect_rope(dx, positions, cos, sin, num_heads, head_dim, copy);
    expect_dtype(op, "dx", dx, DType::F32);
    expect_shape(op, "dbias", dbias, {dx.size(1)});
    expect_dtype(op, "dbias", dbias, DType::F32);
    const int64_t floats = cuda::rope_backward_with_bias_scratch_floats(dx.size(0), dx.size(1));
    Tensor scratch =
        ctx_.scratch({std::max<int64_t>(1, floats)}, DType::F32, "rope bias-gradient partials");
    // A position outside the tables is reported by the next synchronising call.
    cuda::rope_backward_with_bias(dx.data_as<float>(), dx.size(0), dx.size(1),
                                  positions.data_as<int32_t>(), cos.data_as<float>(),
                                  sin.data_as<float>(), cos.size(0), num_heads, head_dim,
                                  copy ? copy->data() : nullptr,
                                  copy ? copy->dtype() : DType::F32, dbias.data_as<float>(),
                                  scratch.data_as<float>(), ctx_.device_error(), stream());
  }

  void swiglu_forward(const Tensor& gate_up, Tensor& out) override {
    const char* op = "swiglu_forward";
    on_device(op, "gate_up", gate_up);
    on_device(op, "out", out);
    expect_2d(op, "gate_up", gate_up);
    expect_float(op, "gate_up", gate_up);
    expect(gate_up.size(1) % 2 == 0, op, "gate_up", gate_up, "an even number of columns");
    expect_shape(op, "out", out, {gate_up.size(0), gate_up.size(1) / 2});
    expect_float(op, "out", out);
    cuda::swiglu_forward(gate_up.data(), gate_up.dtype(), gate_up.size(0), gate_up.size(1) / 2,
                         out.data(), out.dtype(), stream());
  }
  void swiglu_backward(const Tensor& dout, const Tensor& gate_up, Tensor& dgate_up) override {
    const char* op = "swiglu_backward";
    on_device(op, "dout", dout);
    on_device(op, "gate_up", gate_up);
    on_device(op, "dgate_up", dgate_up);
    expect_2d(op, "gate_up", gate_up);
    expect_float(op, "gate_up", gate_up);
    expect(gate_up.size(1) % 2 == 0, op, "gate_up", gate_up, "an even number of columns");
    expect_shape(op, "dout", dout, {gate_up.size(0), gate_up.size(1) / 2});
    expect_dtype(op, "dout", dout, gate_up.dtype());
    expect_shape(op, "dgate_up", dgate_up, gate_up.shape());
    expect_float(op, "dgate_up", dgate_up);
    cuda::swiglu_backward(dout.data(), gate_up.data(), gate_up.dtype(), gate_up.size(0),
                          gate_up.size(1) / 2, dgate_up.data(), dgate_up.dtype(), stream());
  }

  void attention_forward(const Tensor& qkv, const AttentionShape& s, Tensor& out, Tensor& lse,
                         Tensor* out_copy) override {
    const char* op = "attention_forward";
    on_device(op, "qkv", qkv);
    on_device(op, "out", out);
    on_device(op, "lse", lse);
    if (out_copy) {
      on_device(op, "out_copy", *out_copy);
      expect_shape(op, "out_copy", *out_copy, out.shape());
      expect_float(op, "out_copy", *out_copy);
    }
    check_attention_shape(s);
    expect_shape(op, "qkv", qkv, {s.batch * s.seq, s.qkv_width()});
    expect_float(op, "qkv", qkv);
    expect_shape(op, "out", out, {s.batch * s.seq, s.q_heads * s.head_dim});
    expect_float(op, "out", out);
    expect_shape(op, "lse", lse, {s.batch, s.q_heads, s.seq});
    expect_dtype(op, "lse", lse, DType::F32);
    const cuda::AttentionRoute route = cuda::attention_route(ctx_, s.seq, s.head_dim, s.compute);
    // Training's case, an f32 out with a bf16 copy, is written by the tensor-core kernel in one
    // pass (in pairs of 32 bits: the copy's start must allow them); otherwise out is converted.
    const bool fused_copy = route == cuda::AttentionRoute::FlashMma && out_copy &&
                            out.dtype() == DType::F32 && out_copy->dtype() == DType::BF16 &&
                            reinterpret_cast<uintptr_t>(out_copy->data()) % 4 == 0;
    if (route == cuda::AttentionRoute::FlashMma) {
      const size_t bytes = cuda::attention_flash_mma_forward_scratch_bytes(
          s.batch, s.seq, s.q_heads, s.kv_heads, s.head_dim, qkv.dtype());
      Tensor scratch = ctx_.scratch_bytes(bytes, "attention forward scratch");
      cuda::attention_flash_mma_forward(
          qkv.data(), qkv.dtype(), s.batch, s.seq, s.q_heads, s.kv_heads, s.head_dim, out.data(),
          out.dtype(), lse.data_as<float>(), scratch.data(), stream(),
          fused_copy ? out_copy->data_as<bf16>() : nullptr);
    } else {
      const Tensor q32 = widened(qkv, "attention qkv (f32)");
      if (route == cuda::AttentionRoute::Gemm)
        cuda::attention_gemm_forward(ctx_, q32, s.batch, s.seq, s.q_heads, s.kv_heads,
                                     s.head_dim, out, lse);
      else
        cuda::attention_forward(q32.data_as<float>(), s.batch, s.seq, s.q_heads, s.kv_heads,
                                s.head_dim, out.data(), out.dtype(), lse.data_as<float>(),
                                stream());
    }
    if (out_copy && !fused_copy) copy(out, *out_copy);
  }
  void attention_backward(const Tensor& dout, const Tensor& qkv, const Tensor& out,
                          const Tensor& lse, const AttentionShape& s, Tensor& dqkv) override {
    const char* op = "attention_backward";
    on_device(op, "dout", dout);
    on_device(op, "qkv", qkv);
    on_device(op, "out", out);
    on_device(op, "lse", lse);
    on_device(op, "dqkv", dqkv);
    check_attention_shape(s);
    expect_shape(op, "qkv", qkv, {s.batch * s.seq, s.qkv_width()});
    expect_float(op, "qkv", qkv);
    expect_shape(op, "out", out, {s.batch * s.seq, s.q_heads * s.head_dim});
    expect_float(op, "out", out);
    expect_shape(op, "dout", dout, out.shape());
    expect(dout.dtype() == out.dtype(), op, "dout", dout, "the dtype of out");
    expect_shape(op, "lse", lse, {s.batch, s.q_heads, s.seq});
    expect_dtype(op, "lse", lse, DType::F32);
    expect_shape(op, "dqkv", dqkv, qkv.shape());
    expect_dtype(op, "dqkv", dqkv, DType::F32);
    const cuda::AttentionRoute route = cuda::attention_route(ctx_, s.seq, s.head_dim, s.compute);
    if (route == cuda::AttentionRoute::FlashMma) {
      const size_t bytes = cuda::attention_flash_mma_backward_scratch_bytes(
          s.batch, s.seq, s.q_heads, s.kv_heads, s.head_dim, qkv.dtype());
      Tensor scratch = ctx_.scratch_bytes(bytes, "attention backward scratch");
      const cuda::FlashMmaBackwardTuning::Problem problem{
          s.batch, s.seq, s.q_heads, s.kv_heads, s.head_dim, qkv.dtype(), out.dtype()};
      attention_tuning_.run(ctx_, problem, [&](int variant) {
        cuda::attention_flash_mma_backward(dout.data(), qkv.data(), qkv.dtype(), out.data(),
                                           out.dtype(), lse.data_as<float>(), s.batch, s.seq,
                                           s.q_heads, s.kv_heads, s.head_dim,
                                           dqkv.data_as<float>(), scratch.data(), stream(),
                                           variant);
      });
      return;
    }
    const Tensor q32 = widened(qkv, "attention qkv (f32)");
    if (route == cuda::AttentionRoute::Gemm) {
      cuda::attention_gemm_backward(ctx_, dout, q32, out, lse, s.batch, s.seq, s.q_heads,
                                    s.kv_heads, s.head_dim, dqkv);
      return;
    }
    const size_t bytes = cuda::attention_backward_scratch_bytes(s.batch, s.seq, s.q_heads,
                                                                s.head_dim, out.dtype());
    Tensor scratch = ctx_.scratch_bytes(bytes, "attention backward scratch");
    cuda::attention_backward(dout.data(), q32.data_as<float>(), out.data(), out.dtype(),
                             lse.data_as<float>(), s.batch, s.seq, s.q_heads, s.kv_heads,
                             s.head_dim, dqkv.data_as<float>(), scratch.data(), stream());
  }

  void attention_decode(const Tensor& qkv, Tensor& k_cache, Tensor& v_cache,
                        const Tensor& positions, const AttentionShape& s, Tensor& out) override {
    const char* op = "attention_decode";
    on_device(op, "qkv", qkv);
    on_device(op, "positions", positions);
    on_device(op, "k_cache", k_cache);
    on_device(op, "v_cache", v_cache);
    on_device(op, "out", out);
    check_attention_shape(s);
    VACC_CHECK(s.batch == 1, op, ": decodes one sequence (batch 1), got batch ", s.batch);
    expect_shape(op, "qkv", qkv, {s.seq, s.qkv_width()});
    expect_dtype(op, "qkv", qkv, DType::F32);
    expect(k_cache.defined() && k_cache.dim() == 2 && k_cache.size(1) == s.kv_heads * s.head_dim,
           op, "k_cache", k_cache, "(max_len, kv_heads*head_dim)");
    expect_dtype(op, "k_cache", k_cache, DType::F32);
    expect_shape(op, "v_cache", v_cache, k_cache.shape());
    expect_dtype(op, "v_cache", v_cache, DType::F32);
    expect_shape(op, "positions", positions, {s.seq});
    expect_dtype(op, "positions", positions, DType::I32);
    expect_shape(op, "out", out, {s.seq, s.q_heads * s.head_dim});
    expect_float(op, "out", out);
    cuda::attention_decode(qkv.data_as<float>(), s.seq, s.q_heads, s.kv_heads, s.head_dim,
                           k_cache.data_as<float>(), v_cache.data_as<float>(), k_cache.size(0),
                           positions.data_as<int32_t>(), out.data(), out.dtype(),
                           ctx_.device_error(), stream());
  }

  void argmax_rows(const Tensor& x, Tensor& out) override {
    const char* op = "argmax_rows";
    on_device(op, "x", x);
    on_device(op, "out", out);
    expect_token_rows(op, x, out);
    cuda::argmax_rows(x.data_as<float>(), x.size(0), x.size(1), out.data_as<int32_t>(), stream());
  }
  void sample_rows(const Tensor& logits, const Tensor& random_bits, float temperature,
                   float top_p, Tensor& out) override {
    const char* op = "sample_rows";
    on_device(op, "logits", logits);
    on_device(op, "random_bits", random_bits);
    on_device(op, "out", out);
    expect_token_rows(op, logits, out, &random_bits);
    Tensor scratch = ctx_.scratch_bytes(
        cuda::sample_rows_scratch_bytes(logits.size(0), logits.size(1)), "sampling scratch");
    cuda::sample_rows(logits.data_as<float>(), logits.size(0), logits.size(1),
                      static_cast<const uint64_t*>(random_bits.data()), temperature, top_p,
                      out.data_as<int32_t>(), scratch.data(), stream());
  }

  void classifier_cross_entropy(const Tensor& x, const Tensor& weight, const Tensor& labels,
                                float grad_scale, Tensor& loss_sum, Tensor* dx,
                                Tensor* dweight) override {
    const char* op = "classifier_cross_entropy";
    on_device(op, "x", x);
    on_device(op, "weight", weight);
    on_device(op, "labels", labels);
    on_device(op, "loss_sum", loss_sum);
    expect_classifier_shard(op, x, weight, 0, labels);
    expect_shape(op, "loss_sum", loss_sum, {1});
    expect_dtype(op, "loss_sum", loss_sum, DType::F32);
    if (dx) {
      on_device(op, "dx", *dx);
      expect_shape(op, "dx", *dx, x.shape());
      expect_dtype(op, "dx", *dx, DType::F32);
    }
    if (dweight) {
      on_device(op, "dweight", *dweight);
      expect_shape(op, "dweight", *dweight, weight.shape());
      expect_dtype(op, "dweight", *dweight, DType::F32);
    }
    cuda::classifier_cross_entropy(ctx_, x, weight, labels, grad_scale, loss_sum, dx, dweight);
  }

  void classifier_logsumexp(const Tensor& x, const Tensor& weight, int64_t vocab_start,
                            const Tensor& labels, Tensor& lse, Tensor& target_logit) override {
    const char* op = "classifier_logsumexp";
    check_classifier_shard(op, x, weight, vocab_start, labels);
    on_device(op, "lse", lse);
    on_device(op, "target_logit", target_logit);
    expect_shape(op, "lse", lse, {x.size(0)});
    expect_dtype(op, "lse", lse, DType::F32);
    expect_shape(op, "target_logit", target_logit, {x.size(0)});
    expect_dtype(op, "target_logit", target_logit, DType::F32);
    cuda::classifier_logsumexp(ctx_, x, weight, vocab_start, labels, lse, target_logit);
  }
  void classifier_cross_entropy_backward(const Tensor& x, const Tensor& weight,
                                         int64_t vocab_start, const Tensor& labels,
                                         const Tensor& lse_global, float grad_scale, Tensor* dx,
                                         Tensor* dweight) override {
    const char* op = "classifier_cross_entropy_backward";
    check_classifier_shard(op, x, weight, vocab_start, labels);
    on_device(op, "lse_global", lse_global);
    expect_shape(op, "lse_global", lse_global, {x.size(0)});
    expect_dtype(op, "lse_global", lse_global, DType::F32);
    if (dx) {
      on_device(op, "dx", *dx);
      expect_shape(op, "dx", *dx, x.shape());
      expect_dtype(op, "dx", *dx, DType::F32);
    }
    if (dweight) {
      on_device(op, "dweight", *dweight);
      expect_shape(op, "dweight", *dweight, weight.shape());
      expect_dtype(op, "dweight", *dweight, DType::F32);
    }
    cuda::classifier_cross_entropy_backward(ctx_, x, weight, vocab_start, labels, lse_global,
                                            grad_scale, dx, dweight);
  }

  void adamw_step(Tensor& param, const Tensor& grad, Tensor& m, Tensor& v,
                  const AdamWParams& p) override {
    check_adamw("adamw_step", param, grad, m, v);
    cuda::adamw_step(param.data_as<float>(), grad.data_as<float>(), m.data_as<float>(),
                     v.data_as<float>(), param.numel(), p.lr, p.beta1, p.beta2, p.eps,
                     p.weight_decay, p.step, p.grad_scale, stream());
  }

  // One launch for every segment. The work list (pieces of at most kAdamWItemElements of one
  // segment) lives on the device and is rebuilt only when the segments change, so a training
  // step uploads nothing.
  void adamw_step_segments(Tensor& param, const Tensor& grad, Tensor& m, Tensor& v,
                           const std::vector<AdamWSegment>& segments, const AdamWParams& p,
                           Tensor* param_copy) override {
    const char* op = "adamw_step_segments";
    check_adamw(op, param, grad, m, v, param_copy);
    if (segments != adamw_segments_) {
      std::vector<cuda::AdamWItem> items;
      int64_t end = 0;
      bool vec = true;
      for (size_t k = 0; k < segments.size(); ++k) {
        const AdamWSegment& s = segments[k];
        VACC_CHECK(s.offset >= end && s.numel >= 0 && s.offset + s.numel <= param.numel(), op,
                   ": segment ", k, " [", s.offset, ", ", s.offset + s.numel,
                   ") overlaps the one before or lies outside the ", param.numel(), " parameters");
        end = s.offset + s.numel;
        vec = vec && s.offset % 4 == 0 && s.numel % 4 == 0;
        for (int64_t done = 0; done < s.numel; done += cuda::kAdamWItemElements)
          items.push_back({s.offset + done,
                           int32_t(std::min(cuda::kAdamWItemElements, s.numel - done)),
                           s.decay ? 1 : 0});
      }
      adamw_items_ = Tensor();
      adamw_segments_.clear();
      if (!items.empty()) {
        adamw_items_ =
            ctx_.scratch_bytes(items.size() * sizeof(cuda::AdamWItem), "AdamW work list");
        ctx_.upload(items.data(), adamw_items_.data(), items.size() * sizeof(cuda::AdamWItem));
      }
      adamw_num_items_ = int64_t(items.size());
      adamw_items_vec_ = vec;
      adamw_segments_ = segments;
    }
    bool aligned = true;
    for (const Tensor* t : std::initializer_list<const Tensor*>{&param, &grad, &m, &v, param_copy})
      if (t) aligned = aligned && uintptr_t(t->data()) % (4 * dtype_size(t->dtype())) == 0;
    cuda::adamw_step_items(param.data_as<float>(), grad.data_as<float>(), m.data_as<float>(),
                           v.data_as<float>(),
                           adamw_items_.defined() ? adamw_items_.data_as<cuda::AdamWItem>()
                                                  : nullptr,
                           adamw_num_items_, adamw_items_vec_ && aligned, p.lr, p.beta1, p.beta2,
                           p.eps, p.weight_decay, p.step, p.grad_scale,
                           param_copy ? param_copy->data() : nullptr,
                           param_copy ? param_copy->dtype() : DType::F32, stream());
  }

  cudaStream_t stream() const { return ctx_.stream(); }
  cuda::CudaContext& context() { return ctx_; }

 private:
  // t as f32: itself, or (bf16) widened into a scratch tensor, for the kernels that read f32.
  Tensor widened(const Tensor& t, std::string_view what) {
    if (t.dtype() == DType::F32) return t;
    Tensor f = ctx_.scratch(t.shape(), DType::F32, what);
    cuda::convert(t.data(), t.dtype(), f.data(), DType::F32, t.numel(), stream());
    return f;
  }
  // A product's operands: on this device, matrices, a and b of one float dtype, out (M, N) for
  // op(a) (M, K) and op(b) (K, N). out's dtype is the caller's to check.
  struct ProductShape {
    int64_t M, N, K;
  };
  ProductShape check_product(const char* op, const Tensor& a, bool trans_a, const Tensor& b,
                             bool trans_b, const Tensor& out) const {
    on_device(op, "a", a);
    on_device(op, "b", b);
    on_device(op, "out", out);
    expect_2d(op, "a", a);
    expect_2d(op, "b", b);
    expect_2d(op, "out", out);
    expect_float(op, "a", a);
    expect(b.dtype() == a.dtype(), op, "b", b, ("the dtype of a, " + dtype_name(a.dtype())).c_str());
    const int64_t M = trans_a ? a.size(1) : a.size(0), K = trans_a ? a.size(0) : a.size(1);
    const int64_t Kb = trans_b ? b.size(1) : b.size(0), N = trans_b ? b.size(0) : b.size(1);
    expect(Kb == K, op, "b", b, ("an inner dimension of " + std::to_string(K)).c_str());
    expect_shape(op, "out", out, {M, N});
    return {M, N, K};
  }
  void on_device(const char* op, const char* what, const Tensor& t) const {
    expect_device(op, what, t, device());
  }

  // x (N, C) and a vocabulary shard weight (V_shard, C) of the same float dtype; labels (N).
  void check_classifier_shard(const char* op, const Tensor& x, const Tensor& weight,
                              int64_t vocab_start, const Tensor& labels) const {
    on_device(op, "x", x);
    on_device(op, "weight", weight);
    on_device(op, "labels", labels);
    expect_classifier_shard(op, x, weight, vocab_start, labels);
  }

  static void check_attention_shape(const AttentionShape& s) {
    s.check();
    VACC_CHECK(s.head_dim <= cuda::kMaxHeadDim, "attention: head_dim ", s.head_dim,
               " is not supported by the CUDA kernels (at most ", cuda::kMaxHeadDim, ")");
  }

  // Scratch for the column sums of an (M, N) matrix (cuda::column_sums). Freed when the op
  // returns; the stream keeps the order, and the caching allocator hands the same block back.
  Tensor column_partials(int64_t M, int64_t N) {
    return ctx_.scratch({std::max<int64_t>(1, cuda::column_sum_chunks(M) * N)}, DType::F32,
                        "column-sum partials");
  }

  // expect_adamw, and every tensor on this device.
  void check_adamw(const char* op, const Tensor& param, const Tensor& grad, const Tensor& m,
                   const Tensor& v, const Tensor* param_copy = nullptr) const {
    using Named = std::pair<const char*, const Tensor*>;
    for (const Named& t : {Named{"param", &param}, Named{"grad", &grad}, Named{"m", &m},
                           Named{"v", &v}, Named{"param_copy", param_copy}})
      if (t.second && t.second->defined()) on_device(op, t.first, *t.second);
    expect_adamw(op, param, grad, m, v, param_copy);
  }

  cuda::CudaContext ctx_;
  // The tensor-core attention backward's kernel variant per problem (timed on its first run).
  cuda::FlashMmaBackwardTuning attention_tuning_;
  // adamw_step_segments' device work list and the segments it was built for (after ctx_: the
  // tensor is freed before the allocator).
  std::vector<AdamWSegment> adamw_segments_;
  Tensor adamw_items_;
  int64_t adamw_num_items_ = 0;
  bool adamw_items_vec_ = false;
};

// Why no GPU can be used, or "" when one can.
std::string probe_devices(int* count) {
  int n = 0;
  cudaError_t err = cudaGetDeviceCount(&n);
  cudaGetLastError();  // leave no sticky error behind
  if (count) *count = err == cudaSuccess ? n : 0;
  if (err != cudaSuccess)
    return std::string(cudaGetErrorName(err)) + ": " + cudaGetErrorString(err);
  if (n == 0) return "the CUDA driver reports no devices";
  return "";
}

// Throws, naming the reason, unless GPU `device_index` exists and can be used.
void check_usable_device(int device_index) {
  int count = 0;
  const std::string why = probe_devices(&count);
  VACC_CHECK(count > 0, "no CUDA GPU can be used on this machine (", why, ")");
  VACC_CHECK(device_index >= 0 && device_index < count, "CUDA device ", device_index,
             " does not exist: this machine has ", count, " CUDA device(s)");
}

// The properties of GPU `device_index`, after check_usable_device.
cudaDeviceProp usable_device_properties(int device_index) {
  check_usable_device(device_index);
  cudaDeviceProp prop{};
  VACC_CUDA_CHECK(cudaGetDeviceProperties(&prop, device_index));
  return prop;
}

}  // namespace

int cuda_device_count() {
  try {
    int n = 0;
    probe_devices(&n);
    return n;
  } catch (...) {
    return 0;
  }
}

std::string cuda_unavailable_reason() {
  try {
    return probe_devices(nullptr);
  } catch (...) {
    return "the CUDA runtime could not be queried";
  }
}

std::unique_ptr<Backend> make_cuda_backend(int device_index, size_t memory_budget_bytes) {
  check_usable_device(device_index);
  return std::make_unique<CudaBackend>(device_index, memory_budget_bytes);
}

size_t cuda_device_memory_bytes(int device_index) {
  return usable_device_properties(device_index).totalGlobalMem;
}

std::string cuda_device_name(int device_index) {
  return usable_device_properties(device_index).name;
}

int64_t cuda_classifier_chunk_bytes(Backend& backend) {
  auto* cuda = dynamic_cast<CudaBackend*>(&backend);
  return cuda ? cuda::classifier_chunk_bytes(cuda->context()) : 0;
}

void* cuda_compute_stream(Backend& backend) {
  auto* cuda = dynamic_cast<CudaBackend*>(&backend);
  return cuda ? static_cast<void*>(cuda->stream()) : nullptr;
}

}  // namespace vacc
