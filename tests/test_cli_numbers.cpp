// Numbers in flags are read exactly by every subcommand (src/cli/strict_numbers.cpp): values
// beyond int64/uint64, spaces, hex, octal-looking leading zeros, '+', a sign on an unsigned flag,
// exponents on integer flags, and floats that overflow, underflow to 0 or to a subnormal, inf and
// nan are refused naming the flag and the text, before anything is read or written.
#include <gtest/gtest.h>

#include <filesystem>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "io/npy.hpp"
#include "support/process.hpp"

namespace fs = std::filesystem;

namespace {

using testsupport::cli;
using testsupport::run_cli;
using testsupport::RunResult;
using testsupport::TempDir;

struct Case {
  std::string command;  // the subcommand and the flags it requires
  std::string flag, value;
};

// The required flags of each subcommand: file names that need not exist (parsing fails first).
const std::string kSinkhorn = "sinkhorn --x x.npy --out out --device cpu";
const std::string kSolve = "solve --x x.npy --out out --device cpu --mode min_row";
const std::string kSparsify = "sparsify --x x.npy --potentials pot --out plan.npz --device cpu --mode min_row";
const std::string kCalibrate = "calibrate --data data.csv --spec spec.json --out out --device cpu";
// demo runs without inputs: a budget it refuses makes the code before strict numbers fail fast
// (naming --memory-budget, not the number), instead of running a demo of 2^63 points.
const std::string kDemo = "demo --device cpu --memory-budget 0";

std::string quoted(const std::string& v) { return "'" + v + "'"; }

TEST(CliNumbers, LooseNumbersAreRefusedNamingTheFlagAndTheText) {
  if (cli().empty() || !fs::exists(cli())) GTEST_SKIP() << "OTCAL_CLI is not set to the otcal binary";
  const std::uint64_t seed = testsupport::fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  // A random 20-digit value beyond int64 and uint64 (old: saturated by strtoll to INT64_MAX).
  const std::string huge = std::to_string(1 + rng() % 8) + std::to_string(1000000000000000000ull + rng() % 1000000000ull) + "7";
  const std::string small = std::to_string(2 + rng() % 7);
  const std::vector<Case> cases = {
      {kSinkhorn, "--max-iterations", huge},
      {kSinkhorn, "--batch-size", huge},
      {kSinkhorn, "--inner-iterations", " " + small},  // old: strtoll skips the space
      {kSinkhorn, "--max-iterations", "0x1" + small},  // old: hex
      {kSinkhorn, "--min-iterations", "+" + small},
      {kSinkhorn, "--max-iterations", small + "e3"},
      {kSinkhorn, "--epsilon", "1e-4" + small + "0"},  // old: underflows silently to 0
      {kSinkhorn, "--threshold", "1e-31" + small},     // a subnormal
      {kSinkhorn, "--epsilon-init", "1e40" + small},   // overflows to inf
      {kSinkhorn, "--tau-a", "nan"},
      {kSinkhorn, "--norm-error", "inf"},
      {kSinkhorn, "--epsilon", "0x1p-" + small},       // a hex float
      {kSolve, "--max-k", "0x1" + small},
      {kSolve, "--sparsify-batch-size", huge},
      {kSolve, "--epsilon", "1e-4" + small + "0"},
      {kSolve, "--max-iterations", " " + small},
      {kSparsify, "--seed", "-" + small},              // old: wrapped to 2^64 - n
      {kSparsify, "--n-samples", huge},
      {kSparsify, "--value", "1e-4" + small + "0"},
      {kSparsify, "--max-k", small + ".0"},
      {kCalibrate, "--epochs", huge},
      {kCalibrate, "--seed", "0x2" + small},
      {kCalibrate, "--learning-rate", "1e-4" + small + "0"},
      {kCalibrate, "--epsilon", " 1e-6"},
      {kDemo, "--n", huge},
      {kDemo, "--seed", "-" + small},
      {kDemo, "--n", "0x1" + small},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.command + " " + c.flag + " " + quoted(c.value));
    TempDir dir;
    const RunResult r = run_cli(dir, c.command + " " + c.flag + " " + quoted(c.value));
    EXPECT_NE(r.exit_code, 0);
    EXPECT_NE(r.err.find(c.flag), std::string::npos) << r.err;
    EXPECT_NE(r.err.find(quoted(c.value)), std::string::npos) << "the message should quote the text: " << r.err;
    EXPECT_TRUE(fs::is_empty(dir.path)) << "nothing may be written";
  }
}

TEST(CliNumbers, IntFlagsKeepTheirNarrowerRangeAndValidNumbersStillWork) {
  if (cli().empty() || !fs::exists(cli())) GTEST_SKIP() << "OTCAL_CLI is not set to the otcal binary";
  const std::uint64_t seed = testsupport::fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  TempDir dir;
  // calibrate --max-iterations is an int: within int64 but beyond int32 it is still refused.
  const std::string beyond_int = std::to_string(3000000000ull + rng() % 1000000ull);
  const RunResult big = run_cli(dir, kCalibrate + " --max-iterations " + beyond_int);
  EXPECT_NE(big.exit_code, 0);
  EXPECT_NE(big.err.find("--max-iterations"), std::string::npos) << big.err;

  // Leading zeros are decimal (old: "010" was octal 8), and a valid float keeps its exact value.
  const int n = 20 + static_cast<int>(rng() % 20), d = 2;
  std::normal_distribution<double> normal;
  std::vector<double> x(static_cast<std::size_t>(n * d));
  for (double& v : x) v = normal(rng);
  otcal::io::write_npy(dir.file("x.npy"), x.data(), {n, d}, otcal::DType::float64);
  const RunResult ok = run_cli(dir, "sinkhorn --x x.npy --out out --device cpu --quiet --epsilon 0.5 "
                                    "--inner-iterations 05 --min-iterations 010 --max-iterations 0100");
  ASSERT_EQ(ok.exit_code, 0) << ok.err;
  const nlohmann::json j = nlohmann::json::parse(testsupport::slurp(dir.path / "out" / "result.json"));
  EXPECT_EQ(j["options"]["inner_iterations"], 5);
  EXPECT_EQ(j["options"]["min_iterations"], 10);
  EXPECT_EQ(j["options"]["max_iterations"], 100);
  EXPECT_EQ(j["options"]["epsilon"], 0.5);
}

}  // namespace
