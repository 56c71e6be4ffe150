// `otcal sparsify` and `otcal solve` under mpirun, unchanged: with 2, 3 and 4 ranks the plan .npz
// (streamed to rank 0) and the per-rank files once joined by `otcal merge-plan` are the bytes of
// the one-process plan; the summary records the ranks and each rank's peak; a NaN in potentials
// only the last rank owns, or a missing input, stops every rank with the same message and leaves
// no --out. Skipped in builds without MPI or where mpirun is missing (OTCAL_MPIEXEC).
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

namespace fs = std::filesystem;
using otcal::index_t;
using testsupport::error_lines;
using testsupport::RunResult;
using testsupport::run_ranks;
using testsupport::TempDir;

// Clouds (n rows that split unevenly) and a short one-process solve whose potentials the
// sparsify runs read.
void prepare(const TempDir& dir, std::uint64_t seed, index_t n, index_t m) {
  const ref::Clouds c = ref::random_clouds(n, m, 3, seed);
  otcal::io::write_npy(dir.file("x.npy"), c.x.data(), {c.n, c.d}, otcal::DType::float64);
  otcal::io::write_npy(dir.file("y.npy"), c.y.data(), {c.m, c.d}, otcal::DType::float64);
  const RunResult s = testsupport::run_cli(
      dir, "sinkhorn --x x.npy --y y.npy --device cpu -q --max-iterations 30 --precision float32 --out pot");
  ASSERT_EQ(s.exit_code, 0) << s.err;
}

nlohmann::json parse(const std::string& text) { return nlohmann::json::parse(text); }

TEST(CliMpiSparsify, PlanAndMergedPiecesAreTheOneProcessBytes) {
  if (const std::string why = testsupport::why_no_ranks(); !why.empty()) GTEST_SKIP() << why;
  const std::uint64_t seed = testsupport::fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  TempDir dir;
  prepare(dir, seed, 1000, 300);
  const std::string modes[] = {"--mode percentile --value 90 --exact", "--mode percentile --value 80 --n-samples 100 --seed " +
                                   std::to_string(seed % 1000),
                               "--mode mass --value 0.8 --max-k 20"};
  for (std::size_t k = 0; k < std::size(modes); ++k) {
    SCOPED_TRACE(modes[k]);
    const std::string common = "sparsify --x x.npy --y y.npy --potentials pot --device cpu " + modes[k];
    const std::string one_name = "one" + std::to_string(k) + ".npz";
    const RunResult one = testsupport::run_cli(dir, common + " --out " + one_name);
    ASSERT_EQ(one.exit_code, 0) << one.err;
    const std::string want = testsupport::slurp(dir.path / one_name);
    ASSERT_FALSE(want.empty());
    for (int ranks : {2, 3, 4}) {
      SCOPED_TRACE(std::to_string(ranks) + " ranks");
      const std::string tag = std::to_string(k) + "_" + std::to_string(ranks);
      const RunResult r = run_ranks(dir, ranks, common + " --out d" + tag + ".npz");
      ASSERT_EQ(r.exit_code, 0) << r.err;
      EXPECT_TRUE(testsupport::slurp(dir.path / ("d" + tag + ".npz")) == want) << "streamed plan differs";
      const nlohmann::json j = parse(r.out);
      EXPECT_EQ(j["distributed"]["ranks"], ranks);
      EXPECT_EQ(j["distributed"]["peak_bytes_per_rank"].size(), static_cast<std::size_t>(ranks));
      EXPECT_EQ(j["nnz"], parse(one.out)["nnz"]);

      const RunResult p = run_ranks(dir, ranks, common + " --per-rank-files --out p" + tag);
      ASSERT_EQ(p.exit_code, 0) << p.err;
      for (int rank = 0; rank < ranks; ++rank) {
        char name[64];
        std::snprintf(name, sizeof name, "plan.rank-%04d-of-%04d.npz", rank, ranks);
        EXPECT_TRUE(fs::exists(dir.path / ("p" + tag) / name)) << name;
      }
      const RunResult m =
          testsupport::run_cli(dir, "merge-plan --manifest p" + tag + "/plan.manifest.json --out m" + tag + ".npz");
      ASSERT_EQ(m.exit_code, 0) << m.err;
      EXPECT_TRUE(testsupport::slurp(dir.path / ("m" + tag + ".npz")) == want) << "merged plan differs";
    }
  }
}

TEST(CliMpiSparsify, SolveWritesTheOneProcessPlan) {
  if (const std::string why = testsupport::why_no_ranks(); !why.empty()) GTEST_SKIP() << why;
  const std::uint64_t seed = testsupport::fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  TempDir dir;
  prepare(dir, seed, 700, 400);
  const std::string common = "solve --x x.npy --y y.npy --device cpu -q --max-iterations 40 --mode percentile "
                             "--value 95 --exact --precision float32";
  const RunResult one = testsupport::run_cli(dir, common + " --out one");
  ASSERT_EQ(one.exit_code, 0) << one.err;
  for (int ranks : {2, 3}) {
    SCOPED_TRACE(std::to_string(ranks) + " ranks");
    const std::string out = "d" + std::to_string(ranks);
    const RunResult r = run_ranks(dir, ranks, common + " --out " + out);
    ASSERT_EQ(r.exit_code, 0) << r.err;
    for (const char* f : {"f.npy", "g.npy", "plan.npz"})
      EXPECT_TRUE(testsupport::slurp(dir.path / out / f) == testsupport::slurp(dir.path / "one" / f)) << f;
    std::ifstream in(dir.path / out / "result.json");
    const nlohmann::json j = nlohmann::json::parse(in);
    EXPECT_EQ(j["distributed"]["ranks"], ranks);
    EXPECT_EQ(j["distributed"]["peak_bytes_per_rank"].size(), static_cast<std::size_t>(ranks));
    const RunResult p = run_ranks(dir, ranks, common + " --per-rank-files --out p" + std::to_string(ranks));
    ASSERT_EQ(p.exit_code, 0) << p.err;
    const RunResult m = testsupport::run_cli(
        dir, "merge-plan --manifest p" + std::to_string(ranks) + "/plan.manifest.json --out m.npz");
    ASSERT_EQ(m.exit_code, 0) << m.err;
    EXPECT_TRUE(testsupport::slurp(dir.path / "m.npz") == testsupport::slurp(dir.path / "one" / "plan.npz"));
  }
}

// A NaN in f on rows only the last rank owns, and a missing input: every rank exits non-zero with
// the same error line, and neither --out nor a temporary is left.
TEST(CliMpiSparsify, FailureOnOneRankStopsEveryRankAndLeavesNoOutput) {
  if (const std::string why = testsupport::why_no_ranks(); !why.empty()) GTEST_SKIP() << why;
  const std::uint64_t seed = testsupport::fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  TempDir dir;
  const index_t n = 1000;
  prepare(dir, seed, n, 200);
  const int ranks = 3;
  {
    const otcal::io::NpyArray f = otcal::io::read_npy(dir.file("pot/f.npy"), "f");
    std::vector<double> bad = f.values();
    const otcal::Shard last = otcal::shard_rows(n, ranks - 1, ranks);
    bad[static_cast<std::size_t>(last.begin + static_cast<index_t>(seed % static_cast<std::uint64_t>(last.size())))] =
        std::numeric_limits<double>::quiet_NaN();
    otcal::io::write_npy(dir.file("pot/f.npy"), bad.data(), {n}, f.dtype);
    // Without its provenance record the edited f.npy is not refused by its checksum (on every
    // rank alike) but by the rank whose rows hold the NaN.
    nlohmann::json rj = nlohmann::json::parse(testsupport::slurp(dir.file("pot/result.json")));
    rj.erase("provenance");
    std::ofstream(dir.file("pot/result.json")) << rj.dump(2);
  }
  for (const std::string& args : {std::string("--potentials pot --out nan.npz"),
                                  std::string("--potentials pot --per-rank-files --out nandir"),
                                  std::string("--potentials missing --out missing.npz")}) {
    SCOPED_TRACE(args);
    const RunResult r = run_ranks(dir, ranks, "sparsify --x x.npy --y y.npy --device cpu --mode min_row " + args);
    EXPECT_NE(r.exit_code, 0);
    const std::vector<std::string> errors = error_lines(r.err);
    ASSERT_EQ(errors.size(), static_cast<std::size_t>(ranks)) << r.err;
    for (const std::string& e : errors) EXPECT_EQ(e, errors[0]);
    if (args.find("missing") == std::string::npos)
      EXPECT_NE(errors[0].find("rank " + std::to_string(ranks - 1) + ": "), std::string::npos) << errors[0];
    for (const auto& entry : fs::directory_iterator(dir.path)) {
      const std::string name = entry.path().filename().string();
      EXPECT_TRUE(name == "x.npy" || name == "y.npy" || name == "pot") << "left behind: " << name;
    }
  }
}

}  // namespace
