#include "vacc/plan/candidate_search.h"

#include <sstream>

#include "vacc/core/error.h"

namespace vacc {
namespace {

std::vector<int64_t> divisors(int64_t n) {
  std::vector<int64_t> out;
  for (int64_t d = 1; d <= n; ++d)
    if (n % d == 0) out.push_back(d);
  return out;
}

bool tp_fits(const ModelConfig& m, int tp) {
  return m.num_heads % tp == 0 && m.intermediate_size % tp == 0 &&
         (m.num_kv_heads % tp == 0 || tp % m.num_kv_heads == 0);
}

}  // namespace

PlanConstraints PlanConstraints::parse(const std::string& text) {
  PlanConstraints c;
  std::stringstream items(text);
  std::string item;
  while (std::getline(items, item, ',')) {
    if (item.empty()) continue;
    // ParallelConfig::parse checks the item and its value; the key says which field it set.
    const ParallelConfig v = ParallelConfig::parse(item, ParallelConfig{});
    const std::string key = item.substr(0, item.find('='));
    if (key == "dp") c.dp = v.dp;
    else if (key == "pp") c.pp = v.pp;
    else if (key == "tp") c.tp = v.tp;
    else if (key == "zero") c.zero = v.zero;
    else if (key == "microbatches" || key == "micro_batches") c.micro_batches = v.micro_batches;
    else if (key == "recompute") c.recompute = v.recompute;
    else if (key == "schedule") c.schedule = v.schedule;
  }
  return c;
}

bool PlanConstraints::empty() const {
  return !dp && !pp && !tp && !zero && !micro_batches && !recompute && !schedule;
}

bool PlanConstraints::whole() const {
  return dp && pp && tp && zero && micro_batches && recompute;
}

ParallelConfig PlanConstraints::completed(int devices) const {
  ParallelConfig c;
  c.pp = pp.value_or(1);
  c.tp = tp.value_or(1);
  if (dp) {
    c.dp = *dp;
  } else {
    VACC_CHECK(devices % (c.pp * c.tp) == 0, "--parallel pp=", c.pp, ",tp=", c.tp, ": ",
               c.pp * c.tp, " does not divide the accelerator's ", devices, " devices");
    c.dp = devices / (c.pp * c.tp);
  }
  c.zero = zero.value_or(0);
  c.micro_batches = micro_batches.value_or(1);
  c.recompute = recompute.value_or(Recompute::None);
  if (schedule) c.schedule = *schedule;
  return c;
}

std::string PlanConstraints::str() const {
  std::ostringstream s;
  auto item = [&](const char* key, const std::string& value) {
    s << (s.tellp() > 0 ? ", " : "") << key << "=" << value;
  };
  if (dp) item("dp", std::to_string(*dp));
  if (pp) item("pp", std::to_string(*pp));
  if (tp) item("tp", std::to_string(*tp));
  if (zero) item("zero", std::to_string(*zero));
  if (micro_batches) item("microbatches", std::to_string(*micro_batches));
  if (recompute) item("recompute", recompute_name(*recompute));
  if (schedule) item("schedule", schedule_name(*schedule));
  const std::string out = s.str();
  return out.empty() ? "none" : out;
}

std::vector<ParallelConfig> enumerate_candidates(const ModelConfig& model, int devices,
                                                 int64_t global_batch,
                                                 const PlanConstraints& pinned) {
  std::vector<ParallelConfig> out;
  const std::vector<Recompute> modes =
      pinned.recompute ? std::vector<Recompute>{*pinned.recompute}
                       : std::vector<Recompute>{Recompute::None, Recompute::Selective,
                                                Recompute::Full};
  for (int64_t tp : divisors(devices)) {
    if ((pinned.tp && tp != *pinned.tp) || !tp_fits(model, int(tp))) continue;
    for (int64_t pp : divisors(devices / tp)) {
      if ((pinned.pp && pp != *pinned.pp) || pp > model.num_layers) continue;
      const int64_t dp = devices / tp / pp;
      if ((pinned.dp && dp != *pinned.dp) || global_batch % dp != 0) continue;
      for (int64_t mb : divisors(global_batch / dp)) {
        if (pinned.micro_batches && mb != *pinned.micro_batches) continue;
        for (Recompute r : modes)
          for (int zero = 0; zero <= 3; ++zero) {
            if (pinned.zero ? zero != *pinned.zero : (dp == 1 && zero > 0)) continue;
            ParallelConfig c;
            c.dp = int(dp);
            c.pp = int(pp);
            c.tp = int(tp);
            c.micro_batches = mb;
            c.recompute = r;
            c.zero = zero;
            c.schedule = pinned.schedule.value_or(PipelineScheduleKind::OneFOneB);
            out.push_back(c);
          }
      }
    }
  }
  return out;
}

}  // namespace vacc
