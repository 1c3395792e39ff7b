#include "vacc/kernels/cuda/attention_tuning.h"

#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "vacc/core/error.h"
#include "vacc/core/logging.h"
#include "vacc/kernels/cuda/attention_self_check.h"
#include "vacc/kernels/cuda/cuda_check.h"
#include "vacc/kernels/cuda/matmul_autotune.h"

namespace vacc::cuda {

bool attention_autotune_enabled() {
#ifdef VACC_CUDA_SIM
  // The simulator runs every variant's code alike: timing them would only multiply the
  // simulated tests' time. Its tests of the tuning ask for it.
  constexpr bool kByDefault = false;
#else
  constexpr bool kByDefault = true;
#endif
  const char* env = std::getenv("VACC_ATTENTION_AUTOTUNE");
  if (!env || !*env) return kByDefault;
  const std::string v = env;
  VACC_CHECK(v == "0" || v == "1", "VACC_ATTENTION_AUTOTUNE='", v,
             "': expected 1 (time the attention backward's kernel variants on a problem's first "
             "run; the default on a GPU) or 0 (keep the first variant)");
  return v == "1";
}

void FlashMmaBackwardTuning::run(CudaContext& ctx, const Problem& p,
                                 const std::function<void(int)>& backward) {
  if (const auto it = chosen_.find(p); it != chosen_.end()) return backward(it->second);
  const bool allowed = attention_autotune_enabled();
  const int variants = flash_mma_dkdv_variants_checked(ctx, p.head_dim);
  cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
  VACC_CUDA_CHECK(cudaStreamIsCapturing(ctx.stream(), &capture));
  int& choice = chosen_[p];
  choice = 0;
  if (!allowed || variants < 2 || capture != cudaStreamCaptureStatusNone) return backward(0);
  std::vector<float> ms;
  const int fastest = fastest_candidate(
      variants,
      [&](int v) {
        try {
          backward(v);
          return true;
        } catch (const Error& e) {  // a variant that cannot launch here drops out
          if (v == 0) throw;
          log_warn("attention backward: dK/dV variant " + std::to_string(v) +
                   " could not run (" + e.what() + "); not timed");
          return false;
        }
      },
      ctx.stream(), &ms);
  choice = fastest < 0 ? 0 : fastest;
  ++tuned_;
  if (choice != 0) ++kept_other_;
  std::string times;
  for (size_t v = 0; v < ms.size(); ++v) {
    char buf[48];
    std::snprintf(buf, sizeof buf, "%s%zu: %.3f ms", v ? ", " : "", v, double(ms[v]));
    times += buf;
  }
  log_info("attention backward (batch " + std::to_string(p.batch) + " x " +
           std::to_string(p.seq) + ", " + std::to_string(p.q_heads) + "/" +
           std::to_string(p.kv_heads) + " heads of " + std::to_string(p.head_dim) +
           "): dK/dV variants timed (" + times + "), keeping " + std::to_string(choice) +
           " (VACC_ATTENTION_AUTOTUNE=0 keeps 0)");
  backward(choice);  // the outputs from the variant kept, as every later run
}

int FlashMmaBackwardTuning::chosen(const Problem& p) const {
  const auto it = chosen_.find(p);
  return it == chosen_.end() ? -1 : it->second;
}

}  // namespace vacc::cuda
