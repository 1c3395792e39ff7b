#include "vacc/plan/planner.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <map>
#include <cstdio>
#include <thread>

#include "vacc/core/device_allocator.h"
#include "vacc/core/error.h"

namespace vacc {
namespace {

// Runs f(i) for i in [0, n) on `threads` threads.
template <typename F>
void parallel_for(size_t n, int threads, F f) {
  std::atomic<size_t> next{0};
  std::exception_ptr error;
  std::atomic<bool> failed{false};
  auto work = [&] {
    try {
      for (size_t i = next++; i < n && !failed; i = next++) f(i);
    } catch (...) {
      if (!failed.exchange(true)) error = std::current_exception();
    }
  };
  const int t = int(std::min<size_t>(size_t(std::max(threads, 1)), std::max<size_t>(n, 1)));
  std::vector<std::thread> pool;
  for (int i = 1; i < t; ++i) pool.emplace_back(work);
  work();
  for (auto& th : pool) th.join();
  if (error) std::rethrow_exception(error);
}

double ms_since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t).count();
}

std::string short_name(const ParallelConfig& c) {
  char buf[160];
  std::snprintf(buf, sizeof buf, "dp=%d,pp=%d,tp=%d,microbatches=%lld,recompute=%s,zero=%d", c.dp,
                c.pp, c.tp, static_cast<long long>(c.micro_batches), recompute_name(c.recompute),
                c.zero);
  return buf;
}

}  // namespace

std::string PlanResult::no_feasible_message() const {
  const Candidate* smallest = nullptr;
  for (const Candidate& c : candidates)
    if (!smallest || c.memory.total() < smallest->memory.total()) smallest = &c;
  if (!smallest) return "no feasible configuration: no candidates";
  return "no feasible configuration: the smallest requirement is " +
         format_bytes(size_t(smallest->memory.total())) + " per device (" +
         short_name(smallest->config) + "), over the usable " +
         format_bytes(size_t(usable_memory_bytes)) + " per device";
}

PlanResult plan_parallelism(const ModelConfig& model, const ClusterSpec& cluster,
                            const PlanConstraints& pinned, const PlannerOptions& o,
                            const PlanLog& log) {
  const std::vector<ParallelConfig> configs =
      enumerate_candidates(model, cluster.devices, o.global_batch, pinned);
  VACC_CHECK(!configs.empty(), "no parallel configuration of ", model.num_layers,
             " layers, ", model.num_heads, " heads (", model.num_kv_heads, " kv), FFN ",
             model.intermediate_size, " over ", cluster.devices, " devices with a batch of ",
             o.global_batch, " satisfies the pinned dimensions (", pinned.str(),
             "): dp x pp x tp must equal the devices, tp divide the heads and FFN, pp be at most "
             "the layers, dp x micro-batches divide the batch");
  const int threads = o.threads > 0 ? o.threads : int(std::max(1u, std::thread::hardware_concurrency()));
  PlanResult r;
  const double device_memory =
      cluster.memory_bytes_per_device > 0 ? cluster.memory_bytes_per_device : cluster.profile.memory_bytes;
  r.usable_memory_bytes = device_memory > 0 ? device_memory * o.usable_memory_fraction : 0;

  log("The number of candidates is " + std::to_string(configs.size()) + ".");
  log("Parallel Graph Compile start...");
  auto t0 = std::chrono::steady_clock::now();
  std::vector<Candidate> all(configs.size());
  const MemoryQuery mq{o.global_batch, o.seq_len, o.dtype, o.scratch};
  // The stages' parameter tables depend on (pp, tp) alone: built once per pair.
  std::map<std::pair<int, int>, std::vector<StageParameters>> stages;
  for (const ParallelConfig& c : configs) stages[{c.pp, c.tp}];
  std::vector<std::pair<const std::pair<int, int>, std::vector<StageParameters>>*> pairs;
  for (auto& entry : stages) pairs.push_back(&entry);
  parallel_for(pairs.size(), threads, [&](size_t i) {
    pairs[i]->second = stage_parameters(model, pairs[i]->first.first, pairs[i]->first.second, o.seq_len);
  });
  parallel_for(configs.size(), threads, [&](size_t i) {
    Candidate& c = all[i];
    c.config = configs[i];
    c.memory = predict_peak_memory(model, c.config, mq, stages.at({c.config.pp, c.config.tp}));
    c.feasible = r.usable_memory_bytes == 0 || c.memory.total() <= r.usable_memory_bytes;
    if (!c.feasible) {
      char pct[32];
      std::snprintf(pct, sizeof pct, "%g%%", o.usable_memory_fraction * 100);
      c.reason = "needs " + format_bytes(size_t(c.memory.total())) + " per device, over the usable " +
                 format_bytes(size_t(r.usable_memory_bytes)) + " (" + pct + " of " +
                 format_bytes(size_t(device_memory)) + ")";
    }
  });
  r.compile_ms = ms_since(t0);
  char line[160];
  std::snprintf(line, sizeof line, "Elapsed Time to compile all candidates = %.1f [ms]", r.compile_ms);
  log(line);
  std::vector<size_t> survivors;
  for (size_t i = 0; i < all.size(); ++i)
    if (all[i].feasible) survivors.push_back(i);
  r.feasible_count = int64_t(survivors.size());
  log("The number of possible candidates is " + std::to_string(survivors.size()) + ".");

  t0 = std::chrono::steady_clock::now();
  const CostQuery cq{o.global_batch, o.seq_len, o.dtype};
  parallel_for(survivors.size(), threads, [&](size_t j) {
    Candidate& c = all[survivors[j]];
    c.cost = predict_step_time(model, c.config, cq, cluster);
    c.tokens_per_s = double(o.global_batch * o.seq_len) / c.cost.step_s;
    c.tflops_per_device = c.cost.model_flops / c.cost.step_s / cluster.devices / 1e12;
  });
  r.cost_ms = ms_since(t0);
  std::snprintf(line, sizeof line, "Elapsed Time to compute cost for survived candidates = %.1f [ms]",
                r.cost_ms);
  log(line);

  std::stable_sort(all.begin(), all.end(), [](const Candidate& a, const Candidate& b) {
    if (a.feasible != b.feasible) return a.feasible;
    if (a.feasible && a.cost.step_s != b.cost.step_s) return a.cost.step_s < b.cost.step_s;
    return a.memory.total() < b.memory.total();
  });
  r.candidates = std::move(all);
  if (r.feasible_count == 0) return r;
  r.chosen = 0;
  Candidate& best = r.candidates[0];
  char buf[256];
  std::snprintf(buf, sizeof buf, "fastest of the %lld that fit (predicted step %.4g s, %s per device)",
                static_cast<long long>(r.feasible_count), best.cost.step_s,
                format_bytes(size_t(best.memory.total())).c_str());
  best.reason = buf;
  if (r.feasible_count > 1) {
    const Candidate& next = r.candidates[1];
    std::snprintf(buf, sizeof buf, "; the runner-up (%s) is %.1f%% slower",
                  short_name(next.config).c_str(), (next.cost.step_s / best.cost.step_s - 1) * 100);
    best.reason += buf;
  }
  for (size_t i = 1; i < size_t(r.feasible_count); ++i) {
    Candidate& c = r.candidates[i];
    std::snprintf(buf, sizeof buf, "fits; %.1f%% slower than the chosen",
                  (c.cost.step_s / best.cost.step_s - 1) * 100);
    c.reason = buf;
  }
  log("Configuration for parallelism is selected.");
  log(best.config.describe(o.global_batch));
  return r;
}

}  // namespace vacc
