// What tests can ask of the simulator's CUDA runtime and cuBLASLt (fake_cuda_runtime.cpp).
#pragma once

#include <cstdint>

namespace vacc_sim {

// cuBLASLt's heuristic offers `count` algorithms from now on (1 by default: timing several
// multiplies the cost of the simulator's loop products). Algorithm i takes (count - i) ms of
// simulated time per product, so the heuristic's first is the slowest and its last the
// fastest; each counts the products it ran since this call. The odd ones sum in the other
// order, so that, as on a GPU, two algorithms' results may differ in their last bits.
void set_cublaslt_algorithms(int count);
int64_t cublaslt_runs_of_algorithm(int index);

// set_cublaslt_algorithms(count) while this lives, 1 after.
struct CublasLtAlgorithms {
  explicit CublasLtAlgorithms(int count) { set_cublaslt_algorithms(count); }
  ~CublasLtAlgorithms() { set_cublaslt_algorithms(1); }
  CublasLtAlgorithms(const CublasLtAlgorithms&) = delete;
  CublasLtAlgorithms& operator=(const CublasLtAlgorithms&) = delete;
};

}  // namespace vacc_sim
