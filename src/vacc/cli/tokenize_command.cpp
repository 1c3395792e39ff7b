// `vacc tokenize` (being written).
#include "vacc/cli/commands.h"
#include "vacc/core/error.h"

namespace vacc::cli {

void add_tokenize_command(CLI::App& app) {
  CLI::App* cmd = app.add_subcommand("tokenize", "(not yet available)");
  cmd->allow_extras();
  cmd->callback([] { fail("vacc tokenize is not available in this build yet"); });
}

}  // namespace vacc::cli
