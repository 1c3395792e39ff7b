// Autotuning of cuBLASLt's algorithms. Its heuristic ranks the algorithms for a product by a
// model of the GPU, and its first choice is not always the fastest: on the narrow products of
// a small model (the attention projections of Qwen2.5-0.5B, N = 896 or 1152) the H200 ran them
// at a third of the wide ones' rate. So a product's first run times the heuristic's best few on
// the real operands and keeps the fastest: a few milliseconds once per shape.
//
// The choice is measured, so it may differ between runs and ranks where two algorithms are
// within noise of each other; they differ only in the order of their f32 sums.
// VACC_MATMUL_AUTOTUNE=0 keeps the heuristic's first choice (the same algorithm every run).
#pragma once

#include <cuda_runtime.h>

#include <functional>
#include <vector>

namespace vacc::cuda {

// How many of the heuristic's candidates a product's first run times: VACC_MATMUL_AUTOTUNE
// when set (0 or 1: only the heuristic's first, no timing), else kAutotuneCandidates.
constexpr int kAutotuneCandidates = 8;
int autotune_candidates();

// Runs each candidate i in [0, count) once untimed (run(i) returns false when the candidate
// cannot run, which drops it), then kAutotuneRepeats times between two events on `stream`;
// returns the fastest's index, or -1 when none could run. Waits for the stream. `ms`, where
// given, receives each candidate's time per run (infinity for one that could not run).
constexpr int kAutotuneRepeats = 4;
int fastest_candidate(int count, const std::function<bool(int)>& run, cudaStream_t stream,
                      std::vector<float>* ms = nullptr);

}  // namespace vacc::cuda
