#include "vacc/cli/device_backend.h"

#include <cstdlib>

#include "vacc/core/error.h"

#ifdef VACC_HAVE_CUDA
#include "vacc/kernels/cuda/cuda_backend.h"
#endif
#ifdef VACC_HAVE_NCCL
#include "vacc/comm/nccl/nccl_communicator.h"
#endif

namespace vacc::cli {
namespace {

// The launcher's local rank (Open MPI, Slurm), or -1 when none was exported.
int launcher_local_rank() {
  for (const char* name : {"OMPI_COMM_WORLD_LOCAL_RANK", "SLURM_LOCALID", "MPI_LOCALRANKID"}) {
    const char* v = std::getenv(name);
    if (v && *v) return std::atoi(v);
  }
  return -1;
}

}  // namespace

bool cuda_backend_built() {
#ifdef VACC_HAVE_CUDA
  return true;
#else
  return false;
#endif
}

void check_flavor_devices(const Flavor& flavor) {
  if (flavor.is_cpu()) return;
  VACC_CHECK(cuda_backend_built(), "the accelerator ", flavor.name, " has ", flavor.device_model,
             " devices, but this vacc was built without the CUDA backend (nvcc was not found "
             "when it was built; see docs/cuda.md): rebuild on a machine with the CUDA toolkit, "
             "or `vacc switch cpu-N`");
#ifdef VACC_HAVE_CUDA
  const int gpus = cuda_device_count();
  VACC_CHECK(gpus > 0, "the accelerator ", flavor.name, " needs GPUs, but no CUDA GPU can be used "
             "on this machine (", cuda_unavailable_reason(), "): `vacc switch cpu-N` trains on "
             "the CPU");
  VACC_CHECK(gpus >= flavor.devices_per_node, "the accelerator ", flavor.name, " has ",
             flavor.devices_per_node, " GPU(s) per node, but this machine has ", gpus);
#endif
}

LocalGpu local_gpu(int index) {
  LocalGpu g;
#ifdef VACC_HAVE_CUDA
  try {
    g.name = cuda_device_name(index);
    g.memory_bytes = cuda_device_memory_bytes(index);
  } catch (const Error& e) {
    g = LocalGpu{};
    g.unavailable = e.what();
  }
#else
  (void)index;
  g.unavailable = "this vacc was built without the CUDA backend";
#endif
  return g;
}

int local_rank(const Communicator& comm, const Flavor& flavor) {
  const int launcher = launcher_local_rank();
  if (launcher >= 0) return launcher;
  return comm.rank() % std::max(1, flavor.devices_per_node);
}

size_t device_memory_budget(const Flavor& flavor, int local_index) {
  if (flavor.memory_gib_per_device > 0) return flavor.memory_budget_bytes_per_device();
#ifdef VACC_HAVE_CUDA
  if (!flavor.is_cpu()) return cuda_device_memory_bytes(local_index);
#endif
  (void)local_index;
  return DeviceAllocator::kUnlimited;
}

std::unique_ptr<Backend> make_device_backend(const Flavor& flavor, int local_index,
                                             size_t budget, int threads) {
  if (flavor.is_cpu()) return make_cpu_backend(budget, threads);
#ifdef VACC_HAVE_CUDA
  return make_cuda_backend(local_index, budget);  // names the reason when the GPU is unusable
#else
  (void)local_index;
  check_flavor_devices(flavor);  // explains that this vacc has no CUDA backend
  fail("internal: no CUDA backend");
#endif
}

std::unique_ptr<Backend> make_single_device_backend(const Flavor& flavor, int threads) {
  if (flavor.is_cpu()) return make_cpu_backend(DeviceAllocator::kUnlimited, threads);
  return make_device_backend(flavor, 0, device_memory_budget(flavor, 0), threads);
}

std::unique_ptr<Communicator> make_job_communicator(const Flavor& flavor) {
#ifdef VACC_HAVE_NCCL
  if (!flavor.is_cpu() && flavor.total_devices() > 1 && launched_as_rank()) {
    const int local = launcher_local_rank();
    VACC_CHECK(local >= 0, "the accelerator ", flavor.name, ": the launcher exported no local "
               "rank (OMPI_COMM_WORLD_LOCAL_RANK or SLURM_LOCALID), so no GPU can be chosen");
    return make_nccl_communicator(local);
  }
#else
  VACC_CHECK(flavor.is_cpu() || flavor.total_devices() == 1, "the accelerator ", flavor.name,
             " has ", flavor.total_devices(), " GPUs, but this vacc was built without NCCL (its "
             "headers and library were not found beside the CUDA toolkit), so its GPUs cannot "
             "talk to each other: rebuild with NCCL, or use one GPU (gpu-1)");
#endif
  return make_communicator();
}

void connect_streams(Communicator& comm, Backend& backend) {
#if defined(VACC_HAVE_NCCL) && defined(VACC_HAVE_CUDA)
  if (auto* nccl = dynamic_cast<NcclCommunicator*>(&comm))
    nccl->set_compute_stream(static_cast<cudaStream_t>(cuda_compute_stream(backend)));
#else
  (void)comm;
  (void)backend;
#endif
}

int64_t peak_probe_size(const Flavor& flavor) {
#ifdef VACC_SIM_PEAK_PROBE_SIZE
  // The CPU simulator's build of vacc (tests/unit_cuda): its cuBLASLt is plain loops.
  if (!flavor.is_cpu()) return VACC_SIM_PEAK_PROBE_SIZE;
#endif
  return flavor.is_cpu() ? 2048 : 8192;
}

}  // namespace vacc::cli
