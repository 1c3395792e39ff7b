// Matrix products through oneDNN. Transposes are expressed as strides (no copies), and the
// primitives are cached per shape: building a oneDNN primitive costs far more than running
// a small one. The cache is per thread, so kernels may call matmul from OpenMP workers (each
// call then runs on its own thread).
#include <dnnl.hpp>
#include <map>
#include <tuple>
#include <unordered_map>

#include "vacc/core/error.h"
#include "vacc/kernels/cpu/cpu_kernels.h"

namespace vacc::cpu {
namespace {

using dnnl::memory;

memory::data_type onednn_type(DType t) {
  switch (t) {
    case DType::F32: return memory::data_type::f32;
    case DType::BF16: return memory::data_type::bf16;
    default: fail("matmul: unsupported dtype ", dtype_name(t));
  }
}

dnnl::engine& cpu_engine() {
  static dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  return engine;
}

using MatmulKey = std::tuple<int64_t, int64_t, int64_t, bool, bool, DType, DType, float, float, bool>;

struct CachedMatmul {
  dnnl::matmul primitive;
  memory::desc a, b, out, bias;
};

struct ThreadState {
  dnnl::stream stream{cpu_engine()};
  std::map<MatmulKey, CachedMatmul> cache;
};

ThreadState& thread_state() {
  thread_local ThreadState state;
  return state;
}

CachedMatmul build(const MatmulKey& key) {
  auto [M, N, K, trans_a, trans_b, in_dtype, out_dtype, alpha, beta, has_bias] = key;
  // op(a) is (M, K): row-major (M, K) has strides (K, 1); a stored (K, M) has strides (1, M).
  memory::desc a({M, K}, onednn_type(in_dtype), trans_a ? memory::dims{1, M} : memory::dims{K, 1});
  memory::desc b({K, N}, onednn_type(in_dtype), trans_b ? memory::dims{1, K} : memory::dims{N, 1});
  memory::desc out({M, N}, onednn_type(out_dtype), memory::dims{N, 1});
  memory::desc bias = has_bias ? memory::desc({1, N}, memory::data_type::f32, memory::dims{N, 1})
                               : memory::desc();
  dnnl::primitive_attr attr;
  if (alpha != 1.0f) attr.set_output_scales(0, {alpha});
  if (beta != 0.0f) {
    dnnl::post_ops ops;
    ops.append_sum(beta);
    attr.set_post_ops(ops);
  }
  dnnl::matmul::desc desc = has_bias ? dnnl::matmul::desc(a, b, bias, out) : dnnl::matmul::desc(a, b, out);
  dnnl::matmul::primitive_desc pd(desc, attr, cpu_engine());
  return CachedMatmul{dnnl::matmul(pd), a, b, out, bias};
}

}  // namespace

void matmul(const void* a, bool trans_a, const void* b, bool trans_b, void* out, int64_t M,
            int64_t N, int64_t K, DType in_dtype, DType out_dtype, float alpha, float beta,
            const float* bias) {
  VACC_CHECK(!(bias && alpha != 1.0f), "matmul: a bias together with alpha != 1 is not supported");
  VACC_CHECK(!(beta != 0.0f && out_dtype != DType::F32), "matmul: beta != 0 needs an f32 output");
  if (M == 0 || N == 0) return;
  if (K == 0) {  // an empty product: out = beta * out (+ bias)
    for (int64_t i = 0; i < M; ++i)
      for (int64_t j = 0; j < N; ++j) {
        float prev = beta != 0.0f ? beta * static_cast<float*>(out)[i * N + j] : 0.0f;
        float v = prev + (bias ? bias[j] : 0.0f);
        if (out_dtype == DType::F32)
          static_cast<float*>(out)[i * N + j] = v;
        else
          static_cast<bf16*>(out)[i * N + j] = float_to_bf16(v);
      }
    return;
  }
  ThreadState& state = thread_state();
  MatmulKey key{M, N, K, trans_a, trans_b, in_dtype, out_dtype, alpha, beta, bias != nullptr};
  auto it = state.cache.find(key);
  if (it == state.cache.end()) it = state.cache.emplace(key, build(key)).first;
  CachedMatmul& mm = it->second;
  dnnl::engine& engine = cpu_engine();
  std::unordered_map<int, memory> args{
      {DNNL_ARG_SRC, memory(mm.a, engine, const_cast<void*>(a))},
      {DNNL_ARG_WEIGHTS, memory(mm.b, engine, const_cast<void*>(b))},
      {DNNL_ARG_DST, memory(mm.out, engine, out)}};
  if (bias) args.emplace(DNNL_ARG_BIAS, memory(mm.bias, engine, const_cast<float*>(bias)));
  mm.primitive.execute(state.stream, args);
  state.stream.wait();
}

}  // namespace vacc::cpu
