#include "vacc/runtime/device_peak.h"

#include <algorithm>
#include <chrono>

namespace vacc {
namespace {

// FLOP/s of the fastest of 3 (size^3) products after a warm-up; with `comm`, each round starts
// every rank together and counts until the slowest is done.
double matmul_peak(Backend& be, DType dtype, int64_t size, Communicator* comm) {
  Tensor a = be.zeros({size, size}, dtype, MemoryCategory::Buffers, "peak probe a");
  Tensor b = be.zeros({size, size}, dtype, MemoryCategory::Buffers, "peak probe b");
  Tensor c = be.empty({size, size}, DType::F32, MemoryCategory::Buffers, "peak probe c");
  be.fill(a, 0.5f);
  be.fill(b, 0.25f);
  be.matmul(a, false, b, true, c);  // warm-up (primitive creation, page faults)
  be.synchronize();
  double best = 1e30;
  for (int round = 0; round < 3; ++round) {
    if (comm) comm->barrier();
    const auto t0 = std::chrono::steady_clock::now();
    be.matmul(a, false, b, true, c);
    be.synchronize();
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    best = std::min(best, comm ? max_over_ranks(*comm, s) : s);
  }
  return 2.0 * double(size) * double(size) * double(size) / best;
}

}  // namespace

double measure_matmul_peak(Backend& be, DType dtype, int64_t size) {
  return matmul_peak(be, dtype, size, nullptr);
}

double measure_matmul_peak_together(Backend& be, Communicator& comm, DType dtype, int64_t size) {
  return matmul_peak(be, dtype, size, &comm);
}

}  // namespace vacc
