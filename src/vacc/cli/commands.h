// The `vacc` subcommands, one file each; main.cpp registers them.
#pragma once

#include <CLI/CLI.hpp>

namespace vacc::cli {

void add_train_command(CLI::App& app);
void add_init_command(CLI::App& app);      // init_command.cpp
void add_tokenize_command(CLI::App& app);  // tokenize_command.cpp
void add_eval_command(CLI::App& app);      // eval_command.cpp
void add_generate_command(CLI::App& app);  // generate_command.cpp
void add_switch_command(CLI::App& app);    // switch_command.cpp
void add_status_command(CLI::App& app);    // status_command.cpp
void add_plan_command(CLI::App& app);      // plan_command.cpp
void add_profile_command(CLI::App& app);   // profile_command.cpp

}  // namespace vacc::cli
