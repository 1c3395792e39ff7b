// The machine's measured peak for the MFU denominator and the planner: the matrix-product
// throughput the backend reaches on a large square product, in the training dtype.
#pragma once

#include "vacc/comm/communicator.h"
#include "vacc/kernels/backend.h"

namespace vacc {

// FLOP/s of the best of a few (size x size x size) products after a warm-up.
double measure_matmul_peak(Backend& backend, DType dtype, int64_t size = 2048);

// FLOP/s per device while every rank of `comm` computes at once (collective), so ranks
// sharing cores are measured with the share they get in a training step. Each round starts
// all ranks together and lasts until the slowest is done (a single rank's best repetition
// would catch the moments when the others had finished, and swing 1.8x on cpu-8 over
// 2 cores); the fastest of 3 rounds after a warm-up. The same figure on every rank.
double measure_matmul_peak_together(Backend& backend, Communicator& comm, DType dtype,
                                    int64_t size = 2048);

}  // namespace vacc
