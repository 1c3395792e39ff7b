// The CUDA backend: every op of the Backend interface (backend.h) on one NVIDIA GPU, issued on
// a compute stream owned by the backend. Matrix products through cuBLASLt; our own kernels for
// the rest (kernels/cuda/*.cu). Built whenever nvcc is found (VACC_HAVE_CUDA is then defined
// for the code that links vacc_kernels_cuda); see docs/cuda.md.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "vacc/kernels/backend.h"

namespace vacc {

// The number of CUDA GPUs this process can use; 0 when there is none, no driver, or the driver
// is too old for the runtime. Never throws.
int cuda_device_count();

// A short reason why cuda_device_count() is 0 ("no CUDA driver", "no CUDA-capable device",
// ...), or "" when there are GPUs. Never throws.
std::string cuda_unavailable_reason();

// The backend for GPU `device_index` ("cuda:N"), its memory limited to memory_budget_bytes.
// Throws vacc::Error naming the reason when there is no such GPU.
std::unique_ptr<Backend> make_cuda_backend(int device_index = 0,
                                           size_t memory_budget_bytes = DeviceAllocator::kUnlimited);

// Total memory of GPU `device_index` in bytes (cudaMemGetInfo). Throws vacc::Error naming the
// reason when there is no such GPU.
size_t cuda_device_memory_bytes(int device_index);

// The name of GPU `device_index` ("NVIDIA H200"). Throws vacc::Error naming the reason when
// there is no such GPU.
std::string cuda_device_name(int device_index);

// The stream a backend made by make_cuda_backend issues all its work on (a cudaStream_t), so
// that a communicator can order its operations after it; nullptr for any other backend.
void* cuda_compute_stream(Backend& backend);

// The largest logits chunk (f32 or bf16) the classifier of a backend made by make_cuda_backend
// holds (bytes; the memory model's DeviceScratch::classifier_chunk_bytes); 0 for any other
// backend.
int64_t cuda_classifier_chunk_bytes(Backend& backend);

}  // namespace vacc
