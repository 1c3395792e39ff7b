// `vacc`: the command line. Errors a user can act on are printed as one line; exit code 1.
#include <cstdio>
#include <exception>

#include "vacc/cli/commands.h"
#include "vacc/cli/rank_launch.h"
#include "vacc/core/error.h"

int main(int argc, char** argv) {
  CLI::App app{"vacc: many devices, one accelerator, for training language models"};
  app.require_subcommand(1);
  vacc::cli::add_train_command(app);
  vacc::cli::set_command_line(argc, argv);
  vacc::cli::add_init_command(app);
  vacc::cli::add_tokenize_command(app);
  vacc::cli::add_eval_command(app);
  vacc::cli::add_generate_command(app);
  vacc::cli::add_switch_command(app);
  vacc::cli::add_status_command(app);
  vacc::cli::add_plan_command(app);
  vacc::cli::add_profile_command(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const vacc::Error& e) {
    std::fprintf(stderr, "vacc: error: %s\n", e.what());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "vacc: internal error: %s\n", e.what());
    return 2;
  }
  return 0;
}
