#include "vacc/runtime/pipeline_schedule.h"

#include <algorithm>


namespace vacc {

std::vector<PipelineAction> pipeline_actions(PipelineScheduleKind kind, int stage, int stages,
                                             int64_t m) {
  using K = PipelineAction::Kind;
  std::vector<PipelineAction> a;
  if (kind == PipelineScheduleKind::GPipe) {
    for (int64_t i = 0; i < m; ++i) a.push_back({K::Forward, i});
    for (int64_t i = 0; i < m; ++i) a.push_back({K::Backward, i});
    return a;
  }
  const int64_t warmup = std::min<int64_t>(stages - stage - 1, m);
  for (int64_t i = 0; i < warmup; ++i) a.push_back({K::Forward, i});
  for (int64_t i = 0; i < m - warmup; ++i) {
    a.push_back({K::Forward, warmup + i});
    a.push_back({K::Backward, i});
  }
  for (int64_t i = m - warmup; i < m; ++i) a.push_back({K::Backward, i});
  return a;
}

int64_t pipeline_in_flight(PipelineScheduleKind kind, int stage, int stages, int64_t m) {
  if (kind == PipelineScheduleKind::GPipe) return m;
  return std::min<int64_t>(stages - stage, m);
}

}  // namespace vacc
