// `vacc switch` (being written).
#include "vacc/cli/commands.h"
#include "vacc/core/error.h"

namespace vacc::cli {

void add_switch_command(CLI::App& app) {
  CLI::App* cmd = app.add_subcommand("switch", "(not yet available)");
  cmd->allow_extras();
  cmd->callback([] { fail("vacc switch is not available in this build yet"); });
}

}  // namespace vacc::cli
