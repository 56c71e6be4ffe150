// otcal command-line tool. Subcommands live in cmd_*.cpp and register themselves.
#include <unistd.h>

#include <algorithm>
#include <iostream>
#include <map>
#include <memory>

#include "cli/command.hpp"
#include "cli/interrupts.hpp"
#include "cli/processes.hpp"
#include "cli/strict_numbers.hpp"
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

namespace {

// One write(2) per message: under mpirun every rank reports the same error at the same moment into
// one pipe, and a line written in one call (under PIPE_BUF) is never interleaved with another.
void print_error(const std::string& what) {
  const std::string line = "otcal: error: " + what + "\n";
  std::size_t done = 0;
  while (done < line.size()) {
    const ssize_t w = ::write(STDERR_FILENO, line.data() + done, line.size() - done);
    if (w <= 0) break;
    done += static_cast<std::size_t>(w);
  }
}

int run(int argc, char** argv) {
  using namespace otcal::cli;
  CLI::App app{"otcal: entropic optimal transport and survey calibration in bounded memory"};
  app.require_subcommand(1);
  auto commands = registered_commands();
  std::sort(commands.begin(), commands.end(), [](const auto& a, const auto& b) { return a.order < b.order; });
  std::map<std::string, CommandRun> runs;
  for (auto& c : commands) runs[c.name] = c.setup(app);
  install_strict_numbers(app);  // every numeric flag of every subcommand read exactly
  // CLI11 answers an unknown first word with "A subcommand is required": name the word instead.
  if (argc > 1 && argv[1][0] != '-' && runs.count(argv[1]) == 0) {
    std::string names;
    for (const auto& c : commands) names += (names.empty() ? "" : ", ") + c.name;
    print_error(std::string("unknown command '") + argv[1] + "': the commands are " + names +
                " (otcal --help describes them)");
    return 2;
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) return app.exit(e);  // --help, --version
    // CLI11's own messages ("Could not convert: --epochs = many", "--x is required") in the
    // tool's one error format, so scripts and ranks see every refusal alike.
    print_error(std::string(e.what()) + " (otcal " +
                (app.get_subcommands().empty() ? std::string("--help") : app.get_subcommands()[0]->get_name() + " --help") +
                " lists the flags)");
    return 2;
  }
  try {
    for (auto* sub : app.get_subcommands())
      if (auto it = runs.find(sub->get_name()); it != runs.end()) return it->second();
    return 2;
  } catch (const otcal::Error& e) {
    print_error(e.what());
    return 1;
  } catch (const std::exception& e) {
    print_error(e.what());
    return 1;
  }
}

}  // namespace

int main(int argc, char** argv) {
  otcal::cli::clean_up_outputs_on_interrupt();  // first: before MPI, OpenMP or CUDA start threads
  std::unique_ptr<otcal::cli::ProcessGroup> group;
  try {
    group = std::make_unique<otcal::cli::ProcessGroup>(&argc, &argv);
  } catch (const std::exception& e) {
    print_error(e.what());
    return 2;
  }
  return run(argc, argv);
}
