// Splitting the layers into pipeline stages, balanced by cost rather than by layer count.
#pragma once

#include <cstdint>
#include <utility>
#include <vector>

#include "vacc/model/model_config.h"

namespace vacc {

// Contiguous layer ranges [begin, end) for `stages` stages, every stage at least one layer,
// minimising the most expensive stage. A layer costs its training FLOPs per token
// (6 x its matrix parameters + 12 x seq x hidden for attention); the last stage also pays
// for the output projection (6 x vocab x hidden), which on small models is worth several
// layers.
std::vector<std::pair<int64_t, int64_t>> split_layers(const ModelConfig& config, int stages,
                                                      int64_t seq_len);

}  // namespace vacc
