// Argument checks the backends share: each throws vacc::Error naming the op, the tensor, what
// it is and what was expected ("matmul: b is f32[3, 4] on cpu:0; expected an inner dimension
// of 5").
#pragma once

#include <string>
#include <utility>

#include "vacc/core/error.h"
#include "vacc/core/tensor.h"

namespace vacc::checks {

inline void expect(bool cond, const char* op, const char* what, const Tensor& t, const char* rule) {
  if (!cond) fail(op, ": ", what, " is ", t.defined() ? t.str() : "undefined", "; expected ", rule);
}

inline void expect_dtype(const char* op, const char* what, const Tensor& t, DType dt) {
  expect(t.defined() && t.dtype() == dt, op, what, t, dtype_name(dt).c_str());
}

inline void expect_float(const char* op, const char* what, const Tensor& t) {
  expect(t.defined() && (t.dtype() == DType::F32 || t.dtype() == DType::BF16), op, what, t,
         "f32 or bf16");
}

inline void expect_shape(const char* op, const char* what, const Tensor& t, const Shape& s) {
  expect(t.defined() && t.shape() == s, op, what, t, ("shape " + shape_str(s)).c_str());
}

inline void expect_2d(const char* op, const char* what, const Tensor& t) {
  expect(t.defined() && t.dim() == 2, op, what, t, "a matrix");
}

inline void expect_device(const char* op, const char* what, const Tensor& t, const Device& d) {
  expect(t.defined() && t.device() == d, op, what, t, ("a tensor on " + d.str()).c_str());
}

// adamw_step's tensors: param, grad, m and v f32 of one numel; and adamw_step_segments'
// param_copy, if given: as many elements as param, f32 or bf16.
inline void expect_adamw(const char* op, const Tensor& param, const Tensor& grad, const Tensor& m,
                         const Tensor& v, const Tensor* param_copy = nullptr) {
  expect_dtype(op, "param", param, DType::F32);
  for (const Tensor* t : {&grad, &m, &v}) {
    const char* what = t == &grad ? "grad" : (t == &m ? "m" : "v");
    expect(t->defined() && t->numel() == param.numel() && t->dtype() == DType::F32, op, what, *t,
           "f32 with the numel of param");
  }
  if (param_copy) {
    expect(param_copy->numel() == param.numel(), op, "param_copy", *param_copy,
           ("as many elements as " + param.str()).c_str());
    expect_float(op, "param_copy", *param_copy);
  }
}

// The fused classifier's inputs: x (N, C) and the weight's vocabulary rows (all V, or a
// tensor-parallel shard's from vocab_start) (V_rows, C) of the same float dtype; labels i32 (N);
// vocab_start not negative.
inline void expect_classifier_shard(const char* op, const Tensor& x, const Tensor& weight,
                                    int64_t vocab_start, const Tensor& labels) {
  expect_2d(op, "x", x);
  expect_float(op, "x", x);
  expect_2d(op, "weight", weight);
  expect(weight.size(1) == x.size(1) && weight.dtype() == x.dtype(), op, "weight", weight,
         "(vocabulary rows, C) with the dtype of x");
  expect_shape(op, "labels", labels, {x.size(0)});
  expect_dtype(op, "labels", labels, DType::I32);
  VACC_CHECK(vocab_start >= 0, op, ": vocab_start must not be negative (got ", vocab_start, ")");
}

// argmax_rows' and sample_rows' arguments: logits f32 (rows, cols), out i32 (rows); and
// sample_rows' random_bits, if given: i32 (rows, 2).
inline void expect_token_rows(const char* op, const Tensor& logits, const Tensor& out,
                              const Tensor* random_bits = nullptr) {
  expect_2d(op, "logits", logits);
  expect_dtype(op, "logits", logits, DType::F32);
  expect_shape(op, "out", out, {logits.size(0)});
  expect_dtype(op, "out", out, DType::I32);
  if (random_bits) {
    expect_shape(op, "random_bits", *random_bits, {logits.size(0), 2});
    expect_dtype(op, "random_bits", *random_bits, DType::I32);
  }
}

// rope's arguments (Backend::rope), on either backend.
inline void expect_rope(const Tensor& x, const Tensor& positions, const Tensor& cos,
                        const Tensor& sin, int64_t num_heads, int64_t head_dim,
                        const Tensor* copy) {
  const char* op = "rope";
  expect_2d(op, "x", x);
  expect_float(op, "x", x);
  expect(head_dim % 2 == 0 && num_heads * head_dim <= x.size(1), op, "x", x,
         "rows holding num_heads heads of an even head_dim");
  if (copy) {
    expect_shape(op, "copy", *copy, x.shape());
    expect_float(op, "copy", *copy);
  }
  expect_shape(op, "positions", positions, {x.size(0)});
  expect_dtype(op, "positions", positions, DType::I32);
  expect_2d(op, "cos", cos);
  expect(cos.size(1) == head_dim / 2, op, "cos", cos, "head_dim/2 columns");
  expect_dtype(op, "cos", cos, DType::F32);
  expect_shape(op, "sin", sin, cos.shape());
  expect_dtype(op, "sin", sin, DType::F32);
}

// rmsnorm_backward's arguments (Backend::rmsnorm_backward), on either backend.
inline void expect_rmsnorm_backward(const Tensor& dout, const Tensor& x, const Tensor& weight,
                                    const Tensor& rstd, const Tensor* residual, const Tensor& dx,
                                    const Tensor* dx_copy, const Tensor& dweight) {
  const char* op = "rmsnorm_backward";
  expect_2d(op, "x", x);
  expect_dtype(op, "x", x, DType::F32);
  using Named = std::pair<const char*, const Tensor*>;
  for (const Named& t : {Named{"dout", &dout}, Named{"residual", residual}, Named{"dx", &dx}})
    if (t.second) {
      expect_shape(op, t.first, *t.second, x.shape());
      expect_dtype(op, t.first, *t.second, DType::F32);
    }
  if (dx_copy) {
    expect_shape(op, "dx_copy", *dx_copy, x.shape());
    expect_float(op, "dx_copy", *dx_copy);
  }
  for (const Named& t : {Named{"weight", &weight}, Named{"dweight", &dweight}}) {
    expect_shape(op, t.first, *t.second, {x.size(1)});
    expect_dtype(op, t.first, *t.second, DType::F32);
  }
  expect_shape(op, "rstd", rstd, {x.size(0)});
  expect_dtype(op, "rstd", rstd, DType::F32);
}

}  // namespace vacc::checks
