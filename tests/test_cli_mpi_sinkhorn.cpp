// `otcal sinkhorn` under mpirun, unchanged: with 2, 3 and 4 ranks the written potentials are the
// bytes of the one-process run's, result.json records the ranks and each rank's peak, and a NaN in
// rows only the last rank owns stops every rank with the same message and nothing in --out.
// Skipped in builds without MPI or where mpirun is missing (OTCAL_MPIEXEC).
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <sstream>

#include "io/npy.hpp"
#include "otcal/communicator.hpp"
#include "support/process.hpp"
#include "support/reference.hpp"

namespace {

using otcal::index_t;
using testsupport::error_lines;
using testsupport::RunResult;
using testsupport::run_ranks;
using testsupport::TempDir;

void save_clouds(const TempDir& dir, const ref::Clouds& c) {
  otcal::io::write_npy(dir.file("x.npy"), c.x.data(), {c.n, c.d}, otcal::DType::float64);
  otcal::io::write_npy(dir.file("y.npy"), c.y.data(), {c.m, c.d}, otcal::DType::float64);
}

TEST(CliMpiSinkhorn, PotentialsAreTheOneProcessBytes) {
  if (const std::string why = testsupport::why_no_ranks(); !why.empty()) GTEST_SKIP() << why;
  const std::uint64_t seed = testsupport::fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  TempDir dir;
  save_clouds(dir, ref::random_clouds(1100, 900, 3, seed));
  const std::string common = "sinkhorn --x x.npy --y y.npy --device cpu -q --tau-a 0.9 --precision float32";
  const RunResult one = testsupport::run_cli(dir, common + " --out one");
  ASSERT_EQ(one.exit_code, 0) << one.err;
  for (int ranks : {2, 3, 4}) {
    SCOPED_TRACE(std::to_string(ranks) + " ranks");
    const std::string out = "d" + std::to_string(ranks);
    const RunResult r = run_ranks(dir, ranks, common + " --out " + out);
    ASSERT_EQ(r.exit_code, 0) << r.err;
    for (const char* f : {"f.npy", "g.npy"})
      EXPECT_EQ(testsupport::slurp(dir.path / out / f), testsupport::slurp(dir.path / "one" / f)) << f;
    std::ifstream in(dir.path / out / "result.json");
    const nlohmann::json j = nlohmann::json::parse(in);
    EXPECT_EQ(j["distributed"]["ranks"], ranks);
    ASSERT_EQ(j["distributed"]["peak_bytes_per_rank"].size(), static_cast<std::size_t>(ranks));
    for (const auto& peak : j["distributed"]["peak_bytes_per_rank"]) {
      EXPECT_GT(peak.get<std::uint64_t>(), 0u);
      EXPECT_LE(peak.get<std::uint64_t>(), j["memory"]["budget_bytes"].get<std::uint64_t>());
    }
    std::ifstream in_one(dir.path / "one" / "result.json");
    const nlohmann::json j1 = nlohmann::json::parse(in_one);
    EXPECT_EQ(j["iterations"], j1["iterations"]);
    EXPECT_EQ(j["errors"], j1["errors"]);
  }
}

TEST(CliMpiSinkhorn, NanInTheLastRanksRowsStopsEveryRank) {
  if (const std::string why = testsupport::why_no_ranks(); !why.empty()) GTEST_SKIP() << why;
  const std::uint64_t seed = testsupport::fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  const int ranks = 3;
  TempDir dir;
  ref::Clouds c = ref::random_clouds(1100, 900, 3, seed);
  const otcal::Shard last = otcal::shard_rows(c.n, ranks - 1, ranks);
  const index_t row = last.begin + static_cast<index_t>(seed % static_cast<std::uint64_t>(last.size()));
  c.x[static_cast<std::size_t>(row * 3)] = std::numeric_limits<double>::quiet_NaN();
  save_clouds(dir, c);
  const RunResult r = run_ranks(dir, ranks, "sinkhorn --x x.npy --y y.npy --device cpu -q --out out");
  EXPECT_NE(r.exit_code, 0);
  const std::vector<std::string> errors = error_lines(r.err);
  ASSERT_EQ(errors.size(), static_cast<std::size_t>(ranks)) << r.err;
  for (const std::string& e : errors) EXPECT_EQ(e, errors[0]);
  EXPECT_NE(errors[0].find("rank 2: "), std::string::npos) << errors[0];
  EXPECT_NE(errors[0].find("row " + std::to_string(row) + ","), std::string::npos) << errors[0];
  // Nothing but the inputs: no --out, no temporary sibling.
  std::vector<std::string> names;
  for (const auto& e : std::filesystem::directory_iterator(dir.path)) names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  EXPECT_EQ(names, (std::vector<std::string>{"x.npy", "y.npy"}));
}

}  // namespace
