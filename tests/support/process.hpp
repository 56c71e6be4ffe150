#pragma once
// Helpers for tests that work with files and run programs: a self-deleting temporary folder,
// the otcal binary under test (OTCAL_CLI), shell runs with captured output, fresh random seeds.
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

namespace testsupport {

// A fresh folder under the system temp dir (mkdtemp: unique even across parallel tests), removed
// with everything in it when the object goes away.
struct TempDir {
  std::filesystem::path path;
  explicit TempDir(const std::string& prefix = "otcal_test");
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  std::string file(const std::string& name) const { return (path / name).string(); }
};

// The otcal binary from the OTCAL_CLI environment variable ("" when it is not set).
std::string cli();

// The whole file as bytes ("" if it cannot be opened).
std::string slurp(const std::filesystem::path& path);

// std::system(command) -> the command's exit code (-1 if it did not exit normally).
int shell(const std::string& command);

struct RunResult {
  int exit_code = -1;
  std::string out, err;
};

// Runs the shell `cmdline` inside `dir` (paths must be shell-safe: test paths have no spaces),
// capturing stdout and stderr; the capture files are removed again so `dir` lists only what the
// command wrote.
RunResult run_in(const TempDir& dir, const std::string& cmdline);
// run_in with the otcal binary: "<cli()> <args>".
RunResult run_cli(const TempDir& dir, const std::string& args);

// The tool under mpirun (the test_cli_mpi_* tests). mpiexec(): the launcher ctest passes in
// OTCAL_MPIEXEC ("" when unset); why_no_ranks(): why such a test must skip here ("" when it can
// run: an MPI build, a launcher and the otcal binary); run_ranks: run_in with
// "<mpiexec> --allow-run-as-root --oversubscribe -np <ranks> <cli()> <args>", one OpenMP thread
// per rank; error_lines: the "otcal: error: ..." lines of a run's stderr (the tool writes each in
// one call, so the ranks' lines never interleave).
std::string mpiexec();
std::string why_no_ranks();
RunResult run_ranks(const TempDir& dir, int ranks, const std::string& args);
std::vector<std::string> error_lines(const std::string& err);

// The seed of a randomised test: 64 bits from std::random_device, or the value of the environment
// variable OTCAL_TEST_SEED when it is set (a decimal unsigned integer; anything else throws
// std::invalid_argument), so that a failure reported with its seed can be replayed:
//   OTCAL_TEST_SEED=<seed> ./tests/test_x --gtest_filter=...
// Rule for the tests: draw exactly one seed per test with this function, print it with
// SCOPED_TRACE("seed " + std::to_string(seed)) before anything can fail, and derive every other
// random stream from it (seed + 1, a generator seeded with it, ...), never from a second fresh
// seed, so that the one printed value reproduces the whole test.
std::uint64_t fresh_seed();

}  // namespace testsupport
