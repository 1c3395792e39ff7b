// `vacc status` (being written).
#include "vacc/cli/commands.h"
#include "vacc/core/error.h"

namespace vacc::cli {

void add_status_command(CLI::App& app) {
  CLI::App* cmd = app.add_subcommand("status", "(not yet available)");
  cmd->allow_extras();
  cmd->callback([] { fail("vacc status is not available in this build yet"); });
}

}  // namespace vacc::cli
