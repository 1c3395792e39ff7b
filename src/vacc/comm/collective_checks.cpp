#include "vacc/comm/collective_checks.h"

#include <sstream>

#include "vacc/core/error.h"

namespace vacc {

namespace {

std::string list_counts(std::span<const int64_t> counts) {
  std::ostringstream out;
  for (size_t i = 0; i < counts.size(); ++i) {
    if (i == 8 && counts.size() > 9) {
      out << ", ... (" << counts.size() << " in all)";
      break;
    }
    out << (i ? ", " : "") << counts[i];
  }
  return out.str();
}

}  // namespace

void check_comm_tensor(std::string_view op, std::string_view role, const Tensor& t,
                       Device::Kind kind, std::string_view comm_name) {
  VACC_CHECK(t.defined(), op, ": ", role, " is an undefined tensor");
  VACC_CHECK(t.device().kind == kind, op, ": ", role, " is ", t.str(), ", but the ", comm_name,
             " communicator works on ", kind == Device::Kind::CPU ? "host (cpu)" : "cuda",
             " tensors");
}

std::vector<int64_t> check_counts(std::string_view op, std::span<const int64_t> counts, int size) {
  VACC_CHECK(counts.size() == size_t(size), op, ": ", counts.size(), " counts given for ", size,
             " ranks (one count per rank)");
  std::vector<int64_t> offsets(counts.size() + 1, 0);
  for (size_t r = 0; r < counts.size(); ++r) {
    VACC_CHECK(counts[r] >= 0, op, ": count of rank ", r, " is negative (", counts[r], ")");
    offsets[r + 1] = offsets[r] + counts[r];
  }
  return offsets;
}

std::vector<int64_t> check_scatter_gather(std::string_view op, const Tensor& whole,
                                          std::string_view whole_role, const Tensor& part,
                                          std::string_view part_role,
                                          std::span<const int64_t> counts, int rank, int size) {
  std::vector<int64_t> offsets = check_counts(op, counts, size);
  VACC_CHECK(whole.dtype() == part.dtype(), op, ": ", whole_role, " is ", whole.str(), " and ",
             part_role, " is ", part.str(), "; both must have the same dtype");
  VACC_CHECK(whole.numel() == offsets.back(), op, ": ", whole_role, " (", whole.str(), ") has ",
             whole.numel(), " elements but the counts (", list_counts(counts), ") add up to ",
             offsets.back());
  VACC_CHECK(part.numel() == counts[size_t(rank)], op, ": ", part_role, " (", part.str(), ") has ",
             part.numel(), " elements but the count of this rank (", rank, ") is ",
             counts[size_t(rank)]);
  return offsets;
}

bool tensors_overlap(const Tensor& a, const Tensor& b) {
  auto a0 = reinterpret_cast<uintptr_t>(a.data()), b0 = reinterpret_cast<uintptr_t>(b.data());
  return a.nbytes() > 0 && b.nbytes() > 0 && a0 < b0 + b.nbytes() && b0 < a0 + a.nbytes();
}

}  // namespace vacc
