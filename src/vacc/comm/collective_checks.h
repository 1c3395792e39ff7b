// Argument checks every Communicator shares: a wrong count list, size, dtype or device gets one
// vacc::Error naming the operation, the tensor and the numbers, before anything is started.
#pragma once

#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

#include "vacc/core/tensor.h"

namespace vacc {

// The tensor is defined and lives on a device of `kind`; `comm_name` says which communicator
// refuses it ("mpi", "nccl").
void check_comm_tensor(std::string_view op, std::string_view role, const Tensor& t,
                       Device::Kind kind, std::string_view comm_name);

// One count per rank, none negative. Returns the offsets: offsets[r] = sum(counts[0..r)),
// offsets[size] = the total.
std::vector<int64_t> check_counts(std::string_view op, std::span<const int64_t> counts, int size);

// reduce_scatter / all_gather: same dtype, `whole` has the total of counts elements, `part`
// counts[rank]. Returns the offsets as check_counts does.
std::vector<int64_t> check_scatter_gather(std::string_view op, const Tensor& whole,
                                          std::string_view whole_role, const Tensor& part,
                                          std::string_view part_role,
                                          std::span<const int64_t> counts, int rank, int size);

// Whether the bytes of a and b overlap.
bool tensors_overlap(const Tensor& a, const Tensor& b);

}  // namespace vacc
