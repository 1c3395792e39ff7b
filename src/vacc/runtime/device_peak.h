// The machine's measured peak for the MFU denominator: the matrix-product throughput the
// backend reaches on a large square product, in the training dtype.
#pragma once

#include "vacc/kernels/backend.h"

namespace vacc {

// FLOP/s of the best of a few (size x size x size) products after a warm-up.
double measure_matmul_peak(Backend& backend, DType dtype, int64_t size = 2048);

}  // namespace vacc
