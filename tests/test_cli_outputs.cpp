// `--out` of the real binary (OTCAL_CLI) never clobbers what is not otcal's, and interrupted runs
// leave no temporaries (docs/outputs.md): FIFOs, devices, symlinks, read-only and foreign folders
// are refused and left exactly as they were; SIGINT/SIGTERM remove the temporary and end the
// process by that signal; after SIGKILL the next run removes the dead process's temporary and
// says so, while temporaries of live processes and of other hosts are kept. The happy paths
// (a new folder, an earlier otcal output, an empty folder, a regular file) keep working.
#include <gtest/gtest.h>

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "io/npy.hpp"
#include "support/process.hpp"
#include "support/reference.hpp"

extern char** environ;

namespace fs = std::filesystem;
using otcal::index_t;

namespace {

using testsupport::cli;
using testsupport::run_cli;
using testsupport::RunResult;
using testsupport::slurp;
using testsupport::TempDir;

void write_text(const fs::path& p, const std::string& text) { std::ofstream(p, std::ios::binary) << text; }

// The names in `dir` that start with `prefix`.
std::vector<std::string> names_starting(const fs::path& dir, const std::string& prefix) {
  std::vector<std::string> out;
  for (const auto& e : fs::directory_iterator(dir)) {
    const std::string name = e.path().filename().string();
    if (name.rfind(prefix, 0) == 0) out.push_back(name);
  }
  return out;
}

// The host part of the tool's temporary names (output.hpp: letters, digits, '.', '_', '-' kept).
std::string host_tag() {
  char buf[256] = {};
  if (::gethostname(buf, sizeof buf - 1) != 0 || buf[0] == '\0') return "unknown-host";
  std::string s(buf);
  if (s.size() > 64) s.resize(64);
  for (char& c : s)
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '.' && c != '_' && c != '-') c = '_';
  return s;
}

// A pid that belonged to a process which has ended (a child that exited and was reaped).
pid_t dead_pid() {
  const pid_t pid = ::fork();
  if (pid == 0) ::_exit(0);
  int status = 0;
  ::waitpid(pid, &status, 0);
  return pid;
}

// The tool started without a shell, so that the test knows its pid and gets its exact wait status:
// run_in() cannot do either, and a non-interactive shell starts background jobs with SIGINT
// ignored, which the tool (rightly) keeps ignoring. stdout/stderr go to spawn_out.txt/spawn_err.txt.
pid_t spawn_cli(const TempDir& dir, const std::vector<std::string>& args) {
  const std::string bin = cli(), out = dir.file("spawn_out.txt"), err = dir.file("spawn_err.txt");
  std::vector<std::string> words{bin};
  words.insert(words.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (auto& w : words) argv.push_back(w.data());
  argv.push_back(nullptr);
  std::vector<std::string> env_text{"OMP_NUM_THREADS=1"};
  for (char** e = environ; *e != nullptr; ++e)
    if (std::strncmp(*e, "OMP_NUM_THREADS=", 16) != 0) env_text.emplace_back(*e);
  std::vector<char*> envp;
  for (auto& e : env_text) envp.push_back(e.data());
  envp.push_back(nullptr);
  const std::string where = dir.path.string();
  const pid_t pid = ::fork();
  if (pid == 0) {
    // The signals under test with their default action, whatever the test runner set.
    ::signal(SIGINT, SIG_DFL);
    ::signal(SIGTERM, SIG_DFL);
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    const int fo = ::open(out.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    const int fe = ::open(err.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fo < 0 || fe < 0 || ::chdir(where.c_str()) != 0) ::_exit(127);
    ::dup2(fo, STDOUT_FILENO);
    ::dup2(fe, STDERR_FILENO);
    ::execve(bin.c_str(), argv.data(), envp.data());
    ::_exit(127);
  }
  return pid;
}

// The wait status of `pid` once it ended. A deadline against hangs only (a tool that ignored the
// signal would run for hours): past it the process is killed and the test fails.
int wait_for_end(pid_t pid) {
  int status = 0;
  for (int i = 0; i < 3000; ++i) {
    if (::waitpid(pid, &status, WNOHANG) == pid) return status;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  ::kill(pid, SIGKILL);
  ::waitpid(pid, &status, 0);
  ADD_FAILURE() << "otcal (pid " << pid << ") did not end within 150 s of the signal; killed";
  return status;
}

class CliOutputs : public ::testing::Test {
 protected:
  void SetUp() override {
    if (cli().empty() || !fs::exists(cli())) GTEST_SKIP() << "OTCAL_CLI is not set to the otcal binary";
    seed_ = testsupport::fresh_seed();  // printed by every test (SCOPED_TRACE) below
    const ref::Clouds c = ref::random_clouds(n_, m_, 3, seed_);
    otcal::io::write_npy(dir_.file("x.npy"), c.x.data(), {n_, 3}, otcal::DType::float64);
    otcal::io::write_npy(dir_.file("y.npy"), c.y.data(), {m_, 3}, otcal::DType::float64);
  }
  RunResult sinkhorn(const std::string& out, const std::string& epsilon = "0.3") const {
    return run_cli(dir_, "sinkhorn --x x.npy --y y.npy --epsilon " + epsilon + " --quiet --device cpu --out " + out);
  }
  // Needs potentials(): a real plan, so that the old code got as far as renaming over --out.
  RunResult sparsify(const std::string& out) const {
    return run_cli(dir_, "sparsify --x x.npy --y y.npy --potentials sk --mode min_row --device cpu --out " + out);
  }
  void potentials() const { ASSERT_EQ(sinkhorn("sk").exit_code, 0); }
  // A solve that runs for minutes (threshold 0 is never met) on clouds big.x.npy/big.y.npy.
  pid_t start_long_sinkhorn(const std::string& out) const {
    const index_t n = 3000;
    const ref::Clouds c = ref::random_clouds(n, n, 3, seed_ + 1);
    otcal::io::write_npy(dir_.file("big_x.npy"), c.x.data(), {n, 3}, otcal::DType::float64);
    otcal::io::write_npy(dir_.file("big_y.npy"), c.y.data(), {n, 3}, otcal::DType::float64);
    return spawn_cli(dir_, {"sinkhorn", "--x", "big_x.npy", "--y", "big_y.npy", "--epsilon", "0.01", "--threshold", "0",
                            "--max-iterations", "100000000", "--device", "cpu", "--quiet", "--out", out});
  }
  // The name of `out`'s temporary once the running tool made it ("" if it ended first).
  std::string wait_for_temporary(pid_t pid, const std::string& out) const {
    for (int i = 0; i < 3000; ++i) {
      const auto temps = names_starting(dir_.path, out + ".tmp-");
      if (!temps.empty()) return temps.front();
      int status = 0;
      if (::waitpid(pid, &status, WNOHANG) == pid) {
        ADD_FAILURE() << "otcal ended (status " << status << ") before making its temporary: "
                      << slurp(dir_.file("spawn_err.txt"));
        return "";
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    ::kill(pid, SIGKILL);
    ::waitpid(pid, nullptr, 0);
    ADD_FAILURE() << "no temporary beside " << out << " after 150 s";
    return "";
  }
  std::uint64_t seed_ = 0;
  const index_t n_ = 23, m_ = 19;
  TempDir dir_;
};

struct ::stat lstat_of(const std::string& path) {
  struct ::stat sb {};
  EXPECT_EQ(::lstat(path.c_str(), &sb), 0) << path << ": " << std::strerror(errno);
  return sb;
}

void expect_refused(const RunResult& r, const std::string& words) {
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("otcal: error: --out"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find(words), std::string::npos) << r.err;
}

TEST_F(CliOutputs, FifoIsRefusedAndStaysAFifo) {
  SCOPED_TRACE("seed " + std::to_string(seed_));
  potentials();
  for (const char* name : {"pipe.npz", "pipe"}) ASSERT_EQ(::mkfifo(dir_.file(name).c_str(), 0644), 0);
  expect_refused(sparsify("pipe.npz"), "FIFO");
  expect_refused(sinkhorn("pipe"), "FIFO");
  for (const char* name : {"pipe.npz", "pipe"}) {
    EXPECT_TRUE(S_ISFIFO(lstat_of(dir_.file(name)).st_mode)) << name;
    EXPECT_TRUE(names_starting(dir_.path, std::string(name) + ".tmp-").empty()) << name;
  }
}

TEST_F(CliOutputs, CharacterDeviceIsRefusedAndStaysADevice) {
  SCOPED_TRACE("seed " + std::to_string(seed_));
  if (::geteuid() != 0) GTEST_SKIP() << "making a device node needs root";
  const std::string dev = dir_.file("null");  // like /dev/null (c 1 3), but in the test's own folder
  if (::mknod(dev.c_str(), S_IFCHR | 0666, ::makedev(1, 3)) != 0)
    GTEST_SKIP() << "mknod is not permitted here: " << std::strerror(errno);
  potentials();
  expect_refused(sparsify("null"), "character device");
  expect_refused(sinkhorn("null"), "character device");
  const struct ::stat sb = lstat_of(dev);
  EXPECT_TRUE(S_ISCHR(sb.st_mode));
  EXPECT_EQ(sb.st_rdev, ::makedev(1, 3));
  EXPECT_TRUE(names_starting(dir_.path, "null.tmp-").empty());
}

TEST_F(CliOutputs, SymlinksAreRefusedAndTheirTargetsUntouched) {
  SCOPED_TRACE("seed " + std::to_string(seed_));
  potentials();
  write_text(dir_.file("target.npz"), "precious");
  fs::create_symlink("target.npz", dir_.path / "link.npz");
  ASSERT_EQ(sinkhorn("real").exit_code, 0);  // an earlier otcal output, reached through a link
  const std::string f_before = slurp(dir_.file("real/f.npy"));
  fs::create_symlink("real", dir_.path / "linkdir");

  expect_refused(sparsify("link.npz"), "symbolic link");
  expect_refused(sinkhorn("linkdir"), "symbolic link");
  expect_refused(sinkhorn("link.npz"), "symbolic link");
  expect_refused(sparsify("linkdir"), "symbolic link");

  ASSERT_TRUE(fs::is_symlink(dir_.path / "link.npz"));
  EXPECT_EQ(fs::read_symlink(dir_.path / "link.npz"), fs::path("target.npz"));
  EXPECT_EQ(slurp(dir_.file("target.npz")), "precious");
  ASSERT_TRUE(fs::is_symlink(dir_.path / "linkdir"));
  EXPECT_EQ(fs::read_symlink(dir_.path / "linkdir"), fs::path("real"));
  EXPECT_EQ(slurp(dir_.file("real/f.npy")), f_before);
}

TEST_F(CliOutputs, ReadOnlyEmptyFolderIsRefusedAndKeepsItsMode) {
  SCOPED_TRACE("seed " + std::to_string(seed_));
  const std::string ro = dir_.file("ro");
  ASSERT_EQ(::mkdir(ro.c_str(), 0755), 0);
  ASSERT_EQ(::chmod(ro.c_str(), 0555), 0);
  expect_refused(sinkhorn("ro"), "without write permission");
  const struct ::stat sb = lstat_of(ro);
  EXPECT_TRUE(S_ISDIR(sb.st_mode));
  EXPECT_EQ(sb.st_mode & 07777, 0555u);
  EXPECT_TRUE(fs::is_empty(ro));
  EXPECT_TRUE(names_starting(dir_.path, "ro.tmp-").empty());
}

TEST_F(CliOutputs, ForeignNonEmptyFolderIsRefused) {
  SCOPED_TRACE("seed " + std::to_string(seed_));
  fs::create_directory(dir_.path / "mine");
  write_text(dir_.path / "mine" / "notes.txt", "mine");
  expect_refused(sinkhorn("mine"), "did not write");
  EXPECT_EQ(names_starting(dir_.path / "mine", ""), std::vector<std::string>{"notes.txt"});
  EXPECT_EQ(slurp(dir_.file("mine/notes.txt")), "mine");
}

TEST_F(CliOutputs, NewFoldersEarlierOutputsEmptyFoldersAndRegularFilesAreWritten) {
  SCOPED_TRACE("seed " + std::to_string(seed_));
  auto epsilon_of = [&](const std::string& out) {
    return nlohmann::json::parse(slurp(dir_.file(out + "/result.json")))["epsilon"].get<double>();
  };
  ASSERT_EQ(sinkhorn("fresh", "0.3").exit_code, 0);
  const double first = epsilon_of("fresh");
  const RunResult again = sinkhorn("fresh", "0.5");  // replaces the earlier otcal output
  ASSERT_EQ(again.exit_code, 0) << again.err;
  EXPECT_NE(epsilon_of("fresh"), first);
  EXPECT_TRUE(fs::is_regular_file(dir_.path / "fresh" / ".otcal-output"));

  fs::create_directory(dir_.path / "empty");
  ASSERT_EQ(sinkhorn("empty").exit_code, 0);
  EXPECT_TRUE(fs::exists(dir_.path / "empty" / "f.npy"));

  fs::rename(dir_.path / "fresh", dir_.path / "sk");
  write_text(dir_.file("plan.npz"), "an old file");
  const RunResult plan = sparsify("plan.npz");
  ASSERT_EQ(plan.exit_code, 0) << plan.err;
  EXPECT_EQ(slurp(dir_.file("plan.npz")).substr(0, 2), "PK");  // replaced by the .npz (a zip)

  for (const auto& e : fs::directory_iterator(dir_.path)) {
    const std::string name = e.path().filename().string();
    EXPECT_EQ(name.find(".tmp-"), std::string::npos) << name;
    EXPECT_EQ(name.find(".old-"), std::string::npos) << name;
  }
}

TEST_F(CliOutputs, InterruptRemovesTheTemporaryAndEndsByTheSignal) {
  SCOPED_TRACE("seed " + std::to_string(seed_));
  for (const int sig : {SIGINT, SIGTERM}) {
    const std::string out = std::string("run_") + (sig == SIGINT ? "int" : "term");
    SCOPED_TRACE(out);
    const pid_t pid = start_long_sinkhorn(out);
    ASSERT_GT(pid, 0);
    const std::string temp = wait_for_temporary(pid, out);
    ASSERT_FALSE(temp.empty());
    ASSERT_EQ(::kill(pid, sig), 0);
    const int status = wait_for_end(pid);
    ASSERT_TRUE(WIFSIGNALED(status)) << "status " << status << ": " << slurp(dir_.file("spawn_err.txt"));
    EXPECT_EQ(WTERMSIG(status), sig);
    EXPECT_FALSE(fs::exists(fs::symlink_status(dir_.path / temp))) << temp;
    EXPECT_TRUE(names_starting(dir_.path, out).empty());  // no temporary, no half-written output
  }
}

TEST_F(CliOutputs, AfterSigkillTheNextRunRemovesTheDeadProcesssTemporary) {
  SCOPED_TRACE("seed " + std::to_string(seed_));
  const pid_t pid = start_long_sinkhorn("run");
  ASSERT_GT(pid, 0);
  const std::string temp = wait_for_temporary(pid, "run");
  ASSERT_FALSE(temp.empty());
  ASSERT_EQ(::kill(pid, SIGKILL), 0);
  const int status = wait_for_end(pid);
  ASSERT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) << status;
  ASSERT_TRUE(fs::is_directory(dir_.path / temp)) << "SIGKILL cannot be caught: " << temp << " stays";

  const RunResult next = sinkhorn("run");
  ASSERT_EQ(next.exit_code, 0) << next.err;
  EXPECT_FALSE(fs::exists(fs::symlink_status(dir_.path / temp))) << temp;
  EXPECT_NE(next.err.find("removed 1 temporary"), std::string::npos) << next.err;
  EXPECT_NE(next.err.find(temp), std::string::npos) << next.err;
  EXPECT_EQ(names_starting(dir_.path, "run"), std::vector<std::string>{"run"});
}

TEST_F(CliOutputs, TemporariesOfLiveProcessesAndOtherHostsAreKept) {
  SCOPED_TRACE("seed " + std::to_string(seed_));
  potentials();
  const pid_t dead = dead_pid();
  if (::kill(dead, 0) == 0 || errno != ESRCH) GTEST_SKIP() << "pid " << dead << " was reused at once";
  const std::string host = host_tag(), live = std::to_string(::getpid()), gone = std::to_string(dead);
  const std::vector<std::string> removed = {"run.tmp-" + host + "-" + gone + "-aB3xYz",
                                            "run.old-" + host + "-" + gone + "-Qw9eRt"};
  const std::vector<std::string> kept = {"run.tmp-" + host + "-" + live + "-kEep01",  // this test: alive
                                         "run.tmp-elsewhere.example-" + gone + "-oTher1",  // another host
                                         "run.tmp-Zx81Qa"};  // no host and pid: not recognised
  for (const auto& name : removed) fs::create_directory(dir_.path / name);
  for (const auto& name : kept) fs::create_directory(dir_.path / name);
  write_text(dir_.path / removed[0] / "f.npy", "partial");
  const std::string plan_temp = "plan.npz.tmp-" + host + "-" + gone + "-pL4nTm";
  write_text(dir_.path / plan_temp, "partial plan");

  const RunResult run = sinkhorn("run");
  ASSERT_EQ(run.exit_code, 0) << run.err;
  for (const auto& name : removed) {
    EXPECT_FALSE(fs::exists(dir_.path / name)) << name;
    EXPECT_NE(run.err.find(name), std::string::npos) << run.err;
  }
  for (const auto& name : kept) EXPECT_TRUE(fs::is_directory(dir_.path / name)) << name;
  EXPECT_NE(run.err.find("removed 2 temporaries"), std::string::npos) << run.err;
  std::size_t lines = 0;
  for (auto at = run.err.find("otcal: removed"); at != std::string::npos; at = run.err.find("otcal: removed", at + 1))
    ++lines;
  EXPECT_EQ(lines, 1u) << "one line: " << run.err;

  const RunResult plan = sparsify("plan.npz");  // single-file outputs too
  ASSERT_EQ(plan.exit_code, 0) << plan.err;
  EXPECT_FALSE(fs::exists(dir_.path / plan_temp));
  EXPECT_NE(plan.err.find(plan_temp), std::string::npos) << plan.err;
}

}  // namespace
