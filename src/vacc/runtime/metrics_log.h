// The per-step log: the console line in the seed's form and, optionally, one JSON object
// per line and step in a metrics file (written as it goes, flushed every step).
#pragma once

#include <fstream>
#include <string>

#include "vacc/runtime/trainer.h"

namespace vacc {

std::string format_step_line(const StepMetrics& m, int64_t total_steps);

class MetricsFile {
 public:
  explicit MetricsFile(const std::string& path);  // empty path: writes nothing
  void write(const StepMetrics& m);
  // An evaluation row: {"step", "eval_loss", "eval_tokens"}.
  void write_eval(int64_t step, double loss, int64_t tokens);

 private:
  void write_line(const std::string& line);
  std::ofstream out_;
  std::string path_;
};

}  // namespace vacc
