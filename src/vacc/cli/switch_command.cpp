// `vacc switch [NAME]`: pick the accelerator (flavor) by name, by flavor file, or from a list.
#include <iostream>
#include <string>

#include "vacc/cli/command_flavor.h"
#include "vacc/cli/commands.h"
#include "vacc/cli/device_backend.h"
#include "vacc/core/error.h"
#include "vacc/launch/accelerator_state.h"
#include "vacc/launch/flavor.h"

namespace vacc::cli {
namespace {

void announce(const Flavor& f) {
  std::cout << "Accelerator switched to " << f.name << ": " << f.describe() << "\n";
  // A flavor whose devices this machine lacks is said at once, not at the next job's start.
  try {
    check_flavor_devices(f);
  } catch (const Error& e) {
    std::cout << "Note: jobs on it cannot start here: " << e.what()
              << " (`vacc plan` plans for it anywhere)\n";
  }
}

std::string choose_from_list() {
  const std::vector<Flavor> flavors = builtin_flavors();
  const std::string current = current_flavor_name();
  std::cout << "Current accelerator flavor: " << current << "\n";
  std::cout << "Choose the accelerator flavor:\n";
  for (size_t i = 0; i < flavors.size(); ++i)
    std::cout << "  " << i + 1 << ") " << flavors[i].name << " : " << flavors[i].describe()
              << (flavors[i].name == current ? "  *" : "") << "\n";
  std::cout << "Enter the number (1-" << flavors.size() << "): " << std::flush;
  std::string line;
  VACC_CHECK(std::getline(std::cin, line) && line.find_first_not_of(" \t\r") != std::string::npos,
             "no choice given on standard input; run `vacc switch NAME` (e.g. vacc switch cpu-4)");
  const size_t a = line.find_first_not_of(" \t\r"), b = line.find_last_not_of(" \t\r");
  const std::string text = line.substr(a, b - a + 1);
  VACC_CHECK(text.size() <= 4 && text.find_first_not_of("0123456789") == std::string::npos, "'",
             text, "' is not a number from 1 to ", flavors.size());
  const size_t choice = std::stoul(text);
  VACC_CHECK(choice >= 1 && choice <= flavors.size(), "choice ", choice,
             " is out of range: pick a number from 1 to ", flavors.size());
  return flavors[choice - 1].name;
}

}  // namespace

void add_switch_command(CLI::App& app) {
  CLI::App* cmd = app.add_subcommand(
      "switch", "Pick the accelerator (flavor); with no NAME, choose from a numbered list");
  static std::string name, flavor_file;
  cmd->add_option("name", name, "Flavor name: cpu-N, cpu-NxSIZE (cpu-4x2g), gpu-N");
  cmd->add_option("--flavor-file", flavor_file, "A flavor file (JSON) describing the accelerator");
  cmd->callback([] {
    VACC_CHECK(name.empty() || flavor_file.empty(),
               "give a flavor NAME or --flavor-file, not both");
    std::string chosen = !flavor_file.empty() ? flavor_file : name;
    if (chosen.empty()) chosen = choose_from_list();
    set_current_flavor(chosen);
    announce(command_flavor(""));  // a GPU flavor named after this machine's GPU
  });
}

}  // namespace vacc::cli
