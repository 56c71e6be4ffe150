// `otcal calibrate` under mpirun, unchanged (docs/calibration.md §8): with 2, 3 and 4 ranks the
// gradient calibrator's weights.npy and weights.csv are the bytes of the one-process run's, an
// exact calibrator's weights are within 1e-12 relative of them, report.json records the ranks, each
// rank's records and peak, and a bad weight in records only rank 2 owns stops every rank with the
// same message and nothing in --out. Skipped in builds without MPI or without mpirun.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>

#include "io/npy.hpp"
#include "otcal/communicator.hpp"
#include "support/process.hpp"

namespace {

using otcal::index_t;
using testsupport::error_lines;
using testsupport::RunResult;
using testsupport::run_ranks;
using testsupport::TempDir;

// A survey of n records: a quoted string margin, an integer margin, a continuous column, design
// weights and a linear constraint from an .npy. Targets are the totals under design weights
// perturbed by g in [0.9, 1.1], so every method (logit within [0.5, 2]) is feasible. `blank_weight`
// (>= 0) leaves that record's weight field empty (NaN: a bad record).
void write_survey(const TempDir& dir, index_t n, std::uint64_t seed, index_t blank_weight = -1) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> u(0, 1);
  const std::vector<std::string> regions = {"north", "south, coast", "east", "west"};
  std::map<std::string, double> region_t, sex_t;
  double income_t = 0, lin_t = 0;
  std::vector<double> lin(static_cast<std::size_t>(n));
  std::ofstream csv(dir.file("data.csv"));
  csv << "region,sex,income,weight\n";
  for (index_t i = 0; i < n; ++i) {
    const std::string region = regions[rng() % regions.size()];
    const int sex = 1 + static_cast<int>(rng() % 2);
    const double income = std::round(1000 * std::exp(u(rng))) / 10;
    const double weight = 1 + u(rng);
    lin[static_cast<std::size_t>(i)] = u(rng) < 0.3 ? 0.0 : u(rng);
    const double ws = weight * (0.9 + 0.2 * u(rng));
    region_t[region] += ws;
    sex_t[std::to_string(sex)] += ws;
    income_t += ws * income;
    lin_t += ws * lin[static_cast<std::size_t>(i)];
    char w[64];
    std::snprintf(w, sizeof w, "%.17g", weight);
    csv << '"' << region << "\"," << sex << ',' << income << ',' << (i == blank_weight ? "" : w) << '\n';
  }
  otcal::io::write_npy(dir.file("lin.npy"), lin.data(), {n}, otcal::DType::float64);
  nlohmann::json spec;
  spec["marginal"]["region"] = region_t;
  spec["marginal"]["sex"] = sex_t;
  spec["continuous"]["income"] = income_t;
  spec["linear"] = {{{"name", "lin"}, {"coefficients", "lin.npy"}, {"target", lin_t}}};
  std::ofstream(dir.file("spec.json")) << spec.dump();
}

nlohmann::json read_json(const std::filesystem::path& p) {
  std::ifstream in(p);
  return nlohmann::json::parse(in);
}

// Runs `args` on one process and on 2, 3 and 4 ranks and checks what every run must share with the
// one-process run; `compare_weights` checks the weight files.
template <class Compare>
void against_one_process(const TempDir& dir, index_t n, const std::string& args, Compare compare_weights) {
  const RunResult one = testsupport::run_cli(dir, args + " --out one");
  ASSERT_EQ(one.exit_code, 0) << one.err;
  const nlohmann::json j1 = read_json(dir.path / "one" / "report.json");
  EXPECT_EQ(j1["distributed"]["ranks"], 1);
  for (int ranks : {2, 3, 4}) {
    SCOPED_TRACE(std::to_string(ranks) + " ranks");
    const std::string out = "d" + std::to_string(ranks);
    const RunResult r = run_ranks(dir, ranks, args + " --out " + out);
    ASSERT_EQ(r.exit_code, 0) << r.err;
    compare_weights(dir.path / "one", dir.path / out);
    const nlohmann::json j = read_json(dir.path / out / "report.json");
    EXPECT_EQ(j["n_records"], n);
    EXPECT_EQ(j["nnz"], j1["nnz"]);
    EXPECT_EQ(j["n_iterations"], j1["n_iterations"]);
    EXPECT_EQ(j["converged"], j1["converged"]);
    EXPECT_EQ(j["warnings"], j1["warnings"]);
    const nlohmann::json& d = j["distributed"];
    EXPECT_EQ(d["ranks"], ranks);
    ASSERT_EQ(d["peak_bytes_per_rank"].size(), static_cast<std::size_t>(ranks));
    ASSERT_EQ(d["records_per_rank"].size(), static_cast<std::size_t>(ranks));
    for (int k = 0; k < ranks; ++k) {
      const index_t mine = otcal::shard_rows(n, k, ranks).size();
      EXPECT_EQ(d["records_per_rank"][k], mine) << "rank " << k;
      if (mine > 0) EXPECT_GT(d["peak_bytes_per_rank"][k].get<std::uint64_t>(), 0u) << "rank " << k;
    }
  }
}

// Record counts that are not multiples of 256 x ranks, so shards are uneven and the last ragged: a
// small one (520..768) with which the last of 4 ranks owns no records at all (it must still join
// every collective), and a larger one (1100..3099).
index_t small_n(std::uint64_t seed) { return 520 + static_cast<index_t>(seed % 249); }
index_t large_n(std::uint64_t seed) { return 1100 + static_cast<index_t>((seed >> 8) % 2000); }

TEST(CliMpiCalibrate, GradientWeightsAreTheOneProcessBytes) {
  if (const std::string why = testsupport::why_no_ranks(); !why.empty()) GTEST_SKIP() << why;
  const std::uint64_t seed = testsupport::fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  // Dropout and the initial noise are drawn per record: each rank must draw its records' ones.
  const std::string args = "calibrate --data data.csv --spec spec.json --method gradient -q --epochs 24 "
                           "--learning-rate 0.05 --dropout 0.1 --seed " + std::to_string(seed % 100000);
  for (const index_t n : {small_n(seed), large_n(seed)}) {
    SCOPED_TRACE(std::to_string(n) + " records");
    TempDir dir;
    write_survey(dir, n, seed);
    against_one_process(dir, n, args, [](const std::filesystem::path& one, const std::filesystem::path& many) {
      for (const char* f : {"weights.npy", "weights.csv"}) {
        const std::string a = testsupport::slurp(one / f);
        EXPECT_FALSE(a.empty()) << f;
        EXPECT_EQ(testsupport::slurp(many / f), a) << f;
      }
      // The loss is computed from the same bits: the report carries it to the last digit.
      EXPECT_EQ(read_json(many / "report.json")["loss"], read_json(one / "report.json")["loss"]);
    });
  }
}

TEST(CliMpiCalibrate, ExactWeightsMatchOneProcessTo1e12) {
  if (const std::string why = testsupport::why_no_ranks(); !why.empty()) GTEST_SKIP() << why;
  const std::uint64_t seed = testsupport::fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  const std::string args = "calibrate --data data.csv --spec spec.json --method logit --lower 0.5 --upper 2 -q";
  for (const index_t n : {small_n(seed), large_n(seed)}) {
    SCOPED_TRACE(std::to_string(n) + " records");
    TempDir dir;
    write_survey(dir, n, seed);
    against_one_process(dir, n, args, [n](const std::filesystem::path& one, const std::filesystem::path& many) {
      const auto a = otcal::io::read_npy((one / "weights.npy").string(), "one");
      const auto b = otcal::io::read_npy((many / "weights.npy").string(), "many");
      ASSERT_EQ(a.shape, std::vector<index_t>{n});
      ASSERT_EQ(b.shape, std::vector<index_t>{n});
      double worst = 0;
      for (std::size_t i = 0; i < static_cast<std::size_t>(a.size()); ++i)
        worst = std::max(worst, std::fabs(a.at(i) - b.at(i)) / std::fabs(a.at(i)));
      EXPECT_LE(worst, 1e-12);
      // weights.csv holds the same numbers as weights.npy, in the same (data) order.
      std::istringstream csv(testsupport::slurp(many / "weights.csv"));
      std::string line;
      std::getline(csv, line);
      EXPECT_EQ(line, "weight");
      std::size_t i = 0;
      for (; std::getline(csv, line); ++i) {
        ASSERT_LT(i, static_cast<std::size_t>(b.size()));
        EXPECT_EQ(std::strtod(line.c_str(), nullptr), b.at(i)) << "record " << i;
      }
      EXPECT_EQ(i, static_cast<std::size_t>(b.size()));
    });
  }
}

TEST(CliMpiCalibrate, BadWeightInTheLastRanksRecordsStopsEveryRank) {
  if (const std::string why = testsupport::why_no_ranks(); !why.empty()) GTEST_SKIP() << why;
  const std::uint64_t seed = testsupport::fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  const int ranks = 3;
  const index_t n = large_n(seed);
  const otcal::Shard last = otcal::shard_rows(n, ranks - 1, ranks);
  ASSERT_GT(last.size(), 0);
  const index_t bad = last.begin + static_cast<index_t>((seed >> 20) % static_cast<std::uint64_t>(last.size()));
  TempDir dir;
  write_survey(dir, n, seed, bad);
  const RunResult r = run_ranks(dir, ranks,
                                "calibrate --data data.csv --spec spec.json "
                                "--method gradient -q --out out");
  EXPECT_NE(r.exit_code, 0);
  const std::vector<std::string> errors = error_lines(r.err);
  ASSERT_EQ(errors.size(), static_cast<std::size_t>(ranks)) << r.err;
  for (const std::string& e : errors) EXPECT_EQ(e, errors[0]);
  EXPECT_NE(errors[0].find("rank 2: "), std::string::npos) << errors[0];
  EXPECT_NE(errors[0].find("record " + std::to_string(bad)), std::string::npos) << errors[0];
  // Nothing but the inputs: no --out, no temporary sibling.
  std::vector<std::string> names;
  for (const auto& e : std::filesystem::directory_iterator(dir.path)) names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  EXPECT_EQ(names, (std::vector<std::string>{"data.csv", "lin.npy", "spec.json"}));
}

}  // namespace
