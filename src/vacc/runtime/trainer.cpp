#include "vacc/runtime/trainer.h"

#include <chrono>

#include "vacc/core/error.h"
#include "vacc/model/initialization.h"
#include "vacc/optim/gradient_clipping.h"

namespace vacc {

Trainer::Trainer(Backend& backend, const ModelConfig& config, TrainerOptions options,
                 double peak_flops)
    : backend_(backend), options_(options), peak_flops_(peak_flops) {
  VACC_CHECK(options_.batch > 0, "--batch must be positive (got ", options_.batch, ")");
  VACC_CHECK(options_.seq_len > 0, "--seq-len must be positive (got ", options_.seq_len, ")");
  VACC_CHECK(options_.micro_batches > 0 && options_.batch % options_.micro_batches == 0,
             "the batch of ", options_.batch, " sequences does not divide into ",
             options_.micro_batches, " micro-batches");
  VACC_CHECK(options_.seq_len <= config.max_position_embeddings, "--seq-len ", options_.seq_len,
             " exceeds the model's max_position_embeddings (", config.max_position_embeddings,
             ")");
  model_ = std::make_unique<Transformer>(backend_, config, ModelShard::whole(config),
                                         options_.dtype, options_.seq_len);
  if (options_.load_weights)
    options_.load_weights(*model_);
  else
    initialize_parameters(backend_, config, model_->table(), options_.seed, model_->parameters());
  model_->parameters_changed();
  std::vector<OptimizerSegment> segments;
  for (const ParameterEntry& e : model_->table().entries())
    segments.push_back({e.offset, e.numel(), e.weight_decay});
  optimizer_ = std::make_unique<AdamW>(backend_, model_->parameters(), model_->gradients(),
                                       segments, options_.adam);

  buffers_ = EvalBuffers::allocate(*model_, options_.batch / options_.micro_batches,
                                   options_.seq_len);
}

EvalResult Trainer::evaluate(const TokenBatch& batch) {
  return evaluate_loss(*model_, buffers_, batch);
}

StepMetrics Trainer::step(const TokenBatch& batch) {
  VACC_CHECK(batch.batch == options_.batch && batch.seq == options_.seq_len, "a batch of ",
             batch.batch, "x", batch.seq, " tokens does not match the trainer's ", options_.batch,
             "x", options_.seq_len);
  check_token_batch(batch, model_->config().vocab_size);
  const int64_t counted = batch.counted_tokens();
  auto t0 = std::chrono::steady_clock::now();

  model_->zero_gradients();
  backend_.fill(buffers_.loss_sum, 0.0f);
  // Loss is the mean over every counted token of the global batch.
  const float grad_scale = counted > 0 ? 1.0f / float(counted) : 0.0f;
  const int64_t micro = options_.batch / options_.micro_batches;
  for (int64_t mb = 0; mb < options_.micro_batches; ++mb) {
    TokenBatch part = batch.slice(mb * micro, (mb + 1) * micro);
    backend_.upload(part.ids.data(), buffers_.ids);
    backend_.upload(part.labels.data(), buffers_.labels);
    model_->forward_backward(buffers_.ids, buffers_.positions, buffers_.labels, grad_scale,
                             buffers_.activations, buffers_.loss_sum);
  }
  StepMetrics m;
  m.step = ++steps_;
  m.grad_norm = global_grad_norm(backend_, {model_->gradients()});
  m.lr = options_.lr.at(m.step);
  optimizer_->step(float(m.lr), clip_factor(m.grad_norm, options_.max_grad_norm));
  model_->parameters_changed();
  float loss_sum = 0.0f;
  backend_.download(buffers_.loss_sum, &loss_sum);  // waits for the device
  backend_.synchronize();
  m.step_time_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();

  m.loss = counted > 0 ? double(loss_sum) / double(counted) : 0.0;
  m.tokens = batch.batch * batch.seq;
  m.tokens_per_sec = double(m.tokens) / m.step_time_s;
  m.flops_per_sec =
      model_->config().training_flops(m.tokens, counted, batch.seq) / m.step_time_s;
  m.mfu = peak_flops_ > 0 ? m.flops_per_sec / peak_flops_ : 0.0;
  return m;
}

}  // namespace vacc
