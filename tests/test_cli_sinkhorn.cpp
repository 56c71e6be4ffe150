// `otcal sinkhorn` end to end: the real binary (OTCAL_CLI) on .npy files. A good run must write
// potentials bitwise equal to otcal::sinkhorn called in-process on the same inputs (and close to
// the dense float64 reference), plus a complete result.json; every bad input must fail with a
// message naming the flag and leave nothing behind.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>

#include "io/npy.hpp"
#include "otcal/context.hpp"
#include "otcal/sinkhorn.hpp"
#include "support/process.hpp"
#include "support/reference.hpp"

namespace fs = std::filesystem;
using otcal::DType;
using otcal::index_t;

namespace {

using testsupport::cli;
using testsupport::fresh_seed;
using testsupport::run_cli;
using testsupport::RunResult;
using testsupport::slurp;
using testsupport::TempDir;

void save(const TempDir& dir, const std::string& name, const std::vector<double>& v, std::vector<index_t> shape,
          DType dt = DType::float64) {
  otcal::io::write_npy(dir.file(name), v.data(), shape, dt);
}

std::vector<double> normalized(std::vector<double> w) {
  double s = 0;
  for (double v : w) s += v;
  for (double& v : w) v /= s;
  return w;
}

class CliSinkhorn : public ::testing::Test {
 protected:
  void SetUp() override {
    if (cli().empty() || !fs::exists(cli())) GTEST_SKIP() << "OTCAL_CLI is not set to the otcal binary";
    seed_ = fresh_seed();
    clouds_ = ref::random_clouds(n_, m_, d_, seed_);
    a_ = normalized(ref::random_weights(n_, seed_ + 1));
    b_ = normalized(ref::random_weights(m_, seed_ + 2));
    save(dir_, "x.npy", clouds_.x, {n_, d_});
    save(dir_, "y.npy", clouds_.y, {m_, d_});
    save(dir_, "a.npy", a_, {n_});
    save(dir_, "b.npy", b_, {m_});
  }
  std::uint64_t seed_ = 0;
  const index_t n_ = 37, m_ = 29, d_ = 3;  // primes: remainder tiles everywhere
  ref::Clouds clouds_;
  std::vector<double> a_, b_;
  TempDir dir_;
};

TEST_F(CliSinkhorn, GoodRunMatchesInProcessSolveBitwise) {
  SCOPED_TRACE("seed " + std::to_string(seed_));
  for (DType precision : {DType::float64, DType::float32}) {
    const std::string prec = otcal::dtype_name(precision);
    SCOPED_TRACE(prec);
    const std::string out = "out_" + prec;
    const RunResult r = run_cli(dir_, "sinkhorn --x x.npy --y y.npy --a a.npy --b b.npy --out " + out +
                                          " --cost sqeuclidean --scale-cost mean --epsilon 0.05 --threshold 1e-6"
                                          " --batch-size 7 --device cpu --precision " + prec);
    ASSERT_EQ(r.exit_code, 0) << r.err;
    EXPECT_NE(r.err.find("iteration"), std::string::npos) << "progress expected on stderr: " << r.err;
    for (const char* f : {"f.npy", "g.npy", "result.json"}) EXPECT_TRUE(fs::exists(dir_.path / out / f)) << f;

    // The same solve in-process, from the same files.
    const auto x = otcal::io::read_npy(dir_.file("x.npy"), "x");
    const auto y = otcal::io::read_npy(dir_.file("y.npy"), "y");
    otcal::PointCloud geom{x.matrix(), y.matrix(),
                           {otcal::Cost::parse("sqeuclidean"), otcal::ScaleCost::parse("mean")}};
    otcal::SinkhornOptions o;
    o.epsilon = 0.05;
    o.threshold = 1e-6;
    o.precision = precision;  // batch size left to the planner: results must not depend on it
    const otcal::SinkhornResult want = otcal::sinkhorn(otcal::Context::cpu(), geom, otcal::ConstVector::of(a_.data(), n_),
                                                       otcal::ConstVector::of(b_.data(), m_), o);
    const auto f = otcal::io::read_npy(dir_.file(out + "/f.npy"), "f");
    const auto g = otcal::io::read_npy(dir_.file(out + "/g.npy"), "g");
    EXPECT_EQ(f.dtype, precision);
    EXPECT_EQ(g.dtype, precision);
    ASSERT_EQ(f.shape, std::vector<index_t>{n_});
    ASSERT_EQ(g.shape, std::vector<index_t>{m_});
    for (index_t i = 0; i < n_; ++i) ASSERT_EQ(f.at(i), want.f[i]) << "f[" << i << "]";
    for (index_t j = 0; j < m_; ++j) ASSERT_EQ(g.at(j), want.g[j]) << "g[" << j << "]";

    const nlohmann::json j = nlohmann::json::parse(slurp(dir_.file(out + "/result.json")));
    EXPECT_EQ(j.at("converged").get<bool>(), want.converged);
    EXPECT_FALSE(j.at("diverged").get<bool>());
    EXPECT_EQ(j.at("n_iters").get<index_t>(), want.n_iters);
    EXPECT_EQ(j.at("iterations").get<index_t>(), want.n_iters);
    EXPECT_EQ(j.at("reg_ot_cost").get<double>(), want.reg_ot_cost);
    EXPECT_EQ(j.at("epsilon").get<double>(), want.epsilon);
    EXPECT_EQ(j.at("scale").get<double>(), want.scale);
    ASSERT_EQ(j.at("errors").size(), want.errors.size());
    for (std::size_t k = 0; k < want.errors.size(); ++k) {
      if (std::isfinite(want.errors[k])) EXPECT_EQ(j["errors"][k].get<double>(), want.errors[k]);
      else EXPECT_TRUE(j["errors"][k].is_null()) << "non-finite error " << k << " must be null";
    }
    EXPECT_EQ(j.at("n").get<index_t>(), n_);
    EXPECT_EQ(j.at("m").get<index_t>(), m_);
    EXPECT_EQ(j.at("d").get<index_t>(), d_);
    EXPECT_EQ(j.at("cost").get<std::string>(), "sqeuclidean");
    EXPECT_EQ(j.at("batch_size").get<index_t>(), 7);
    EXPECT_EQ(j.at("tile_plan").at("rows").get<index_t>(), 7);
    EXPECT_TRUE(j.at("device").get<std::string>().rfind("cpu", 0) == 0);
    EXPECT_TRUE(j.contains("device_selection_note"));
    const auto& mem = j.at("memory");
    EXPECT_GT(mem.at("peak_bytes").get<std::size_t>(), 0u);
    EXPECT_LE(mem.at("peak_bytes").get<std::size_t>(), mem.at("planned_peak_bytes").get<std::size_t>());
    EXPECT_LE(mem.at("planned_peak_bytes").get<std::size_t>(), mem.at("budget_bytes").get<std::size_t>());
    EXPECT_GE(j.at("elapsed_s").get<double>(), 0.0);
    EXPECT_TRUE(j.at("warnings").is_array());
    EXPECT_EQ(j.at("inputs").at("x").get<std::string>(), "x.npy");
    EXPECT_EQ(j.at("inputs").at("b").get<std::string>(), "b.npy");
    const auto& opt = j.at("options");
    for (const char* key : {"cost", "scale_cost", "epsilon", "relative_epsilon", "epsilon_init", "epsilon_decay", "tau_a",
                            "tau_b", "threshold", "norm_error", "inner_iterations", "min_iterations", "max_iterations",
                            "parallel_dual_updates", "batch_size", "precision", "memory_budget", "device", "quiet"})
      EXPECT_TRUE(opt.contains(key)) << key;
    EXPECT_EQ(opt.at("max_iterations").get<index_t>(), 2000);  // a default, recorded
    EXPECT_EQ(opt.at("inner_iterations").get<index_t>(), 10);

    if (precision == DType::float64) {  // and the independent dense reference agrees
      ref::Options ro;
      ro.epsilon = 0.05;
      ro.scale = "mean";
      ro.threshold = 1e-6;
      const ref::Result rr = ref::sinkhorn(clouds_, a_, b_, "sqeuclidean", 2.0, ro);
      ASSERT_EQ(rr.n_iters, want.n_iters);
      for (index_t i = 0; i < n_; ++i) EXPECT_NEAR(f.at(i), rr.f[i], 1e-9 * std::max(1.0, std::fabs(rr.f[i])));
      for (index_t jx = 0; jx < m_; ++jx) EXPECT_NEAR(g.at(jx), rr.g[jx], 1e-9 * std::max(1.0, std::fabs(rr.g[jx])));
    }
  }
}

TEST_F(CliSinkhorn, QuietDefaultsAndRewritingItsOwnOutput) {
  SCOPED_TRACE("seed " + std::to_string(seed_));
  // y defaults to x, uniform weights; --quiet silences progress; an earlier otcal output is replaced.
  for (int round = 0; round < 2; ++round) {
    const RunResult r = run_cli(dir_, "sinkhorn --x x.npy --out again --quiet --device cpu");
    ASSERT_EQ(r.exit_code, 0) << r.err;
    EXPECT_EQ(r.err.find("iteration"), std::string::npos) << r.err;
  }
  const nlohmann::json j = nlohmann::json::parse(slurp(dir_.file("again/result.json")));
  EXPECT_EQ(j.at("m").get<index_t>(), n_);
  EXPECT_TRUE(j.at("inputs").at("y").is_null());
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(dir_.path)) names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  EXPECT_EQ(names, (std::vector<std::string>{"a.npy", "again", "b.npy", "x.npy", "y.npy"}));
}

struct BadCase {
  std::string name;
  std::string args;      // appended to "sinkhorn --out out --device cpu --quiet"
  std::string names;     // stderr must contain this (the flag)
};

TEST_F(CliSinkhorn, BadInputsFailNamingTheInputAndLeaveNothing) {
  SCOPED_TRACE("seed " + std::to_string(seed_));
  // Malformed inputs, written here.
  std::ofstream(dir_.file("text.npy")) << "1,2,3\n4,5,6\n";
  const std::vector<std::int64_t> ints(static_cast<std::size_t>(n_ * d_), 1);
  otcal::io::write_npy(dir_.file("int64.npy"), ints.data(), {n_, d_});
  save(dir_, "x3d.npy", std::vector<double>(static_cast<std::size_t>(n_ * d_ * 2), 1.0), {n_, d_, 2});
  save(dir_, "y4.npy", std::vector<double>(static_cast<std::size_t>(m_ * 4), 1.0), {m_, 4});
  save(dir_, "a_short.npy", std::vector<double>(static_cast<std::size_t>(n_ - 1), 1.0), {n_ - 1});
  std::vector<double> neg = a_;
  neg[3] = -0.25;
  save(dir_, "a_neg.npy", neg, {n_});
  std::vector<double> xnan = clouds_.x;
  xnan[5] = std::numeric_limits<double>::quiet_NaN();
  save(dir_, "x_nan.npy", xnan, {n_, d_});
  std::vector<double> yinf = clouds_.y;
  yinf[7] = std::numeric_limits<double>::infinity();
  save(dir_, "y_inf.npy", yinf, {m_, d_});
  save(dir_, "b_zero.npy", std::vector<double>(static_cast<std::size_t>(m_), 0.0), {m_});
  save(dir_, "a_2d.npy", a_, {n_, 1});
  std::ofstream(dir_.file("existing_file")) << "keep me";
  fs::create_directory(dir_.path / "foreign");
  std::ofstream(dir_.file("foreign/notes.txt")) << "mine";

  const std::string xy = " --x x.npy --y y.npy";
  const std::vector<BadCase> cases = {
      {"missing x file", " --x nope.npy --y y.npy", "--x"},
      {"x not npy", " --x text.npy --y y.npy", "--x"},
      {"x int64", " --x int64.npy --y y.npy", "--x"},
      {"x 3-D", " --x x3d.npy --y y.npy", "--x"},
      {"x and y differ in d", " --x x.npy --y y4.npy", "--y"},
      {"a wrong length", xy + " --a a_short.npy", "--a"},
      {"a 2-D", xy + " --a a_2d.npy", "--a"},
      {"negative weight", xy + " --a a_neg.npy", "--a"},
      {"NaN in x", " --x x_nan.npy --y y.npy", "--x"},
      {"Inf in y", " --x x.npy --y y_inf.npy", "--y"},
      {"zero-sum b", xy + " --b b_zero.npy", "--b"},
      {"epsilon zero", xy + " --epsilon=0", "--epsilon"},
      {"epsilon negative", xy + " --epsilon=-0.5", "--epsilon"},
      {"tau_a above 1", xy + " --tau-a 1.5", "--tau-a"},
      {"tau_b zero", xy + " --tau-b 0", "--tau-b"},
      {"epsilon decay above 1", xy + " --epsilon-decay 1.5", "--epsilon-decay"},
      {"unknown cost", xy + " --cost manhattan", "--cost"},
      {"pnorm below 1", xy + " --cost pnorm:0.5", "--cost"},
      {"unknown scale", xy + " --scale-cost huge", "--scale-cost"},
      {"max_norm with euclidean", xy + " --cost euclidean --scale-cost max_norm", "--scale-cost"},
      {"fixed length not multiple", xy + " --min-iterations 25 --max-iterations 25", "--inner-iterations"},
      {"min above max", xy + " --min-iterations 30 --max-iterations 20", "--min-iterations"},
      {"bad budget text", xy + " --memory-budget lots", "--memory-budget"},
      {"budget below minimum", xy + " --memory-budget 1KiB", "--memory-budget"},
      {"batch size 0", xy + " --batch-size 0", "--batch-size"},
      {"unknown device", xy + " --device tpu", "--device"},
      {"unknown precision", xy + " --precision float16", "--precision"},
      {"unknown relative epsilon", xy + " --relative-epsilon median", "--relative-epsilon"},
      {"missing --x flag", " --y y.npy", "--x"},
  };
  // Control: the common part of every command line, with valid inputs, succeeds. Without it each
  // case below could pass for a reason of its own (a flag of the common prefix that the binary no
  // longer accepts, say), since a failure only has to mention the case's flag.
  {
    const RunResult ok = run_cli(dir_, "sinkhorn --out control --quiet --device cpu" + xy + " --max-iterations 10");
    ASSERT_EQ(ok.exit_code, 0) << "the control run failed: " << ok.err;
    EXPECT_TRUE(fs::exists(dir_.path / "control" / "f.npy"));
    fs::remove_all(dir_.path / "control");
  }
  auto leftovers = [&](const std::string& out) {
    std::vector<std::string> extra;
    for (const auto& e : fs::directory_iterator(dir_.path)) {
      const std::string nm = e.path().filename().string();
      if (nm.rfind(out, 0) == 0) extra.push_back(nm);  // out, out.tmp-XXXXXX, out.old-XXXXXX
    }
    return extra;
  };
  for (const BadCase& c : cases) {
    SCOPED_TRACE(c.name);
    // --device is given once: the unknown-device case overrides it.
    const std::string device = c.args.find("--device") == std::string::npos ? " --device cpu" : "";
    const RunResult r = run_cli(dir_, "sinkhorn --out out --quiet" + device + c.args);
    EXPECT_NE(r.exit_code, 0);
    EXPECT_NE(r.err.find(c.names), std::string::npos) << "stderr: " << r.err;
    EXPECT_TRUE(r.err.find("error") != std::string::npos || r.err.find("required") != std::string::npos) << r.err;
    EXPECT_TRUE(leftovers("out").empty()) << "left behind: " << leftovers("out").front();
  }

  // --out that is a file, or somebody else's folder: refused, untouched, nothing beside it.
  for (const std::string& out : {std::string("existing_file"), std::string("foreign")}) {
    SCOPED_TRACE(out);
    const RunResult r = run_cli(dir_, "sinkhorn --x x.npy --y y.npy --device cpu --quiet --out " + out);
    EXPECT_NE(r.exit_code, 0);
    EXPECT_NE(r.err.find("--out"), std::string::npos) << r.err;
    EXPECT_EQ(leftovers(out), std::vector<std::string>{out});
  }
  EXPECT_EQ(slurp(dir_.file("existing_file")), "keep me");
  EXPECT_EQ(slurp(dir_.file("foreign/notes.txt")), "mine");
  EXPECT_EQ(std::distance(fs::directory_iterator(dir_.path / "foreign"), fs::directory_iterator{}), 1);
}

TEST_F(CliSinkhorn, InfoAndHelpWork) {
  RunResult r = run_cli(dir_, "info --json");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const nlohmann::json j = nlohmann::json::parse(r.out);
  for (const char* key : {"version", "built_with_cuda", "devices", "openmp_threads", "host_memory_bytes"})
    EXPECT_TRUE(j.contains(key)) << key;
  EXPECT_GT(j.at("host_memory_bytes").get<std::size_t>(), 0u);
  r = run_cli(dir_, "info");
  ASSERT_EQ(r.exit_code, 0);
  EXPECT_NE(r.out.find("OpenMP threads"), std::string::npos);
  r = run_cli(dir_, "sinkhorn --help");
  ASSERT_EQ(r.exit_code, 0);
  for (const char* flag : {"--x", "--y", "--a", "--b", "--out", "--cost", "--scale-cost", "--epsilon", "--relative-epsilon",
                           "--epsilon-init", "--epsilon-decay", "--tau-a", "--tau-b", "--threshold", "--norm-error",
                           "--inner-iterations", "--min-iterations", "--max-iterations", "--parallel-dual-updates",
                           "--batch-size", "--memory-budget", "--device", "--precision", "--quiet"})
    EXPECT_NE(r.out.find(flag), std::string::npos) << flag;
  for (const char* key : {"built_with_mpi", "built_with_nccl", "ranks", "communicator"})
    EXPECT_TRUE(nlohmann::json::parse(run_cli(dir_, "info --json").out).contains(key)) << key;
}

// An unknown command is named (CLI11 alone says only "A subcommand is required"); strict sizes
// and device ids name the flag and the text (no silent "0.5 bytes = the default budget").
TEST_F(CliSinkhorn, UnknownCommandsSizesAndDeviceIdsAreNamed) {
  RunResult r = run_cli(dir_, "frobnicate --x x.npy");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("unknown command 'frobnicate': the commands are sinkhorn"), std::string::npos) << r.err;
  for (const char* budget : {"0.5", "0.9B", "1e-300", "1e99", "18446744073709551616"}) {
    r = run_cli(dir_, std::string("demo --n 50 --memory-budget ") + budget);
    EXPECT_NE(r.exit_code, 0) << budget;
    EXPECT_NE(r.err.find(std::string("--memory-budget '") + budget + "'"), std::string::npos) << r.err;
  }
  r = run_cli(dir_, "demo --n 50 --device cuda:99999999999999999999");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("cuda:99999999999999999999': the id is too large"), std::string::npos) << r.err;
}

}  // namespace

namespace {

// --max-iterations 2147483647 on a small problem that converges early: the history holds the
// blocks run (before: max_iterations / inner_iterations slots, std::bad_alloc or a huge JSON).
TEST_F(CliSinkhorn, HugeMaxIterationsKeepsTheHistoryOfTheBlocksRun) {
  SCOPED_TRACE("seed " + std::to_string(seed_));
  const RunResult r = run_cli(dir_, "sinkhorn --x x.npy --y y.npy --out out --device cpu --quiet --epsilon 0.5 "
                                    "--inner-iterations 10 --max-iterations 2147483647");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const std::string text = slurp(dir_.path / "out" / "result.json");
  const nlohmann::json j = nlohmann::json::parse(text);
  ASSERT_TRUE(j["converged"].get<bool>());
  EXPECT_EQ(j["errors"].size(), j["iterations"].get<std::size_t>() / 10);
  EXPECT_LT(text.size(), std::size_t{64} << 10) << "result.json should stay small";
}

// Coordinates whose cost overflows the working precision are refused naming the cloud and saying
// to rescale (before: "epsilon resolved to 0 (the scaled cost has no spread)", and with
// --epsilon 1 an exit 0 with an unconverged solve and reg_ot_cost 1).
TEST_F(CliSinkhorn, CostsThatOverflowArePointedAtTheCloud) {
  SCOPED_TRACE("seed " + std::to_string(seed_));
  auto scaled = [&](double s) {
    std::vector<double> v = clouds_.y;
    for (double& e : v) e = (e + 0.5) * s;
    return v;
  };
  save(dir_, "huge.npy", scaled(1e160), {m_, d_});
  save(dir_, "big32.npy", scaled(1e20), {m_, d_}, DType::float32);
  struct Case {
    std::string flags, precision;
  };
  const std::vector<Case> cases = {
      {"--y huge.npy --epsilon 1", "float64"},
      {"--y huge.npy", "float64"},
      {"--y huge.npy --cost euclidean --epsilon 1", "float64"},
      {"--y big32.npy --precision float32 --epsilon 1", "float32"},
      {"--y big32.npy --precision float32 --cost sq_pnorm:2 --epsilon 1", "float32"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.flags);
    const RunResult r = run_cli(dir_, "sinkhorn --x x.npy --out out --device cpu --quiet " + c.flags);
    EXPECT_NE(r.exit_code, 0);
    EXPECT_NE(r.err.find("y has a point of norm"), std::string::npos) << r.err;
    EXPECT_NE(r.err.find("overflows"), std::string::npos) << r.err;
    EXPECT_NE(r.err.find(c.precision), std::string::npos) << r.err;
    EXPECT_NE(r.err.find("rescale the points"), std::string::npos) << r.err;
    EXPECT_FALSE(fs::exists(dir_.path / "out"));
  }
  // The float32 cloud fits float64.
  EXPECT_EQ(run_cli(dir_, "sinkhorn --x x.npy --y big32.npy --out ok --device cpu --quiet --epsilon 1e30 "
                          "--max-iterations 20").exit_code, 0);
}

}  // namespace
