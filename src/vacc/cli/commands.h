// The `vacc` subcommands, one file each; main.cpp registers them.
#pragma once

#include <CLI/CLI.hpp>

namespace vacc::cli {

void add_train_command(CLI::App& app);

}  // namespace vacc::cli
