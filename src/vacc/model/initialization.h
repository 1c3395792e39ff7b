// Random initialisation that does not depend on how the model is split: element i of the
// checkpoint tensor NAME gets a value that is a pure function of (seed, NAME, i), so every
// shard of every plan draws exactly the values one device would.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "vacc/kernels/backend.h"
#include "vacc/model/parameter_table.h"

namespace vacc {

// Standard normal N(0, 1) sample number `index` of the stream (seed, name).
float counter_normal(uint64_t seed, const std::string& name, uint64_t index);

// Fills the parameters (a flat f32 tensor laid out by `table`): weight matrices and
// embeddings normal(0, initializer_range), norms 1, biases 0. A tensor-parallel piece of a
// checkpoint tensor (CheckpointTensor row/column ranges) gets the values of its slice of the
// whole tensor: element (i, j) draws number (row_begin + i) * full_cols + col_begin + j. With a range, flat_params
// holds only elements [range.begin, range.end) of the layout (a rank's shard) and only
// those are drawn.
void initialize_parameters(Backend& backend, const ModelConfig& config,
                           const ParameterTable& table, uint64_t seed, Tensor& flat_params);
void initialize_parameters(Backend& backend, const ModelConfig& config,
                           const ParameterTable& table, uint64_t seed, Tensor& flat_params,
                           FlatRange range);

}  // namespace vacc
