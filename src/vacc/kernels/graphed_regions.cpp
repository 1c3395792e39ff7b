#include "vacc/kernels/graphed_regions.h"

#include "vacc/core/error.h"
#include "vacc/core/logging.h"

namespace vacc {

void GraphedRegions::run(int64_t key, const std::function<void()>& issue) {
  Region& r = regions_[key];
  if (!failure_.empty() || !r.warmed) {
    r.warmed = true;
    issue();
    return;
  }
  if (!r.graph) {
    try {
      r.graph = backend_.capture_graph(issue);
    } catch (const Error& e) {
      // Nothing of the region ran on the device (a capture only records), and its host code
      // is the same at every run: running it now does this run's work.
      failure_ = e.what();
      log_warn("CUDA graphs are off for " + what_ + " from here on: a capture failed (" +
               e.what() + "); they run eagerly");
      regions_.clear();
      issue();
      return;
    }
    ++captured_;
  }
  r.graph->replay();
  ++replays_;
}

}  // namespace vacc
