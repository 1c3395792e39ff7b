#include "vacc/core/trace.h"

#include <chrono>
#include <nlohmann/json.hpp>

namespace vacc {
namespace {

int64_t steady_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

}  // namespace

Trace& Trace::instance() {
  static Trace trace;
  return trace;
}

void Trace::start() {
  events_.clear();
  origin_ns_ = steady_ns();
  active_ = true;
}

void Trace::stop() { active_ = false; }

int64_t Trace::now_us() const { return (steady_ns() - origin_ns_) / 1000; }

void Trace::add(std::string name, const char* category, int thread, int64_t begin_us,
                int64_t end_us) {
  if (active_) events_.push_back({std::move(name), category, thread, begin_us, end_us});
}

std::string Trace::events_json(int pid) const {
  std::string out;
  for (const Event& e : events_) {
    nlohmann::json j{{"name", e.name},        {"cat", e.category},
                     {"ph", "X"},             {"ts", e.begin_us},
                     {"dur", std::max<int64_t>(e.end_us - e.begin_us, 1)},
                     {"pid", pid},            {"tid", e.thread}};
    if (!out.empty()) out += ",";
    out += j.dump();
  }
  return out;
}

TraceSpan::TraceSpan(const char* category, std::string name, int thread)
    : category_(category), name_(std::move(name)), thread_(thread) {
  if (Trace::instance().active()) begin_ = Trace::instance().now_us();
}

TraceSpan::~TraceSpan() {
  Trace& t = Trace::instance();
  if (begin_ >= 0 && t.active()) t.add(std::move(name_), category_, thread_, begin_, t.now_us());
}

}  // namespace vacc
