// The device of each rank: the CPU backend on CPU flavors, the CUDA backend on GPU flavors
// (one GPU per rank, the rank's index on its node), and the communicator that goes with it
// (NCCL between GPU ranks, MPI between CPU ranks). The one place the commands choose between
// the backends, so `vacc train` runs the same code on either.
#pragma once

#include <cstddef>
#include <memory>
#include <string>

#include "vacc/comm/communicator.h"
#include "vacc/kernels/backend.h"
#include "vacc/launch/flavor.h"

namespace vacc::cli {

// Whether this vacc was built with the CUDA backend (nvcc was found when it was built).
bool cuda_backend_built();

// Throws one clear error when the flavor's devices cannot be used by this process: a GPU
// flavor on a vacc built without CUDA, or on a machine with no usable GPU (with the reason).
void check_flavor_devices(const Flavor& flavor);

// GPU `index` of this machine, for people (`vacc status`): its name and memory, or why it
// cannot be used (no CUDA backend in this vacc, no driver, no such GPU).
struct LocalGpu {
  std::string name;           // "NVIDIA H200"; empty when it cannot be used
  size_t memory_bytes = 0;
  std::string unavailable;    // why not; empty when it can be used
};
LocalGpu local_gpu(int index);

// This rank's index among the ranks of its node (the launcher's local rank; 0 alone).
int local_rank(const Communicator& comm, const Flavor& flavor);

// The memory budget of one device: the flavor's, else (a GPU flavor that names none) the
// GPU's total memory; DeviceAllocator::kUnlimited when neither is known.
size_t device_memory_budget(const Flavor& flavor, int local_index);

// The backend of this rank's device. `threads` applies to CPU devices only (0: all cores).
std::unique_ptr<Backend> make_device_backend(const Flavor& flavor, int local_index,
                                             size_t budget, int threads);

// The backend of a one-device command (eval, generate) on `flavor`: its first GPU on a GPU
// flavor (budget: the flavor's, else the GPU's memory); on a CPU flavor the whole CPU (every
// core unless `threads` says otherwise, no budget: one process, not one of the flavor's ranks).
// Callers run check_flavor_devices first, before reading their inputs, for its one clear error
// (an unusable GPU would still throw here, naming the reason).
std::unique_ptr<Backend> make_single_device_backend(const Flavor& flavor, int threads);

// The communicator of a job's rank: NCCL for a GPU flavor of several devices (when built with
// NCCL), else make_communicator() (MPI between ranks, or the single-rank one).
std::unique_ptr<Communicator> make_job_communicator(const Flavor& flavor);

// Orders the communicator's GPU operations after the work the backend issues (NCCL runs on
// its own stream; the CUDA backend on its compute stream). Nothing to do on CPU devices.
void connect_streams(Communicator& comm, Backend& backend);

// The side of the matrix products that measures a device's peak: large enough to fill a GPU.
int64_t peak_probe_size(const Flavor& flavor);

}  // namespace vacc::cli
