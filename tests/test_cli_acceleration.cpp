// The tool's acceleration and initializer flags (docs/sinkhorn.md §7-8): `otcal sinkhorn` and
// `otcal solve` accept them, record them in result.json and solve as the library does; bad values
// are refused naming the flag.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "io/npy.hpp"
#include "support/process.hpp"
#include "support/reference.hpp"

namespace {

using testsupport::run_cli;
using testsupport::RunResult;
using testsupport::slurp;
using testsupport::TempDir;

class CliAcceleration : public ::testing::Test {
 protected:
  void SetUp() override {
    seed_ = testsupport::fresh_seed();
    const auto c = ref::random_clouds(83, 71, 2, seed_);
    otcal::io::write_npy(dir_.file("x.npy"), c.x.data(), {c.n, c.d}, otcal::DType::float64);
    otcal::io::write_npy(dir_.file("y.npy"), c.y.data(), {c.m, c.d}, otcal::DType::float64);
  }
  nlohmann::json result(const std::string& out) const {
    return nlohmann::json::parse(slurp(dir_.file(out + "/result.json")));
  }
  TempDir dir_;
  std::uint64_t seed_ = 0;
};

TEST_F(CliAcceleration, FlagsAreAppliedAndRecordedInResultJson) {
  SCOPED_TRACE("seed " + std::to_string(seed_));
  const std::string common = " --x x.npy --y y.npy --scale-cost mean --threshold 1e-7 --quiet --device cpu";
  RunResult r = run_cli(dir_, "sinkhorn --out plain" + common);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  r = run_cli(dir_, "sinkhorn --out acc --momentum 1.2 --momentum-start 20 --momentum-error-threshold 0.5"
                    " --initializer gaussian" + common);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const nlohmann::json plain = result("plain"), acc = result("acc");
  EXPECT_EQ(acc["initializer"], "gaussian");
  EXPECT_EQ(acc["momentum"]["value"], 1.2);
  EXPECT_EQ(acc["momentum"]["start"], 20);
  EXPECT_EQ(acc["momentum"]["error_threshold"], 0.5);
  EXPECT_TRUE(acc["anderson"].is_null());
  EXPECT_EQ(acc["options"]["momentum_start"], 20);
  EXPECT_EQ(plain["initializer"], "zeros");
  EXPECT_EQ(plain["momentum"]["value"], 1.0);
  EXPECT_NE(acc["errors"], plain["errors"]) << "the flags change the path";
  EXPECT_TRUE(acc["converged"].get<bool>());

  r = run_cli(dir_, "solve --mode min_row --out solved --anderson 4 --anderson-refresh-every 2 --anderson-ridge 1e-3" + common);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const nlohmann::json solved = result("solved");
  EXPECT_EQ(solved["anderson"]["memory"], 4);
  EXPECT_EQ(solved["anderson"]["refresh_every"], 2);
  EXPECT_EQ(solved["anderson"]["ridge_identity"], 1e-3);
  EXPECT_NE(solved["errors"], plain["errors"]);
}

TEST_F(CliAcceleration, BadValuesAreRefusedNamingTheFlag) {
  SCOPED_TRACE("seed " + std::to_string(seed_));
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"--momentum 2", "--momentum 2"},
      {"--momentum 0", "--momentum 0"},
      {"--momentum-start 15", "--momentum-start 15"},
      {"--momentum-start -1", "--momentum-start -1"},
      {"--momentum-error-threshold 0", "--momentum-error-threshold 0"},
      {"--anderson 0", "--anderson 0"},
      {"--anderson 2 --anderson-refresh-every 0", "--anderson-refresh-every 0"},
      {"--anderson 2 --anderson-ridge 0", "--anderson-ridge 0"},
      {"--initializer sorting", "--initializer 'sorting'"},
      {"--initializer gaussian --cost cosine", "--initializer gaussian"}};
  for (const auto& [flags, needle] : cases) {
    for (const std::string tool : {"sinkhorn", "solve --mode min_row"}) {
      const RunResult r = run_cli(dir_, tool + " --x x.npy --y y.npy --out bad --quiet --device cpu " + flags);
      EXPECT_NE(r.exit_code, 0) << tool << " " << flags;
      EXPECT_NE(r.err.find("otcal: error: " + needle), std::string::npos) << tool << " " << flags << ": " << r.err;
    }
  }
}

}  // namespace
