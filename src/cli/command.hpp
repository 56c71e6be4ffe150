#pragma once
// Subcommands register themselves: each src/cli/cmd_*.cpp defines a static RegisterCommand, so a
// new subcommand is a new file and main.cpp never changes.
#include <CLI/CLI.hpp>

#include <functional>
#include <string>

namespace otcal::cli {

// `setup` adds the subcommand to `app` and returns the function to run when it was chosen; that
// function returns the process exit code and may throw otcal::Error (reported by main).
using CommandRun = std::function<int()>;
using CommandSetup = std::function<CommandRun(CLI::App& app)>;

struct RegisterCommand {
  RegisterCommand(int order, std::string name, CommandSetup setup);
};

struct RegisteredCommand {
  int order;
  std::string name;
  CommandSetup setup;
};
std::vector<RegisteredCommand>& registered_commands();

}  // namespace otcal::cli
