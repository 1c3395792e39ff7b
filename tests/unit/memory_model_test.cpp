// The memory model against hand-computed cases on a tiny model (f32, no biases, untied).
#include <gtest/gtest.h>

#include <cmath>

#include "vacc/plan/memory_model.h"

namespace vacc {
namespace {

ModelConfig tiny() {
  ModelConfig c;
  c.vocab_size = 256;
  c.hidden_size = 64;
  c.intermediate_size = 128;
  c.num_layers = 2;
  c.num_heads = 4;
  c.num_kv_heads = 2;
  c.head_dim = 16;
  c.attention_bias = false;
  c.tie_word_embeddings = false;
  return c;
}

// Parameters: 2 layers x (64x128 qkv + 64x64 o + 3 x 64x128 MLP + 2 x 64 norms) = 73984,
// embedding and head 2 x 256 x 64 = 32768, final norm 64: 106816.
constexpr double kP = 106816;

TEST(MemoryModel, ReplicaHoldsEverything) {
  ASSERT_EQ(tiny().total_parameters(), int64_t(kP));
  const MemoryBreakdown m = predict_peak_memory(tiny(), ParallelConfig{}, {2, 8, DType::F32});
  EXPECT_EQ(m.parameters, 4 * kP);
  EXPECT_EQ(m.gradients, 4 * kP);
  EXPECT_EQ(m.optimizer_state, 8 * kP);  // AdamW's two moments
  // N = 16 rows. Per layer kept: norms 2x16x64x4 + 2x16x4 = 8320; attention qkv 16x128x4 +
  // output 16x64x4 + lse 16x4x4 = 12544; MLP 16x64x4 + 16x256x4 + 16x128x4 = 28672: 49536.
  // Residual stream (L + 1) x 16x64x4 = 12288; final norm 16x64x4 + rstd 16x4 = 4160.
  EXPECT_EQ(m.activations, 12288 + 2 * 49536 + 4160);
}

TEST(MemoryModel, ZeroOneShardsTheOptimizerState) {
  ParallelConfig p;
  p.dp = 2;
  p.zero = 1;
  const MemoryBreakdown m = predict_rank_memory(tiny(), p, {4, 8, DType::F32}, 0, 0);
  // The shard: ceil(106816 / 2) = 53408, already a multiple of 16.
  EXPECT_EQ(m.optimizer_state, 8 * 53408.0);
  EXPECT_EQ(m.gradients, 4 * kP + 4 * 53408.0);  // full gradients + the reduced shard
  EXPECT_EQ(m.parameters, 4 * kP);
}

TEST(MemoryModel, ZeroTwoKeepsTheBucketsInFlight) {
  ParallelConfig p;
  p.dp = 2;
  p.zero = 2;
  // Untied: the shard (53408) + the head's bucket (64 final norm + 16384 output) and three
  // layer buckets (the one filling, two being reduced: 3 x 36992).
  const double head = 64 + 16384, layer = 36992;
  EXPECT_EQ(predict_rank_memory(tiny(), p, {4, 8, DType::F32}, 0, 0).gradients,
            4 * (53408.0 + head + 3 * layer));
  // Tied: the embedding's bucket lives through backward; with several micro-batches the
  // previous micro-batch's embedding bucket is still being reduced when the next opens one.
  ModelConfig tied = tiny();
  tied.tie_word_embeddings = true;
  const double P = kP - 16384, shard = std::ceil(P / 2 / 16) * 16, embed = 16384;
  EXPECT_EQ(predict_rank_memory(tied, p, {4, 8, DType::F32}, 0, 0).gradients,
            4 * (shard + embed + 64 + 3 * layer));
  p.micro_batches = 2;
  EXPECT_EQ(predict_rank_memory(tied, p, {4, 8, DType::F32}, 0, 0).gradients,
            4 * (shard + 2 * embed + 64 + 3 * layer));
}

TEST(MemoryModel, FullRecomputeKeepsOnlyTheLayerInputs) {
  ParallelConfig p;
  p.recompute = Recompute::Full;
  const MemoryBreakdown m = predict_peak_memory(tiny(), p, {2, 8, DType::F32});
  // Residual stream and final norm as before; one layer's activations (49536) plus its
  // output (16x64x4) as the recompute scratch.
  EXPECT_EQ(m.activations, 12288 + 4160 + 49536 + 4096);
}

// A GPU adds its backend's scratch to the buffers: cuBLASLt's workspace, and the larger of the
// classifier's chunk scratch and attention's.
TEST(MemoryModel, GpuScratchIsCountedAsBuffers) {
  const MemoryQuery cpu{2, 8, DType::BF16};
  MemoryQuery gpu = cpu;
  gpu.scratch = gpu_device_scratch(80.0 * (1ull << 30));
  EXPECT_EQ(gpu.scratch.fixed_bytes, 32.0 * (1 << 20));
  EXPECT_EQ(gpu.scratch.classifier_chunk_bytes, int64_t(1) << 30);  // 1/64 of 80 GiB, capped
  EXPECT_EQ(gpu_device_scratch(16.0 * (1ull << 30)).classifier_chunk_bytes, int64_t(256) << 20);
  EXPECT_EQ(gpu_device_scratch(0).classifier_chunk_bytes, int64_t(128) << 20);
  const double extra = predict_peak_memory(tiny(), ParallelConfig{}, gpu).buffers -
                       predict_peak_memory(tiny(), ParallelConfig{}, cpu).buffers;
  // N = 16 rows in one chunk: row list and row losses 2 x 16 x 4, bf16 logits 16 x 256 x 2 (the
  // gradient overwrites them), gathered x and dx rows 16 x 64 x (2 + 4) = 14464; attention: the
  // rowsum 16 x 4 x 4 rounded to 256, and the q heads' shares of dK and dV (4 q heads over 2 kv
  // heads) 2 x 16 x 4 x 16 x 4: 8448 (the kernels read the bf16 qkv activation itself, no
  // packed copy).
  EXPECT_EQ(extra, 32.0 * (1 << 20) + 14464);
  // In f32 the logits take 4 bytes and the gathered rows 4 + 4: 128 + 16384 + 8192; attention
  // keeps only the rowsum.
  MemoryQuery gpu_f32 = gpu;
  gpu_f32.dtype = DType::F32;
  MemoryQuery cpu_f32 = cpu;
  cpu_f32.dtype = DType::F32;
  EXPECT_EQ(predict_peak_memory(tiny(), ParallelConfig{}, gpu_f32).buffers -
                predict_peak_memory(tiny(), ParallelConfig{}, cpu_f32).buffers,
            32.0 * (1 << 20) + 24704);
  const auto gpu_extra = [&](int64_t chunk_rows) {
    gpu.scratch.classifier_chunk_bytes = chunk_rows * 256 * 2;
    return predict_peak_memory(tiny(), ParallelConfig{}, gpu).buffers -
           predict_peak_memory(tiny(), ParallelConfig{}, cpu).buffers;
  };
  // A chunk of 12 rows' bf16 logits: 2 chunks of 8 rows (7296 bytes), and attention's scratch
  // (8448) is the larger.
  EXPECT_EQ(gpu_extra(12), 32.0 * (1 << 20) + 256 + 2 * 16 * 4 * 16 * 4);
}

}  // namespace
}  // namespace vacc
