// `vacc init` (being written).
#include "vacc/cli/commands.h"
#include "vacc/core/error.h"

namespace vacc::cli {

void add_init_command(CLI::App& app) {
  CLI::App* cmd = app.add_subcommand("init", "(not yet available)");
  cmd->allow_extras();
  cmd->callback([] { fail("vacc init is not available in this build yet"); });
}

}  // namespace vacc::cli
