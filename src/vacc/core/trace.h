// Trace: a timeline of one training step, as Chrome trace events (open in Perfetto or
// chrome://tracing). One recorder per process (one rank per process); it records only while
// started, so the spans cost nothing the rest of the time. Thread 0 is compute, thread 1
// communication (spans from when an operation starts until it is seen complete).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace vacc {

class Trace {
 public:
  static Trace& instance();

  void start();  // clears earlier events; times are microseconds from now
  void stop();
  bool active() const { return active_; }
  int64_t now_us() const;
  void add(std::string name, const char* category, int thread, int64_t begin_us, int64_t end_us);
  // This process's events as JSON objects (comma-separated, no brackets) with pid = rank.
  std::string events_json(int pid) const;

 private:
  struct Event {
    std::string name;
    const char* category;
    int thread;
    int64_t begin_us, end_us;
  };
  bool active_ = false;
  int64_t origin_ns_ = 0;
  std::vector<Event> events_;
};

// Records [construction, destruction) as one span while the trace is active.
class TraceSpan {
 public:
  TraceSpan(const char* category, std::string name, int thread = 0);
  ~TraceSpan();
  TraceSpan(const TraceSpan&) = delete;
  TraceSpan& operator=(const TraceSpan&) = delete;

 private:
  const char* category_;
  std::string name_;
  int thread_;
  int64_t begin_ = -1;
};

}  // namespace vacc
