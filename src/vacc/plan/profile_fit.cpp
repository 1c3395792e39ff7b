#include "vacc/plan/profile_fit.h"

#include <algorithm>
#include <cmath>

#include "vacc/core/error.h"
#include "vacc/core/median.h"

namespace vacc {
namespace {

// Weighted least squares of y = a x1 + b x2 (no free constant), weights 1/y^2. With
// fix_b the second term is dropped (b = 0).
void fit_two(const std::vector<double>& x1, const std::vector<double>& x2,
             const std::vector<double>& y, bool fix_b, double& a, double& b) {
  double s11 = 0, s12 = 0, s22 = 0, s1y = 0, s2y = 0;
  for (size_t i = 0; i < y.size(); ++i) {
    const double w = 1.0 / (y[i] * y[i]);
    s11 += w * x1[i] * x1[i];
    s12 += w * x1[i] * x2[i];
    s22 += w * x2[i] * x2[i];
    s1y += w * x1[i] * y[i];
    s2y += w * x2[i] * y[i];
  }
  const double det = s11 * s22 - s12 * s12;
  if (!fix_b && std::abs(det) > 1e-12 * s11 * s22) {
    a = (s1y * s22 - s2y * s12) / det;
    b = (s11 * s2y - s12 * s1y) / det;
  } else {
    a = s11 > 0 ? s1y / s11 : 0;
    b = 0;
  }
}

double rms_relative(const std::vector<double>& x1, const std::vector<double>& x2,
                    const std::vector<double>& y, double a, double b) {
  double s = 0;
  for (size_t i = 0; i < y.size(); ++i) {
    const double r = (a * x1[i] + b * x2[i] - y[i]) / y[i];
    s += r * r;
  }
  return y.empty() ? 0 : std::sqrt(s / double(y.size()));
}

// y = a x1 + b x2 with a > 0 and b >= 0: the free fit, else b = 0.
void fit_nonnegative(const std::vector<double>& x1, const std::vector<double>& x2,
                     const std::vector<double>& y, double& a, double& b) {
  VACC_CHECK(!y.empty(), "a fit needs at least one measurement");
  for (double v : y) VACC_CHECK(v > 0 && std::isfinite(v), "a fit needs positive times (got ", v, ")");
  fit_two(x1, x2, y, false, a, b);
  if (b < 0 || a <= 0) fit_two(x1, x2, y, true, a, b);
  VACC_CHECK(a > 0, "the measurements do not grow with size: no fit");
}

}  // namespace

LineFit fit_line_relative(const std::vector<double>& x, const std::vector<double>& y) {
  VACC_CHECK(x.size() == y.size(), "fit_line_relative: ", x.size(), " x for ", y.size(), " y");
  const std::vector<double> ones(x.size(), 1.0);
  LineFit f;
  fit_nonnegative(x, ones, y, f.slope, f.intercept);
  f.rms_relative_error = rms_relative(x, ones, y, f.slope, f.intercept);
  return f;
}

EfficiencyFit fit_efficiency_curve(const std::vector<MatmulSample>& samples) {
  std::vector<double> w, t;
  for (const MatmulSample& s : samples) {
    w.push_back(s.m * s.n * s.k);
    t.push_back(s.seconds);
  }
  const LineFit line = fit_line_relative(w, t);  // t = (2/P) w + 2H/P
  EfficiencyFit f;
  f.peak_flops = 2.0 / line.slope;
  f.half_work = line.intercept / line.slope;
  f.rms_relative_error = line.rms_relative_error;
  return f;
}

const char* collective_name(CollectiveOp op) {
  switch (op) {
    case CollectiveOp::AllReduce: return "all_reduce";
    case CollectiveOp::ReduceScatter: return "reduce_scatter";
    case CollectiveOp::AllGather: return "all_gather";
    case CollectiveOp::SendRecv: return "send_recv";
  }
  return "?";
}

double collective_steps(CollectiveOp op, int n) {
  switch (op) {
    case CollectiveOp::AllReduce: return 2.0 * (n - 1);
    case CollectiveOp::ReduceScatter:
    case CollectiveOp::AllGather: return double(n - 1);
    case CollectiveOp::SendRecv: return 1.0;
  }
  return 1.0;
}

double collective_traffic(CollectiveOp op, int n) {
  switch (op) {
    case CollectiveOp::AllReduce: return 2.0 * (n - 1) / n;
    case CollectiveOp::ReduceScatter:
    case CollectiveOp::AllGather: return double(n - 1) / n;
    case CollectiveOp::SendRecv: return 1.0;
  }
  return 1.0;
}

LinkFit fit_link(const std::vector<CollectiveSample>& samples) {
  std::vector<double> traffic, steps, t;
  bool small = false, large = false;
  for (const CollectiveSample& s : samples) {
    VACC_CHECK(s.ranks >= 2, "a collective sample needs at least 2 ranks");
    traffic.push_back(collective_traffic(s.op, s.ranks) * s.bytes);
    steps.push_back(collective_steps(s.op, s.ranks));
    t.push_back(s.seconds);
    small = small || s.bytes <= kSmallMessage;
    large = large || s.bytes >= kLargeMessage;
  }
  double inv_beta = 0, alpha = 0;
  fit_nonnegative(traffic, steps, t, inv_beta, alpha);
  if (small && large) {
    for (int iter = 0; iter < 50; ++iter) {
      std::vector<double> per_step;
      double sxy = 0, sxx = 0;
      for (size_t i = 0; i < t.size(); ++i) {
        if (samples[i].bytes <= kSmallMessage)
          per_step.push_back(std::max(0.0, (t[i] - traffic[i] * inv_beta) / steps[i]));
        if (samples[i].bytes >= kLargeMessage) {
          const double y = t[i] - alpha * steps[i], w = 1.0 / (t[i] * t[i]);
          sxy += w * traffic[i] * y;
          sxx += w * traffic[i] * traffic[i];
        }
      }
      alpha = median(per_step);  // per_step is not empty: there are small messages
      if (sxy > 0) inv_beta = sxy / sxx;
    }
  }
  LinkFit f;
  f.bandwidth = 1.0 / inv_beta;
  f.latency = alpha;
  f.rms_relative_error = rms_relative(traffic, steps, t, inv_beta, alpha);
  return f;
}

}  // namespace vacc
