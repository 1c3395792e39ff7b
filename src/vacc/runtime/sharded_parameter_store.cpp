#include "vacc/runtime/sharded_parameter_store.h"

#include <algorithm>

#include "vacc/core/error.h"
#include "vacc/core/trace.h"

namespace vacc {
namespace {

// Reductions kept in flight before the oldest is waited for: bounds the memory of ZeRO 2/3
// gradient buckets while still overlapping communication with the next layers.
constexpr size_t kMaxPendingReductions = 2;

}  // namespace

ShardedParameterStore::ShardedParameterStore(Backend& backend, Communicator& comm,
                                             const ParameterTable& table, DType compute,
                                             int zero_stage)
    : backend_(backend),
      comm_(comm),
      table_(table),
      compute_dtype_(compute),
      zero_(zero_stage),
      total_(table.total_numel()),
      partition_(total_, comm.size()),
      owned_(partition_.owned(comm.rank())) {
  VACC_CHECK(zero_ >= 0 && zero_ <= 3, "ZeRO stage ", zero_, " does not exist (0 to 3)");
  const int64_t shard = std::max<int64_t>(owned_.numel(), 1);
  if (zero_ < 3) {
    full_master_ = backend_.zeros({total_}, DType::F32, MemoryCategory::Parameters,
                                  "parameters (f32 master)");
    full_compute_ = compute == DType::F32
                        ? full_master_
                        : backend_.zeros({total_}, compute, MemoryCategory::Parameters,
                                         "parameters (bf16 copy)");
  } else {
    shard_master_ = backend_.zeros({shard}, DType::F32, MemoryCategory::Parameters,
                                   "parameter shard (f32 master)");
  }
  if (zero_ < 2)
    full_grads_ = backend_.zeros({total_}, DType::F32, MemoryCategory::Gradients, "gradients");
  if (zero_ >= 1)
    shard_grads_ = backend_.zeros({shard}, DType::F32, MemoryCategory::Gradients,
                                  "gradient shard");
  reduced_this_step_.assign(table_.groups().size(), false);
}

ShardedParameterStore::~ShardedParameterStore() {
  // Outstanding requests wait in their destructors; a failure there must not throw.
  try {
    for (auto& [g, p] : prefetched_) p.request->wait();
    for (PendingReduction& p : pending_) p.request->wait();
  } catch (...) {
  }
}

FlatRange ShardedParameterStore::group_range(size_t g) const {
  const ParameterGroup& group = table_.groups().at(g);
  return {group.offset, group.end()};
}

Tensor ShardedParameterStore::shard_view(Tensor& shard, FlatRange part) {
  if (part.numel() == 0) return shard.view(0, {0});
  return shard.view(part.begin - owned_.begin, {part.numel()});
}

// ---- parameters ----

Tensor ShardedParameterStore::master(size_t g) {
  if (zero_ < 3) return full_master_.view(group_range(g).begin, {group_range(g).numel()});
  auto it = gathered_.find(g);
  VACC_CHECK(it != gathered_.end(), "parameter group ", g, " used without being acquired");
  return it->second.master;
}

Tensor ShardedParameterStore::compute(size_t g) {
  if (zero_ < 3) return full_compute_.view(group_range(g).begin, {group_range(g).numel()});
  auto it = gathered_.find(g);
  VACC_CHECK(it != gathered_.end(), "parameter group ", g, " used without being acquired");
  return it->second.compute;
}

void ShardedParameterStore::start_gather(size_t g, Tensor& out,
                                         std::unique_ptr<CommRequest>* async) {
  const FlatRange range = group_range(g);
  out = backend_.empty({range.numel()}, DType::F32, MemoryCategory::Parameters,
                       "gathered parameters (ZeRO-3)");
  const std::vector<int64_t> counts = partition_.counts(range);
  Tensor part = shard_view(shard_master_, partition_.owned_part(range, comm_.rank()));
  *async = comm_.all_gather_async(part, out, counts);
}

ShardedParameterStore::Gathered ShardedParameterStore::gather_now(size_t g) {
  Gathered gathered;
  auto pre = prefetched_.find(g);
  if (pre != prefetched_.end()) {
    TraceSpan span("communication", "wait for prefetched group " + std::to_string(g), 1);
    pre->second.request->wait();
    gathered.master = pre->second.master;
    prefetched_.erase(pre);
  } else {
    TraceSpan span("communication", "all-gather parameters of group " + std::to_string(g), 1);
    std::unique_ptr<CommRequest> request;
    start_gather(g, gathered.master, &request);
    request->wait();
  }
  if (compute_dtype_ == DType::F32) {
    gathered.compute = gathered.master;
  } else {
    gathered.compute = backend_.empty(gathered.master.shape(), compute_dtype_,
                                      MemoryCategory::Parameters, "gathered parameters (bf16)");
    backend_.copy(gathered.master, gathered.compute);
  }
  return gathered;
}

// The group the model uses after g in this pass: forward walks the groups in order; backward
// goes from the head through the layers downwards (the embedding's gradient needs no weights).
void ShardedParameterStore::prefetch_after(size_t g, Pass pass) {
  const size_t n = table_.groups().size();
  size_t next = ParameterTable::npos;
  auto is_layer = [&](size_t x) {
    return x < n && x != table_.embed_group() && x != table_.head_group();
  };
  if (pass == Pass::Forward && g + 1 < n) next = g + 1;
  if (pass == Pass::Backward && g > 0 && is_layer(g - 1) && (is_layer(g) || g == table_.head_group()))
    next = g - 1;
  if (next == ParameterTable::npos || gathered_.count(next) || prefetched_.count(next)) return;
  Prefetch p;
  start_gather(next, p.master, &p.request);
  prefetched_.emplace(next, std::move(p));
}

void ShardedParameterStore::acquire(size_t g, Pass pass) {
  comm_.progress();
  poll_reductions(kMaxPendingReductions);
  if (zero_ < 3) return;
  auto it = gathered_.find(g);
  if (it == gathered_.end()) it = gathered_.emplace(g, gather_now(g)).first;
  ++it->second.uses;
  prefetch_after(g, pass);
}

void ShardedParameterStore::release(size_t g, Pass pass) {
  comm_.progress();
  if (zero_ < 3) return;
  auto it = gathered_.find(g);
  if (it != gathered_.end() && --it->second.uses <= 0) gathered_.erase(it);
}

// ---- gradients ----

Tensor ShardedParameterStore::gradients(size_t g) {
  const FlatRange range = group_range(g);
  if (zero_ < 2) return full_grads_.view(range.begin, {range.numel()});
  auto it = live_grads_.find(g);
  if (it == live_grads_.end())
    it = live_grads_
             .emplace(g, backend_.zeros({range.numel()}, DType::F32, MemoryCategory::Gradients,
                                        "gradient bucket"))
             .first;
  return it->second;
}

void ShardedParameterStore::defer_reduction(size_t g, std::function<void(Tensor&)> combine) {
  VACC_CHECK(g < table_.groups().size(), "defer_reduction: no parameter group ", g);
  deferred_[g] = std::move(combine);
}

void ShardedParameterStore::gradients_ready(size_t g) {
  const FlatRange range = group_range(g);
  if (deferred_.count(g) && !finishing_) return;  // combined and reduced at the end
  if (zero_ < 2 && !last_micro_batch_ && !finishing_) return;  // accumulate; reduce once
  // A sum over one rank is the gradient itself (and nothing is then issued inside the layers'
  // backward pass, which the trainer may replay as a graph).
  if (zero_ == 0 && comm_.size() == 1 && !pre_reduce_) return;
  if (pre_reduce_) {
    Tensor grads = gradients(g);
    pre_reduce_(g, grads);
  }
  PendingReduction p;
  p.started_us = Trace::instance().now_us();
  p.what = std::string(zero_ == 0 ? "all-reduce" : "reduce-scatter") + " gradients of group " +
           std::to_string(g);
  if (zero_ == 0) {
    p.source = full_grads_.view(range.begin, {range.numel()});
    p.request = comm_.all_reduce_async(p.source);
  } else {
    if (zero_ == 1) {
      p.source = full_grads_.view(range.begin, {range.numel()});
    } else {
      auto it = live_grads_.find(g);
      VACC_CHECK(it != live_grads_.end(), "gradients of group ", g, " reported ready twice");
      p.source = it->second;
      live_grads_.erase(it);
    }
    p.part = partition_.owned_part(range, comm_.rank());
    // The first reduction of a group in a step writes the shard directly; later micro-batches
    // (ZeRO 2/3) reduce into a temporary that is then added.
    Tensor out;
    if (reduced_this_step_[g]) {
      p.reduced = backend_.empty({p.part.numel()}, DType::F32, MemoryCategory::Gradients,
                                 "reduced gradient bucket");
      out = p.reduced;
    } else {
      out = shard_view(shard_grads_, p.part);
      reduced_this_step_[g] = true;
    }
    p.request = comm_.reduce_scatter_async(p.source, out, partition_.counts(range));
  }
  pending_.push_back(std::move(p));
  poll_reductions(kMaxPendingReductions);
}

void ShardedParameterStore::complete(PendingReduction& p) {
  p.request->wait();
  Trace& trace = Trace::instance();
  trace.add(p.what, "communication", 1, p.started_us, trace.now_us());
  if (p.reduced.defined() && p.part.numel() > 0) {
    Tensor dst = shard_view(shard_grads_, p.part);
    backend_.add(dst, p.reduced, dst);
  }
  p.source = Tensor();
  p.reduced = Tensor();
}

void ShardedParameterStore::poll_reductions(size_t keep_at_most) {
  while (!pending_.empty() && (pending_.size() > keep_at_most || pending_.front().request->test())) {
    complete(pending_.front());
    pending_.pop_front();
  }
}

void ShardedParameterStore::finish_gradient_reduction() {
  finishing_ = true;
  try {
    for (auto& [g, combine] : deferred_) {
      Tensor grads = gradients(g);
      combine(grads);
      gradients_ready(g);
    }
  } catch (...) {
    finishing_ = false;
    throw;
  }
  finishing_ = false;
  poll_reductions(0);
  VACC_CHECK(live_grads_.empty(), live_grads_.size(),
             " gradient bucket(s) were written but never reported ready");
}

void ShardedParameterStore::zero_gradients() {
  if (full_grads_.defined()) backend_.fill(full_grads_, 0.0f);
  // Every element of the shard is overwritten by its group's first reduction of the step.
  reduced_this_step_.assign(table_.groups().size(), false);
}

double ShardedParameterStore::gradient_square_sum(const std::vector<FlatRange>& exclude) {
  // ZeRO 0: every rank holds the whole reduced gradient, so dp rank 0 speaks for the group.
  if (zero_ == 0 && comm_.rank() != 0) return 0.0;
  const FlatRange mine = zero_ == 0 ? FlatRange{0, total_} : owned_;
  Tensor& grads = zero_ == 0 ? full_grads_ : shard_grads_;
  auto square_sum = [&](FlatRange r) {
    const int64_t b = std::max(r.begin, mine.begin), e = std::min(r.end, mine.end);
    if (b >= e) return 0.0;
    Tensor acc = backend_.zeros({1}, DType::F32, MemoryCategory::Buffers, "gradient norm");
    backend_.sum_of_squares(grads.view(b - mine.begin, {e - b}), acc);
    float v = 0.0f;
    backend_.download(acc, &v);
    return double(v);
  };
  double sum = square_sum(mine);
  for (const FlatRange& r : exclude) sum -= square_sum(r);
  return sum;
}

Tensor ShardedParameterStore::optimizer_parameters() {
  if (zero_ == 0) return full_master_;
  if (zero_ == 3) return shard_master_.view(0, {owned_.numel()});
  return full_master_.view(owned_.begin, {owned_.numel()});
}

Tensor ShardedParameterStore::optimizer_gradients() {
  if (zero_ == 0) return full_grads_;
  return shard_grads_.view(0, {owned_.numel()});
}

Tensor ShardedParameterStore::optimizer_compute_copy() {
  return zero_ == 0 && full_compute_.data() != full_master_.data() ? full_compute_ : Tensor();
}

// ---- weights in and out ----

Tensor ShardedParameterStore::owned_master() {
  if (zero_ == 3) return shard_master_.view(0, {owned_.numel()});
  return full_master_.view(owned_.begin, {owned_.numel()});
}

void ShardedParameterStore::drop_gathered() {
  for (auto& [g, p] : prefetched_) p.request->wait();  // gathered before an update: stale
  prefetched_.clear();
  gathered_.clear();
}

// Every rank's owned shard of the master weights to every rank, in place (stages 0-2).
void ShardedParameterStore::share_owned_shards() {
  if (comm_.size() > 1) {
    Tensor part = full_master_.view(owned_.begin, {owned_.numel()});
    comm_.all_gather(part, full_master_, partition_.counts({0, total_}));
  }
  if (full_compute_.data() != full_master_.data()) backend_.copy(full_master_, full_compute_);
}

void ShardedParameterStore::parameters_loaded() {
  drop_gathered();
  if (zero_ < 3) share_owned_shards();
}

void ShardedParameterStore::parameters_updated(bool compute_copy_written) {
  drop_gathered();
  if (zero_ == 1 || zero_ == 2) {
    share_owned_shards();
  } else if (zero_ == 0 && full_compute_.data() != full_master_.data() && !compute_copy_written) {
    backend_.copy(full_master_, full_compute_);  // every rank updated everything
  }
}

void ShardedParameterStore::read_range(FlatRange range, float* host) {
  if (zero_ < 3) {
    if (host) backend_.download(full_master_.view(range.begin, {range.numel()}), host);
    return;
  }
  Tensor out = backend_.empty({range.numel()}, DType::F32, MemoryCategory::Buffers,
                              "checkpoint tensor (gathered)");
  Tensor part = shard_view(shard_master_, partition_.owned_part(range, comm_.rank()));
  comm_.all_gather(part, out, partition_.counts(range));
  if (host) backend_.download(out, host);
}

}  // namespace vacc
