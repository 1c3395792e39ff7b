#include "vacc/runtime/device_peak.h"

#include <chrono>

namespace vacc {

double measure_matmul_peak(Backend& be, DType dtype, int64_t size) {
  Tensor a = be.zeros({size, size}, dtype, MemoryCategory::Buffers, "peak probe a");
  Tensor b = be.zeros({size, size}, dtype, MemoryCategory::Buffers, "peak probe b");
  Tensor c = be.empty({size, size}, DType::F32, MemoryCategory::Buffers, "peak probe c");
  be.fill(a, 0.5f);
  be.fill(b, 0.25f);
  be.matmul(a, false, b, true, c);  // warm-up (primitive creation, page faults)
  be.synchronize();
  double best = 1e30;
  for (int rep = 0; rep < 3; ++rep) {
    auto t0 = std::chrono::steady_clock::now();
    be.matmul(a, false, b, true, c);
    be.synchronize();
    double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    best = s < best ? s : best;
  }
  return 2.0 * double(size) * double(size) * double(size) / best;
}

}  // namespace vacc
