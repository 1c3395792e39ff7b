#include "vacc/model/transformer.h"

#include <cmath>
#include <vector>

#include "vacc/core/error.h"

namespace vacc {

RopeTables make_rope_tables(Backend& be, double theta, int64_t head_dim, int64_t max_positions) {
  const int64_t half = head_dim / 2;
  std::vector<float> cos(size_t(max_positions * half)), sin(cos.size());
  for (int64_t j = 0; j < half; ++j) {
    float inv_freq = 1.0f / std::pow(float(theta), float(2 * j) / float(head_dim));
    for (int64_t p = 0; p < max_positions; ++p) {
      float angle = float(p) * inv_freq;
      cos[size_t(p * half + j)] = float(std::cos(double(angle)));
      sin[size_t(p * half + j)] = float(std::sin(double(angle)));
    }
  }
  RopeTables t;
  t.cos = be.empty({max_positions, half}, DType::F32, MemoryCategory::Buffers, "rope cos");
  t.sin = be.empty({max_positions, half}, DType::F32, MemoryCategory::Buffers, "rope sin");
  be.upload(cos.data(), t.cos);
  be.upload(sin.data(), t.sin);
  return t;
}

Transformer::Transformer(Backend& backend, ModelConfig config, ModelShard shard, DType compute,
                         int64_t max_seq_len, const StoreFactory& make_store)
    : backend_(backend),
      config_(std::move(config)),
      shard_(shard),
      compute_(compute),
      max_seq_len_(max_seq_len),
      table_(config_, shard_) {
  VACC_CHECK(compute == DType::F32 || compute == DType::BF16, "compute dtype must be f32 or bf16");
  VACC_CHECK(max_seq_len > 0, "sequence length must be positive");
  if (make_store) {
    store_ = make_store(table_);
  } else {
    auto resident = std::make_unique<ResidentParameterStore>(backend_, table_, compute_);
    resident_ = resident.get();
    store_ = std::move(resident);
  }
  rope_ = make_rope_tables(backend_, config_.rope_theta, config_.head_dim, max_seq_len);
}

ResidentParameterStore& Transformer::resident() {
  VACC_CHECK(resident_, "this model's parameters are held by a sharded store, not in flat "
                        "buffers of its own");
  return *resident_;
}

void Transformer::parameters_changed() {
  if (resident_) resident_->refresh_compute_copy();
}

void Transformer::zero_gradients() {
  if (resident_) backend_.fill(resident_->gradients(), 0.0f);
}

Tensor Transformer::compute_view(size_t entry) {
  const size_t g = table_.group_of_entry(entry);
  return table_.view_in_group(store_->compute(g), g, entry);
}
Tensor Transformer::master_view(size_t entry) {
  const size_t g = table_.group_of_entry(entry);
  return table_.view_in_group(store_->master(g), g, entry);
}
Tensor Transformer::grad_view(size_t entry) {
  const size_t g = table_.group_of_entry(entry);
  return table_.view_in_group(store_->gradients(g), g, entry);
}

BlockWeights Transformer::layer_weights(int64_t local) {
  const size_t g = table_.layer_group(local);
  return layer_views(local, store_->compute(g), store_->master(g));
}
BlockGrads Transformer::layer_grads(int64_t local) {
  const Tensor grads = store_->gradients(table_.layer_group(local));
  return layer_views(local, grads, grads);
}

void Transformer::acquire_head(Pass pass) {
  store_->acquire(table_.head_group(), pass);
  if (table_.group_of_entry(table_.lm_head()) != table_.head_group())
    store_->acquire(table_.group_of_entry(table_.lm_head()), pass);
}
void Transformer::release_head(Pass pass) {
  if (table_.group_of_entry(table_.lm_head()) != table_.head_group())
    store_->release(table_.group_of_entry(table_.lm_head()), pass);
  store_->release(table_.head_group(), pass);
}

BlockGeometry Transformer::geometry(int64_t batch, int64_t seq) const {
  BlockGeometry g;
  g.attention = AttentionShape{batch,           seq,      shard_.q_heads, shard_.kv_heads,
                               config_.head_dim, compute_};
  g.hidden = config_.hidden_size;
  g.ffn = shard_.ffn_size;
  g.eps = float(config_.rms_norm_eps);
  g.compute = compute_;
  return g;
}

BlockWeights Transformer::layer_views(int64_t local, const Tensor& matrices,
                                      const Tensor& vectors) const {
  const LayerEntries& e = table_.layer(local);
  const size_t g = table_.layer_group(local);
  auto in = [&](const Tensor& flat, size_t entry) { return table_.view_in_group(flat, g, entry); };
  BlockWeights w;
  w.input_norm = in(vectors, e.input_norm);
  w.qkv_weight = in(matrices, e.qkv_weight);
  if (e.has_qkv_bias) w.qkv_bias = in(vectors, e.qkv_bias);
  w.o_proj = in(matrices, e.o_proj);
  w.post_norm = in(vectors, e.post_norm);
  w.gate_up = in(matrices, e.gate_up);
  w.down_proj = in(matrices, e.down_proj);
  return w;
}

BlockWorkspace& Transformer::workspace(int64_t batch, int64_t seq) {
  if (workspace_tokens_ != batch * seq || workspace_seq_ != seq) {
    workspace_ = BlockWorkspace{};  // free the old buffers first
    workspace_ = BlockWorkspace::allocate(backend_, geometry(batch, seq));
    dx_scratch_ = backend_.empty({batch * seq, config_.hidden_size}, DType::F32,
                                 MemoryCategory::Buffers, "residual gradient");
    workspace_tokens_ = batch * seq;
    workspace_seq_ = seq;
  }
  return workspace_;
}

BlockActivations Transformer::layer_activations(Activations& act, int64_t l) {
  const BlockActivations& kept = act.layers[size_t(l)];
  if (act.recompute == Recompute::None) return kept;
  if (scratch_tokens_ != act.batch * act.seq || scratch_seq_ != act.seq ||
      scratch_mode_ != act.recompute) {
    recompute_scratch_ = BlockActivations{};  // free the old buffers first
    recompute_out_ = Tensor{};
    const BlockGeometry g = geometry(act.batch, act.seq);
    recompute_scratch_ = BlockActivations::allocate_recomputed(backend_, g, act.recompute);
    if (act.recompute == Recompute::Full)
      recompute_out_ = backend_.empty({g.tokens(), config_.hidden_size}, DType::F32,
                                      MemoryCategory::Activations, "recompute scratch: output");
    scratch_tokens_ = act.batch * act.seq;
    scratch_seq_ = act.seq;
    scratch_mode_ = act.recompute;
  }
  return kept.completed_by(recompute_scratch_);
}

Transformer::Activations Transformer::allocate_activations(int64_t batch, int64_t seq) {
  VACC_CHECK(seq <= max_seq_len_, "sequence length ", seq, " exceeds the model's maximum of ",
             max_seq_len_, " set at construction");
  const int64_t N = batch * seq, C = config_.hidden_size;
  Activations act;
  act.batch = batch;
  act.seq = seq;
  act.recompute = recompute_;
  BlockGeometry g = geometry(batch, seq);
  for (int64_t l = 0; l <= shard_.num_layers(); ++l)
    act.residual.push_back(
        backend_.empty({N, C}, DType::F32, MemoryCategory::Activations, "residual stream"));
  for (int64_t l = 0; l < shard_.num_layers(); ++l)
    act.layers.push_back(BlockActivations::allocate(backend_, g, recompute_));
  if (shard_.has_head) {
    act.final_norm = backend_.empty({N, C}, compute_, MemoryCategory::Activations, "final norm");
    act.final_rstd = backend_.empty({N}, DType::F32, MemoryCategory::Activations, "final rstd");
  }
  return act;
}

void Transformer::embed(const Tensor& ids, Activations& act) {
  VACC_CHECK(shard_.has_embedding, "this shard has no embedding");
  store_->acquire(table_.embed_group(), Pass::Forward);
  backend_.embedding_forward(ids, master_view(table_.embed_tokens()), shard_.vocab_begin,
                             act.residual[0]);
  store_->release(table_.embed_group(), Pass::Forward);
  // A vocabulary shard embeds only its own tokens (zeros elsewhere): the sum over the tp
  // ranks is the embedding.
  if (shard_.vocab_parallel(config_))
    vocab_parallel_hooks("the vocabulary-parallel embedding").reduce_forward(act.residual[0]);
}

void Transformer::forward_layers(const Tensor& positions, Activations& act) {
  BlockGeometry g = geometry(act.batch, act.seq);
  BlockWorkspace& ws = workspace(act.batch, act.seq);
  for (int64_t l = 0; l < shard_.num_layers(); ++l) {
    store_->acquire(table_.layer_group(l), Pass::Forward);
    BlockActivations layer = layer_activations(act, l);
    block_forward(backend_, g, layer_weights(l), act.residual[size_t(l)], positions, rope_, layer,
                  ws, act.residual[size_t(l) + 1], hooks_);
    store_->release(table_.layer_group(l), Pass::Forward);
  }
}

void Transformer::head_forward_backward(const Tensor& labels, float grad_scale, Activations& act,
                                        Tensor& loss_sum, Tensor& dx) {
  VACC_CHECK(shard_.has_head, "this shard has no output head");
  const Tensor& last = act.residual.back();
  acquire_head(Pass::Backward);
  backend_.rmsnorm_forward(last, master_view(table_.final_norm()), float(config_.rms_norm_eps),
                           act.final_norm, act.final_rstd);
  BlockWorkspace& ws = workspace(act.batch, act.seq);
  Tensor dhead = grad_view(table_.lm_head());
  if (shard_.vocab_parallel(config_))
    vocab_parallel_cross_entropy(act.final_norm, compute_view(table_.lm_head()), labels,
                                 grad_scale, loss_sum, &ws.dnorm, &dhead);
  else
    backend_.classifier_cross_entropy(act.final_norm, compute_view(table_.lm_head()), labels,
                                      grad_scale, loss_sum, &ws.dnorm, &dhead);
  Tensor dnorm_w = grad_view(table_.final_norm());
  backend_.rmsnorm_backward(ws.dnorm, last, master_view(table_.final_norm()), act.final_rstd,
                            nullptr, dx, nullptr, dnorm_w);
  // A tied lm_head's gradient is complete only after embed_backward.
  store_->gradients_ready(table_.head_group());
  release_head(Pass::Backward);
}

void Transformer::backward_layers(const Tensor& positions, Activations& act, Tensor& dx,
                                  const LayerRegion* region) {
  BlockGeometry g = geometry(act.batch, act.seq);
  BlockWorkspace& ws = workspace(act.batch, act.seq);
  for (int64_t l = shard_.num_layers() - 1; l >= 0; --l) {
    const size_t group = table_.layer_group(l);
    store_->acquire(group, Pass::Backward);
    const BlockWeights w = layer_weights(l);
    // Recomputation: what the layer did not keep, by the forward pass's own ops on its own
    // inputs (bitwise the same tensors). Full reruns the layer from its input, its output
    // going to a scratch (residual[l + 1] may still be on its way to the next stage).
    BlockActivations layer = layer_activations(act, l);
    BlockGrads grads = layer_grads(l);
    // Below the top layer, the layer above left dx in the compute dtype in ws.dy_c.
    const bool top = l == shard_.num_layers() - 1;
    const Tensor* dout_c = !top && ws.dy_c.defined() ? &ws.dy_c : nullptr;
    auto issue = [&] {
      if (act.recompute == Recompute::Full)
        block_forward(backend_, g, w, act.residual[size_t(l)], positions, rope_, layer, ws,
                      recompute_out_, hooks_);
      else if (act.recompute == Recompute::Selective)
        block_attention_forward(backend_, g, w, positions, rope_, layer);
      block_backward(backend_, g, w, act.residual[size_t(l)], positions, rope_, layer, dx,
                     dout_c, grads, ws, dx, hooks_);
    };
    if (region)
      (*region)(l, issue);
    else
      issue();
    store_->gradients_ready(group);
    store_->release(group, Pass::Backward);
  }
}

void Transformer::embed_backward(const Tensor& ids, const Tensor& dx) {
  // Only the gradient is touched: the weights need not be acquired.
  Tensor dembed = grad_view(table_.embed_tokens());
  backend_.embedding_backward(ids, dx, shard_.vocab_begin, dembed);
  store_->gradients_ready(table_.embed_group());
}

void Transformer::forward_backward(const Tensor& ids, const Tensor& positions,
                                   const Tensor& labels, float grad_scale, Activations& act,
                                   Tensor& loss_sum) {
  VACC_CHECK(shard_.has_embedding && shard_.has_head,
             "forward_backward runs a whole model; a pipeline stage uses the pieces");
  embed(ids, act);
  forward_layers(positions, act);
  workspace(act.batch, act.seq);
  Tensor& dx = dx_scratch_;
  head_forward_backward(labels, grad_scale, act, loss_sum, dx);
  backward_layers(positions, act, dx);
  embed_backward(ids, dx);
}

void Transformer::forward_loss(const Tensor& ids, const Tensor& positions, const Tensor& labels,
                               Activations& act, Tensor& loss_sum) {
  VACC_CHECK(shard_.has_embedding && shard_.has_head, "forward_loss runs a whole model");
  embed(ids, act);
  forward_layers(positions, act);
  head_loss(labels, act, loss_sum);
}

void Transformer::head_loss(const Tensor& labels, Activations& act, Tensor& loss_sum) {
  VACC_CHECK(shard_.has_head, "this shard has no output head");
  acquire_head(Pass::Forward);
  backend_.rmsnorm_forward(act.residual.back(), master_view(table_.final_norm()),
                           float(config_.rms_norm_eps), act.final_norm, act.final_rstd);
  if (shard_.vocab_parallel(config_))
    vocab_parallel_cross_entropy(act.final_norm, compute_view(table_.lm_head()), labels, 1.0f,
                                 loss_sum, nullptr, nullptr);
  else
    backend_.classifier_cross_entropy(act.final_norm, compute_view(table_.lm_head()), labels,
                                      1.0f, loss_sum, nullptr, nullptr);
  release_head(Pass::Forward);
}

Tensor Transformer::logits(const Tensor& ids, const Tensor& positions, Activations& act) {
  VACC_CHECK(shard_.has_embedding && shard_.has_head, "logits need the whole model");
  embed(ids, act);
  forward_layers(positions, act);
  acquire_head(Pass::Forward);
  backend_.rmsnorm_forward(act.residual.back(), master_view(table_.final_norm()),
                           float(config_.rms_norm_eps), act.final_norm, act.final_rstd);
  const int64_t N = act.batch * act.seq;
  Tensor out = backend_.empty({N, shard_.vocab_size}, DType::F32, MemoryCategory::Buffers, "logits");
  backend_.matmul(act.final_norm, false, compute_view(table_.lm_head()), true, out);
  release_head(Pass::Forward);
  return out;
}

const TensorParallelHooks& Transformer::vocab_parallel_hooks(const char* what) const {
  VACC_CHECK(hooks_ && hooks_->reduce_forward && hooks_->reduce_backward &&
                 hooks_->combine_logsumexp && hooks_->reduce_sum,
             what, " of this shard (vocabulary rows [", shard_.vocab_begin, ", ",
             shard_.vocab_end(), ") of ", config_.vocab_size,
             ") needs tensor-parallel hooks (set_tensor_parallel_hooks with reduce_forward, "
             "reduce_backward, combine_logsumexp and reduce_sum)");
  return *hooks_;
}

void Transformer::vocab_parallel_cross_entropy(const Tensor& x, const Tensor& weight,
                                               const Tensor& labels, float grad_scale,
                                               Tensor& loss_sum, Tensor* dx, Tensor* dweight) {
  const TensorParallelHooks& hooks = vocab_parallel_hooks("the vocabulary-parallel output head");
  const int64_t N = x.size(0);
  Tensor lse = backend_.empty({N}, DType::F32, MemoryCategory::Buffers, "vocabulary-parallel lse");
  Tensor target = backend_.empty({N}, DType::F32, MemoryCategory::Buffers,
                                 "vocabulary-parallel label logits");
  backend_.classifier_logsumexp(x, weight, shard_.vocab_begin, labels, lse, target);
  hooks.combine_logsumexp(lse);  // the log-sum-exp over the whole vocabulary
  hooks.reduce_sum(target);      // the label's logit, from the rank holding it
  // The loss: summed in row order in double on the host (the same on every tp rank). Ignored
  // rows carry no loss (their combined lse is not 0: they are skipped by label).
  std::vector<float> lse_host(static_cast<size_t>(N)), target_host(static_cast<size_t>(N));
  std::vector<int32_t> label_host(static_cast<size_t>(N));
  backend_.download(lse, lse_host.data());
  backend_.download(target, target_host.data());
  backend_.download(labels, label_host.data());
  double loss = 0.0;
  for (size_t i = 0; i < size_t(N); ++i) {
    if (label_host[i] == -100) continue;
    // A shard sees only its rows of the vocabulary, so no kernel can tell a label past the
    // whole vocabulary from one on another rank: checked here, where the labels are at hand.
    VACC_CHECK(label_host[i] >= 0 && label_host[i] < config_.vocab_size, "label ",
               label_host[i], " of row ", i, " is outside the vocabulary [0, ",
               config_.vocab_size, ") (and is not the ignore label -100)");
    loss += double(lse_host[i]) - double(target_host[i]);
  }
  const float loss_f = float(loss);
  Tensor add = backend_.empty({1}, DType::F32, MemoryCategory::Buffers, "loss of a micro-batch");
  backend_.upload(&loss_f, add);
  backend_.add(loss_sum, add, loss_sum);
  if (dx || dweight) {
    backend_.classifier_cross_entropy_backward(x, weight, shard_.vocab_begin, labels, lse,
                                               grad_scale, dx, dweight);
    if (dx) hooks.reduce_backward(*dx);  // each rank's vocabulary adds its part
  }
}

}  // namespace vacc
