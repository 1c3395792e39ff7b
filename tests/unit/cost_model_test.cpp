// The cost model against hand-computed cases: a tiny model on an ideal device (efficiency 1
// at every size, unlimited memory bandwidth), so the step time is FLOPs / peak plus the
// alpha-beta link terms, worked out by hand below.
#include <gtest/gtest.h>

#include "vacc/core/error.h"
#include "vacc/plan/cost_model.h"

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

ClusterSpec ideal(int devices) {
  ClusterSpec k;
  k.devices = devices;
  k.devices_per_node = devices;
  k.intra_node = {1e9, 1e-6};
  k.inter_node = {1e8, 1e-5};
  k.profile.name = "ideal";
  k.profile.peak_bf16_flops = k.profile.peak_fp32_flops = 1e12;
  k.profile.peak_efficiency = 1.0;
  k.profile.half_work = 0;
  k.profile.memory_bandwidth = 1e30;
  return k;
}

// N = 2 sequences x 8 tokens = 16 rows; W = (4 + 2 x 2) x 16 = 128.
// A layer's forward matrix products: 2 x 16 x (128x64 + 64x64 + 256x64 + 128x64) = 1179648,
// the attention core: 2 sequences x 4 heads x 2 products x 2 x 8 x 8 x 16 = 32768.
constexpr double kLayerFwd = 1179648 + 32768;
constexpr double kHeadFwd = 2.0 * 16 * 256 * 64;  // 524288

TEST(CostModel, RingCollectives) {
  const LinkSpec link{10e9, 1e-5};
  EXPECT_DOUBLE_EQ(ring_all_reduce_seconds(1e9, 4, link), 6e-5 + 1.5 * 1e9 / 10e9);
  EXPECT_DOUBLE_EQ(ring_all_gather_seconds(1e9, 4, link), 3e-5 + 0.75 * 1e9 / 10e9);
  EXPECT_EQ(ring_all_reduce_seconds(1e9, 1, link), 0.0);
}

// The element-wise kernels' traffic (plan/cost_model.cpp, layer_elementwise_bytes) alone: a
// device of unbounded compute whose element-wise kernels stream 1 GB/s. N = 16, C = 64,
// W = 128, F = 128, V = 256, two layers.
TEST(CostModel, ElementwiseTrafficByPrecision) {
  ClusterSpec k = ideal(1);
  k.profile.peak_bf16_flops = k.profile.peak_fp32_flops = 1e30;
  k.profile.elementwise_bandwidth = 1e9;
  auto step = [&](DType dt, const ModelConfig& c = tiny()) {
    return predict_step_time(c, ParallelConfig{}, CostQuery{2, 8, dt}, k).step_s;
  };
  // The cross-entropy's traffic over the logits: f32, written and read twice, 3 x 16 x 256 x 4
  // bytes; bf16, written, read twice and the gradient written over them, 4 x 16 x 256 x 2.
  const double loss = 3.0 * 16 * 256 * 4, loss_bf16 = 4.0 * 16 * 256 * 2;
  // f32: forward (12 N C + 4 N W + 6 N F) x 4 = 131072 bytes a layer, backward twice that.
  EXPECT_NEAR(step(DType::F32), (2 * 3 * 131072 + loss) / 1e9, 1e-15);
  // bf16 mixed precision: forward 14 N C + 4 N W + 6 N F = 34816 bytes a layer, backward
  // 42 N C + 10 N W + 10 N F = 83968 (RoPE's inverse in place with a bf16 copy).
  EXPECT_NEAR(step(DType::BF16), (2 * (34816 + 83968) + loss_bf16) / 1e9, 1e-15);
  // With a qkv bias, RoPE's inverse reads the gradient once for the copy and the bias
  // gradient: 6 N W, backward 75776.
  ModelConfig biased = tiny();
  biased.attention_bias = true;
  EXPECT_NEAR(step(DType::BF16, biased), (2 * (34816 + 75776) + loss_bf16) / 1e9, 1e-15);
}

TEST(CostModel, GroupLinkByRankOrder) {
  ClusterSpec k = ideal(64);
  k.devices_per_node = 8;
  EXPECT_EQ(&group_link(k, 1, 8), &k.intra_node);   // tp=8: one node
  EXPECT_EQ(&group_link(k, 2, 4), &k.intra_node);   // dp=4 over tp=2: one node
  EXPECT_EQ(&group_link(k, 8, 8), &k.inter_node);   // dp=8 over tp=8: eight nodes
  EXPECT_EQ(&group_link(k, 4, 4), &k.inter_node);   // spans two nodes
}

TEST(CostModel, OneDeviceIsFlopsOverPeak) {
  ParallelConfig p;
  const CostQuery q{2, 8, DType::F32};
  const CostBreakdown c = predict_step_time(tiny(), p, q, ideal(1));
  EXPECT_NEAR(c.step_s, 3 * (2 * kLayerFwd + kHeadFwd) / 1e12, 1e-15);
  EXPECT_EQ(c.bubble_s, 0.0);
  p.recompute = Recompute::Full;  // + one more forward of every layer
  EXPECT_NEAR(predict_step_time(tiny(), p, q, ideal(1)).step_s,
              (3 * (2 * kLayerFwd + kHeadFwd) + 2 * kLayerFwd) / 1e12, 1e-15);
}

TEST(CostModel, PipelineCriticalPath) {
  ParallelConfig p;
  p.pp = 2;
  p.micro_batches = 4;
  const CostQuery q{8, 8, DType::F32};  // micro-batches of 2 sequences, N = 16
  // One layer per stage; the last also has the head. Each stage sends or receives one
  // (16 x 64) f32 activation per direction: 1 us + 4096 B / 1 GB/s.
  const double hop = 1e-6 + 16 * 64 * 4 / 1e9;
  const double s0 = 3 * kLayerFwd / 1e12 + hop, s1 = 3 * (kLayerFwd + kHeadFwd) / 1e12 + hop;
  const CostBreakdown c = predict_step_time(tiny(), p, q, ideal(2));
  EXPECT_NEAR(c.step_s, s0 + s1 + 3 * s1, 1e-15);
  EXPECT_NEAR(c.bubble_s, s0, 1e-15);
  ASSERT_EQ(c.stage_time_s.size(), 2u);
}

TEST(CostModel, DataParallelGradientReduction) {
  ParallelConfig p;
  p.dp = 2;
  const CostQuery q{4, 8, DType::F32};
  // Parameters: 2 layers x 36992 + embedding 16384 + head 16384 + final norm 64 = 106816.
  const double bytes = 106816.0 * 4;
  const double ar = 2 * 1e-6 + bytes / 1e9;  // ring all-reduce over 2 ranks
  const double compute = 3 * (2 * kLayerFwd + kHeadFwd) / 1e12;
  const double backward = compute * 2 / 3;
  const CostBreakdown c = predict_step_time(tiny(), p, q, ideal(2));
  EXPECT_NEAR(c.dp_comm_s, ar, 1e-15);
  EXPECT_NEAR(c.step_s, compute + (ar - backward), 1e-14);
  // ZeRO-1 reduce-scatters (half the all-reduce) and all-gathers the updated parameters.
  p.zero = 1;
  const double half = 1e-6 + bytes / 2 / 1e9;
  EXPECT_NEAR(predict_step_time(tiny(), p, q, ideal(2)).step_s, compute + (half - backward) + half,
              1e-14);
  // ZeRO-2: a reduce-scatter per micro-batch, the same once with one micro-batch.
  p.zero = 2;
  EXPECT_NEAR(predict_step_time(tiny(), p, q, ideal(2)).step_s, compute + (half - backward) + half,
              1e-14);
}

TEST(CostModel, DevicesThatCannotOverlapPayEveryCollective) {
  // CPU ranks progress MPI only while waiting in it: the all-reduce is not hidden behind
  // backward, and `sync` is paid once per collective (the tiny model's groups: embedding, 2
  // layers, head = 4 buckets) on top of the ring.
  ParallelConfig p;
  p.dp = 2;
  const CostQuery q{4, 8, DType::F32};
  const double bytes = 106816.0 * 4;
  const double ar = 2 * 1e-6 + bytes / 1e9;
  const double compute = 3 * (2 * kLayerFwd + kHeadFwd) / 1e12;
  ClusterSpec k = ideal(2);
  k.profile.overlaps_communication = false;
  EXPECT_NEAR(predict_step_time(tiny(), p, q, k).step_s, compute + ar, 1e-14);
  k.intra_node.sync = k.inter_node.sync = 1e-4;
  EXPECT_NEAR(predict_step_time(tiny(), p, q, k).step_s, compute + ar + 4 * 1e-4, 1e-14);
  // Tensor parallelism: each of the 2 x 4 + 3 all-reduces pays it once.
  p = ParallelConfig{};
  p.tp = 2;
  const CostQuery tq{2, 8, DType::F32};
  const double tp_ar = 2e-6 + 16 * 64 * 4 / 1e9, tp_loss = 2e-6 + 16 * 4 / 1e9;
  EXPECT_NEAR(predict_step_time(tiny(), p, tq, k).tp_comm_s,
              2 * 4 * (tp_ar + 1e-4) + 3 * (tp_loss + 1e-4), 1e-14);
  // Measured by group size, a group of 2 pays the figure for groups of 2 (flat from 1 ps of
  // compute on), not the whole job's.
  k.intra_node.sync_points = {{2, 1e-12, 3e-5}, {4, 1e-12, 1e-4}};
  EXPECT_NEAR(predict_step_time(tiny(), p, tq, k).tp_comm_s,
              2 * 4 * (tp_ar + 3e-5) + 3 * (tp_loss + 3e-5), 1e-14);
  // Growing with the compute between collectives: the stage's compute over its 11 tp
  // collectives, on a line from (0, 0) to (1 s, 1 ms).
  k.intra_node.sync_points = {{2, 1.0, 1e-3}};
  const CostBreakdown grown = predict_step_time(tiny(), p, tq, k);
  const double chunk = grown.compute_s / 11;
  EXPECT_NEAR(grown.tp_comm_s, 2 * 4 * (tp_ar + 1e-3 * chunk) + 3 * (tp_loss + 1e-3 * chunk), 1e-14);
  k.intra_node.sync_points.clear();
  // A measured classifier factor scales the head (one device, 1 x 8 tokens).
  ClusterSpec one = ideal(1);
  const CostQuery oq{1, 8, DType::F32};
  const double base = predict_step_time(tiny(), ParallelConfig{}, oq, one).step_s;
  one.profile.classifier_factor = 2;
  EXPECT_NEAR(predict_step_time(tiny(), ParallelConfig{}, oq, one).step_s - base,
              3 * 2.0 * 8 * 256 * 64 / 1e12, 1e-14);
  // The CPU profile cannot overlap; datasheet GPUs can.
  EXPECT_FALSE(DeviceProfile::cpu(1e11, 1e9).overlaps_communication);
  EXPECT_TRUE(find_profile("H100-SXM").overlaps_communication);
}

TEST(CostModel, TensorParallelAllReduces) {
  ParallelConfig p;
  p.tp = 2;
  const CostQuery q{2, 8, DType::F32};
  // Halved products (heads, FFN, vocabulary), and per layer 4 all-reduces of 16 x 64 f32
  // over 2 ranks, plus 3 of the loss's 16 floats.
  const double ar = 2e-6 + 16 * 64 * 4 / 1e9, ar_loss = 2e-6 + 16 * 4 / 1e9;
  const CostBreakdown c = predict_step_time(tiny(), p, q, ideal(2));
  EXPECT_NEAR(c.tp_comm_s, 2 * 4 * ar + 3 * ar_loss, 1e-15);
  // The vocabulary-parallel head runs its logits twice (log-sum-exp forward, recomputed in
  // backward): 4 products instead of 3.
  EXPECT_NEAR(c.step_s, (3 * 2 * kLayerFwd + 4 * kHeadFwd) / 2 / 1e12 + c.tp_comm_s, 1e-14);
  // Full recomputation reruns each layer's forward, its 2 all-reduces included; selective
  // recomputes only the attention core, which has none.
  p.recompute = Recompute::Full;
  EXPECT_NEAR(predict_step_time(tiny(), p, q, ideal(2)).tp_comm_s, 2 * 6 * ar + 3 * ar_loss, 1e-15);
  p.recompute = Recompute::Selective;
  EXPECT_NEAR(predict_step_time(tiny(), p, q, ideal(2)).tp_comm_s, c.tp_comm_s, 1e-15);
}

TEST(CostModel, ProfilesAndCurve) {
  const DeviceProfile h100 = find_profile("h100-sxm");
  EXPECT_DOUBLE_EQ(h100.peak_bf16_flops, 989e12);
  EXPECT_NEAR(h100.efficiency(512, 512, 512), 0.35, 1e-12);  // half of 0.7 at half_work
  const DeviceProfile cpu = DeviceProfile::cpu(1e11, 1e9);
  EXPECT_NEAR(2.0 * 2048 * 2048 * 2048 / cpu.matmul_seconds(DType::F32, 2048, 2048, 2048), 1e11,
              1e3);
  EXPECT_THROW(find_profile("TPU-v9"), Error);
}

// gpu-N flavors plan with the profile of the GPU the driver names; "" where none fits.
TEST(DeviceProfiles, BuiltinProfileOfTheLocalGpu) {
  EXPECT_EQ(builtin_profile_for_gpu("NVIDIA H200"), "H200");
  EXPECT_EQ(builtin_profile_for_gpu("NVIDIA H100 80GB HBM3"), "H100-SXM");
  EXPECT_EQ(builtin_profile_for_gpu("NVIDIA H100 PCIe"), "");
  EXPECT_EQ(builtin_profile_for_gpu("NVIDIA H100 NVL"), "");
  EXPECT_EQ(builtin_profile_for_gpu("NVIDIA A100-SXM4-80GB"), "A100-80GB");
  EXPECT_EQ(builtin_profile_for_gpu("NVIDIA A100-SXM4-40GB"), "");
  EXPECT_EQ(builtin_profile_for_gpu("NVIDIA L40S"), "");
  for (const char* name : {"NVIDIA H200", "NVIDIA H100 80GB HBM3", "NVIDIA A100-SXM4-80GB"})
    EXPECT_TRUE(has_profile(builtin_profile_for_gpu(name))) << name;
  EXPECT_FALSE(has_profile("NVIDIA L40S"));
}

}  // namespace
}  // namespace vacc
