// Timing of the CUDA backend's ops at the shape of one Qwen2.5-0.5B layer (hidden 896, 14 q /
// 2 kv heads of 64, FFN 4864, vocabulary 151936), for a session with a GPU (see docs/cuda.md):
//   build/bin/cuda_ops_bench [tokens=1024] [batch=1]
// Each op runs once to warm up, then `reps` times between two synchronize() calls; the figure
// is the mean. FLOP rates count 2 M N K per product; bandwidths the bytes each op must move.
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "vacc/core/error.h"
#include "vacc/kernels/cuda/cuda_backend.h"

using namespace vacc;

namespace {

Tensor random_tensor(Backend& be, Shape shape, DType dt, float range, uint64_t seed) {
  std::vector<float> host(size_t(shape_numel(shape)));
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> u(-range, range);
  for (float& x : host) x = u(rng);
  Tensor f = be.empty(shape, DType::F32, MemoryCategory::Buffers, "bench");
  be.upload(host.data(), f);
  if (dt == DType::F32) return f;
  Tensor t = be.empty(shape, dt, MemoryCategory::Buffers, "bench");
  be.copy(f, t);
  return t;
}

void report(Backend& be, const std::string& name, double flops, double bytes,
            const std::function<void()>& fn, int reps = 20) {
  fn();
  be.synchronize();
  const auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < reps; ++i) fn();
  be.synchronize();
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / reps;
  std::printf("%-34s %9.3f ms", name.c_str(), s * 1e3);
  if (flops > 0) std::printf("  %7.1f TFLOP/s", flops / s * 1e-12);
  if (bytes > 0) std::printf("  %7.1f GB/s", bytes / s * 1e-9);
  std::printf("\n");
}

}  // namespace

int main(int argc, char** argv) {
  const int64_t T = argc > 1 ? std::atoll(argv[1]) : 1024, B = argc > 2 ? std::atoll(argv[2]) : 1;
  const int64_t N = B * T, C = 896, F = 4864, Hq = 14, Hkv = 2, D = 64, V = 151936;
  const int64_t QKV = (Hq + 2 * Hkv) * D;
  if (cuda_device_count() == 0) {
    std::fprintf(stderr, "cuda_ops_bench: no CUDA GPU on this machine (%s)\n",
                 cuda_unavailable_reason().c_str());
    return 1;
  }
  try {
    auto be = make_cuda_backend(0);
    std::printf("%s, %lld tokens (batch %lld x %lld)\n", be->name().c_str(), (long long)N,
                (long long)B, (long long)T);
    Backend& g = *be;
    for (DType dt : {DType::BF16, DType::F32}) {
      std::string tag = " ";  // (appended: GCC 12's -Wrestrict misfires on " " + string)
      tag += dtype_name(dt);
      Tensor x = random_tensor(g, {N, C}, dt, 1.0f, 1);
      Tensor wqkv = random_tensor(g, {QKV, C}, dt, 0.05f, 2), bqkv = random_tensor(g, {QKV}, DType::F32, 0.1f, 3);
      Tensor wgu = random_tensor(g, {2 * F, C}, dt, 0.05f, 4), wdown = random_tensor(g, {C, F}, dt, 0.05f, 5);
      Tensor act = random_tensor(g, {N, F}, dt, 1.0f, 6);
      // The qkv product writes the compute dtype, as the model does.
      Tensor qkv = g.empty({N, QKV}, dt, MemoryCategory::Activations, "qkv");
      Tensor gu = g.empty({N, 2 * F}, DType::F32, MemoryCategory::Activations, "gate_up");
      Tensor y = g.empty({N, C}, DType::F32, MemoryCategory::Activations, "y");
      Tensor dwgu = g.zeros({2 * F, C}, DType::F32, MemoryCategory::Gradients, "dw");
      Tensor dgu = random_tensor(g, {N, 2 * F}, dt, 1.0f, 7);
      Tensor dx = g.empty({N, C}, DType::F32, MemoryCategory::Activations, "dx");
      report(g, "matmul qkv (+bias)" + tag, 2.0 * N * QKV * C, 0,
             [&] { g.matmul(x, false, wqkv, true, qkv, 1.0f, 0.0f, &bqkv); });
      report(g, "matmul gate_up" + tag, 2.0 * N * 2 * F * C, 0,
             [&] { g.matmul(x, false, wgu, true, gu); });
      report(g, "matmul down" + tag, 2.0 * N * C * F, 0, [&] { g.matmul(act, false, wdown, true, y); });
      report(g, "matmul gate_up dX" + tag, 2.0 * N * 2 * F * C, 0,
             [&] { g.matmul(dgu, false, wgu, false, dx); });
      report(g, "matmul gate_up dW (beta 1)" + tag, 2.0 * N * 2 * F * C, 0,
             [&] { g.matmul(dgu, true, x, false, dwgu, 1.0f, 1.0f); });
      Tensor attn_in = random_tensor(g, {N, Hq * D}, dt, 1.0f, 16), wo = random_tensor(g, {C, Hq * D}, dt, 0.05f, 17);
      report(g, "matmul o_proj + residual (matmul_add)" + tag, 2.0 * N * C * Hq * D, 0,
             [&] { g.matmul_add(attn_in, false, wo, true, dx, y); });
      // The attention's narrow backward products (N = 896 or 1152 wide; they ran at a third
      // of the wide products' rate in the H200 profile).
      Tensor dh = random_tensor(g, {N, C}, dt, 1.0f, 18), dqkv = random_tensor(g, {N, QKV}, dt, 1.0f, 19);
      Tensor dattn = g.empty({N, Hq * D}, DType::F32, MemoryCategory::Activations, "dattn");
      Tensor dwo = g.zeros({C, Hq * D}, DType::F32, MemoryCategory::Gradients, "dwo");
      Tensor dwqkv = g.zeros({QKV, C}, DType::F32, MemoryCategory::Gradients, "dwqkv");
      report(g, "matmul o_proj dX" + tag, 2.0 * N * C * Hq * D, 0,
             [&] { g.matmul(dh, false, wo, false, dattn); });
      report(g, "matmul o_proj dW (beta 1)" + tag, 2.0 * N * C * Hq * D, 0,
             [&] { g.matmul(dh, true, attn_in, false, dwo, 1.0f, 1.0f); });
      report(g, "matmul qkv dX" + tag, 2.0 * N * QKV * C, 0,
             [&] { g.matmul(dqkv, false, wqkv, false, dx); });
      report(g, "matmul qkv dW (beta 1)" + tag, 2.0 * N * QKV * C, 0,
             [&] { g.matmul(dqkv, true, x, false, dwqkv, 1.0f, 1.0f); });
    }

    // The model's qkv is in the compute dtype: bf16 for the mixed-precision runs.
    Tensor qkv32 = random_tensor(g, {N, QKV}, DType::F32, 1.5f, 8);
    Tensor qkv16 = g.empty({N, QKV}, DType::BF16, MemoryCategory::Activations, "qkv bf16");
    g.copy(qkv32, qkv16);
    // bf16: mixed precision (f32 output as the model keeps it) through each route VACC_ATTENTION
    // can force (kernels/cuda/attention_route.h); f32: the f32 flash kernels.
    const std::pair<DType, const char*> attention_runs[] = {
        {DType::BF16, "flash_mma"}, {DType::BF16, "gemm"}, {DType::BF16, "flash_f32"},
        {DType::F32, nullptr}};
    for (auto [dt, route] : attention_runs) {
      if (route)
        setenv("VACC_ATTENTION", route, 1);
      else
        unsetenv("VACC_ATTENTION");
      const std::string tag = dtype_name(dt) + (route ? std::string(" ") + route : std::string());
      const AttentionShape s{B, T, Hq, Hkv, D, dt};
      const Tensor& qkv = dt == DType::BF16 ? qkv16 : qkv32;
      Tensor out = g.empty({N, Hq * D}, DType::F32, MemoryCategory::Activations, "attn");
      Tensor lse = g.empty({B, Hq, T}, DType::F32, MemoryCategory::Activations, "lse");
      Tensor dout = random_tensor(g, {N, Hq * D}, DType::F32, 1.0f, 9);
      Tensor dqkv = g.empty({N, QKV}, DType::F32, MemoryCategory::Activations, "dqkv");
      const double fwd = 2.0 * B * Hq * T * T * D;  // causal: half of 4 B H T^2 D
      report(g, "attention forward " + tag, fwd, 0,
             [&] { g.attention_forward(qkv, s, out, lse, nullptr); });
      report(g, "attention backward " + tag, 2.5 * fwd, 0,
             [&] { g.attention_backward(dout, qkv, out, lse, s, dqkv); });
    }
    unsetenv("VACC_ATTENTION");

    {
      Tensor x = random_tensor(g, {N, C}, DType::BF16, 1.0f, 10);
      Tensor w = random_tensor(g, {V, C}, DType::BF16, 0.05f, 11);
      std::vector<int32_t> labels(static_cast<size_t>(N));
      for (int64_t i = 0; i < N; ++i) labels[size_t(i)] = int32_t((i * 7919) % V);
      Tensor L = g.empty({N}, DType::I32, MemoryCategory::Buffers, "labels");
      g.upload(labels.data(), L);
      Tensor loss = g.zeros({1}, DType::F32, MemoryCategory::Buffers, "loss");
      Tensor dX = g.empty({N, C}, DType::F32, MemoryCategory::Activations, "dx");
      Tensor dW = g.zeros({V, C}, DType::F32, MemoryCategory::Gradients, "dw");
      report(g, "classifier+CE forward bf16", 2.0 * N * V * C, 0,
             [&] { g.classifier_cross_entropy(x, w, L, 1.0f, loss, nullptr, nullptr); }, 5);
      report(g, "classifier+CE fwd+bwd bf16", 6.0 * N * V * C, 0,
             [&] { g.classifier_cross_entropy(x, w, L, 1.0f, loss, &dX, &dW); }, 5);
    }

    {
      Tensor x = random_tensor(g, {N, C}, DType::F32, 1.0f, 12), w = random_tensor(g, {C}, DType::F32, 1.0f, 13);
      Tensor out = g.empty({N, C}, DType::BF16, MemoryCategory::Activations, "out");
      Tensor rstd = g.empty({N}, DType::F32, MemoryCategory::Activations, "rstd");
      Tensor dx = g.empty({N, C}, DType::F32, MemoryCategory::Activations, "dx");
      Tensor dw = g.zeros({C}, DType::F32, MemoryCategory::Gradients, "dw");
      report(g, "rmsnorm forward (bf16 out)", 0, double(N * C) * 6,
             [&] { g.rmsnorm_forward(x, w, 1e-6f, out, rstd); });
      report(g, "rmsnorm backward", 0, double(N * C) * 12,
             [&] { g.rmsnorm_backward(x, x, w, rstd, nullptr, dx, nullptr, dw); });
      // The model's: the residual added and dx's bf16 copy written in the same pass.
      Tensor dres = random_tensor(g, {N, C}, DType::F32, 1.0f, 18);
      Tensor dxb = g.empty({N, C}, DType::BF16, MemoryCategory::Activations, "dx bf16");
      report(g, "rmsnorm backward (+residual, bf16 copy)", 0, double(N * C) * 18,
             [&] { g.rmsnorm_backward(x, x, w, rstd, &dres, dx, &dxb, dw); });
      Tensor gu = random_tensor(g, {N, 2 * F}, DType::F32, 2.0f, 14);
      Tensor a = g.empty({N, F}, DType::BF16, MemoryCategory::Activations, "act");
      Tensor dout = random_tensor(g, {N, F}, DType::F32, 1.0f, 15);
      Tensor dgu = g.empty({N, 2 * F}, DType::BF16, MemoryCategory::Activations, "dgu");
      report(g, "swiglu forward (bf16 out)", 0, double(N * F) * 10, [&] { g.swiglu_forward(gu, a); });
      report(g, "swiglu backward (bf16 out)", 0, double(N * F) * 16,
             [&] { g.swiglu_backward(dout, gu, dgu); });
      // Mixed precision's: gate_up and the SwiGLU output's gradient in bf16.
      Tensor gub = g.empty({N, 2 * F}, DType::BF16, MemoryCategory::Activations, "gate_up bf16");
      Tensor doutb = g.empty({N, F}, DType::BF16, MemoryCategory::Activations, "dout bf16");
      g.copy(gu, gub);
      g.copy(dout, doutb);
      report(g, "swiglu forward (bf16 in and out)", 0, double(N * F) * 6,
             [&] { g.swiglu_forward(gub, a); });
      report(g, "swiglu backward (bf16 in and out)", 0, double(N * F) * 10,
             [&] { g.swiglu_backward(doutb, gub, dgu); });
      Tensor xb = g.empty({N, C}, DType::BF16, MemoryCategory::Activations, "x bf16");
      report(g, "convert f32->bf16 (N x C)", 0, double(N * C) * 6, [&] { g.copy(x, xb); });
      report(g, "add (N x C)", 0, double(N * C) * 12, [&] { g.add(x, dx, dx); });
      Tensor db = g.zeros({C}, DType::F32, MemoryCategory::Gradients, "dbias");
      report(g, "bias_backward (N x C)", 0, double(N * C) * 4, [&] { g.bias_backward(x, db); });
    }

    {  // RoPE as the model runs it: forward on the bf16 qkv in place; backward on the f32 dqkv
       // in place, writing the products' bf16 copy of the whole rows.
      std::vector<float> table(size_t(T * D / 2));
      for (size_t i = 0; i < table.size(); ++i) table[i] = float(i % 97) / 97.0f;
      Tensor cs = g.empty({T, D / 2}, DType::F32, MemoryCategory::Buffers, "cos");
      Tensor sn = g.empty({T, D / 2}, DType::F32, MemoryCategory::Buffers, "sin");
      g.upload(table.data(), cs);
      g.upload(table.data(), sn);
      std::vector<int32_t> positions(static_cast<size_t>(N));
      for (int64_t i = 0; i < N; ++i) positions[size_t(i)] = int32_t(i % T);
      Tensor pos = g.empty({N}, DType::I32, MemoryCategory::Buffers, "positions");
      g.upload(positions.data(), pos);
      const double rotated = double(N * (Hq + Hkv) * D), rest = double(N * Hkv * D);
      report(g, "rope forward (bf16 in place)", 0, rotated * 4,
             [&] { g.rope(qkv16, pos, cs, sn, Hq + Hkv, D, false, nullptr); });
      Tensor dq = random_tensor(g, {N, QKV}, DType::F32, 1.0f, 19);
      Tensor dqb = g.empty({N, QKV}, DType::BF16, MemoryCategory::Activations, "dqkv bf16");
      report(g, "rope backward (f32 in place, bf16 copy)", 0, rotated * 10 + rest * 6,
             [&] { g.rope(dq, pos, cs, sn, Hq + Hkv, D, true, &dqb); });
    }

    {
      // The next token of one decoding step (vacc generate): one row of Qwen's vocabulary,
      // flat (a random model's) and peaked (a trained one's: a few tokens far above the rest).
      // Each call is timed with its launches, as the generator issues it.
      std::vector<float> row(static_cast<size_t>(V));
      std::mt19937_64 rng(23);
      std::uniform_real_distribution<float> u(-2.0f, 2.0f);
      for (float& x : row) x = u(rng);
      Tensor flat = g.empty({1, V}, DType::F32, MemoryCategory::Buffers, "flat logits");
      g.upload(row.data(), flat);
      for (int k = 0; k < 12; ++k) row[size_t((k * 7919) % V)] += 14.0f - float(k);
      Tensor peaked = g.empty({1, V}, DType::F32, MemoryCategory::Buffers, "peaked logits");
      g.upload(row.data(), peaked);
      const uint64_t bits = rng();
      Tensor random_bits = g.empty({1, 2}, DType::I32, MemoryCategory::Buffers, "random bits");
      g.upload(&bits, random_bits);
      Tensor token = g.empty({1}, DType::I32, MemoryCategory::Buffers, "token");
      const double row_bytes = double(V) * 4;
      for (const auto& [name, logits] : {std::pair<const char*, Tensor*>{"flat", &flat},
                                         std::pair<const char*, Tensor*>{"peaked", &peaked}}) {
        report(g, std::string("argmax_rows (1 x 151936, ") + name + ")", 0, row_bytes,
               [&] { g.sample_rows(*logits, random_bits, 0.0f, 1.0f, token); });
        report(g, std::string("sample_rows T 0.7, top_p 0.9 (") + name + ")", 0, row_bytes,
               [&] { g.sample_rows(*logits, random_bits, 0.7f, 0.9f, token); });
        report(g, std::string("sample_rows T 1, top_p 1 (") + name + ")", 0, row_bytes,
               [&] { g.sample_rows(*logits, random_bits, 1.0f, 1.0f, token); });
      }
    }

    {
      const int64_t P = 494032768;  // Qwen2.5-0.5B's parameters
      Tensor p = g.zeros({P}, DType::F32, MemoryCategory::Parameters, "p");
      Tensor gr = g.zeros({P}, DType::F32, MemoryCategory::Gradients, "g");
      Tensor m = g.zeros({P}, DType::F32, MemoryCategory::OptimizerState, "m");
      Tensor v = g.zeros({P}, DType::F32, MemoryCategory::OptimizerState, "v");
      Tensor acc = g.zeros({1}, DType::F32, MemoryCategory::Buffers, "acc");
      AdamWParams hp;
      report(g, "adamw step (494M parameters)", 0, double(P) * 28, [&] { g.adamw_step(p, gr, m, v, hp); }, 5);
      // The trainer's: one launch over the segments, writing the bf16 weights as well.
      Tensor pb = g.zeros({P}, DType::BF16, MemoryCategory::Parameters, "p bf16");
      const std::vector<AdamWSegment> all = {{0, P, true}};
      report(g, "adamw segments + bf16 copy (494M)", 0, double(P) * 30,
             [&] { g.adamw_step_segments(p, gr, m, v, all, hp, &pb); }, 5);
      report(g, "sum_of_squares (494M)", 0, double(P) * 4, [&] { g.sum_of_squares(gr, acc); }, 5);
    }
    std::printf("peak memory: %s\n", g.allocator().usage_report().c_str());
    if (const std::string tuned = g.tuning_summary(); !tuned.empty())
      std::printf("matrix products: %s\n", tuned.c_str());
  } catch (const Error& e) {
    std::fprintf(stderr, "cuda_ops_bench: %s\n", e.what());
    return 1;
  }
  return 0;
}
