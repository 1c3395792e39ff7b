// The choice among the tensor-core attention backward's dK/dV variants
// (attention_flash_mma_dkdv_variants): they compute the same bits, and which is faster depends on
// the GPU (at head_dim 64 the kernel fits 2 blocks per SM as ptxas likes it, or 3 with spills),
// so a problem's first eager backward times each and the fastest is kept for it.
//
// The choice is fixed once a problem has run: a first run inside a CUDA graph capture (which
// cannot wait for timings) keeps variant 0, so eager steps and replays run the same kernels.
// VACC_ATTENTION_AUTOTUNE=0 keeps variant 0 everywhere (the default on the CUDA simulator).
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <tuple>

#include "vacc/core/dtype.h"
#include "vacc/kernels/cuda/cuda_context.h"

namespace vacc::cuda {

// Whether VACC_ATTENTION_AUTOTUNE allows timing the variants (1: yes; 0: no; unset: yes on a
// GPU, no on the simulator). Any other value is an error.
bool attention_autotune_enabled();

class FlashMmaBackwardTuning {
 public:
  struct Problem {
    int64_t batch, seq, q_heads, kv_heads, head_dim;
    DType qkv_dtype, io_dtype;
    auto key() const {
      return std::make_tuple(batch, seq, q_heads, kv_heads, head_dim, int(qkv_dtype),
                             int(io_dtype));
    }
    bool operator<(const Problem& o) const { return key() < o.key(); }
  };

  // Runs backward(variant) with this problem's variant: on its first eager run (with tuning on
  // and more than one variant that passed the self-check) each variant is timed on the real
  // operands, which the backward only reads, and the fastest runs last.
  void run(CudaContext& ctx, const Problem& p, const std::function<void(int)>& backward);

  // The variant kept for a problem (-1: it has not run); how many problems were timed, and in
  // how many another variant than the first was kept.
  int chosen(const Problem& p) const;
  int tuned_problems() const { return tuned_; }
  int kept_other_than_first() const { return kept_other_; }

 private:
  std::map<Problem, int> chosen_;
  int tuned_ = 0, kept_other_ = 0;
};

}  // namespace vacc::cuda
