#include "vacc/cli/cuda_graphs_option.h"

namespace vacc::cli {
namespace {

bool on_by_default(const Flavor& flavor, GraphsDefault by_default) {
  if (flavor.is_cpu()) return false;
  return by_default == GraphsDefault::AnyGpu || flavor.total_devices() == 1;
}

}  // namespace

void add_cuda_graphs_flags(CLI::App* cmd, CudaGraphsOption* option, const std::string& on_help,
                           const std::string& off_help, GraphsDefault by_default) {
  const std::string when = by_default == GraphsDefault::AnyGpu
                               ? "on by default on a GPU"
                               : "on by default on a flavor of one GPU";
  CLI::Option* on = cmd->add_flag("--cuda-graphs", option->on, on_help + " (" + when + ")");
  CLI::Option* off = cmd->add_flag("--no-cuda-graphs", option->off, off_help);
  on->excludes(off);
}

bool cuda_graphs_wanted(const CudaGraphsOption& option, const Flavor& flavor,
                        GraphsDefault by_default) {
  if (option.off) return false;
  return option.on || on_by_default(flavor, by_default);
}

}  // namespace vacc::cli
