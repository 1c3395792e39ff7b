// TimedPoll: the wait loop of every communicator. It polls until the operation is done or the
// timeout passes; between polls it yields for the first 2 ms, then sleeps 50 us, doubling up
// to 200 us (ranks that share cores leave them to the peers they wait for). MPI moves a large
// message only while both ranks poll, so every sleep delays the peer too: with 1 ms sleeps
// each collective of 16 KiB-1 MiB took 1-2 ms, and tp=2 steps of 16 micro-batches took 2.4x
// as long (bench of 2026-11-26 in docs/PLANNER.md).
#pragma once

#include <chrono>
#include <string>
#include <string_view>

namespace vacc {

class TimedPoll {
 public:
  using Clock = std::chrono::steady_clock;

  explicit TimedPoll(std::chrono::milliseconds timeout)
      : start_(Clock::now()), deadline_(start_ + timeout) {}

  // Polls `done` (a callable returning bool) until it returns true (then true) or the timeout
  // passes (then false; `done` was polled at least once after the deadline).
  template <typename Done>
  bool until(Done&& done) {
    for (;;) {
      if (done()) return true;
      Clock::time_point now = Clock::now();
      if (now >= deadline_) return done();
      pause(now);
    }
  }

 private:
  void pause(Clock::time_point now);

  Clock::time_point start_;
  Clock::time_point deadline_;
  std::chrono::microseconds sleep_{50};
};

// "rank 1 (host h): all_reduce of 123456 floats timed out after 60 s waiting for the other 3
// ranks (a rank died or hangs)": what every CommTimeout says.
std::string timeout_message(int rank, std::string_view host, std::string_view what,
                            std::chrono::milliseconds timeout, std::string_view waiting_for);

// "the other 3 ranks (a rank died or hangs)" / "rank 2 (it died or hangs, or never sends)".
std::string waiting_for_ranks(int size);
std::string waiting_for_peer(int peer, bool receiving);

}  // namespace vacc
