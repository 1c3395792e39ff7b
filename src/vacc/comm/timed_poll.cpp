#include "vacc/comm/timed_poll.h"

#include <algorithm>
#include <sstream>
#include <thread>

namespace vacc {

void TimedPoll::pause(Clock::time_point now) {
  if (now - start_ < std::chrono::microseconds(2000)) {
    std::this_thread::yield();
    return;
  }
  std::this_thread::sleep_for(
      std::min(sleep_, std::chrono::duration_cast<std::chrono::microseconds>(deadline_ - now)));
  sleep_ = std::min(sleep_ * 2, std::chrono::microseconds(200));
}

std::string timeout_message(int rank, std::string_view host, std::string_view what,
                            std::chrono::milliseconds timeout, std::string_view waiting_for) {
  std::ostringstream out;
  out << "rank " << rank << " (host " << host << "): " << what << " timed out after "
      << double(timeout.count()) / 1000.0 << " s waiting for " << waiting_for;
  return out.str();
}

std::string waiting_for_ranks(int size) {
  if (size <= 2) return "the other rank (it died or hangs)";
  return "the other " + std::to_string(size - 1) + " ranks (a rank died or hangs)";
}

std::string waiting_for_peer(int peer, bool receiving) {
  return "rank " + std::to_string(peer) + " (it died or hangs, or never " +
         (receiving ? "sends" : "receives") + ")";
}

}  // namespace vacc
