#include "vacc/runtime/graphed_regions.h"

namespace vacc {

void GraphedRegions::run(int64_t key, const std::function<void()>& issue) {
  Region& r = regions_[key];
  if (!r.graph && r.eager_runs == 0) {
    ++r.eager_runs;
    issue();
    return;
  }
  if (!r.graph) {
    r.graph = backend_.capture_graph(issue);
    ++captured_;
  }
  r.graph->replay();
  ++replays_;
}

}  // namespace vacc
