#include "vacc/runtime/parallel_config.h"

#include <charconv>
#include <sstream>

#include "vacc/core/error.h"

namespace vacc {
namespace {

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
    VACC_CHECK(eq != std::string::npos, "--parallel: '", item,
               "' is not KEY=VALUE (keys: dp, zero, microbatches)");
    const std::string key = item.substr(0, eq), value = item.substr(eq + 1);
    if (key == "dp")
      c.dp = int(parse_count(key, value, 1, 1 << 20));
    else if (key == "zero")
      c.zero = int(parse_count(key, value, 0, 3));
    else if (key == "microbatches" || key == "micro_batches")
      c.micro_batches = parse_count(key, value, 1, int64_t(1) << 30);
    else if (key == "pp" || key == "tp" || key == "recompute")
      fail("--parallel: ", key, " (pipeline/tensor parallelism, recomputation) is not supported "
           "yet; this version splits work by data parallelism (dp, zero, microbatches)");
    else
      fail("--parallel: unknown key '", key, "' (keys: dp, zero, microbatches)");
  }
  return c;
}

void ParallelConfig::validate(int devices, int64_t global_batch) const {
  VACC_CHECK(dp == devices, "--parallel dp=", dp, " does not match the accelerator's ", devices,
             " device(s); without pipeline or tensor parallelism every device is a "
             "data-parallel rank");
  VACC_CHECK(global_batch % (int64_t(dp) * micro_batches) == 0, "the batch of ", global_batch,
             " sequences does not divide into ", dp, " data-parallel rank(s) x ", micro_batches,
             " micro-batches; choose a batch that is a multiple of ",
             int64_t(dp) * micro_batches);
}

std::string ParallelConfig::describe(int64_t global_batch) const {
  std::ostringstream s;
  s << "num_stages : 1, num_micro_batches : " << micro_batches
    << ", batch_per_device : " << micro_batch_size(global_batch)
    << ", No TP, recomputation : false, distribute_param : " << (zero >= 3 ? "true" : "false")
    << " (data parallel " << dp << ", ZeRO stage " << zero << ")";
  return s.str();
}

}  // namespace vacc
