// Device memory the CUDA backend allocates for itself, besides the tensors the model and the
// runtime ask for: its sizes live here, below both the backend (kernels/cuda) and the memory
// model (plan), so that the planner's prediction for a GPU counts what the GPU will hold.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>

namespace vacc {

// cuBLASLt's workspace, held for the backend's life: NVIDIA recommends 32 MiB on Hopper.
inline constexpr size_t kCublasLtWorkspaceBytes = size_t(32) << 20;

// The largest output a matrix product that accumulates into it (a weight gradient, beta 1) may
// have for its first run to time cuBLASLt's algorithms (kernels/cuda/matmul_autotune.h): the
// trials write to scratch of that size, for a moment. Larger ones keep the heuristic's choice.
// Like the attention self-checks' scratch, it is taken in the first step only, and the memory
// model (which predicts the steady state) does not count it.
inline constexpr size_t kMatmulAutotuneScratchBytes = size_t(32) << 20;

// The size the CUDA allocator's caching rounds a request up to: 512 B steps below 1 MiB, 2 MiB
// steps above (0 where that overflows). The blocks kept for CUDA graphs are counted in these.
inline size_t gpu_block_bytes(size_t bytes) {
  constexpr size_t kSmallStep = 512, kLargeStep = size_t(2) << 20, kSmallLimit = size_t(1) << 20;
  if (bytes == 0) bytes = 1;
  const size_t step = bytes < kSmallLimit ? kSmallStep : kLargeStep;
  if (bytes > ~size_t{0} - step) return 0;
  return (bytes + step - 1) / step * step;
}

// The largest logits chunk (f32, or bf16 in mixed precision) of the fused classifier +
// cross-entropy on a device with this memory budget: 1/64 of it, between 128 MiB and 1 GiB
// (why: kernels/cuda/classifier_cross_entropy.cpp).
inline int64_t gpu_classifier_chunk_bytes(size_t budget_bytes) {
  constexpr int64_t kMin = int64_t(128) << 20, kMax = int64_t(1) << 30;
  const int64_t share = budget_bytes >= size_t(kMax) * 64 ? kMax : int64_t(budget_bytes / 64);
  return std::clamp(share, kMin, kMax);
}

}  // namespace vacc
