// Transformer: the decoder-only model for a shard (a layer range, and within each layer a
// set of heads and FFN columns), with its parameters, gradients and the bf16 compute copy
// laid out by a ParameterTable. Forward and backward run one micro-batch at a time; the
// activations of a micro-batch live in an Activations object, so a pipeline schedule may
// keep several in flight.
#pragma once

#include <functional>
#include <memory>
#include <vector>

#include "vacc/kernels/backend.h"
#include "vacc/model/kv_cache.h"
#include "vacc/model/model_config.h"
#include "vacc/model/model_shard.h"
#include "vacc/model/parameter_store.h"
#include "vacc/model/parameter_table.h"
#include "vacc/model/recompute.h"
#include "vacc/model/transformer_block.h"

namespace vacc {

struct DecodeBuffers;

class Transformer {
 public:
  // compute: F32 (everything f32) or BF16 (matrix products in bf16 with f32 accumulation;
  // f32 master weights, norms, softmax and reductions). make_store: where the parameters live
  // (given the model's table); unset, the model keeps them all resident in flat buffers.
  using StoreFactory = std::function<std::unique_ptr<ParameterStore>(const ParameterTable&)>;
  Transformer(Backend& backend, ModelConfig config, ModelShard shard, DType compute,
              int64_t max_seq_len, const StoreFactory& make_store = {});
  // The store refers to the table inside the model: the model stays where it was built.
  Transformer(const Transformer&) = delete;
  Transformer& operator=(const Transformer&) = delete;

  const ModelConfig& config() const { return config_; }
  const ModelShard& shard() const { return shard_; }
  const ParameterTable& table() const { return table_; }
  DType compute_dtype() const { return compute_; }
  Backend& backend() { return backend_; }

  // Positions [0, max_seq_len) have RoPE tables (the max_seq_len given at construction).
  int64_t max_seq_len() const { return max_seq_len_; }
  ParameterStore& store() { return *store_; }
  // With the default (resident) store: the f32 master weights and gradients, flat.
  Tensor& parameters() { return resident().parameters(); }
  Tensor& gradients() { return resident().gradients(); }
  // Resident store: call after the master weights change (optimizer step, loading) to
  // refresh the bf16 copy; zero_gradients clears the gradients. Other stores do their own.
  void parameters_changed();
  void zero_gradients();

  // Activation recomputation (see recompute.h) for the activations allocated from now on:
  // call before allocate_activations. Default None.
  void set_recompute(Recompute mode) { recompute_ = mode; }
  Recompute recompute() const { return recompute_; }
  // Tensor-parallel reductions used by the layers' forward, recomputation and backward
  // (nullptr: none, one device). The hooks must outlive their use. A shard holding part of
  // the vocabulary (ModelShard::tensor_parallel) also needs them in the embedding and the
  // output head, with all four fields set.
  void set_tensor_parallel_hooks(const TensorParallelHooks* hooks) { hooks_ = hooks; }

  // Everything one micro-batch keeps between forward and backward.
  struct Activations {
    int64_t batch = 0, seq = 0;
    Recompute recompute = Recompute::None;  // the model's setting when allocated
    std::vector<Tensor> residual;          // layer inputs (N, C); residual[L] the last output
    // What each layer keeps (BlockActivations::allocate for `recompute`); the tensors it
    // does not keep live in the model's recompute scratch, shared by every layer.
    std::vector<BlockActivations> layers;
    Tensor final_norm, final_rstd;         // (N, C) compute, (N)
  };
  Activations allocate_activations(int64_t batch, int64_t seq);

  // Training pass over one micro-batch of `batch` sequences of `seq` tokens: ids, labels i32
  // (batch*seq), positions i32 (batch*seq). Adds the summed token losses to loss_sum (f32
  // (1)) and grad_scale * d(loss sum)/d(parameters) to the gradients.
  void forward_backward(const Tensor& ids, const Tensor& positions, const Tensor& labels,
                        float grad_scale, Activations& act, Tensor& loss_sum);

  // Evaluation: adds the summed token losses of one micro-batch to loss_sum, no gradients.
  void forward_loss(const Tensor& ids, const Tensor& positions, const Tensor& labels,
                    Activations& act, Tensor& loss_sum);

  // Logits (batch*seq, V) f32 for evaluation and tests. On a vocabulary-parallel shard, the
  // shard's columns (batch*seq, shard().vocab_size): vocabulary [vocab_begin, vocab_end()).
  Tensor logits(const Tensor& ids, const Tensor& positions, Activations& act);

  // ---- text generation (a whole-model shard only) ----
  // A KV cache for one sequence of up to max_len tokens (at most max_seq_len()).
  KvCache make_kv_cache(int64_t max_len);
  // Runs the n_new tokens ids (i32 (n_new)) at positions [cache.length(), cache.length() +
  // n_new), attending to the cached tokens and to each other causally; appends their keys and
  // values to the cache and advances it. Returns f32 logits: (1, V) for the last new token, or
  // (n_new, V) for every new token with all_rows. Process a prompt with one call (cache
  // empty), then feed one token per call. Same ops and dtypes as forward_layers + logits, so
  // the logits agree with logits() on the whole sequence up to rounding.
  // With decode graphs on (and a backend that has graphs), a cache's single-token steps are
  // replayed as one graph (transformer_decode.cpp): their logits tensor is then the same one
  // every step, overwritten by the next.
  Tensor decode(const Tensor& ids, KvCache& cache, bool all_rows = false);
  void set_decode_graphs(bool on) { decode_graphs_ = on; }
  int64_t decode_graphs_captured() const { return decode_graphs_captured_; }
  int64_t decode_graph_replays() const { return decode_graph_replays_; }

  // The pieces, for schedules that split them (pipeline stages).
  void embed(const Tensor& ids, Activations& act);
  void forward_layers(const Tensor& positions, Activations& act);
  // Final norm, output projection and loss with its gradient; leaves d(residual[L]) in dx.
  void head_forward_backward(const Tensor& labels, float grad_scale, Activations& act,
                             Tensor& loss_sum, Tensor& dx);
  // dx: gradient w.r.t. residual[L] in, w.r.t. residual[0] out (in place). With `region`,
  // each layer's device work (its recomputation and backward) is issued through
  // (*region)(layer, issue), which may capture it as a graph and replay it: the parameter
  // store's calls (acquire, gradients_ready, release) stay outside, between the layers.
  using LayerRegion = std::function<void(int64_t layer, const std::function<void()>& issue)>;
  void backward_layers(const Tensor& positions, Activations& act, Tensor& dx,
                       const LayerRegion* region = nullptr);
  void embed_backward(const Tensor& ids, const Tensor& dx);
  // Final norm, output projection and loss without gradients (evaluation on the last stage).
  void head_loss(const Tensor& labels, Activations& act, Tensor& loss_sum);

 private:
  BlockGeometry geometry(int64_t batch, int64_t seq) const;
  // decode's pieces (transformer_decode.cpp).
  DecodeBuffers make_decode_buffers(int64_t n, int64_t logit_rows);
  void issue_decode(const Tensor& ids, KvCache& cache, DecodeBuffers& buffers);
  Tensor decode_graphed_step(const Tensor& ids, KvCache& cache);
  // One layer's tensors: matrices from `matrices`, norms and biases from `vectors` (flat
  // buffers laid out by the table).
  // Views into group tensors of the store (laid out from the group's offset).
  BlockWeights layer_views(int64_t local, const Tensor& matrices, const Tensor& vectors) const;
  // Matrices from the compute copy, norms and biases from the f32 master weights (the
  // layer's group must be acquired).
  BlockWeights layer_weights(int64_t local);
  BlockGrads layer_grads(int64_t local);
  // Entry views of an acquired group: matrices from the compute copy, master, gradient.
  Tensor compute_view(size_t entry);
  Tensor master_view(size_t entry);
  Tensor grad_view(size_t entry);
  // Acquires (or releases) the head group and, with tied embeddings, the embedding group.
  void acquire_head(Pass pass);
  void release_head(Pass pass);
  ResidentParameterStore& resident();
  // Vocabulary parallelism (the shard holds part of the vocabulary): the hooks, checked to be
  // set (`what` names the user for the error); the fused cross-entropy over the tp ranks,
  // adding the whole-vocabulary loss to loss_sum and, if given, the gradients (dx summed over
  // the ranks, dweight this shard's rows).
  const TensorParallelHooks& vocab_parallel_hooks(const char* what) const;
  void vocab_parallel_cross_entropy(const Tensor& x, const Tensor& weight, const Tensor& labels,
                                    float grad_scale, Tensor& loss_sum, Tensor* dx,
                                    Tensor* dweight);
  BlockWorkspace& workspace(int64_t batch, int64_t seq);
  // Layer l's activations: the kept tensors of act.layers[l], the rest from the recompute
  // scratch (allocated for act's geometry and mode on first use).
  BlockActivations layer_activations(Activations& act, int64_t l);

  Backend& backend_;
  ModelConfig config_;
  ModelShard shard_;
  DType compute_;
  int64_t max_seq_len_;
  ParameterTable table_;
  std::unique_ptr<ParameterStore> store_;
  ResidentParameterStore* resident_ = nullptr;  // store_ when it is the default
  RopeTables rope_;
  BlockWorkspace workspace_;
  int64_t workspace_tokens_ = -1, workspace_seq_ = -1;
  Tensor dx_scratch_;
  Recompute recompute_ = Recompute::None;
  const TensorParallelHooks* hooks_ = nullptr;
  bool decode_graphs_ = false;
  int64_t decode_graphs_captured_ = 0, decode_graph_replays_ = 0;
  // Recomputation: the tensors layers do not keep, and (full) the recomputed layer output.
  BlockActivations recompute_scratch_;
  Tensor recompute_out_;
  int64_t scratch_tokens_ = -1, scratch_seq_ = -1;
  Recompute scratch_mode_ = Recompute::None;
};

// Cos/sin tables of rotate-half RoPE for positions [0, max_positions), computed as Hugging
// Face does (inv_freq in f32).
RopeTables make_rope_tables(Backend& be, double theta, int64_t head_dim, int64_t max_positions);

}  // namespace vacc
