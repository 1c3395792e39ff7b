// The whole model on the CUDA backend against the CPU backend: the same configuration and
// seed-drawn weights on both, one training pass (loss, every parameter gradient), the logits,
// and text generation through the KV cache. f32 and bf16 compute, GQA and MHA, tied and untied
// embeddings, with and without attention biases. Tolerances: f32 loss 1e-5 relative, logits and
// gradients 1e-4 relative with a floor of 1e-4 of the largest (the kernels differ only in
// summation order and exp); bf16 2e-2 relative with a floor of 2e-2 of the largest, since a
// value rounded to bf16 one ulp apart on the two backends (2^-7 relative) propagates through
// the layers. Without a GPU every test skips itself; the simulator build runs it everywhere.
#include <gtest/gtest.h>

#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "test_util.h"
#include "vacc/kernels/cuda/cuda_backend.h"
#include "vacc/model/initialization.h"
#include "vacc/model/kv_cache.h"
#include "vacc/model/transformer.h"

namespace vacc::test {
namespace {

struct Case {
  std::string name;
  ModelConfig config;
};

std::vector<Case> cases() {
  std::vector<Case> out;
  out.push_back({"tied, bias, GQA 3", test_model_config({.vocab = 97, .hidden = 48, .ffn = 80,
                                                         .layers = 2, .heads = 6, .kv_heads = 2,
                                                         .head_dim = 8, .tied = true,
                                                         .bias = true})});
  out.push_back({"untied, no bias, MHA", test_model_config({.vocab = 89, .hidden = 64,
                                                            .ffn = 72, .layers = 2, .heads = 4,
                                                            .kv_heads = 4, .head_dim = 16,
                                                            .tied = false, .bias = false})});
  // head_dim 64: bf16 training takes the tensor-core flash kernels (attention_route), so the
  // whole pass runs through them here, not only the op tests.
  out.push_back({"tied, GQA 2, head_dim 64", test_model_config({.vocab = 61, .hidden = 128,
                                                                .ffn = 96, .layers = 1,
                                                                .heads = 2, .kv_heads = 1,
                                                                .head_dim = 64, .tied = true,
                                                                .bias = true})});
  for (Case& c : out) {
    c.config.initializer_range = 0.1;  // peaked enough to matter
    c.config.max_position_embeddings = 64;
  }
  return out;
}

std::vector<int32_t> random_tokens(int64_t n, int64_t vocab, uint64_t seed) {
  std::vector<float> r = random_vector(size_t(n), seed, 0.0f, float(vocab));
  std::vector<int32_t> ids;
  for (float x : r) ids.push_back(std::min(int32_t(x), int32_t(vocab - 1)));
  return ids;
}

double max_abs(const std::vector<float>& v) {
  double m = 0;
  for (float x : v) m = std::max(m, std::abs(double(x)));
  return m;
}

struct Result {
  std::vector<float> loss, grads, logits, decoded;
};

Result run(Backend& be, const ModelConfig& c, DType dt) {
  const int64_t batch = 2, seq = 19;
  Transformer model(be, c, ModelShard::whole(c), dt, c.max_position_embeddings);
  initialize_parameters(be, c, model.table(), 11, model.parameters());
  model.parameters_changed();
  model.zero_gradients();
  std::vector<int32_t> ids = random_tokens(batch * seq, c.vocab_size, 3);
  std::vector<int32_t> labels = random_tokens(batch * seq, c.vocab_size, 4);
  labels[3] = -100;
  labels[20] = -100;
  std::vector<int32_t> pos(ids.size());
  for (size_t i = 0; i < pos.size(); ++i) pos[i] = int32_t(int64_t(i) % seq);
  Tensor I = ids_to_device(be, ids), P = ids_to_device(be, pos), L = ids_to_device(be, labels);
  Transformer::Activations act = model.allocate_activations(batch, seq);
  Tensor loss = be.zeros({1}, DType::F32, MemoryCategory::Buffers, "loss");
  model.forward_backward(I, P, L, 1.0f / 37.0f, act, loss);
  Result r;
  r.loss = to_host(be, loss);
  r.grads = to_host(be, model.gradients());
  r.logits = to_host(be, model.logits(I, P, act));
  // Generation: a prompt of 7 tokens, then 3 single tokens.
  KvCache cache = model.make_kv_cache(12);
  std::vector<int32_t> prompt(ids.begin(), ids.begin() + 7);
  auto append = [&](const Tensor& logits) {
    std::vector<float> h = to_host(be, logits);
    r.decoded.insert(r.decoded.end(), h.begin(), h.end());
  };
  append(model.decode(ids_to_device(be, prompt), cache, true));
  for (int t = 7; t < 10; ++t) append(model.decode(ids_to_device(be, {ids[size_t(t)]}), cache));
  return r;
}

TEST(CudaModel, MatchesTheCpuBackend) {
  if (cuda_device_count() == 0)
    GTEST_SKIP() << "no CUDA GPU on this machine (" << cuda_unavailable_reason()
                 << "): the CUDA backend is built but cannot run here";
  for (const Case& c : cases())
    for (DType dt : {DType::F32, DType::BF16}) {
      auto gpu = make_cuda_backend(0);
      auto cpu = make_cpu_backend();
      const Result g = run(*gpu, c.config, dt), w = run(*cpu, c.config, dt);
      const std::string what = c.name + ", " + dtype_name(dt);
      const bool bf = dt == DType::BF16;
      ASSERT_GT(w.loss[0], 0.0f);
      expect_close(g.loss, w.loss, bf ? 2e-3 : 1e-5, 0.0, what + ": loss");
      const double rtol = bf ? 2e-2 : 1e-4, floor = bf ? 2e-2 : 1e-4;
      expect_close(g.grads, w.grads, rtol, floor * max_abs(w.grads), what + ": gradients");
      expect_close(g.logits, w.logits, rtol, floor * max_abs(w.logits), what + ": logits");
      expect_close(g.decoded, w.decoded, rtol, floor * max_abs(w.decoded),
                   what + ": logits of generation");
    }
}

// The logits of a prompt and then `steps` single tokens, each fed through one ids tensor (as the
// generator does); with decode graphs the single-token steps after the first replay a graph.
std::vector<float> decode_steps(Backend& be, Transformer& model, const std::vector<int32_t>& ids,
                                int steps) {
  KvCache cache = model.make_kv_cache(int64_t(7 + steps + 1));
  std::vector<float> out;
  auto append = [&](const Tensor& logits) {
    std::vector<float> h = to_host(be, logits);
    out.insert(out.end(), h.begin(), h.end());
  };
  append(model.decode(ids_to_device(be, {ids.begin(), ids.begin() + 7}), cache));
  Tensor one = be.empty({1}, DType::I32, MemoryCategory::Buffers, "next token id");
  for (int t = 0; t < steps; ++t) {
    be.upload(&ids[size_t(7 + t)], one);
    append(model.decode(one, cache));
  }
  // Another ids tensor: the graph reads the first one's address, so this step is another
  // region (its first run is eager). A replay of the first graph would give the wrong logits.
  append(model.decode(ids_to_device(be, {ids[0]}), cache));
  return out;
}

// Text generation with decode graphs: each single-token step after the first is one graph
// replay, reading the token and its position where the host put them. The same kernels on the
// same memory as the eager steps, so the same logits bit for bit (a position or token baked
// into the graph would give the first replay's logits again; the steps' tokens differ).
TEST(CudaModel, GraphedDecodeStepsEqualEagerOnes) {
  if (cuda_device_count() == 0)
    GTEST_SKIP() << "no CUDA GPU on this machine (" << cuda_unavailable_reason()
                 << "): the CUDA backend is built but cannot run here";
  const int steps = 5;
  for (const Case& c : cases())
    for (DType dt : {DType::F32, DType::BF16}) {
      SCOPED_TRACE(c.name + ", " + dtype_name(dt));
      auto gpu = make_cuda_backend(0);
      Transformer model(*gpu, c.config, ModelShard::whole(c.config), dt, 16);
      initialize_parameters(*gpu, c.config, model.table(), 11, model.parameters());
      model.parameters_changed();
      const std::vector<int32_t> ids = random_tokens(7 + steps, c.config.vocab_size, 5);
      const std::vector<float> eager = decode_steps(*gpu, model, ids, steps);
      model.set_decode_graphs(true);
      const std::vector<float> graphed = decode_steps(*gpu, model, ids, steps);
      EXPECT_EQ(model.decode_graphs_captured(), 1);
      EXPECT_EQ(model.decode_graph_replays(), steps - 1);
      ASSERT_EQ(graphed.size(), eager.size());
      EXPECT_EQ(std::memcmp(graphed.data(), eager.data(), 4 * eager.size()), 0)
          << "graphed decode steps differ from eager ones";
      const int64_t V = c.config.vocab_size;
      EXPECT_NE(std::memcmp(eager.data() + 2 * V, eager.data() + 3 * V, 4 * size_t(V)), 0);
    }
}

}  // namespace
}  // namespace vacc::test
