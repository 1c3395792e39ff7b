// ProfilingBackend: wraps another backend and times every operation (synchronising before
// and after each, so the figures are device time), grouped by op name; matrix products are
// also grouped by shape and reported with their FLOP rate. `vacc train --profile` uses it.
#pragma once

#include <map>
#include <memory>
#include <string>

#include "vacc/kernels/backend.h"

namespace vacc {

struct OpProfile {
  int64_t calls = 0;
  double seconds = 0, flops = 0;
};

class ProfilingBackend final : public Backend {
 public:
  explicit ProfilingBackend(Backend& inner) : inner_(inner) {}

  const std::map<std::string, OpProfile>& by_op() const { return by_op_; }
  const std::map<std::string, OpProfile>& matmuls_by_shape() const { return by_shape_; }
  void reset() {
    by_op_.clear();
    by_shape_.clear();
  }
  // A table of the ops sorted by time, each with its share of `total_seconds`.
  std::string report(double total_seconds) const;

  Device device() const override { return inner_.device(); }
  DeviceAllocator& allocator() override { return inner_.allocator(); }
  std::string name() const override { return inner_.name() + " [profiling]"; }
  void synchronize() override { inner_.synchronize(); }
  std::string tuning_summary() const override { return inner_.tuning_summary(); }

  void upload(const void* host, Tensor& dst) override;
  void download(const Tensor& src, void* host) override;
  void copy(const Tensor& src, Tensor& dst) override;
  void fill(Tensor& dst, float value) override;
  void add(const Tensor& a, const Tensor& b, Tensor& out) override;
  void scale(Tensor& x, float s) override;
  void sum_of_squares(const Tensor& x, Tensor& acc) override;
  void matmul(const Tensor& a, bool trans_a, const Tensor& b, bool trans_b, Tensor& out,
              float alpha, float beta, const Tensor* bias) override;
  void matmul_add(const Tensor& a, bool trans_a, const Tensor& b, bool trans_b,
                  const Tensor& addend, Tensor& out) override;
  void bias_backward(const Tensor& dy, Tensor& dbias) override;
  void embedding_forward(const Tensor& ids, const Tensor& table, int64_t vocab_start,
                         Tensor& out) override;
  void embedding_backward(const Tensor& ids, const Tensor& dout, int64_t vocab_start,
                          Tensor& dtable) override;
  void rmsnorm_forward(const Tensor& x, const Tensor& weight, float eps, Tensor& out,
                       Tensor& rstd) override;
  void rmsnorm_backward(const Tensor& dout, const Tensor& x, const Tensor& weight,
                        const Tensor& rstd, const Tensor* residual, Tensor& dx, Tensor* dx_copy,
                        Tensor& dweight) override;
  void rope_backward_with_bias(Tensor& dx, const Tensor& positions, const Tensor& cos,
                               const Tensor& sin, int64_t num_heads, int64_t head_dim,
                               Tensor* copy, Tensor& dbias) override;
  void rope(Tensor& x, const Tensor& positions, const Tensor& cos, const Tensor& sin,
            int64_t num_heads, int64_t head_dim, bool inverse, Tensor* copy) override;
  void swiglu_forward(const Tensor& gate_up, Tensor& out) override;
  void swiglu_backward(const Tensor& dout, const Tensor& gate_up, Tensor& dgate_up) override;
  void attention_forward(const Tensor& qkv, const AttentionShape& shape, Tensor& out,
                         Tensor& lse, Tensor* out_copy) override;
  void attention_backward(const Tensor& dout, const Tensor& qkv, const Tensor& out,
                          const Tensor& lse, const AttentionShape& shape, Tensor& dqkv) override;
  void attention_decode(const Tensor& qkv, Tensor& k_cache, Tensor& v_cache, const Tensor& positions,
                        const AttentionShape& shape, Tensor& out) override;
  void argmax_rows(const Tensor& x, Tensor& out) override;
  void sample_rows(const Tensor& logits, const Tensor& random_bits, float temperature,
                   float top_p, Tensor& out) override;
  void classifier_cross_entropy(const Tensor& x, const Tensor& weight, const Tensor& labels,
                                float grad_scale, Tensor& loss_sum, Tensor* dx,
                                Tensor* dweight) override;
  void classifier_logsumexp(const Tensor& x, const Tensor& weight, int64_t vocab_start,
                            const Tensor& labels, Tensor& lse, Tensor& target_logit) override;
  void classifier_cross_entropy_backward(const Tensor& x, const Tensor& weight,
                                         int64_t vocab_start, const Tensor& labels,
                                         const Tensor& lse_global, float grad_scale, Tensor* dx,
                                         Tensor* dweight) override;
  void adamw_step(Tensor& param, const Tensor& grad, Tensor& m, Tensor& v,
                  const AdamWParams& p) override;
  void adamw_step_segments(Tensor& param, const Tensor& grad, Tensor& m, Tensor& v,
                           const std::vector<AdamWSegment>& segments, const AdamWParams& p,
                           Tensor* param_copy) override;

 private:
  template <typename Fn>
  void timed(const std::string& op, double flops, Fn&& fn, const std::string& shape = "");

  Backend& inner_;
  std::map<std::string, OpProfile> by_op_, by_shape_;
};

}  // namespace vacc
