#include "vacc/kernels/cuda/cuda_graph.h"

#include <cuda_runtime.h>

#include "vacc/core/error.h"
#include "vacc/kernels/cuda/cuda_check.h"

namespace vacc::cuda {
namespace {

class CudaGraph final : public OpGraph {
 public:
  CudaGraph(CudaContext& ctx, cudaGraphExec_t exec) : ctx_(ctx), exec_(exec) {
    ctx_.graph_created();
  }
  ~CudaGraph() override {
    cudaGraphExecDestroy(exec_);
    cudaGetLastError();
    ctx_.graph_destroyed();
  }
  void replay() override { VACC_CUDA_CHECK(cudaGraphLaunch(exec_, ctx_.stream())); }

 private:
  CudaContext& ctx_;
  cudaGraphExec_t exec_;
};

}  // namespace

std::unique_ptr<OpGraph> capture_graph(CudaContext& ctx, const std::function<void()>& issue) {
  cudaStream_t stream = ctx.stream();
  // Thread-local mode: a call of this thread that a graph cannot hold (a synchronisation, a
  // host copy) fails and invalidates the capture; library threads (NCCL's) are not affected.
  VACC_CUDA_CHECK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal));
  ctx.set_capturing(true);
  auto end_capture = [&] {
    ctx.set_capturing(false);
    cudaGraph_t graph = nullptr;
    const cudaError_t err = cudaStreamEndCapture(stream, &graph);
    cudaGetLastError();
    return std::make_pair(err, graph);
  };
  try {
    issue();
  } catch (...) {
    auto [err, graph] = end_capture();
    if (graph) cudaGraphDestroy(graph);
    ctx.release_unused_graph_pool();
    throw;
  }
  auto [err, graph] = end_capture();
  if (err != cudaSuccess || !graph) {
    ctx.release_unused_graph_pool();
    fail("capturing a CUDA graph failed (", cudaGetErrorName(err), ": ",
         cudaGetErrorString(err),
         "): an operation of the region cannot be captured (a host copy or a wait for the "
         "device)");
  }
  cudaGraphExec_t exec = nullptr;
  const cudaError_t inst = cudaGraphInstantiate(&exec, graph, 0);
  cudaGraphDestroy(graph);
  VACC_CUDA_CHECK(inst);
  return std::make_unique<CudaGraph>(ctx, exec);
}

}  // namespace vacc::cuda
