// CUDA graphs for Backend::capture_graph: a region's operations captured from the compute
// stream (cudaStreamBeginCapture), instantiated once, and replayed with one cudaGraphLaunch.
// The allocator keeps what the capture touched in its graph pool (cuda_allocator.h) while any
// graph of the context lives.
#pragma once

#include <functional>
#include <memory>

#include "vacc/kernels/backend.h"
#include "vacc/kernels/cuda/cuda_context.h"

namespace vacc::cuda {

std::unique_ptr<OpGraph> capture_graph(CudaContext& ctx, const std::function<void()>& issue);

}  // namespace vacc::cuda
