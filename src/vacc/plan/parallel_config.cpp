#include "vacc/plan/parallel_config.h"

#include <charconv>
#include <sstream>

#include "vacc/core/error.h"
#include "vacc/model/model_config.h"

namespace vacc {

const char* schedule_name(PipelineScheduleKind schedule) {
  return schedule == PipelineScheduleKind::GPipe ? "gpipe" : "1f1b";
}
namespace {

constexpr const char* kKeys = "dp, pp, tp, zero, microbatches, recompute, schedule";

int64_t parse_count(const std::string& key, const std::string& value, int64_t min, int64_t max) {
  int64_t v = 0;
  auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), v);
  VACC_CHECK(ec == std::errc() && end == value.data() + value.size() && v >= min && v <= max,
             "--parallel: ", key, "=", value, " is not valid; ", key, " takes an integer from ",
             min, " to ", max);
  return v;
}

}  // namespace

ParallelConfig ParallelConfig::parse(const std::string& text, ParallelConfig c) {
  std::stringstream items(text);
  std::string item;
  while (std::getline(items, item, ',')) {
    if (item.empty()) continue;
    const size_t eq = item.find('=');
    VACC_CHECK(eq != std::string::npos, "--parallel: '", item, "' is not KEY=VALUE (keys: ", kKeys,
               ")");
    const std::string key = item.substr(0, eq), value = item.substr(eq + 1);
    if (key == "dp")
      c.dp = int(parse_count(key, value, 1, 1 << 20));
    else if (key == "pp")
      c.pp = int(parse_count(key, value, 1, 1 << 16));
    else if (key == "tp")
      c.tp = int(parse_count(key, value, 1, 1 << 16));
    else if (key == "zero")
      c.zero = int(parse_count(key, value, 0, 3));
    else if (key == "microbatches" || key == "micro_batches")
      c.micro_batches = parse_count(key, value, 1, int64_t(1) << 30);
    else if (key == "recompute") {
      VACC_CHECK(value == "none" || value == "selective" || value == "full",
                 "--parallel: recompute=", value, " is not valid; use none, selective or full");
      c.recompute = parse_recompute(value);
    } else if (key == "schedule") {
      VACC_CHECK(value == "1f1b" || value == "gpipe", "--parallel: schedule=", value,
                 " is not valid; use 1f1b or gpipe");
      c.schedule = value == "gpipe" ? PipelineScheduleKind::GPipe : PipelineScheduleKind::OneFOneB;
    } else {
      fail("--parallel: unknown key '", key, "' (keys: ", kKeys, ")");
    }
  }
  return c;
}

std::string ParallelConfig::to_string() const {
  std::ostringstream out;
  out << "dp=" << dp << ",pp=" << pp << ",tp=" << tp << ",zero=" << zero
      << ",microbatches=" << micro_batches << ",recompute=" << recompute_name(recompute)
      << ",schedule=" << schedule_name(schedule);
  return out.str();
}

void ParallelConfig::validate(int devices, int64_t global_batch, const ModelConfig* model) const {
  VACC_CHECK(devices_count_ok(devices), "--parallel dp=", dp, ",pp=", pp, ",tp=", tp, " needs ",
             dp * pp * tp, " devices, but the accelerator has ", devices,
             " (dp x pp x tp must equal the device count)");
  VACC_CHECK(global_batch % (int64_t(dp) * micro_batches) == 0, "the batch of ", global_batch,
             " sequences does not divide into ", dp, " data-parallel replica(s) x ",
             micro_batches, " micro-batches; choose a batch that is a multiple of ",
             int64_t(dp) * micro_batches);
  if (!model) return;
  VACC_CHECK(pp <= model->num_layers, "--parallel pp=", pp, ": more pipeline stages than the ",
             model->num_layers, " layers of the model (every stage needs a layer)");
  VACC_CHECK(model->num_heads % tp == 0, "--parallel tp=", tp, " does not divide the ",
             model->num_heads, " attention heads");
  VACC_CHECK(model->num_kv_heads % tp == 0 || tp % model->num_kv_heads == 0, "--parallel tp=", tp,
             " neither divides nor is a multiple of the ", model->num_kv_heads,
             " key/value heads");
  VACC_CHECK(model->intermediate_size % tp == 0, "--parallel tp=", tp,
             " does not divide the FFN size ", model->intermediate_size);
}

bool ParallelConfig::devices_count_ok(int devices) const { return dp * pp * tp == devices; }

std::string ParallelConfig::describe(int64_t global_batch) const {
  std::ostringstream s;
  s << "num_stages : " << pp << ", num_micro_batches : " << micro_batches
    << ", batch_per_device : " << micro_batch_size(global_batch) << ", "
    << (tp > 1 ? "TP : " + std::to_string(tp) : std::string("No TP"))
    << ", recomputation : "
    << (recompute == Recompute::None ? std::string("false") : recompute_name(recompute))
    << ", distribute_param : " << (zero >= 3 ? "true" : "false") << " (data parallel " << dp
    << ", ZeRO stage " << zero;
  if (pp > 1) s << ", " << (schedule == PipelineScheduleKind::GPipe ? "GPipe" : "1F1B");
  s << ")";
  return s.str();
}

}  // namespace vacc
