#include "vacc/kernels/cuda/matmul_autotune.h"

#include <algorithm>
#include <cstdlib>
#include <limits>
#include <string>

#include "vacc/core/error.h"
#include "vacc/kernels/cuda/cuda_check.h"

namespace vacc::cuda {

int autotune_candidates() {
  const char* env = std::getenv("VACC_MATMUL_AUTOTUNE");
  if (!env || !*env) return kAutotuneCandidates;
  char* end = nullptr;
  const long n = std::strtol(env, &end, 10);
  VACC_CHECK(*end == '\0' && n >= 0 && n <= 64, "VACC_MATMUL_AUTOTUNE='", env,
             "': expected the number of cuBLASLt algorithms to time per product, 0 to 64 "
             "(0 or 1: the heuristic's first choice, untimed)");
  return int(n);
}

namespace {
// The two events of one timing, destroyed on every path.
struct EventPair {
  cudaEvent_t start = nullptr, stop = nullptr;
  EventPair() {
    VACC_CUDA_CHECK(cudaEventCreateWithFlags(&start, cudaEventDefault));
    const cudaError_t e = cudaEventCreateWithFlags(&stop, cudaEventDefault);
    if (e != cudaSuccess) cudaEventDestroy(start);
    VACC_CUDA_CHECK(e);
  }
  ~EventPair() {
    cudaEventDestroy(start);
    cudaEventDestroy(stop);
  }
  EventPair(const EventPair&) = delete;
  EventPair& operator=(const EventPair&) = delete;
};
}  // namespace

int fastest_candidate(int count, const std::function<bool(int)>& run, cudaStream_t stream,
                      std::vector<float>* times) {
  EventPair events;
  int best = -1;
  float best_ms = std::numeric_limits<float>::infinity();
  if (times) times->assign(size_t(std::max(count, 0)), best_ms);
  for (int i = 0; i < count; ++i) {
    if (!run(i)) continue;  // also the warm-up: the first launch of a kernel loads it
    VACC_CUDA_CHECK(cudaEventRecord(events.start, stream));
    for (int r = 0; r < kAutotuneRepeats; ++r) run(i);
    VACC_CUDA_CHECK(cudaEventRecord(events.stop, stream));
    VACC_CUDA_CHECK(cudaEventSynchronize(events.stop));
    float ms = 0.0f;
    VACC_CUDA_CHECK(cudaEventElapsedTime(&ms, events.start, events.stop));
    if (times) (*times)[size_t(i)] = ms / kAutotuneRepeats;
    if (ms < best_ms) {
      best_ms = ms;
      best = i;
    }
  }
  return best;
}

}  // namespace vacc::cuda
