// Cost model: the predicted time of one training step of a plan on a cluster, from the
// model's shapes, the device profile and an alpha-beta model of the links. docs/PLANNER.md
// writes the model out; in short, for every pipeline stage and micro-batch:
//   compute   = forward + backward (2x forward) (+ the recomputed forward: full: the whole
//               layer; selective: the attention core), each matrix product at the profile's
//               efficiency for its shape, plus element-wise traffic at memory bandwidth;
//   tp        = 4 all-reduces per layer of N x C activations (2 forward, 2 backward; 2 more
//               under full recomputation, which reruns the forward; not overlapped), ring,
//               on the tp group's link;
//   p2p       = the activations (forward) and their gradient (backward) between stages;
//   zero-3    = parameters gathered forward and backward, overlapped with that compute;
// the pipeline (1F1B and GPipe alike): sum over stages of a micro-batch's time + (M - 1) x
// the slowest stage (the critical path: the first micro-batch through every stage, then the
// bottleneck stage's remaining M - 1; equal stages give (M + pp - 1) x t);
// then the gradient reduction over dp (ZeRO 0: ring all-reduce, ZeRO 1: reduce-scatter, both
// in the last micro-batch; ZeRO 2/3: a reduce-scatter every micro-batch), overlapped with
// backward except the last bucket (a layer's gradients); ZeRO 1-3's
// all-gather of updated parameters; and the optimizer step (memory bound).
// Ranks are ordered tp fastest, then dp, then pp: a group of `size` ranks at `stride` spans
// nodes when stride x size exceeds the devices per node, and then uses the inter-node link.
#pragma once

#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "vacc/core/dtype.h"
#include "vacc/model/model_config.h"
#include "vacc/plan/device_profile.h"
#include "vacc/plan/parallel_config.h"

namespace vacc {

struct LinkSpec {
  LinkSpec(double bandwidth_bytes_per_s = 0, double latency_s = 0)
      : bandwidth(bandwidth_bytes_per_s), latency(latency_s) {}
  double bandwidth = 0;  // bytes/s per device, one direction
  double latency = 0;    // seconds per message (alpha)
  // Measured per collective (`vacc profile`), as the link figures of its ring; where the
  // bandwidth is 0 the collective uses the two above.
  struct Measured {
    double bandwidth = 0, latency = 0;
  };
  Measured all_reduce, reduce_scatter, all_gather, send;
  // Seconds a collective or send costs on top of its alpha-beta time when the ranks compute
  // between collectives (`vacc profile`'s measure_sync: ranks sharing cores drift apart by up
  // to a scheduler slice and wait for each other). 0 for dedicated devices. `sync` is one
  // figure for every collective; `sync_points`, where measured, the cost for the job split
  // into groups of `ranks` after `compute` seconds of work between collectives (ascending
  // ranks, then compute).
  double sync = 0;
  struct SyncPoint {
    int ranks = 0;
    double compute = 0, seconds = 0;
  };
  std::vector<SyncPoint> sync_points;
  // The cost for a group of `ranks` after `compute` seconds: the points of the largest measured
  // group size not above `ranks` (else the smallest), linear from (0, 0) through them and flat
  // after the last; `sync` where none were measured.
  double sync_for(int ranks, double compute = std::numeric_limits<double>::infinity()) const;
};
// The alpha-beta of one kind of transfer on a link: its measured figures, else the link's.
inline LinkSpec::Measured link_for(const LinkSpec& link, const LinkSpec::Measured& op) {
  return op.bandwidth > 0 ? op : LinkSpec::Measured{link.bandwidth, link.latency};
}

// What the planner needs of the accelerator (the CLI fills it from a Flavor).
struct ClusterSpec {
  int devices = 1;
  int devices_per_node = 1;
  double memory_bytes_per_device = 0;  // 0: unknown (the profile's)
  LinkSpec intra_node{300e9, 5e-6}, inter_node{25e9, 10e-6};
  DeviceProfile profile;
};

struct CostQuery {
  int64_t global_batch = 1, seq_len = 1;
  DType dtype = DType::BF16;
};

struct CostBreakdown {
  double step_s = 0;            // the prediction
  double pipeline_s = 0;        // forward + backward of all micro-batches through the pipeline
  double bubble_s = 0;          // pipeline_s minus the slowest stage's busy time
  double compute_s = 0;         // of the slowest stage, all micro-batches (incl. recompute)
  double tp_comm_s = 0;         // of the slowest stage, all micro-batches
  double p2p_comm_s = 0;        // of the slowest stage, all micro-batches
  double zero_gather_s = 0;     // ZeRO-3 gathers of the slowest stage (before overlap)
  double dp_comm_s = 0;         // gradient reduction of the slowest stage (before overlap)
  double dp_exposed_s = 0;      // what of it is not hidden behind backward
  double param_gather_s = 0;    // ZeRO 1-3: updated parameters gathered after the step
  double optimizer_s = 0;
  double model_flops = 0;       // of the step (6N + attention, no recompute)
  std::vector<double> stage_time_s;  // one micro-batch, forward + backward, per stage
  std::string str() const;
};

// Collectives on a ring of n ranks over one link, `compute` seconds of work after the
// previous one (for the link's synchronisation cost; unknown: its largest).
constexpr double kUnknownCompute = std::numeric_limits<double>::infinity();
double ring_all_reduce_seconds(double bytes, int n, const LinkSpec& link,
                               double compute = kUnknownCompute);
double ring_all_gather_seconds(double bytes, int n, const LinkSpec& link,  // bytes: the whole
                               double compute = kUnknownCompute);
double ring_reduce_scatter_seconds(double bytes, int n, const LinkSpec& link,
                                   double compute = kUnknownCompute);
double send_seconds(double bytes, const LinkSpec& link,  // one point-to-point message
                    double compute = kUnknownCompute);
// The link of a group of `size` ranks `stride` apart.
const LinkSpec& group_link(const ClusterSpec& cluster, int stride, int size);

// The fused classifier + cross-entropy's memory traffic per logit (forward and backward in one
// call): f32 logits written and read twice, 12 bytes; bf16 (mixed precision, as the GPU keeps
// them) written, read twice and the gradient written over them, 8. `vacc profile` fits the
// classifier's factor with the same count, so that the factor times the model gives the
// measured time in the measured dtype.
double classifier_logit_bytes(DType dtype);

CostBreakdown predict_step_time(const ModelConfig& config, const ParallelConfig& plan,
                                const CostQuery& query, const ClusterSpec& cluster);

}  // namespace vacc
