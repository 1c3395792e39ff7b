// ParameterStore: where the model finds its parameters and writes its gradients, one
// ParameterGroup (the embedding, a layer, the head) at a time. The model announces each use,
// so a runtime that shards parameters and gradients across data-parallel ranks (ZeRO) can
// gather a group just before it is needed, free it after, and reduce a group's gradient as
// soon as backward has finished with it — while the model itself never communicates.
//
// Order of calls for one micro-batch: acquire/release of each group in forward order
// (Pass::Forward), then in backward order (Pass::Backward), with gradients_ready(g) once the
// group's gradient contribution of this micro-batch is complete. With tied embeddings the
// head also uses the embedding group, whose gradient is ready only after embed_backward.
#pragma once

#include <memory>

#include "vacc/core/tensor.h"
#include "vacc/kernels/backend.h"
#include "vacc/model/parameter_table.h"

namespace vacc {

enum class Pass { Forward, Backward };

class ParameterStore {
 public:
  virtual ~ParameterStore() = default;

  // The tensors of group g, laid out from the group's offset (ParameterTable::view_in_group):
  // f32 master weights, the compute copy (matrices in the compute dtype; == master in f32),
  // and the f32 gradient (accumulated into). Valid between acquire(g) and release(g).
  virtual Tensor master(size_t g) = 0;
  virtual Tensor compute(size_t g) = 0;
  virtual Tensor gradients(size_t g) = 0;

  virtual void acquire(size_t g, Pass pass) {}
  virtual void release(size_t g, Pass pass) {}
  virtual void gradients_ready(size_t g) {}
};

// Every parameter, gradient and compute copy resident in three flat buffers: one device
// holding its whole shard (no data parallelism, or plain replicas).
class ResidentParameterStore final : public ParameterStore {
 public:
  ResidentParameterStore(Backend& backend, const ParameterTable& table, DType compute);

  Tensor master(size_t g) override { return group_view(params_, g); }
  Tensor compute(size_t g) override { return group_view(compute_params_, g); }
  Tensor gradients(size_t g) override { return group_view(grads_, g); }

  Tensor& parameters() { return params_; }
  Tensor& gradients() { return grads_; }
  // Refreshes the compute copy from the master weights (after they changed).
  void refresh_compute_copy();

 private:
  Tensor group_view(const Tensor& flat, size_t g) const;

  Backend& backend_;
  const ParameterTable& table_;
  Tensor params_, grads_, compute_params_;
};

}  // namespace vacc
