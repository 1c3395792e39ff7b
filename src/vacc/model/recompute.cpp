#include "vacc/model/recompute.h"

#include "vacc/core/error.h"

namespace vacc {

const char* recompute_name(Recompute r) {
  switch (r) {
    case Recompute::None: return "none";
    case Recompute::Selective: return "selective";
    case Recompute::Full: return "full";
  }
  return "?";
}

Recompute parse_recompute(std::string_view name) {
  for (Recompute r : {Recompute::None, Recompute::Selective, Recompute::Full})
    if (name == recompute_name(r)) return r;
  fail("unknown activation recomputation '", name, "' (expected none, selective or full)");
}

}  // namespace vacc
