// otcal command-line tool. Subcommands live in cmd_*.cpp and register themselves.
#include <algorithm>
#include <iostream>
#include <map>

#include "cli/command.hpp"
#include "otcal/errors.hpp"

namespace otcal::cli {

std::vector<RegisteredCommand>& registered_commands() {
  static std::vector<RegisteredCommand> commands;
  return commands;
}

RegisterCommand::RegisterCommand(int order, std::string name, CommandSetup setup) {
  registered_commands().push_back({order, std::move(name), std::move(setup)});
}

}  // namespace otcal::cli

int main(int argc, char** argv) {
  using namespace otcal::cli;
  CLI::App app{"otcal: entropic optimal transport and survey calibration in bounded memory"};
  app.require_subcommand(1);
  auto commands = registered_commands();
  std::sort(commands.begin(), commands.end(), [](const auto& a, const auto& b) { return a.order < b.order; });
  std::map<std::string, CommandRun> runs;
  for (auto& c : commands) runs[c.name] = c.setup(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;
  }
  try {
    for (auto* sub : app.get_subcommands())
      if (auto it = runs.find(sub->get_name()); it != runs.end()) return it->second();
    return 2;
  } catch (const otcal::Error& e) {
    std::cerr << "otcal: error: " << e.what() << "\n";
    return 1;
  } catch (const std::exception& e) {
    std::cerr << "otcal: error: " << e.what() << "\n";
    return 1;
  }
}
