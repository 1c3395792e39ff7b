// `vacc eval` (being written).
#include "vacc/cli/commands.h"
#include "vacc/core/error.h"

namespace vacc::cli {

void add_eval_command(CLI::App& app) {
  CLI::App* cmd = app.add_subcommand("eval", "(not yet available)");
  cmd->allow_extras();
  cmd->callback([] { fail("vacc eval is not available in this build yet"); });
}

}  // namespace vacc::cli
