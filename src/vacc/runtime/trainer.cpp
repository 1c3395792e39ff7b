#include "vacc/runtime/trainer.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <map>
#include <nlohmann/json.hpp>

#include "vacc/core/error.h"
#include "vacc/core/text_file.h"
#include "vacc/core/trace.h"
#include "vacc/model/initialization.h"
#include "vacc/optim/gradient_clipping.h"
#include "vacc/plan/stage_split.h"

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

// The shard of pipeline stage `stage` and tensor-parallel rank `tp_rank`: the stage's layers
// (their heads, FFN columns and vocabulary rows of this tp rank), the embedding on the first
// stage, the final norm, output projection and loss on the last.
ModelShard stage_shard(const ModelConfig& config, const ParallelConfig& par, int stage,
                       int tp_rank, int64_t seq_len) {
  const auto ranges = split_layers(config, par.pp, seq_len);
  return ModelShard::tensor_parallel(config, ranges[size_t(stage)].first,
                                     ranges[size_t(stage)].second, stage == 0,
                                     stage == par.pp - 1, tp_rank, par.tp);
}

FlatRange entry_range(const ParameterTable& table, size_t entry) {
  const ParameterEntry& e = table.entry(entry);
  return {e.offset, e.offset + e.numel()};
}

}  // namespace

Trainer::Trainer(Backend& backend, Communicator& comm, const ModelConfig& config,
                 TrainerOptions options, double peak_flops)
    : backend_(backend), comm_(comm), options_(options), peak_flops_(peak_flops) {
  const ParallelConfig& par = options_.parallel;
  VACC_CHECK(options_.batch > 0, "--batch must be positive (got ", options_.batch, ")");
  VACC_CHECK(options_.seq_len > 0, "--seq-len must be positive (got ", options_.seq_len, ")");
  par.validate(comm_.size(), options_.batch, &config);
  VACC_CHECK(options_.seq_len <= config.max_position_embeddings, "--seq-len ", options_.seq_len,
             " exceeds the model's max_position_embeddings (", config.max_position_embeddings,
             ")");
  grid_ = std::make_unique<RankGrid>(comm_, par);
  const int stage = grid_->pp_rank();
  model_ = std::make_unique<Transformer>(
      backend_, config, stage_shard(config, par, stage, grid_->tp_rank(), options_.seq_len),
      options_.dtype,
      options_.seq_len, [&](const ParameterTable& table) {
        auto store = std::make_unique<ShardedParameterStore>(backend_, grid_->dp(), table,
                                                             options_.dtype, par.zero);
        store_ = store.get();
        return store;
      });
  model_->set_recompute(par.recompute);
  // Each rank fills only its shard; the store shares the shards where ranks keep replicas.
  Tensor owned = store_->owned_master();
  if (options_.load_weights)
    options_.load_weights(backend_, model_->table(), store_->owned(), owned);
  else
    initialize_parameters(backend_, config, model_->table(), options_.seed, owned,
                          store_->owned());
  store_->parameters_loaded();
  tie_embedding_across_stages();
  connect_tensor_parallel();
  optimizer_ = std::make_unique<AdamW>(backend_, store_->optimizer_parameters(),
                                       store_->optimizer_gradients(),
                                       segments_in(model_->table(), store_->optimizer_range()),
                                       options_.adam, store_->optimizer_compute_copy());

  micro_ = par.micro_batch_size(options_.batch);
  actions_ = pipeline_actions(par.schedule, stage, par.pp, par.micro_batches);
  const int64_t in_flight = pipeline_in_flight(par.schedule, stage, par.pp, par.micro_batches);
  const int64_t n = micro_ * options_.seq_len;
  for (int64_t i = 0; i < in_flight; ++i) {
    Slot s;
    s.act = model_->allocate_activations(micro_, options_.seq_len);
    s.ids = backend_.empty({n}, DType::I32, MemoryCategory::Buffers, "token ids");
    s.labels = backend_.empty({n}, DType::I32, MemoryCategory::Buffers, "labels");
    slots_.push_back(std::move(s));
  }
  positions_ = backend_.empty({n}, DType::I32, MemoryCategory::Buffers, "positions");
  std::vector<int32_t> pos(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) pos[size_t(i)] = int32_t(i % options_.seq_len);
  backend_.upload(pos.data(), positions_);
  loss_sum_ = backend_.zeros({1}, DType::F32, MemoryCategory::Buffers, "loss sum");
  dx_ = backend_.empty({n, config.hidden_size}, DType::F32, MemoryCategory::Buffers,
                       "residual gradient");
  if (options_.graphs) {
    const std::string why_not = graphs_unavailable_reason();
    if (why_not.empty()) {
      graphs_ = std::make_unique<GraphedRegions>(backend_, "the layer passes");
      graph_per_layer_ = par.dp > 1 || par.zero > 0;
      graphs_status_ = "on (the layers' forward and backward passes of each of " +
                       std::to_string(slots_.size()) + " micro-batch slot(s)" +
                       (graph_per_layer_ ? ", the backward one graph per layer with the "
                                           "gradient reduction between them"
                                         : "") +
                       ", captured at their second run)";
    } else {
      graphs_status_ = "off: " + why_not;
    }
  }
}

// Graphs replay the layer passes' device work only: nothing in them may talk to other ranks
// (which the host drives) or change from step to step. Data parallelism's gradient reduction
// runs between the backward pass's per-layer graphs; ZeRO 2 and 3 allocate a layer's gradient
// or gather its weights as the passes run, at addresses that change.
std::string Trainer::graphs_unavailable_reason() const {
  const ParallelConfig& par = options_.parallel;
  if (!backend_.supports_graphs()) return "backend " + backend_.name() + " has no graphs";
  if (par.layer_graphs_possible()) return "";
  if (par.zero > 1)
    return "ZeRO " + std::to_string(par.zero) + " " +
           (par.zero == 2 ? "allocates each layer's gradient" : "gathers each layer's weights") +
           " as the layer passes run, at addresses that change";
  return "tensor parallelism (tp " + std::to_string(par.tp) +
         ") sums partial results inside the layers";
}

void Trainer::run_layers(const Slot& slot, int kind, const std::function<void()>& issue,
                         int64_t layer) {
  if (!graphs_) {
    issue();
    return;
  }
  const int64_t index = &slot - slots_.data();
  const int64_t layers = model_->shard().num_layers();
  graphs_->run((2 * index + kind) * (layers + 1) + layer + 1, issue);
}

// Tied embeddings on different stages: the first stage's embedding and the last stage's
// output projection start equal (the same checkpoint tensor) and stay equal because their
// gradients are summed before each update.
void Trainer::tie_embedding_across_stages() {
  const ModelConfig& c = model_->config();
  if (!c.tie_word_embeddings || options_.parallel.pp == 1) return;
  const ParameterTable& table = model_->table();
  Communicator* ends = grid_->embedding();
  if (!ends) return;
  const size_t entry = grid_->first_stage() ? table.embed_tokens() : table.lm_head();
  const size_t group = table.group_of_entry(entry);
  const FlatRange range = entry_range(table, entry);
  const int64_t offset = range.begin - table.groups()[group].offset;
  store_->defer_reduction(group, [ends, offset, range](Tensor& grads) {
    TraceSpan span("communication", "sum tied embedding gradient (first + last stage)", 1);
    Tensor tied = grads.view(offset, {range.numel()});
    ends->all_reduce(tied);
  });
  if (grid_->last_stage()) tied_copy_ = range;
}

// Tensor parallelism: the model's hooks sum partial results over the tp group, and the
// gradients of key/value heads that several tp ranks replicate are summed among them before
// the data-parallel reduction.
void Trainer::connect_tensor_parallel() {
  if (options_.parallel.tp == 1) return;
  Communicator& tp = grid_->tp();
  auto sum = [&tp](Tensor& t) {
    TraceSpan span("tensor parallel", "all-reduce " + std::to_string(t.numel()) + " values", 1);
    tp.all_reduce(t);
  };
  tp_hooks_.reduce_forward = sum;
  tp_hooks_.reduce_backward = sum;
  tp_hooks_.reduce_sum = sum;
  tp_hooks_.combine_logsumexp = [this, &tp](Tensor& lse) {
    // Every rank's per-row log-sum-exp, gathered, then log(sum_r exp(lse_r)) on the host.
    TraceSpan span("tensor parallel", "combine log-sum-exp", 1);
    const int64_t n = lse.numel(), ranks = tp.size();
    Tensor all = backend_.empty({n * ranks}, DType::F32, MemoryCategory::Buffers, "lse of every tp rank");
    const std::vector<int64_t> counts(static_cast<size_t>(ranks), n);
    tp.all_gather(lse, all, counts);
    std::vector<float> host(size_t(n * ranks)), out(static_cast<size_t>(n));
    backend_.download(all, host.data());
    for (int64_t i = 0; i < n; ++i) {
      float m = -INFINITY;
      for (int64_t r = 0; r < ranks; ++r) m = std::max(m, host[size_t(r * n + i)]);
      double s = 0.0;
      for (int64_t r = 0; r < ranks; ++r) s += std::exp(double(host[size_t(r * n + i)] - m));
      out[size_t(i)] = std::isfinite(m) ? float(double(m) + std::log(s)) : m;
    }
    backend_.upload(out.data(), lse);
  };
  model_->set_tensor_parallel_hooks(&tp_hooks_);

  const ModelShard& shard = model_->shard();
  if (shard.kv_replicas <= 1) return;
  const std::vector<int> group = shard.kv_replica_group();
  kv_replicas_ = tp.split(group.front(), grid_->tp_rank());
  const ParameterTable& table = model_->table();
  Communicator* kv = kv_replicas_.get();
  store_->set_pre_reduce([&table, kv](size_t g, Tensor& grads) {
    const ParameterGroup& pg = table.groups()[g];
    for (const FlatRange& r : table.kv_replica_ranges())
      if (r.begin >= pg.offset && r.end <= pg.end()) {
        Tensor rows = grads.view(r.begin - pg.offset, {r.numel()});
        kv->all_reduce(rows);
      }
  });
}

// Gradient pieces another rank of the stage counts in the global norm: the last stage's copy
// of a tied embedding, and pieces replicated over tp ranks (norms; shared key/value heads),
// counted by the first rank of their replicas only.
std::vector<FlatRange> Trainer::copies_counted_elsewhere() const {
  std::vector<FlatRange> out;
  if (tied_copy_.numel() > 0) out.push_back(tied_copy_);
  const ParameterTable& table = model_->table();
  for (const CheckpointTensor& ct : table.checkpoint_tensors()) {
    if (ct.replicas <= 1 || grid_->tp_rank() % ct.replicas == 0) continue;
    const int64_t start = table.entry(ct.entry).offset + ct.offset;
    const FlatRange r{start, start + ct.numel()};
    if (!(r.begin >= tied_copy_.begin && r.end <= tied_copy_.end && tied_copy_.numel() > 0))
      out.push_back(r);
  }
  return out;
}

void Trainer::upload_micro_batch(const TokenBatch& part, Slot& slot) {
  if (grid_->first_stage()) backend_.upload(part.ids.data(), slot.ids);
  if (grid_->last_stage()) backend_.upload(part.labels.data(), slot.labels);
}

void Trainer::forward(Slot& slot, int64_t micro_batch) {
  if (grid_->first_stage()) {
    TraceSpan span("forward", "embed " + std::to_string(micro_batch));
    model_->embed(slot.ids, slot.act);
  } else {
    if (slot.sent) slot.sent->wait();
    TraceSpan span("pipeline", "recv activations " + std::to_string(micro_batch), 1);
    grid_->world().recv(slot.act.residual[0], grid_->stage_rank(grid_->pp_rank() - 1));
  }
  TraceSpan span("forward", "forward " + std::to_string(micro_batch));
  run_layers(slot, 0, [&] { model_->forward_layers(positions_, slot.act); });
  if (!grid_->last_stage()) {
    if (slot.sent) slot.sent->wait();
    slot.sent = grid_->world().send_async(slot.act.residual.back(),
                                          grid_->stage_rank(grid_->pp_rank() + 1));
  }
}

void Trainer::backward(Slot& slot, int64_t micro_batch, float grad_scale) {
  const std::string mb = std::to_string(micro_batch);
  if (grid_->last_stage()) {
    TraceSpan span("forward", "head and loss " + mb);
    model_->head_forward_backward(slot.labels, grad_scale, slot.act, loss_sum_, dx_);
  } else {
    TraceSpan span("pipeline", "recv gradient " + mb, 1);
    grid_->world().recv(dx_, grid_->stage_rank(grid_->pp_rank() + 1));
  }
  TraceSpan span("backward", "backward " + mb);
  if (graph_per_layer_) {
    const Transformer::LayerRegion region = [&](int64_t layer, const std::function<void()>& issue) {
      run_layers(slot, 1, issue, layer);
    };
    model_->backward_layers(positions_, slot.act, dx_, &region);
  } else {
    run_layers(slot, 1, [&] { model_->backward_layers(positions_, slot.act, dx_); });
  }
  if (grid_->first_stage()) {
    model_->embed_backward(slot.ids, dx_);
  } else {
    // The gradient travels in a buffer of its own: dx_ is overwritten by the next backward.
    while (grad_sends_.size() >= 2) {
      grad_sends_.front().second->wait();
      grad_sends_.pop_front();
    }
    Tensor out = backend_.empty(dx_.shape(), DType::F32, MemoryCategory::Buffers,
                                "gradient to the previous stage");
    backend_.copy(dx_, out);
    auto request = grid_->world().send_async(out, grid_->stage_rank(grid_->pp_rank() - 1));
    grad_sends_.emplace_back(std::move(out), std::move(request));
  }
  if (slot.sent) {  // the slot's output must have left before the slot is reused
    slot.sent->wait();
    slot.sent.reset();
  }
}

void Trainer::wait_sends() {
  for (auto& [buf, request] : grad_sends_) request->wait();
  grad_sends_.clear();
  for (Slot& s : slots_)
    if (s.sent) {
      s.sent->wait();
      s.sent.reset();
    }
}

EvalResult Trainer::evaluate(const TokenBatch& batch) {
  VACC_CHECK(batch.seq == options_.seq_len, "evaluation sequences of ", batch.seq,
             " tokens do not match the trainer's ", options_.seq_len);
  check_token_batch(batch, model_->config().vocab_size);
  // Every replica runs the same number of micro-batches (ZeRO 3 gathers in every one).
  const int dp = options_.parallel.dp;
  const int64_t per_replica = (batch.batch + dp - 1) / dp;
  const int64_t chunks = (per_replica + micro_ - 1) / micro_;
  TokenBatch mine = padded_slice(batch, grid_->dp_rank() * per_replica, chunks * micro_);
  backend_.fill(loss_sum_, 0.0f);
  Slot& slot = slots_[0];
  for (int64_t c = 0; c < chunks; ++c) {
    upload_micro_batch(mine.slice(c * micro_, (c + 1) * micro_), slot);
    forward(slot, c);
    if (grid_->last_stage()) model_->head_loss(slot.labels, slot.act, loss_sum_);
  }
  wait_sends();
  float local = 0.0f;
  backend_.download(loss_sum_, &local);
  double sum = grid_->last_stage() && grid_->tp_rank() == 0 ? double(local) : 0.0;
  comm_.all_reduce_host(&sum, 1);
  return EvalResult{sum, batch.counted_tokens()};
}

StepMetrics Trainer::step(const TokenBatch& batch, bool trace) {
  VACC_CHECK(batch.batch == options_.batch && batch.seq == options_.seq_len, "a batch of ",
             batch.batch, "x", batch.seq, " tokens does not match the trainer's ", options_.batch,
             "x", options_.seq_len);
  check_token_batch(batch, model_->config().vocab_size);
  const int64_t counted = batch.counted_tokens();  // of the global batch
  if (trace) {
    comm_.barrier();  // one origin for every rank's clock
    Trace::instance().start();
  }
  auto t0 = std::chrono::steady_clock::now();

  store_->zero_gradients();
  backend_.fill(loss_sum_, 0.0f);
  // Loss is the mean over every counted token of the global batch.
  const float grad_scale = counted > 0 ? 1.0f / float(counted) : 0.0f;
  const ParallelConfig& par = options_.parallel;
  const int64_t first = grid_->dp_rank() * (options_.batch / par.dp);
  for (const PipelineAction& a : actions_) {
    Slot& slot = slots_[size_t(a.micro_batch % int64_t(slots_.size()))];
    if (a.kind == PipelineAction::Kind::Forward) {
      const int64_t begin = first + a.micro_batch * micro_;
      upload_micro_batch(batch.slice(begin, begin + micro_), slot);
      forward(slot, a.micro_batch);
    } else {
      store_->set_last_micro_batch(a.micro_batch + 1 == par.micro_batches);
      backward(slot, a.micro_batch, grad_scale);
    }
  }
  {
    TraceSpan span("communication", "wait for sends and gradient reduction");
    wait_sends();
    store_->finish_gradient_reduction();
  }
  StepMetrics m;
  m.step = ++steps_;
  double square_sum = store_->gradient_square_sum(copies_counted_elsewhere());
  comm_.all_reduce_host(&square_sum, 1);
  m.grad_norm = std::sqrt(square_sum);
  m.lr = options_.lr.at(m.step);
  {
    TraceSpan span("optimizer", "AdamW step");
    optimizer_->step(float(m.lr), clip_factor(m.grad_norm, options_.max_grad_norm));
  }
  {
    TraceSpan span("communication", "share updated parameters", 1);
    store_->parameters_updated(optimizer_->writes_compute_copy());
  }
  float local_loss = 0.0f;
  backend_.download(loss_sum_, &local_loss);  // waits for the device
  // One host reduction: the loss sum (from the last stage), then each rank's peak and
  // current memory in its slot.
  const int n = comm_.size(), r = comm_.rank();
  std::vector<double> sums(1 + 2 * size_t(n), 0.0);
  if (grid_->last_stage() && grid_->tp_rank() == 0) sums[0] = double(local_loss);
  // The peak held against the budget: with CUDA graphs it includes the blocks kept for them.
  sums[1 + size_t(r)] = double(backend_.allocator().held_high_water_mark());
  sums[1 + size_t(n + r)] = double(backend_.allocator().in_use());
  comm_.all_reduce_host(sums.data(), int64_t(sums.size()));
  const double loss_sum = sums[0];
  m.devices = n;
  m.peak_memory_bytes.assign(sums.begin() + 1, sums.begin() + 1 + n);
  m.memory_in_use_bytes.assign(sums.begin() + 1 + n, sums.end());
  backend_.synchronize();
  m.step_time_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (trace) Trace::instance().stop();

  m.loss = counted > 0 ? loss_sum / double(counted) : 0.0;
  m.tokens = batch.batch * batch.seq;
  m.tokens_per_sec = double(m.tokens) / m.step_time_s;
  // Per device: the global batch's FLOPs shared by the ranks.
  m.flops_per_sec = model_->config().training_flops(m.tokens, counted, batch.seq) /
                    m.step_time_s / double(comm_.size());
  m.mfu = peak_flops_ > 0 ? m.flops_per_sec / peak_flops_ : 0.0;
  return m;
}

void Trainer::save(const std::string& dir, const HfSaveOptions& options) {
  const ModelConfig& config = model_->config();
  const ParallelConfig& par = options_.parallel;
  // Each checkpoint tensor's pieces: one per tp rank of the first stage holding it.
  struct Piece {
    int stage, tp_rank;
    FlatRange range;  // in that rank's layout
    CheckpointTensor ct;
  };
  std::map<std::string, std::vector<Piece>> pieces;
  for (int stage = 0; stage < par.pp; ++stage) {
    std::map<std::string, std::vector<Piece>> here;
    for (int t = 0; t < par.tp; ++t) {
      const ParameterTable table(config, stage_shard(config, par, stage, t, options_.seq_len));
      for (const CheckpointTensor& ct : table.checkpoint_tensors()) {
        const int64_t start = table.entry(ct.entry).offset + ct.offset;
        here[ct.name].push_back({stage, t, {start, start + ct.numel()}, ct});
      }
    }
    for (auto& [name, list] : here) pieces.emplace(name, std::move(list));
  }
  const int writer = 0;
  std::vector<float> piece_values;
  // Every rank walks the tensors in the writer's order. The (dp rank 0) rank holding a piece
  // produces it — with ZeRO 3 collectively with its dp group — and sends it to the writer,
  // which places it into the whole tensor.
  auto fetch = [&](const HfTensorInfo& t, float* out) {
    for (const Piece& p : pieces.at(t.name)) {
      const int holder = p.stage * par.dp * par.tp + p.tp_rank;
      const bool mine = grid_->pp_rank() == p.stage && grid_->tp_rank() == p.tp_rank;
      const bool produce = comm_.rank() == holder;
      if (produce || comm_.rank() == writer) piece_values.resize(size_t(p.range.numel()));
      if (mine && (produce || store_->read_is_collective()))
        store_->read_range(p.range, produce ? piece_values.data() : nullptr);
      if (holder == writer) {
        if (produce) place_checkpoint_piece(p.ct, piece_values.data(), out);
        continue;
      }
      Tensor buf;
      if (produce || comm_.rank() == writer)
        buf = backend_.empty({p.range.numel()}, DType::F32, MemoryCategory::Buffers,
                             "checkpoint piece");
      if (produce) {
        backend_.upload(piece_values.data(), buf);
        comm_.send(buf, writer);
      }
      if (comm_.rank() == writer) {
        comm_.recv(buf, holder);
        backend_.download(buf, piece_values.data());
        place_checkpoint_piece(p.ct, piece_values.data(), out);
      }
    }
  };
  if (comm_.rank() == writer) {
    write_hf_checkpoint(dir, config, fetch, options);
  } else {
    for (const HfTensorInfo& t : hf_checkpoint_tensors(config)) fetch(t, nullptr);
  }
  comm_.barrier();  // the folder is complete when save returns on any rank
}

void Trainer::write_trace(const std::string& path) {
  nlohmann::json meta{{"name", "process_name"},
                      {"ph", "M"},
                      {"pid", comm_.rank()},
                      {"args",
                       {{"name", "rank " + std::to_string(comm_.rank()) + " (stage " +
                                     std::to_string(grid_->pp_rank()) + ", dp " +
                                     std::to_string(grid_->dp_rank()) + ", tp " +
                                     std::to_string(grid_->tp_rank()) + ") on " + comm_.host()}}}};
  std::string mine = meta.dump();
  const std::string events = Trace::instance().events_json(comm_.rank());
  if (!events.empty()) {
    mine.push_back(',');
    mine.append(events);
  }
  // Rank 0 collects every rank's text: the lengths first, then the bytes.
  const int n = comm_.size();
  std::vector<double> lengths(size_t(n), 0.0);
  lengths[size_t(comm_.rank())] = double(mine.size());
  comm_.all_reduce_host(lengths.data(), n);
  auto as_tensor = [&](size_t bytes) {
    return backend_.empty({int64_t((bytes + 3) / 4)}, DType::I32, MemoryCategory::Buffers,
                          "trace text");
  };
  if (comm_.rank() != 0) {
    Tensor t = as_tensor(mine.size());
    std::vector<char> padded((mine.size() + 3) / 4 * 4, ' ');
    std::copy(mine.begin(), mine.end(), padded.begin());
    backend_.upload(padded.data(), t);
    comm_.send(t, 0);
    return;
  }
  std::string all = mine;
  for (int r = 1; r < n; ++r) {
    const size_t bytes = size_t(lengths[size_t(r)]);
    Tensor t = as_tensor(bytes);
    comm_.recv(t, r);
    std::vector<char> text(size_t(t.numel()) * 4);
    backend_.download(t, text.data());
    all.push_back(',');
    all.append(text.data(), bytes);
  }
  write_file_atomically(path, "{\"displayTimeUnit\": \"ms\", \"traceEvents\": [" + all + "]}\n");
}

}  // namespace vacc
