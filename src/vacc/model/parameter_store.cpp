#include "vacc/model/parameter_store.h"

namespace vacc {

ResidentParameterStore::ResidentParameterStore(Backend& backend, const ParameterTable& table,
                                               DType compute)
    : backend_(backend), table_(table) {
  params_ = backend_.zeros({table_.total_numel()}, DType::F32, MemoryCategory::Parameters,
                           "parameters (f32 master)");
  grads_ = backend_.zeros({table_.total_numel()}, DType::F32, MemoryCategory::Gradients,
                          "gradients");
  compute_params_ = compute == DType::F32
                        ? params_
                        : backend_.zeros({table_.total_numel()}, compute,
                                         MemoryCategory::Parameters, "parameters (bf16 copy)");
}

void ResidentParameterStore::refresh_compute_copy() {
  if (compute_params_.data() != params_.data()) backend_.copy(params_, compute_params_);
}

Tensor ResidentParameterStore::group_view(const Tensor& flat, size_t g) const {
  const ParameterGroup& group = table_.groups().at(g);
  return flat.view(group.offset, {group.numel});
}

}  // namespace vacc
