#include "vacc/runtime/metrics_log.h"

#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "vacc/core/error.h"

namespace vacc {

std::string format_step_line(const StepMetrics& m, int64_t total_steps) {
  char buf[256];
  std::snprintf(buf, sizeof buf,
                "[Step %lld/%lld] | Loss: %.4f | Duration: %.3f s | Throughput: %.1f tokens/sec | "
                "MFU: %.1f%%",
                (long long)m.step, (long long)total_steps, m.loss, m.step_time_s,
                m.tokens_per_sec, 100.0 * m.mfu);
  return buf;
}

MetricsFile::MetricsFile(const std::string& path) : path_(path) {
  if (path.empty()) return;
  const auto parent = std::filesystem::path(path).parent_path();
  std::error_code ec;
  if (!parent.empty()) std::filesystem::create_directories(parent, ec);
  out_.open(path, std::ios::out | std::ios::trunc);
  VACC_CHECK(out_.good(), "cannot write the metrics file ", path);
}

void MetricsFile::write(const StepMetrics& m) {
  if (!out_.is_open()) return;
  nlohmann::json j{{"step", m.step},
                   {"loss", m.loss},
                   {"grad_norm", m.grad_norm},
                   {"lr", m.lr},
                   {"tokens", m.tokens},
                   {"step_time_s", m.step_time_s},
                   {"tokens_per_sec", m.tokens_per_sec},
                   {"flops_per_sec", m.flops_per_sec},
                   {"mfu", m.mfu},
                   {"devices", m.devices},
                   {"peak_memory_bytes",
                    std::vector<int64_t>(m.peak_memory_bytes.begin(), m.peak_memory_bytes.end())}};
  write_line(j.dump());
}

void MetricsFile::write_eval(int64_t step, double loss, int64_t tokens) {
  if (!out_.is_open()) return;
  write_line(nlohmann::json{{"step", step}, {"eval_loss", loss}, {"eval_tokens", tokens}}.dump());
}

void MetricsFile::write_line(const std::string& line) {
  out_ << line << "\n";
  out_.flush();
  VACC_CHECK(out_.good(), "writing the metrics file ", path_, " failed");
}

}  // namespace vacc
