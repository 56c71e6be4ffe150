// The tool's inputs before anything large is allocated: a .npy header that announces more than the
// memory budget or the host can hold is refused from the header alone (naming the flag, the bytes
// and the budget), `otcal demo --n` likewise, and a .npy that arrives through a pipe (not seekable)
// is read like the file it came from, or refused as truncated when the stream ends early.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "io/npy.hpp"
#include "support/process.hpp"
#include "support/reference.hpp"

namespace fs = std::filesystem;
using otcal::DType;
using otcal::index_t;

namespace {

using testsupport::cli;
using testsupport::fresh_seed;
using testsupport::run_cli;
using testsupport::run_in;
using testsupport::RunResult;
using testsupport::slurp;
using testsupport::TempDir;

bool has(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

// A float64 .npy whose header announces [rows, cols] and whose payload is a hole (a sparse file:
// the disk holds nothing, and reading it would yield zeros).
void write_sparse_npy(const std::string& path, index_t rows, index_t cols) {
  const std::string header = otcal::io::detail::npy_header("<f8", {rows, cols});
  {
    std::ofstream out(path, std::ios::binary);
    out.write(header.data(), static_cast<std::streamsize>(header.size()));
  }
  fs::resize_file(path, header.size() + static_cast<std::uint64_t>(rows * cols) * 8);
}

class CliInputs : public ::testing::Test {
 protected:
  void SetUp() override {
    if (cli().empty() || !fs::exists(cli())) GTEST_SKIP() << "OTCAL_CLI is not set to the otcal binary";
  }
  TempDir dir_;
};

TEST_F(CliInputs, HeaderBeyondTheBudgetIsRefusedBeforeReading) {
  // 10^6 x 600 float64 = 4.8 GB announced; a 64 MiB budget cannot hold its resident copy.
  write_sparse_npy(dir_.file("big.npy"), 1000000, 600);
  const RunResult r = run_cli(dir_, "sinkhorn --x big.npy --out out --memory-budget 64MiB --device cpu --quiet");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_TRUE(has(r.err, "otcal: error:")) << r.err;
  EXPECT_TRUE(has(r.err, "--x")) << r.err;
  EXPECT_TRUE(has(r.err, "--memory-budget")) << r.err;
  EXPECT_TRUE(has(r.err, "67108864")) << "names the budget in bytes: " << r.err;
  EXPECT_TRUE(has(r.err, "4816000000 bytes")) << "names the resident bytes (x, a and b: 4.8e9 + 2 * 8e6): " << r.err;
  EXPECT_FALSE(has(r.err, "bad_alloc")) << r.err;
  EXPECT_FALSE(fs::exists(dir_.path / "out"));
}

TEST_F(CliInputs, StreamBeyondTheHostMemoryIsRefusedBeforeReading) {
  // A header announcing 10^9 x 10^4 float64 (80 TB) through a pipe: a copy no host can take, with
  // a budget large enough that only the host memory refuses it.
  const std::string header = otcal::io::detail::npy_header("<f8", {1000000000, 10000});
  {
    std::ofstream out(dir_.file("header.npy"), std::ios::binary);
    out.write(header.data(), static_cast<std::streamsize>(header.size()));
  }
  const RunResult r = run_in(dir_, "cat header.npy | " + cli() +
                                       " sinkhorn --x /dev/stdin --out out --memory-budget 1000000TiB --device cpu -q");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_TRUE(has(r.err, "--x '/dev/stdin'")) << r.err;
  EXPECT_TRUE(has(r.err, "host memory")) << r.err;
  // The piped copy (8e13) and its resident copy on the CPU (8e13 + weights 2 * 8e9).
  EXPECT_TRUE(has(r.err, "160016000000000 bytes")) << "names the host memory needed: " << r.err;
  EXPECT_TRUE(has(r.err, "MemAvailable")) << r.err;
  EXPECT_FALSE(has(r.err, "bad_alloc")) << r.err;
}

TEST_F(CliInputs, DemoRefusesASizeThatDoesNotFit) {
  const RunResult r = run_cli(dir_, "demo --n 1000000000 --device cpu --quiet");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_TRUE(has(r.err, "otcal: error: --n 1000000000")) << r.err;
  EXPECT_TRUE(has(r.err, "--memory-budget") || has(r.err, "host memory")) << r.err;
  EXPECT_FALSE(has(r.err, "bad_alloc")) << r.err;
  const RunResult zero = run_cli(dir_, "demo --n 0 --device cpu --quiet");
  EXPECT_NE(zero.exit_code, 0);
  EXPECT_TRUE(has(zero.err, "--n 0")) << zero.err;
}

TEST_F(CliInputs, PipeGivesTheSamePotentialsAsTheFile) {
  const std::uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  const index_t n = 41, m = 23, d = 3;
  const ref::Clouds c = ref::random_clouds(n, m, d, seed);
  for (DType dt : {DType::float64, DType::float32}) {
    const std::string prec = otcal::dtype_name(dt);
    SCOPED_TRACE(prec);
    otcal::io::write_npy(dir_.file("x.npy"), c.x.data(), {n, d}, dt);
    otcal::io::write_npy(dir_.file("y.npy"), c.y.data(), {m, d}, dt);
    const std::string solver = " --epsilon 0.05 --threshold 1e-6 --device cpu --quiet --precision " + prec;
    const RunResult file = run_cli(dir_, "sinkhorn --x x.npy --y y.npy --out file_" + prec + solver);
    ASSERT_EQ(file.exit_code, 0) << file.err;
    // --x from stdin, --y from a process substitution (/dev/fd/63): two pipes.
    const RunResult pipe = run_in(dir_, "cat x.npy | bash -c '" + cli() + " sinkhorn --x /dev/stdin --y <(cat y.npy)" +
                                            " --out pipe_" + prec + solver + "'");
    ASSERT_EQ(pipe.exit_code, 0) << pipe.err;
    for (const char* f : {"f.npy", "g.npy"}) {
      const std::string a = slurp(dir_.path / ("file_" + prec) / f), b = slurp(dir_.path / ("pipe_" + prec) / f);
      ASSERT_FALSE(a.empty()) << f;
      EXPECT_EQ(a, b) << f << " differs between the file and the pipe";
    }
    // A pipe cannot be read twice: its checksum is not recorded, and sparsify on the files works.
    const RunResult plan = run_cli(dir_, "sparsify --x x.npy --y y.npy --potentials pipe_" + prec +
                                             " --mode min_row --device cpu --quiet --out plan_" + prec + ".npz");
    EXPECT_EQ(plan.exit_code, 0) << plan.err;
  }
}

TEST_F(CliInputs, TruncatedPipeIsRefused) {
  const std::uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  const index_t n = 50, d = 4;
  const ref::Clouds c = ref::random_clouds(n, n, d, seed);
  otcal::io::write_npy(dir_.file("x.npy"), c.x.data(), {n, d}, DType::float64);
  const std::uint64_t size = fs::file_size(dir_.path / "x.npy");
  std::mt19937_64 rng(seed);
  const std::uint64_t keep = std::uniform_int_distribution<std::uint64_t>(size - n * d * 8 + 1, size - 1)(rng);
  const RunResult r = run_in(dir_, "head -c " + std::to_string(keep) + " x.npy | " + cli() +
                                       " sinkhorn --x /dev/stdin --out out --device cpu --quiet");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_TRUE(has(r.err, "--x '/dev/stdin'")) << r.err;
  EXPECT_TRUE(has(r.err, "truncated")) << r.err;
  EXPECT_TRUE(has(r.err, std::to_string(n * d * 8) + " data bytes")) << r.err;
  EXPECT_FALSE(fs::exists(dir_.path / "out"));
}

}  // namespace
