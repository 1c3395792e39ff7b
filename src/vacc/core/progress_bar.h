// ProgressBar: a one-line progress display on stderr for long, countable work (loading or
// writing checkpoint shards): `Loading checkpoint shards: [=====>    ] 2/3 shards`.
// On a terminal the line is redrawn in place with \r; otherwise (a log file, a pipe) each
// step prints a plain line of its own, so logs stay readable.
#pragma once

#include <cstdint>
#include <cstdio>
#include <string>

namespace vacc {

class ProgressBar {
 public:
  // label: what is being done ("Loading checkpoint shards"); unit: what is counted
  // ("shards"). A disabled bar prints nothing.
  ProgressBar(std::string label, int64_t total, std::string unit, bool enabled = true,
              std::FILE* out = stderr);
  ~ProgressBar();
  ProgressBar(const ProgressBar&) = delete;
  ProgressBar& operator=(const ProgressBar&) = delete;

  // Marks `n` more units done and redraws.
  void advance(int64_t n = 1);
  // Ends the line on a terminal (idempotent; the destructor calls it).
  void finish();

  // The bar and count for `done` of `total`: "[=====>    ] 2/3 shards" (width characters
  // between the brackets).
  static std::string render(int64_t done, int64_t total, const std::string& unit, int width = 30);

 private:
  void draw();

  std::string label_, unit_;
  int64_t total_, done_ = 0;
  bool enabled_, tty_ = false, finished_ = false;
  std::FILE* out_;
};

}  // namespace vacc
