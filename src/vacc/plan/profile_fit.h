// Fitting measured timings to the planner's models (`vacc profile`; docs/PLANNER.md
// "Measured profiles"). Pure functions of the measurements.
//
// Both fits are linear in time, weighted so that every point counts by its *relative* error
// (a 4 KiB message and a 64 MiB one, a 256-row product and a 2048-row one, weigh alike):
//   matrix products:  t = 2 w / P + 2 H / P     (w = m n k)   <=>  throughput = P w / (w + H)
//                     which is DeviceProfile's curve with peak P, peak_efficiency 1 and
//                     half_work H;
//   collectives:      t = steps(op, n) * alpha + traffic(op, n) * bytes / beta
//                     the cost model's rings (all-reduce: 2(n-1) steps, 2(n-1)/n of the bytes;
//                     reduce-scatter and all-gather: n-1 steps, (n-1)/n; send: 1 step, all).
#pragma once

#include <string>
#include <vector>

namespace vacc {

// y = slope * x + intercept, fitted by least squares on relative residuals
// ((fit - y) / y); the intercept is kept >= 0 (refitted through the origin when the free fit
// would make it negative). Needs at least one point with x > 0 and every y > 0.
struct LineFit {
  double slope = 0, intercept = 0;
  double rms_relative_error = 0;  // of the fitted line over the points
};
LineFit fit_line_relative(const std::vector<double>& x, const std::vector<double>& y);

struct MatmulSample {
  double m = 0, n = 0, k = 0;
  double seconds = 0;  // of one (m x k) @ (k x n) product
};
struct EfficiencyFit {
  double peak_flops = 0;  // P: the asymptote
  double half_work = 0;   // H: m n k at which half of P is reached
  double rms_relative_error = 0;
};
EfficiencyFit fit_efficiency_curve(const std::vector<MatmulSample>& samples);

enum class CollectiveOp { AllReduce, ReduceScatter, AllGather, SendRecv };
const char* collective_name(CollectiveOp op);
// The ring's latency steps and the fraction of the message each rank sends, for n ranks.
double collective_steps(CollectiveOp op, int n);
double collective_traffic(CollectiveOp op, int n);

struct CollectiveSample {
  CollectiveOp op = CollectiveOp::AllReduce;
  int ranks = 2;
  double bytes = 0;    // the whole message (all-gather: the gathered result)
  double seconds = 0;  // of one operation
};
// Message sizes fit_link takes for latency (at most) and for bandwidth (at least).
inline constexpr double kSmallMessage = 16 * 1024, kLargeMessage = 1024 * 1024;

struct LinkFit {
  double latency = 0;    // alpha, seconds per ring step
  double bandwidth = 0;  // beta, bytes/s
  double rms_relative_error = 0;
};
// One link's alpha and beta under the ring formulas above. When the samples span both small
// messages (<= 16 KiB) and large ones (>= 1 MiB), alpha is the median latency per step of
// the small ones and beta the relative least-squares bandwidth of the large ones (each net of
// the other term, iterated): a communicator whose medium messages switch protocol (or whose
// waits sleep) is not one straight line, and the planner's messages that matter are large
// (gradients, activations) or small (the loss's). Otherwise the relative least-squares fit of
// both over every sample.
LinkFit fit_link(const std::vector<CollectiveSample>& samples);

}  // namespace vacc
