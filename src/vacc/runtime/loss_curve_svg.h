// The loss curve of a training run as a self-contained SVG (training loss per step, and
// evaluation loss where measured), written into the run's output folder.
#pragma once

#include <string>
#include <utility>
#include <vector>

namespace vacc {

struct LossCurve {
  std::vector<std::pair<double, double>> train;  // (step, loss)
  std::vector<std::pair<double, double>> eval;   // (step, loss)
};

std::string render_loss_curve_svg(const LossCurve& curve, const std::string& title);

// Writes the SVG to `path` (through a temporary file renamed into place).
void write_loss_curve_svg(const LossCurve& curve, const std::string& title, const std::string& path);

}  // namespace vacc
