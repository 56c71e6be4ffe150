// `otcal calibrate` end to end (the real binary) and the CSV reader.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <string>

#include "io/csv.hpp"
#include "io/npy.hpp"
#include "otcal/errors.hpp"
#include "support/process.hpp"

namespace fs = std::filesystem;

namespace {

using testsupport::cli;
using testsupport::slurp;
using testsupport::TempDir;

int run(const std::string& args, const fs::path& err) {
  return testsupport::shell("'" + cli() + "' calibrate " + args + " 2> '" + err.string() + "' > /dev/null");
}

struct Fixture {
  std::vector<std::string> region;
  std::vector<int> sex;
  std::vector<double> income, weight;
  std::map<std::string, double> region_t, sex_t;
  double income_t = 0;
};

Fixture write_inputs(const fs::path& dir, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> u(0, 1);
  Fixture f;
  const std::vector<std::string> regions = {"north", "south, coast", "east"};
  std::ofstream csv(dir / "data.csv");
  csv << "region,sex,income,weight\n";
  for (int i = 0; i < 150; ++i) {
    f.region.push_back(regions[i % 3]);
    f.sex.push_back(1 + static_cast<int>(rng() % 2));
    f.income.push_back(std::round(1000 * std::exp(u(rng))) / 10);
    f.weight.push_back(1 + u(rng));
    const double ws = f.weight.back() * (0.9 + 0.2 * u(rng));
    f.region_t[f.region.back()] += ws;
    f.sex_t[std::to_string(f.sex.back())] += ws;
    f.income_t += ws * f.income.back();
    char buf[64];
    std::snprintf(buf, sizeof buf, "%.17g", f.weight.back());
    csv << '"' << f.region.back() << "\"," << f.sex.back() << ',' << f.income.back() << ',' << buf << "\r\n";
  }
  std::ofstream spec(dir / "spec.json");
  spec.precision(17);
  spec << "{\"marginal\": {\"region\": {";
  bool first = true;
  for (const auto& [k, v] : f.region_t) spec << (first ? "" : ", ") << '"' << k << "\": " << v, first = false;
  spec << "}, \"sex\": {";
  first = true;
  for (const auto& [k, v] : f.sex_t) spec << (first ? "" : ", ") << '"' << k << "\": " << v, first = false;
  spec << "}}, \"continuous\": {\"income\": " << f.income_t << "}}\n";
  return f;
}

TEST(CalibrationCli, EndToEndWeightsMeetTargets) {
  if (cli().empty()) GTEST_SKIP() << "OTCAL_CLI not set (the tool is not built)";
  const auto seed = testsupport::fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  TempDir tmp;
  const Fixture f = write_inputs(tmp.path, seed);
  for (const std::string method : {"linear", "raking", "logit"}) {
    SCOPED_TRACE(method);
    const fs::path out = tmp.path / ("out_" + method);
    const int rc = run("--data '" + (tmp.path / "data.csv").string() + "' --spec '" + (tmp.path / "spec.json").string() +
                           "' --out '" + out.string() + "' --method " + method + " --lower 0.5 --upper 2",
                       tmp.path / "err.txt");
    ASSERT_EQ(rc, 0) << slurp(tmp.path / "err.txt");
    const auto w = otcal::io::read_npy((out / "weights.npy").string(), "weights");
    ASSERT_EQ(w.size(), 150);
    std::map<std::string, double> rt, st;
    double it = 0;
    for (int i = 0; i < 150; ++i) {
      rt[f.region[i]] += w.data[i];
      st[std::to_string(f.sex[i])] += w.data[i];
      it += w.data[i] * f.income[i];
    }
    for (const auto& [k, v] : f.region_t) EXPECT_NEAR(rt[k], v, 1e-7 * (1 + v)) << k;
    for (const auto& [k, v] : f.sex_t) EXPECT_NEAR(st[k], v, 1e-7 * (1 + v)) << k;
    EXPECT_NEAR(it, f.income_t, 1e-7 * (1 + f.income_t));
    // weights.csv holds the same numbers
    const auto table = otcal::io::read_csv((out / "weights.csv").string(), "weights.csv");
    ASSERT_EQ(table.columns.size(), 1u);
    EXPECT_EQ(table.columns[0].name, "weight");
    for (int i = 0; i < 150; ++i) ASSERT_EQ(table.columns[0].numbers[i], w.data[i]);
    const std::string report = slurp(out / "report.json");
    EXPECT_NE(report.find("\"converged\": true"), std::string::npos);
    EXPECT_NE(report.find("\"deff\""), std::string::npos);
  }
}

TEST(CalibrationCli, BadInputsFailNamingTheInputAndLeaveNothing) {
  if (cli().empty()) GTEST_SKIP() << "OTCAL_CLI not set (the tool is not built)";
  TempDir tmp;
  write_inputs(tmp.path, 7);
  std::string spec = slurp(tmp.path / "spec.json");
  struct Bad {
    std::string name, spec_text, needle;
  };
  std::string untargeted = spec;
  untargeted.replace(untargeted.find("\"east\""), 6, "\"west\"");
  const Bad cases[] = {
      {"missing_column", "{\"marginal\": {\"height\": {\"1\": 3}}}", "Margin variable 'height' not in data columns"},
      {"untargeted", untargeted, "not in targets for 'region': {east}"},
      {"bad_json", "{\"marginal\": {", "not valid JSON"},
      {"missing_continuous", "{\"continuous\": {\"wealth\": 3}}", "'wealth'"},
  };
  for (const auto& b : cases) {
    SCOPED_TRACE(b.name);
    std::ofstream(tmp.path / (b.name + ".json")) << b.spec_text;
    const fs::path out = tmp.path / ("out_" + b.name);
    const int rc = run("--data '" + (tmp.path / "data.csv").string() + "' --spec '" +
                           (tmp.path / (b.name + ".json")).string() + "' --out '" + out.string() + "'",
                       tmp.path / "err.txt");
    EXPECT_NE(rc, 0);
    const std::string err = slurp(tmp.path / "err.txt");
    EXPECT_NE(err.find(b.needle), std::string::npos) << err;
    EXPECT_NE(err.find("--spec"), std::string::npos) << err;
    EXPECT_FALSE(fs::exists(out));
    for (const auto& e : fs::directory_iterator(tmp.path))
      EXPECT_EQ(e.path().filename().string().find("out_" + b.name), std::string::npos) << "left behind: " << e.path();
  }
  // infeasible: fails without --force (nothing written), succeeds with it (converged false)
  std::string infeasible = spec;
  const auto pos = infeasible.find("\"income\": ") + 10;
  infeasible.replace(pos, infeasible.find('}', pos) - pos, "1e12");
  std::ofstream(tmp.path / "infeasible.json") << infeasible;
  const std::string base = "--data '" + (tmp.path / "data.csv").string() + "' --spec '" +
                           (tmp.path / "infeasible.json").string() + "' --method raking --out '";
  EXPECT_NE(run(base + (tmp.path / "o1").string() + "'", tmp.path / "err.txt"), 0);
  EXPECT_NE(slurp(tmp.path / "err.txt").find("Calibration failed"), std::string::npos);
  EXPECT_FALSE(fs::exists(tmp.path / "o1"));
  EXPECT_EQ(run(base + (tmp.path / "o2").string() + "' --force", tmp.path / "err.txt"), 0);
  EXPECT_NE(slurp(tmp.path / "o2" / "report.json").find("\"converged\": false"), std::string::npos);
  // bad data path names --data
  EXPECT_NE(run("--data '" + (tmp.path / "nope.csv").string() + "' --spec '" + (tmp.path / "spec.json").string() +
                    "' --out '" + (tmp.path / "o3").string() + "'",
                tmp.path / "err.txt"),
            0);
  EXPECT_NE(slurp(tmp.path / "err.txt").find("--data"), std::string::npos);
}

TEST(CalibrationCsv, QuotingTypesAndMissingValues) {
  const auto t = otcal::io::parse_csv(
      "a,b,c,d\r\n1,\"x, y\",,True\n2.5,\"say \"\"hi\"\"\",3,False\n\n-1e3,\"multi\nline\",4,\n", "test");
  ASSERT_EQ(t.n_records, 3);
  ASSERT_EQ(t.columns.size(), 4u);
  EXPECT_TRUE(t.columns[0].numeric);
  EXPECT_EQ(t.columns[0].numbers, (std::vector<double>{1, 2.5, -1000}));
  EXPECT_FALSE(t.columns[1].numeric);
  EXPECT_EQ(t.columns[1].strings, (std::vector<std::string>{"x, y", "say \"hi\"", "multi\nline"}));
  EXPECT_TRUE(t.columns[2].numeric);
  EXPECT_TRUE(std::isnan(t.columns[2].numbers[0]));
  EXPECT_EQ(t.columns[2].numbers[2], 4);
  EXPECT_FALSE(t.columns[3].numeric);
  EXPECT_EQ(t.columns[3].strings, (std::vector<std::string>{"True", "False", ""}));
  EXPECT_THROW(otcal::io::parse_csv("a,b\n1\n", "t"), otcal::InvalidArgument);
  EXPECT_THROW(otcal::io::parse_csv("a,a\n1,2\n", "t"), otcal::InvalidArgument);
  EXPECT_THROW(otcal::io::parse_csv("a,b\n\"1,2\n", "t"), otcal::InvalidArgument);
  EXPECT_THROW(otcal::io::parse_csv("", "t"), otcal::InvalidArgument);
}

}  // namespace
