// Diagnostics (docs/calibration.md §5): table formulas, Kish identities, planted warnings.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <string>

#include "otcal/calibration.hpp"
#include "otcal/context.hpp"
#include "support/process.hpp"

namespace {

using otcal::index_t;

bool any_contains(const std::vector<std::string>& v, const std::string& a, const std::string& b = "") {
  for (const auto& s : v)
    if (s.find(a) != std::string::npos && s.find(b) != std::string::npos) return true;
  return false;
}

TEST(CalibrationDiagnostics, TableFormulasAndKishIdentities) {
  const auto seed = testsupport::fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  auto ctx = otcal::Context::cpu({.on_warning = [](const std::string&) {}});
  auto s = otcal::make_synthetic_survey(500, 2, 3, 1, seed);
  s.spec.marginal[0].second[0].second = 0;  // a zero target: relative errors NaN
  const auto sys = otcal::build_constraints(ctx, s.table, s.spec);
  std::uniform_real_distribution<double> u(0.2, 5);
  std::vector<double> w(500);
  for (auto& x : w) x = u(rng);
  w[3] = 0;
  const auto dg = otcal::diagnose(sys, w, {sys.names[1]});
  ASSERT_EQ(dg.targets.size(), static_cast<std::size_t>(sys.A.rows));
  double max_rel = 0, sum_rel = 0, sum_sq = 0;
  int close = 0;
  for (index_t r = 0; r < sys.A.rows; ++r) {
    const auto& t = dg.targets[r];
    double est = 0;
    index_t support = 0;
    for (std::int64_t q = sys.A.indptr[r]; q < sys.A.indptr[r + 1]; ++q) {
      est += sys.A.values[q] * w[sys.A.index(q)];
      ++support;
    }
    EXPECT_EQ(t.name, sys.names[r]);
    EXPECT_NEAR(t.estimate, est, 1e-12 * std::fabs(est));
    EXPECT_DOUBLE_EQ(t.error, t.estimate - t.target);
    EXPECT_DOUBLE_EQ(t.abs_error, std::fabs(t.error));
    if (t.target == 0) {
      EXPECT_TRUE(std::isnan(t.rel_error));
      EXPECT_TRUE(std::isnan(t.rel_abs_error));
    } else {
      EXPECT_DOUBLE_EQ(t.rel_error, t.error / t.target);
      EXPECT_DOUBLE_EQ(t.rel_abs_error, std::fabs(t.error) / std::fabs(t.target));
    }
    EXPECT_EQ(t.within_tol, std::fabs(t.error) / std::max(t.target + 1, 1e-12) < 0.1);
    EXPECT_EQ(t.excluded, r == 1);
    EXPECT_EQ(t.support, support);
    EXPECT_DOUBLE_EQ(t.support_fraction, support / 500.0);
    const double rel = t.target > 0 ? std::fabs(t.error) / t.target : 0.0;
    max_rel = std::max(max_rel, rel);
    sum_rel += rel;
    sum_sq += rel * rel;
    close += t.within_tol;
  }
  EXPECT_DOUBLE_EQ(dg.max_error, max_rel);
  EXPECT_NEAR(dg.mean_error, sum_rel / sys.A.rows, 1e-15);
  EXPECT_NEAR(dg.rmse, std::sqrt(sum_sq / sys.A.rows), 1e-15);
  EXPECT_NEAR(dg.pct_close, static_cast<double>(close) / sys.A.rows, 1e-15);
  // weight statistics and Kish identities
  const auto& st = dg.weights;
  double sum = 0, sum2 = 0;
  for (double x : w) sum += x, sum2 += x * x;
  const double mean = sum / 500, var = sum2 / 500 - mean * mean;
  EXPECT_NEAR(st.mean, mean, 1e-12);
  EXPECT_NEAR(st.std, std::sqrt(var), 1e-10);
  EXPECT_EQ(st.n_zero, 1);
  EXPECT_EQ(st.n_negative, 0);
  EXPECT_NEAR(st.deff, 1 + st.cv * st.cv, 1e-12);
  EXPECT_NEAR(st.n_eff, 500 / st.deff, 1e-9);
  EXPECT_NEAR(st.efficiency, st.n_eff / 500, 1e-12);
  EXPECT_NEAR(st.n_eff, sum * sum / sum2, 1e-9);
  EXPECT_LE(st.design_efficiency, 1 + 1e-12);
}

TEST(CalibrationDiagnostics, PlantedWarningsFire) {
  auto ctx = otcal::Context::cpu({.on_warning = [](const std::string&) {}});
  otcal::RecordTable t;
  std::vector<double> a(400, 0.0), x(400, 1.0), w(400, 1.0);
  a[5] = 1;                // category 1: support 1/400 < 1 %
  w[0] = -20;              // floored by the gradient calibrator (noise 0)
  t.add_numeric("a", a);
  t.add_numeric("x", x);
  t.add_numeric("weight", w);
  otcal::ConstraintSpec s;
  s.marginal = {{"a", {{"0", 399}, {"1", 1}, {"2", 0}}}};  // a=2: zero support
  s.continuous = {{"x", -5}};                              // negative, and far from its column sum
  s.total = 40000;                                          // two orders of magnitude above Σ 1
  const auto sys = otcal::build_constraints(ctx, t, s);
  EXPECT_TRUE(any_contains(sys.warnings, "zero support", "a=2"));
  EXPECT_TRUE(any_contains(sys.warnings, "fewer than 1%", "a=1"));
  EXPECT_TRUE(any_contains(sys.warnings, "negative", "x"));
  EXPECT_TRUE(any_contains(sys.warnings, "order of magnitude", "total"));
  otcal::GradientOptions o;
  o.epochs = 2;
  o.noise_level = 0;
  const auto res = otcal::calibrate_gradient(ctx, sys, o);
  EXPECT_TRUE(any_contains(res.diagnostics.warnings, "floored"));
  EXPECT_TRUE(any_contains(res.diagnostics.warnings, "zero support", "a=2"));
  EXPECT_TRUE(any_contains(res.diagnostics.warnings, "negative", "x"));
  std::vector<double> neg(400, 1.0);
  neg[9] = -1;
  EXPECT_TRUE(any_contains(otcal::diagnose(sys, neg).warnings, "weight(s) are negative"));
}

TEST(CalibrationDiagnostics, NormalizationFromGroups) {
  const auto nf = otcal::normalization_from_groups({"nation", "state", "state", "state", "state"});
  // 1/1 and 1/4, rescaled by 1/mean: both groups carry equal total weight, mean 1
  double mean = 0;
  for (double v : nf) mean += v / nf.size();
  EXPECT_NEAR(mean, 1.0, 1e-15);
  EXPECT_NEAR(nf[0], 4 * nf[1], 1e-15);
  EXPECT_NEAR(nf[0], nf[1] + nf[2] + nf[3] + nf[4], 1e-15);
}

}  // namespace
