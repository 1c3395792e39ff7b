// Regions of host code replayed as graphs (Backend::capture_graph): a training step's layer
// passes (runtime/trainer.cpp) and a generated token's step (model/transformer_decode.cpp) are
// a few hundred kernel launches each, issued by host code that repeats itself exactly (the same
// tensors, shapes and scalars). Captured once, each is then one launch, so the host's
// per-launch cost (microseconds each) no longer paces a GPU that finishes small kernels faster.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>

#include "vacc/kernels/backend.h"

namespace vacc {

class GraphedRegions {
 public:
  // `what` names the regions in the warning a failed capture gives ("the layer passes").
  GraphedRegions(Backend& backend, std::string what) : backend_(backend), what_(std::move(what)) {}

  // Runs region `key` (whose host code must issue the same operations on the same tensors
  // every time): eagerly the first time, so that its lazy set-up (workspaces, the matrix
  // library's plans and their autotuning, kernel self-checks that read results on the host)
  // happens outside any graph; captured and replayed the second time; replayed from then on.
  // Graphs only save launches: if a capture fails, a warning says why, the region runs
  // eagerly at once, and every region stays eager from then on.
  void run(int64_t key, const std::function<void()>& issue);

  int64_t captured() const { return captured_; }
  int64_t replays() const { return replays_; }
  // Why graphs were given up ("" while they work).
  const std::string& failure() const { return failure_; }

 private:
  struct Region {
    bool warmed = false;  // has run eagerly once
    std::unique_ptr<OpGraph> graph;
  };
  Backend& backend_;
  std::string what_;
  std::map<int64_t, Region> regions_;
  int64_t captured_ = 0, replays_ = 0;
  std::string failure_;
};

}  // namespace vacc
