// Activation recomputation: what a layer keeps from forward for backward, and what it
// recomputes just before its backward (trading a second forward of part of the layer for
// memory). Every mode runs the same ops in the same order on the same inputs, so losses
// and gradients are bitwise identical whichever is chosen.
#pragma once

#include <string>
#include <string_view>

namespace vacc {

enum class Recompute {
  None,       // every layer keeps all its activations
  Selective,  // attention internals (qkv after RoPE, attention output, lse) recomputed
              // from the kept norm1 (Korthikanti et al.); the norms and MLP side kept
  Full,       // only the layer input kept; the whole layer's forward rerun before backward
};

// "none", "selective", "full".
const char* recompute_name(Recompute r);
// Parses those names; throws vacc::Error naming the allowed values otherwise.
Recompute parse_recompute(std::string_view name);

}  // namespace vacc
