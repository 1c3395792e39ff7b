// --cuda-graphs / --no-cuda-graphs, shared by `vacc train`, `vacc plan` and `vacc generate`.
// Without either, graphs are on where they were measured to pay and cannot interact with other
// devices' work: `vacc generate` on a GPU (1.2-1.4x the tokens/s on an H100), and `vacc train`
// / `vacc plan` on a flavor of one GPU (1.06x at batch 1 x 1024, 1.01x at 8 x 1024 for the
// 0.5B model on an H100; docs/cuda.md). With several GPUs they stay off unless asked for: the
// per-layer graphs beside NCCL have run on the simulator only.
#pragma once

#include <string>

#include <CLI/CLI.hpp>

#include "vacc/launch/flavor.h"

namespace vacc::cli {

struct CudaGraphsOption {
  bool on = false, off = false;
};

enum class GraphsDefault { OneGpu, AnyGpu };

// Adds the two flags (mutually exclusive) with their help texts; the default is appended to
// the first.
void add_cuda_graphs_flags(CLI::App* cmd, CudaGraphsOption* option, const std::string& on_help,
                           const std::string& off_help, GraphsDefault by_default);

// Whether the command uses CUDA graphs on `flavor`: the flag given, else the default.
bool cuda_graphs_wanted(const CudaGraphsOption& option, const Flavor& flavor,
                        GraphsDefault by_default);

}  // namespace vacc::cli
