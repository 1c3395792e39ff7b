// The measurements of `vacc profile`, run by every rank of a job at the same time (so each
// device is measured with the contention the others cause, as in training). Every function is
// collective over `comm`; the results are the same on every rank (combined over the ranks:
// the median time of a device measurement, the slowest rank's time of a collective).
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "vacc/comm/communicator.h"
#include "vacc/kernels/backend.h"
#include "vacc/plan/profile_fit.h"

namespace vacc {

struct ProfileMeasureOptions {
  DType dtype = DType::F32;  // of the matrix products
  bool quick = false;        // fewer shapes and sizes, shorter repetitions
  // GPU-sized shapes: products up to 8192 on a side, a Qwen2.5-0.5B layer's kernels and its
  // 151936-row vocabulary (a CPU's shapes are too small to fill a GPU, so its fit would
  // extrapolate from launch overhead).
  bool gpu = false;
  // Progress, one line per measurement (called on every rank; the caller logs rank 0's).
  std::function<void(const std::string&)> progress;
};

// A kernel measured as a throughput: `bytes` moved (read + written) and `flops` (0 for the
// memory-bound ones) in `seconds`, on one device.
struct KernelSample {
  std::string name;   // stream_add, rmsnorm_forward, ..., adamw, attention
  std::string shape;  // for people: "N=2048 C=1024"
  double bytes = 0, flops = 0, seconds = 0;
};

struct AttentionSample {
  AttentionShape shape;
  double seconds = 0;  // forward + backward
};

// The fused classifier + cross-entropy (loss, dx and dweight) of N rows, V classes, C wide.
struct ClassifierSample {
  int64_t rows = 0, vocab = 0, hidden = 0;
  double seconds = 0;
};

struct DeviceMeasurements {
  std::vector<MatmulSample> matmul;
  std::vector<KernelSample> kernels;  // kernels[0] is the stream (memory bandwidth)
  AttentionSample attention;
  ClassifierSample classifier;
};

// How many measurements measure_device / measure_links take (for progress counts).
int device_measurement_count(const ProfileMeasureOptions& o);
int link_measurement_count(const ProfileMeasureOptions& o, int ranks);

DeviceMeasurements measure_device(Backend& backend, Communicator& comm,
                                  const ProfileMeasureOptions& o);
// What a collective costs beyond its own time when the ranks compute between collectives, as
// in training: ranks that share cores (cpu-4 on 2 cores) drift apart by up to a scheduler
// slice while they compute, and the group waits for its last rank at every collective. For
// each group size g that divides the ranks (2..N), the ranks split into N/g groups, as a
// plan's tensor- or data-parallel groups do, and all repeat (a matrix product, then a 16 KiB
// all-reduce in their group); the cost is that loop's time per iteration less the product's
// time alone (every rank at once, no collective) and the all-reduce's time alone. It grows
// with the compute between collectives (cpu-8 on 2 cores: about 0.1 ms after 0.6 ms of
// compute, 1 ms after 5 ms), so three product sizes are measured. Empty on one rank.
struct SyncSample {
  int ranks = 0;           // group size
  double compute_s = 0;    // the product's time alone, every rank computing
  double seconds = 0;      // the cost per collective, >= 0
};
std::vector<SyncSample> measure_sync(Backend& backend, Communicator& comm,
                                     const ProfileMeasureOptions& o);

// Collectives among the first n ranks for n = 2..size (groups from comm.split), and send/recv
// between ranks 0 and 1; empty on one rank.
std::vector<CollectiveSample> measure_links(Backend& backend, Communicator& comm,
                                            const ProfileMeasureOptions& o);

}  // namespace vacc
