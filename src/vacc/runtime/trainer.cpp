#include "vacc/runtime/trainer.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <map>

#include "vacc/core/error.h"
#include "vacc/model/initialization.h"
#include "vacc/optim/gradient_clipping.h"

namespace vacc {
namespace {

// The optimizer segments of `range`: each parameter entry's part inside it, with offsets
// relative to range.begin (so a shard's AdamW moments are shard-sized).
std::vector<OptimizerSegment> segments_in(const ParameterTable& table, FlatRange range) {
  std::vector<OptimizerSegment> segments;
  for (const ParameterEntry& e : table.entries()) {
    const int64_t lo = std::max(e.offset, range.begin);
    const int64_t hi = std::min(e.offset + e.numel(), range.end);
    if (lo < hi) segments.push_back({lo - range.begin, hi - lo, e.weight_decay});
  }
  return segments;
}

// Sequences [first, first + count) of `batch`, padded with sequences that count no tokens.
TokenBatch padded_slice(const TokenBatch& batch, int64_t first, int64_t count) {
  const int64_t end = std::min(batch.batch, first + count);
  TokenBatch part = batch.slice(std::min(first, end), end);
  part.batch = count;
  part.ids.resize(size_t(count * batch.seq), 0);
  part.labels.resize(size_t(count * batch.seq), kIgnoreLabel);
  return part;
}

}  // namespace

Trainer::Trainer(Backend& backend, Communicator& comm, const ModelConfig& config,
                 TrainerOptions options, double peak_flops)
    : backend_(backend), comm_(comm), options_(options), peak_flops_(peak_flops) {
  const ParallelConfig& par = options_.parallel;
  VACC_CHECK(options_.batch > 0, "--batch must be positive (got ", options_.batch, ")");
  VACC_CHECK(options_.seq_len > 0, "--seq-len must be positive (got ", options_.seq_len, ")");
  par.validate(comm_.size(), options_.batch);
  VACC_CHECK(options_.seq_len <= config.max_position_embeddings, "--seq-len ", options_.seq_len,
             " exceeds the model's max_position_embeddings (", config.max_position_embeddings,
             ")");
  model_ = std::make_unique<Transformer>(
      backend_, config, ModelShard::whole(config), options_.dtype, options_.seq_len,
      [&](const ParameterTable& table) {
        auto store = std::make_unique<ShardedParameterStore>(backend_, comm_, table,
                                                             options_.dtype, par.zero);
        store_ = store.get();
        return store;
      });
  // Each rank fills only its shard; the store shares the shards where ranks keep replicas.
  Tensor owned = store_->owned_master();
  if (options_.load_weights)
    options_.load_weights(backend_, model_->table(), store_->owned(), owned);
  else
    initialize_parameters(backend_, config, model_->table(), options_.seed, owned,
                          store_->owned());
  store_->parameters_loaded();
  optimizer_ = std::make_unique<AdamW>(backend_, store_->optimizer_parameters(),
                                       store_->optimizer_gradients(),
                                       segments_in(model_->table(), store_->optimizer_range()),
                                       options_.adam);
  buffers_ = EvalBuffers::allocate(*model_, par.micro_batch_size(options_.batch),
                                   options_.seq_len);
}

EvalResult Trainer::evaluate(const TokenBatch& batch) {
  // Every rank runs the same number of micro-batches (ZeRO 3 gathers in every one).
  const int64_t per_rank = (batch.batch + comm_.size() - 1) / comm_.size();
  EvalResult r;
  if (per_rank > 0)
    r = evaluate_loss(*model_, buffers_, padded_slice(batch, comm_.rank() * per_rank, per_rank));
  double sums[2] = {r.loss_sum, double(r.tokens)};
  comm_.all_reduce_host(sums, 2);
  return EvalResult{sums[0], int64_t(sums[1])};
}

StepMetrics Trainer::step(const TokenBatch& batch) {
  VACC_CHECK(batch.batch == options_.batch && batch.seq == options_.seq_len, "a batch of ",
             batch.batch, "x", batch.seq, " tokens does not match the trainer's ", options_.batch,
             "x", options_.seq_len);
  check_token_batch(batch, model_->config().vocab_size);
  const int64_t counted = batch.counted_tokens();  // of the global batch
  auto t0 = std::chrono::steady_clock::now();

  store_->zero_gradients();
  backend_.fill(buffers_.loss_sum, 0.0f);
  // Loss is the mean over every counted token of the global batch.
  const float grad_scale = counted > 0 ? 1.0f / float(counted) : 0.0f;
  const ParallelConfig& par = options_.parallel;
  const int64_t micro = par.micro_batch_size(options_.batch);
  const int64_t first = comm_.rank() * (options_.batch / par.dp);
  for (int64_t mb = 0; mb < par.micro_batches; ++mb) {
    TokenBatch part = batch.slice(first + mb * micro, first + (mb + 1) * micro);
    backend_.upload(part.ids.data(), buffers_.ids);
    backend_.upload(part.labels.data(), buffers_.labels);
    store_->set_last_micro_batch(mb + 1 == par.micro_batches);
    model_->forward_backward(buffers_.ids, buffers_.positions, buffers_.labels, grad_scale,
                             buffers_.activations, buffers_.loss_sum);
  }
  store_->finish_gradient_reduction();
  StepMetrics m;
  m.step = ++steps_;
  m.grad_norm = std::sqrt(store_->gradient_sum_of_squares());
  m.lr = options_.lr.at(m.step);
  optimizer_->step(float(m.lr), clip_factor(m.grad_norm, options_.max_grad_norm));
  store_->parameters_updated();
  float local_loss = 0.0f;
  backend_.download(buffers_.loss_sum, &local_loss);  // waits for the device
  // One host reduction: the loss sum, then each rank's peak and current memory in its slot.
  const int n = comm_.size(), r = comm_.rank();
  std::vector<double> sums(1 + 2 * size_t(n), 0.0);
  sums[0] = double(local_loss);
  sums[1 + size_t(r)] = double(backend_.allocator().high_water_mark());
  sums[1 + size_t(n + r)] = double(backend_.allocator().in_use());
  comm_.all_reduce_host(sums.data(), int64_t(sums.size()));
  const double loss_sum = sums[0];
  m.devices = n;
  m.peak_memory_bytes.assign(sums.begin() + 1, sums.begin() + 1 + n);
  m.memory_in_use_bytes.assign(sums.begin() + 1 + n, sums.end());
  backend_.synchronize();
  m.step_time_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();

  m.loss = counted > 0 ? loss_sum / double(counted) : 0.0;
  m.tokens = batch.batch * batch.seq;
  m.tokens_per_sec = double(m.tokens) / m.step_time_s;
  // Per device: the global batch's FLOPs shared by the ranks.
  m.flops_per_sec = model_->config().training_flops(m.tokens, counted, batch.seq) /
                    m.step_time_s / double(comm_.size());
  m.mfu = peak_flops_ > 0 ? m.flops_per_sec / peak_flops_ : 0.0;
  return m;
}

std::vector<float> Trainer::gather_parameters() {
  const FlatRange whole = model_->table().whole();
  std::vector<float> out(size_t(whole.numel()));
  store_->read_range(whole, out.data());
  return out;
}

void Trainer::save(const std::string& dir, const HfSaveOptions& options) {
  const ParameterTable& table = model_->table();
  std::map<std::string, FlatRange> range_of;
  for (const CheckpointTensor& ct : table.checkpoint_tensors()) {
    const int64_t start = table.entry(ct.entry).offset + ct.offset;
    range_of[ct.name] = {start, start + shape_numel(ct.shape)};
  }
  const ModelConfig& config = model_->config();
  if (comm_.rank() == 0) {
    write_hf_checkpoint(
        dir, config,
        [&](const HfTensorInfo& t, float* out) { store_->read_range(range_of.at(t.name), out); },
        options);
  } else if (store_->read_is_collective()) {
    // The same tensors in the same order as rank 0's writer asks for them.
    for (const HfTensorInfo& t : hf_checkpoint_tensors(config))
      store_->read_range(range_of.at(t.name), nullptr);
  }
  comm_.barrier();  // the folder is complete when save returns on any rank
}

}  // namespace vacc
