// Activation recomputation: none, selective and full give bitwise the same losses and
// gradients (f32 and bf16, tied and untied, with biases and GQA; one micro-batch, and two in
// flight as a pipeline stage keeps them), the memory they save is what the tensor shapes
// say, and the Trainer's option trains identically.
#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include "test_util.h"
#include "vacc/comm/single_rank_communicator.h"
#include "vacc/io/synthetic_data.h"
#include "vacc/model/initialization.h"
#include "vacc/model/recompute.h"
#include "vacc/model/transformer.h"
#include "vacc/runtime/trainer.h"

namespace vacc::test {
namespace {

constexpr Recompute kModes[] = {Recompute::None, Recompute::Selective, Recompute::Full};

TEST(Recompute, NamesRoundTrip) {
  for (Recompute r : kModes) EXPECT_EQ(parse_recompute(recompute_name(r)), r);
  EXPECT_STREQ(recompute_name(Recompute::Selective), "selective");
  expect_error([] { parse_recompute("most"); }, "none, selective or full");
  expect_error([] { parse_recompute("Full"); }, "'Full'");
}

TEST(Recompute, BlockActivationsSplitBetweenLayerAndScratch) {
  auto be = make_cpu_backend();
  BlockGeometry g;
  g.attention = AttentionShape{2, 8, 4, 2, 8};
  g.hidden = 32;
  g.ffn = 48;
  auto defined = [](const BlockActivations& a) {
    return std::vector<bool>{a.norm1.defined(), a.rstd1.defined(), a.qkv.defined(),
                             a.attn.defined(),  a.lse.defined(),   a.h.defined(),
                             a.norm2.defined(), a.rstd2.defined(), a.gate_up.defined(),
                             a.act.defined()};
  };
  const std::vector<bool> all(10, true), none(10, false);
  const std::vector<bool> selective = {true, true, false, false, false,
                                       true, true, true,  true,  true};
  std::vector<bool> attention(10);
  for (size_t i = 0; i < 10; ++i) attention[i] = !selective[i];
  EXPECT_EQ(defined(BlockActivations::allocate(*be, g)), all);
  EXPECT_EQ(defined(BlockActivations::allocate(*be, g, Recompute::Selective)), selective);
  EXPECT_EQ(defined(BlockActivations::allocate(*be, g, Recompute::Full)), none);
  EXPECT_EQ(defined(BlockActivations::allocate_recomputed(*be, g, Recompute::None)), none);
  EXPECT_EQ(defined(BlockActivations::allocate_recomputed(*be, g, Recompute::Selective)),
            attention);
  EXPECT_EQ(defined(BlockActivations::allocate_recomputed(*be, g, Recompute::Full)), all);
  BlockActivations kept = BlockActivations::allocate(*be, g, Recompute::Selective);
  BlockActivations scratch = BlockActivations::allocate_recomputed(*be, g, Recompute::Selective);
  BlockActivations both = kept.completed_by(scratch);
  EXPECT_EQ(defined(both), all);
  EXPECT_EQ(both.norm1.data(), kept.norm1.data());
  EXPECT_EQ(both.qkv.data(), scratch.qkv.data());
  // f32 has no bf16 copy of the attention output; bf16 keeps it with the attention output.
  EXPECT_FALSE(BlockActivations::allocate(*be, g).attn_c.defined());
  g.compute = DType::BF16;
  EXPECT_TRUE(BlockActivations::allocate(*be, g).attn_c.defined());
  EXPECT_EQ(BlockActivations::allocate(*be, g).attn_c.dtype(), DType::BF16);
  EXPECT_FALSE(BlockActivations::allocate(*be, g, Recompute::Selective).attn_c.defined());
  EXPECT_TRUE(
      BlockActivations::allocate_recomputed(*be, g, Recompute::Selective).attn_c.defined());
  EXPECT_TRUE(BlockActivations::allocate_recomputed(*be, g, Recompute::Full).attn_c.defined());
}

// ---------------------------------------------------------------- exactness

struct Case {
  std::string name;
  ModelConfig config;
};

std::vector<Case> cases() {
  std::vector<Case> out;
  out.push_back({"tied, bias, GQA", test_model_config({.vocab = 97, .hidden = 48, .ffn = 80,
                                                       .layers = 3, .heads = 6, .kv_heads = 2,
                                                       .head_dim = 8, .tied = true,
                                                       .bias = true})});
  out.push_back({"untied, no bias, MHA", test_model_config({.vocab = 89, .hidden = 40, .ffn = 72,
                                                            .layers = 3, .heads = 5,
                                                            .kv_heads = 5, .head_dim = 8,
                                                            .tied = false, .bias = false})});
  out.push_back({"untied, bias, GQA", test_model_config({.vocab = 61, .hidden = 32, .ffn = 56,
                                                         .layers = 2, .heads = 4, .kv_heads = 1,
                                                         .head_dim = 8, .tied = false,
                                                         .bias = true})});
  for (Case& c : out) c.config.initializer_range = 0.1;  // peaked enough to matter
  return out;
}

std::vector<int32_t> random_tokens(int64_t n, int64_t vocab, uint64_t seed) {
  std::vector<float> r = random_vector(size_t(n), seed, 0.0f, float(vocab));
  std::vector<int32_t> ids;
  for (float x : r) ids.push_back(std::min(int32_t(x), int32_t(vocab - 1)));
  return ids;
}

// Bit patterns, so that EXPECT_EQ means bitwise (and NaN compares equal to itself).
std::vector<uint32_t> bits(const std::vector<float>& v) {
  std::vector<uint32_t> out(v.size());
  std::memcpy(out.data(), v.data(), v.size() * sizeof(float));
  return out;
}

// What one run gives: the loss sum, every gradient, and the logits.
struct Result {
  std::vector<float> loss, grads, logits;
};

struct Inputs {
  Tensor ids, positions, labels;
};

Inputs make_inputs(Backend& be, const ModelConfig& c, int64_t batch, int64_t seq,
                   uint64_t seed) {
  std::vector<int32_t> ids = random_tokens(batch * seq, c.vocab_size, seed);
  std::vector<int32_t> labels = random_tokens(batch * seq, c.vocab_size, seed + 1);
  labels[3] = kIgnoreLabel;
  std::vector<int32_t> pos(ids.size());
  for (size_t i = 0; i < pos.size(); ++i) pos[i] = int32_t(int64_t(i) % seq);
  return {ids_to_device(be, ids), ids_to_device(be, pos), ids_to_device(be, labels)};
}

std::unique_ptr<Transformer> make_model(Backend& be, const ModelConfig& c, DType dtype,
                                        int64_t seq, Recompute mode) {
  auto model = std::make_unique<Transformer>(be, c, ModelShard::whole(c), dtype, seq);
  initialize_parameters(be, c, model->table(), 11, model->parameters());
  model->parameters_changed();
  model->zero_gradients();
  model->set_recompute(mode);
  return model;
}

// forward_backward over one micro-batch, then logits.
Result run_whole(const ModelConfig& c, DType dtype, Recompute mode) {
  const int64_t batch = 2, seq = 16;
  auto be = make_cpu_backend();
  auto model = make_model(*be, c, dtype, seq, mode);
  Inputs in = make_inputs(*be, c, batch, seq, 3);
  Transformer::Activations act = model->allocate_activations(batch, seq);
  EXPECT_EQ(act.recompute, mode);
  Tensor loss = be->zeros({1}, DType::F32, MemoryCategory::Buffers, "loss");
  model->forward_backward(in.ids, in.positions, in.labels, 1.0f / 31.0f, act, loss);
  Result r;
  r.loss = to_host(*be, loss);
  r.grads = to_host(*be, model->gradients());
  r.logits = to_host(*be, model->logits(in.ids, in.positions, act));
  return r;
}

// Two micro-batches in flight, as a pipeline stage runs them: forward A, forward B, then
// backward A, backward B (the recompute scratch is shared between them).
Result run_interleaved(const ModelConfig& c, DType dtype, Recompute mode) {
  const int64_t batch = 1, seq = 16;
  auto be = make_cpu_backend();
  auto model = make_model(*be, c, dtype, seq, mode);
  Inputs in[2] = {make_inputs(*be, c, batch, seq, 5), make_inputs(*be, c, batch, seq, 8)};
  Transformer::Activations act[2] = {model->allocate_activations(batch, seq),
                                     model->allocate_activations(batch, seq)};
  Tensor loss = be->zeros({1}, DType::F32, MemoryCategory::Buffers, "loss");
  Tensor dx = be->empty({batch * seq, c.hidden_size}, DType::F32, MemoryCategory::Buffers, "dx");
  for (int i = 0; i < 2; ++i) {
    model->embed(in[i].ids, act[i]);
    model->forward_layers(in[i].positions, act[i]);
  }
  for (int i = 0; i < 2; ++i) {
    model->head_forward_backward(in[i].labels, 0.03f, act[i], loss, dx);
    model->backward_layers(in[i].positions, act[i], dx);
    model->embed_backward(in[i].ids, dx);
  }
  Result r;
  r.loss = to_host(*be, loss);
  r.grads = to_host(*be, model->gradients());
  return r;
}

void expect_bitwise(const Result& got, const Result& want, const std::string& what) {
  EXPECT_EQ(bits(got.loss), bits(want.loss)) << what << ": loss";
  EXPECT_EQ(bits(got.grads), bits(want.grads)) << what << ": gradients";
  EXPECT_EQ(bits(got.logits), bits(want.logits)) << what << ": logits";
}

TEST(Recompute, LossesAndGradientsAreBitwiseIdentical) {
  for (const Case& c : cases())
    for (DType dt : {DType::F32, DType::BF16}) {
      const Result none = run_whole(c.config, dt, Recompute::None);
      ASSERT_GT(none.loss[0], 0.0f);
      float norm = 0;
      for (float g : none.grads) norm += g * g;
      ASSERT_GT(norm, 0.0f) << "the gradients should not be trivially zero";
      for (Recompute mode : {Recompute::Selective, Recompute::Full})
        expect_bitwise(run_whole(c.config, dt, mode), none,
                       c.name + ", " + dtype_name(dt) + ", " + recompute_name(mode));
    }
}

TEST(Recompute, TwoMicroBatchesInFlightAreBitwiseIdentical) {
  for (const Case& c : cases())
    for (DType dt : {DType::F32, DType::BF16}) {
      const Result none = run_interleaved(c.config, dt, Recompute::None);
      for (Recompute mode : {Recompute::Selective, Recompute::Full})
        expect_bitwise(run_interleaved(c.config, dt, mode), none,
                       c.name + ", " + dtype_name(dt) + ", " + recompute_name(mode) +
                           ", interleaved");
    }
}

TEST(Recompute, ModeIsFixedWhenActivationsAreAllocated) {
  // Activations allocated under one mode keep it if the model's setting changes later.
  const ModelConfig c = cases()[0].config;
  auto be = make_cpu_backend();
  auto model = make_model(*be, c, DType::F32, 16, Recompute::None);
  Transformer::Activations act = model->allocate_activations(2, 16);
  model->set_recompute(Recompute::Full);
  EXPECT_EQ(model->recompute(), Recompute::Full);
  EXPECT_EQ(act.recompute, Recompute::None);
  Inputs in = make_inputs(*be, c, 2, 16, 3);
  Tensor loss = be->zeros({1}, DType::F32, MemoryCategory::Buffers, "loss");
  model->forward_backward(in.ids, in.positions, in.labels, 1.0f / 31.0f, act, loss);
  Result r;
  r.loss = to_host(*be, loss);
  r.grads = to_host(*be, model->gradients());
  r.logits = to_host(*be, model->logits(in.ids, in.positions, act));
  expect_bitwise(r, run_whole(c, DType::F32, Recompute::None), "mode changed after allocation");
}

// ---------------------------------------------------------------- memory

// Bytes of the activations of one layer, split into the attention internals selective
// recomputation drops (qkv after RoPE, attention output, lse: f32) and the rest it keeps
// (norm1, norm2, gate_up, SwiGLU output in the compute dtype; rstd1, rstd2, h f32).
struct LayerBytes {
  int64_t attention = 0, kept = 0;
  int64_t total() const { return attention + kept; }
};
LayerBytes layer_bytes(const ModelConfig& c, DType dtype, int64_t batch, int64_t seq) {
  const int64_t N = batch * seq, C = c.hidden_size, F = c.intermediate_size;
  const int64_t Hq = c.num_heads, Hkv = c.num_kv_heads, D = c.head_dim;
  const int64_t e = int64_t(dtype_size(dtype));
  LayerBytes b;
  b.attention = N * (Hq + 2 * Hkv) * D * e  // qkv
                + N * Hq * D * 4            // attention output
                + (e < 4 ? N * Hq * D * e : 0)  // its bf16 copy (mixed precision)
                + batch * Hq * seq * 4;     // lse
  b.kept = N * C * e * 2                    // norm1, norm2
           + N * 4 * 2                      // rstd1, rstd2
           + N * C * 4                      // h
           + N * 2 * F * e                  // gate_up
           + N * F * e;                     // SwiGLU output
  return b;
}

// The allocator's high-water mark over one forward_backward, counted from just before it
// (parameters, gradients and the micro-batch's activations already allocated).
struct Peak {
  size_t high_water = 0, activations = 0;
};
Peak measure_peak(const ModelConfig& c, DType dtype, int64_t batch, int64_t seq, Recompute mode) {
  auto be = make_cpu_backend();
  auto model = make_model(*be, c, dtype, seq, mode);
  Inputs in = make_inputs(*be, c, batch, seq, 3);
  Tensor loss = be->zeros({1}, DType::F32, MemoryCategory::Buffers, "loss");
  Transformer::Activations act = model->allocate_activations(batch, seq);
  be->allocator().reset_high_water_mark();
  model->forward_backward(in.ids, in.positions, in.labels, 1.0f, act, loss);
  Peak p;
  p.high_water = be->allocator().high_water_mark();
  p.activations = be->allocator().breakdown_at_high_water()[size_t(MemoryCategory::Activations)];
  return p;
}

TEST(Recompute, PeakMemoryFallsAsTheShapesSay) {
  // 6 layers, 2 x 128 tokens: every tensor a multiple of 64 bytes (the allocator's grain).
  ModelConfig c = test_model_config({.vocab = 97, .hidden = 64, .ffn = 176, .layers = 6,
                                     .heads = 8, .kv_heads = 2, .head_dim = 8, .tied = true,
                                     .bias = true});
  c.max_position_embeddings = 128;
  const int64_t batch = 2, seq = 128, L = c.num_layers;
  const int64_t out_bytes = batch * seq * c.hidden_size * 4;  // full's recomputed output
  for (DType dt : {DType::F32, DType::BF16}) {
    const LayerBytes layer = layer_bytes(c, dt, batch, seq);
    Peak none = measure_peak(c, dt, batch, seq, Recompute::None);
    Peak selective = measure_peak(c, dt, batch, seq, Recompute::Selective);
    Peak full = measure_peak(c, dt, batch, seq, Recompute::Full);
    std::cout << dtype_name(dt) << ": layer " << layer.total() << " B (attention internals "
              << layer.attention << " B); high-water none " << none.high_water << ", selective "
              << selective.high_water << ", full " << full.high_water << " B\n";
    EXPECT_LT(full.high_water, selective.high_water) << dtype_name(dt);
    EXPECT_LT(selective.high_water, none.high_water) << dtype_name(dt);
    // Selective keeps L layers without the attention internals plus one scratch of them;
    // full keeps no layer, only one scratch layer and its output (residuals unchanged).
    const int64_t saved_selective = (L - 1) * layer.attention;
    const int64_t saved_full = (L - 1) * layer.total() - out_bytes;
    const double tolerance = 4096;  // allocator rounding of the odd small tensor
    EXPECT_NEAR(double(none.high_water) - double(selective.high_water), double(saved_selective),
                tolerance)
        << dtype_name(dt);
    EXPECT_NEAR(double(none.high_water) - double(full.high_water), double(saved_full), tolerance)
        << dtype_name(dt);
    EXPECT_NEAR(double(none.activations) - double(full.activations), double(saved_full),
                tolerance)
        << dtype_name(dt);
  }
}

// ---------------------------------------------------------------- the trainer

SingleRankCommunicator one_rank;

TEST(Recompute, TrainerOptionTrainsIdentically) {
  const ModelConfig c = cases()[0].config;
  for (DType dt : {DType::F32, DType::BF16}) {
    std::vector<std::vector<double>> losses;
    std::vector<double> peaks;
    for (Recompute mode : kModes) {
      TrainerOptions opt;
      opt.batch = 4;
      opt.seq_len = 24;
      opt.dtype = dt;
      opt.lr.peak_lr = 3e-3;
      opt.seed = 7;
      opt.parallel.micro_batches = 2;
      opt.parallel.recompute = mode;
      auto be = make_cpu_backend();
      Trainer trainer(*be, one_rank, c, opt, 0.0);
      EXPECT_EQ(trainer.model().recompute(), mode);
      SyntheticData data(c.vocab_size, opt.seq_len, opt.seed);
      std::vector<double> l;
      double peak = 0;
      for (int s = 1; s <= 3; ++s) {
        StepMetrics m = trainer.step(data.batch(s, opt.batch));
        l.push_back(m.loss);
        peak = m.peak_memory_bytes.at(0);
      }
      losses.push_back(l);
      peaks.push_back(peak);
    }
    EXPECT_EQ(losses[1], losses[0]) << dtype_name(dt) << " selective";
    EXPECT_EQ(losses[2], losses[0]) << dtype_name(dt) << " full";
    EXPECT_LT(peaks[2], peaks[0]) << dtype_name(dt);
  }
}

// The benchmark model (configs/bench-qwen2-40m.json), batch 4 x 512: the whole-step peaks
// quoted in docs/engine.md. Slow on a CPU; run with --gtest_also_run_disabled_tests.
TEST(Recompute, DISABLED_BenchModelPeaks) {
  const char* dir = std::getenv("VACC_SOURCE_DIR");
  const std::string path = std::string(dir ? dir : ".") + "/configs/bench-qwen2-40m.json";
  const ModelConfig c = ModelConfig::from_file(path);
  for (DType dt : {DType::F32, DType::BF16})
    for (Recompute mode : kModes) {
      TrainerOptions opt;
      opt.batch = 4;
      opt.seq_len = 512;
      opt.dtype = dt;
      opt.parallel.recompute = mode;
      auto be = make_cpu_backend();
      Trainer trainer(*be, one_rank, c, opt, 0.0);
      SyntheticData data(c.vocab_size, opt.seq_len, 1);
      StepMetrics m = trainer.step(data.batch(1, opt.batch));
      auto at = be->allocator().breakdown_at_high_water();
      const LayerBytes layer = layer_bytes(c, dt, opt.batch, opt.seq_len);
      std::cout << dtype_name(dt) << " " << recompute_name(mode) << ": loss " << m.loss
                << ", peak " << format_bytes(size_t(m.peak_memory_bytes.at(0)))
                << " (activations "
                << format_bytes(at[size_t(MemoryCategory::Activations)]) << ", buffers "
                << format_bytes(at[size_t(MemoryCategory::Buffers)]) << "); one layer "
                << format_bytes(size_t(layer.total())) << ", attention internals "
                << format_bytes(size_t(layer.attention)) << ", step " << m.step_time_s
                << " s\n";
    }
}

}  // namespace
}  // namespace vacc::test
