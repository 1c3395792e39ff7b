#include "vacc/core/progress_bar.h"

#include <unistd.h>

#include <algorithm>
#include <utility>

namespace vacc {

ProgressBar::ProgressBar(std::string label, int64_t total, std::string unit, bool enabled,
                         std::FILE* out)
    : label_(std::move(label)),
      unit_(std::move(unit)),
      total_(std::max<int64_t>(total, 0)),
      enabled_(enabled && out != nullptr),
      out_(out) {
  if (!enabled_) return;
  tty_ = ::isatty(::fileno(out_)) == 1;
  if (tty_) draw();  // plain output prints a line per step only
}

ProgressBar::~ProgressBar() {
  finish();
}

void ProgressBar::advance(int64_t n) {
  done_ = std::min(total_, done_ + n);
  if (enabled_ && !finished_) draw();
}

void ProgressBar::finish() {
  if (!enabled_ || finished_) return;
  finished_ = true;
  if (tty_) {
    std::fputc('\n', out_);
    std::fflush(out_);
  }
}

void ProgressBar::draw() {
  const std::string line = label_ + ": " + render(done_, total_, unit_);
  if (tty_) {
    std::fprintf(out_, "\r%s", line.c_str());
  } else {
    std::fprintf(out_, "%s\n", line.c_str());
  }
  std::fflush(out_);
}

std::string ProgressBar::render(int64_t done, int64_t total, const std::string& unit, int width) {
  width = std::max(width, 1);
  done = std::clamp<int64_t>(done, 0, std::max<int64_t>(total, 0));
  const int filled = total > 0 ? int(done * width / total) : width;
  std::string bar(size_t(width), ' ');
  for (int i = 0; i < filled; ++i) bar[size_t(i)] = '=';
  if (filled > 0 && filled < width) bar[size_t(filled - 1)] = '>';  // the bar's head
  std::string out = "[" + bar + "] " + std::to_string(done) + "/" + std::to_string(total);
  if (!unit.empty()) out += " " + unit;
  return out;
}

}  // namespace vacc
