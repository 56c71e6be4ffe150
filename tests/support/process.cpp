#include "support/process.hpp"

#include <stdlib.h>
#include <sys/wait.h>

#include <cstdlib>
#include <fstream>
#include <iterator>
#include <random>
#include <sstream>
#include <stdexcept>
#include <system_error>

#include "otcal/communicator.hpp"

namespace fs = std::filesystem;

namespace testsupport {

TempDir::TempDir(const std::string& prefix) {
  std::string pattern = (fs::temp_directory_path() / (prefix + "-XXXXXX")).string();
  if (::mkdtemp(pattern.data()) == nullptr) throw std::runtime_error("mkdtemp failed for " + pattern);
  path = pattern;
}

TempDir::~TempDir() {
  std::error_code ec;  // a destructor must not throw; a leftover temp folder is harmless
  fs::remove_all(path, ec);
}

std::string cli() {
  const char* p = std::getenv("OTCAL_CLI");
  return p ? p : "";
}

std::string slurp(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), {});
}

int shell(const std::string& command) {
  const int status = std::system(command.c_str());
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

RunResult run_in(const TempDir& dir, const std::string& cmdline) {
  const std::string out = dir.file("stdout.txt"), err = dir.file("stderr.txt");
  RunResult r;
  r.exit_code = shell("cd " + dir.path.string() + " && " + cmdline + " > " + out + " 2> " + err);
  r.out = slurp(out);
  r.err = slurp(err);
  fs::remove(out);
  fs::remove(err);
  return r;
}

RunResult run_cli(const TempDir& dir, const std::string& args) { return run_in(dir, cli() + " " + args); }

std::uint64_t fresh_seed() {
  // OTCAL_TEST_SEED=<the seed a failure printed> replays that run (every call returns it).
  if (const char* env = std::getenv("OTCAL_TEST_SEED"); env != nullptr && *env != '\0') {
    const std::string text(env);
    std::size_t used = 0;
    unsigned long long value = 0;
    try {
      value = std::stoull(text, &used, 10);
    } catch (const std::exception&) {
      used = 0;
    }
    if (used == 0 || used != text.size() || text.find('-') != std::string::npos)
      throw std::invalid_argument("OTCAL_TEST_SEED must be a decimal unsigned 64-bit integer, got '" + text + "'");
    return static_cast<std::uint64_t>(value);
  }
  return (std::uint64_t{std::random_device{}()} << 32) ^ std::random_device{}();
}

std::string mpiexec() {
  const char* m = std::getenv("OTCAL_MPIEXEC");
  return m != nullptr ? m : "";
}

std::string why_no_ranks() {
  if (!otcal::built_with_mpi()) return "this build has no MPI";
  if (mpiexec().empty()) return "no MPI launcher (OTCAL_MPIEXEC)";
  if (cli().empty()) return "no otcal binary (OTCAL_CLI)";
  return "";
}

RunResult run_ranks(const TempDir& dir, int ranks, const std::string& args) {
  return run_in(dir, "OMP_NUM_THREADS=1 " + mpiexec() + " --allow-run-as-root --oversubscribe -np " +
                         std::to_string(ranks) + " " + cli() + " " + args);
}

std::vector<std::string> error_lines(const std::string& err) {
  std::vector<std::string> out;
  std::istringstream in(err);
  for (std::string line; std::getline(in, line);)
    if (line.rfind("otcal: error: ", 0) == 0) out.push_back(line);
  return out;
}

}  // namespace testsupport
