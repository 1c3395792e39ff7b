#include "vacc/runtime/device_peak.h"

#include <algorithm>
#include <chrono>
#include <functional>

namespace vacc {
namespace {

// The fastest of `rounds` timings of a (size^3) product, each round's time reduced by
// `round_time` (this rank's own, or the slowest rank's).
double best_matmul_seconds(Backend& be, DType dtype, int64_t size, int rounds,
                           const std::function<double(double)>& round_time,
                           const std::function<void()>& before_round) {
  Tensor a = be.zeros({size, size}, dtype, MemoryCategory::Buffers, "peak probe a");
  Tensor b = be.zeros({size, size}, dtype, MemoryCategory::Buffers, "peak probe b");
  Tensor c = be.empty({size, size}, DType::F32, MemoryCategory::Buffers, "peak probe c");
  be.fill(a, 0.5f);
  be.fill(b, 0.25f);
  be.matmul(a, false, b, true, c);  // warm-up (primitive creation, page faults)
  be.synchronize();
  double best = 1e30;
  for (int round = 0; round < rounds; ++round) {
    before_round();
    const auto t0 = std::chrono::steady_clock::now();
    be.matmul(a, false, b, true, c);
    be.synchronize();
    const double s = round_time(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    best = std::min(best, s);
  }
  return best;
}

double product_flops(int64_t size) { return 2.0 * double(size) * double(size) * double(size); }

}  // namespace

double measure_matmul_peak(Backend& be, DType dtype, int64_t size) {
  return product_flops(size) /
         best_matmul_seconds(be, dtype, size, 3, [](double s) { return s; }, [] {});
}

double measure_matmul_peak_together(Backend& be, Communicator& comm, DType dtype, int64_t size) {
  return product_flops(size) /
         best_matmul_seconds(
             be, dtype, size, 3, [&](double s) { return max_over_ranks(comm, s); },
             [&] { comm.barrier(); });
}

}  // namespace vacc
