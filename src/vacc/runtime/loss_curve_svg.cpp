#include "vacc/runtime/loss_curve_svg.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "vacc/core/error.h"
#include "vacc/core/text_file.h"

namespace vacc {
namespace {

constexpr double kWidth = 720, kHeight = 420, kLeft = 70, kRight = 20, kTop = 40, kBottom = 50;

std::string escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (c == '<') out += "&lt;";
    else if (c == '>') out += "&gt;";
    else if (c == '&') out += "&amp;";
    else out += c;
  }
  return out;
}

// A "nice" tick step (1, 2 or 5 times a power of ten) giving about `count` ticks over span.
double tick_step(double span, int count) {
  double raw = span / count, mag = std::pow(10.0, std::floor(std::log10(raw)));
  for (double m : {1.0, 2.0, 5.0, 10.0})
    if (raw <= m * mag) return m * mag;
  return 10 * mag;
}

std::string fmt(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", v);
  return buf;
}

}  // namespace

std::string render_loss_curve_svg(const LossCurve& curve, const std::string& title) {
  double x0 = 1e300, x1 = -1e300, y0 = 1e300, y1 = -1e300;
  for (const auto* series : {&curve.train, &curve.eval})
    for (auto [x, y] : *series) {
      if (!std::isfinite(y)) continue;
      x0 = std::min(x0, x), x1 = std::max(x1, x), y0 = std::min(y0, y), y1 = std::max(y1, y);
    }
  if (x0 > x1) x0 = 0, x1 = 1, y0 = 0, y1 = 1;
  if (x1 == x0) x1 = x0 + 1;
  if (y1 == y0) y0 -= 0.5, y1 += 0.5;
  const double pad = 0.05 * (y1 - y0);
  y0 -= pad, y1 += pad;
  const double pw = kWidth - kLeft - kRight, ph = kHeight - kTop - kBottom;
  auto px = [&](double x) { return kLeft + (x - x0) / (x1 - x0) * pw; };
  auto py = [&](double y) { return kTop + (1 - (y - y0) / (y1 - y0)) * ph; };

  std::ostringstream s;
  s << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << kWidth << "\" height=\"" << kHeight
    << "\" font-family=\"sans-serif\" font-size=\"12\">\n"
    << "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
    << "<text x=\"" << kWidth / 2 << "\" y=\"22\" text-anchor=\"middle\" font-size=\"15\">"
    << escape(title) << "</text>\n";
  for (double t = std::ceil(y0 / tick_step(y1 - y0, 6)) * tick_step(y1 - y0, 6); t <= y1;
       t += tick_step(y1 - y0, 6))
    s << "<line x1=\"" << kLeft << "\" x2=\"" << kLeft + pw << "\" y1=\"" << py(t) << "\" y2=\""
      << py(t) << "\" stroke=\"#ddd\"/><text x=\"" << kLeft - 6 << "\" y=\"" << py(t) + 4
      << "\" text-anchor=\"end\">" << fmt(t) << "</text>\n";
  for (double t = std::ceil(x0 / tick_step(x1 - x0, 8)) * tick_step(x1 - x0, 8); t <= x1;
       t += tick_step(x1 - x0, 8))
    s << "<line x1=\"" << px(t) << "\" x2=\"" << px(t) << "\" y1=\"" << kTop + ph << "\" y2=\""
      << kTop + ph + 4 << "\" stroke=\"black\"/><text x=\"" << px(t) << "\" y=\""
      << kTop + ph + 18 << "\" text-anchor=\"middle\">" << fmt(t) << "</text>\n";
  s << "<rect x=\"" << kLeft << "\" y=\"" << kTop << "\" width=\"" << pw << "\" height=\"" << ph
    << "\" fill=\"none\" stroke=\"black\"/>\n"
    << "<text x=\"" << kLeft + pw / 2 << "\" y=\"" << kHeight - 10
    << "\" text-anchor=\"middle\">step</text>\n"
    << "<text transform=\"translate(16," << kTop + ph / 2
    << ") rotate(-90)\" text-anchor=\"middle\">loss</text>\n";
  auto polyline = [&](const std::vector<std::pair<double, double>>& pts, const char* color,
                      const char* label, int row) {
    if (pts.empty()) return;
    s << "<polyline fill=\"none\" stroke=\"" << color << "\" stroke-width=\"1.8\" points=\"";
    for (auto [x, y] : pts)
      if (std::isfinite(y)) s << px(x) << "," << py(y) << " ";
    s << "\"/>\n";
    if (pts.size() < 30)
      for (auto [x, y] : pts)
        if (std::isfinite(y))
          s << "<circle cx=\"" << px(x) << "\" cy=\"" << py(y) << "\" r=\"2.5\" fill=\"" << color
            << "\"/>\n";
    double ly = kTop + 14 + 16 * row;
    s << "<line x1=\"" << kLeft + pw - 120 << "\" x2=\"" << kLeft + pw - 96 << "\" y1=\"" << ly - 4
      << "\" y2=\"" << ly - 4 << "\" stroke=\"" << color << "\" stroke-width=\"2\"/><text x=\""
      << kLeft + pw - 90 << "\" y=\"" << ly << "\">" << label << "</text>\n";
  };
  polyline(curve.train, "#1f77b4", "train loss", 0);
  polyline(curve.eval, "#d62728", "eval loss", 1);
  s << "</svg>\n";
  return s.str();
}

void write_loss_curve_svg(const LossCurve& curve, const std::string& title,
                          const std::string& path) {
  write_file_atomically(path, render_loss_curve_svg(curve, title));
}

}  // namespace vacc
