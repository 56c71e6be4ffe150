// Exact calibrators (docs/calibration.md §4) against closed forms and independent references
// written here: dense GREG with Eigen, iterative proportional fitting for raking.
#include <gtest/gtest.h>

#include <Eigen/Dense>
#include <cmath>
#include <random>
#include <string>

#include "otcal/calibration.hpp"
#include "otcal/context.hpp"
#include "otcal/errors.hpp"

namespace {

using otcal::index_t;

otcal::Context quiet_ctx() {
  return otcal::Context::cpu({.memory_budget = 256u << 20, .on_warning = [](const std::string&) {}});
}

Eigen::MatrixXd dense(const otcal::CsrMatrix& A) {
  Eigen::MatrixXd X = Eigen::MatrixXd::Zero(A.rows, A.cols);
  for (index_t r = 0; r < A.rows; ++r)
    for (std::int64_t q = A.indptr[r]; q < A.indptr[r + 1]; ++q) X(r, A.index(q)) = A.values[q];
  return X;
}

// max |t - X w| / (1 + |t|)
double misfit_ratio(const otcal::ConstraintSystem& sys, const std::vector<double>& w) {
  const Eigen::MatrixXd X = dense(sys.A);
  const Eigen::VectorXd est = X * Eigen::Map<const Eigen::VectorXd>(w.data(), w.size());
  double worst = 0;
  for (index_t r = 0; r < sys.A.rows; ++r)
    worst = std::max(worst, std::fabs(sys.targets[r] - est[r]) / (1 + std::fabs(sys.targets[r])));
  return worst;
}

struct Case {
  std::uint64_t seed;
  otcal::ConstraintSystem sys;
};

Case random_case(int margins, int cats, int cont, index_t n) {
  Case c;
  c.seed = std::random_device{}();
  auto ctx = quiet_ctx();
  auto s = otcal::make_synthetic_survey(n, margins, cats, cont, c.seed);
  c.sys = otcal::build_constraints(ctx, s.table, s.spec);
  return c;
}

TEST(CalibrationExact, UnboundedLinearEqualsDenseGreg) {
  for (int trial = 0; trial < 5; ++trial) {
    Case c = random_case(2 + trial % 2, 3 + trial, 2, 200 + 37 * trial);
    SCOPED_TRACE("seed " + std::to_string(c.seed));
    auto ctx = quiet_ctx();
    const auto res = otcal::calibrate_exact(ctx, c.sys, {.calfun = otcal::CalFun::linear});
    ASSERT_TRUE(res.converged);
    // Independent GREG: T = X D Xᵀ, λ = min-norm solution of T λ = t - X d, g = 1 + Xᵀλ.
    const Eigen::MatrixXd X = dense(c.sys.A);
    const Eigen::VectorXd d = Eigen::Map<const Eigen::VectorXd>(c.sys.design_weights.data(), X.cols());
    const Eigen::VectorXd t = Eigen::Map<const Eigen::VectorXd>(c.sys.targets.data(), X.rows());
    const Eigen::MatrixXd T = X * d.asDiagonal() * X.transpose();
    const Eigen::VectorXd lambda = T.completeOrthogonalDecomposition().solve(t - X * d);
    const Eigen::VectorXd g = Eigen::VectorXd::Ones(X.cols()) + X.transpose() * lambda;
    for (index_t i = 0; i < X.cols(); ++i)
      ASSERT_NEAR(res.weights[i], d[i] * g[i], 1e-10 * std::max(1.0, std::fabs(d[i] * g[i]))) << "record " << i;
    EXPECT_LT(misfit_ratio(c.sys, res.weights), 1e-7);
  }
}

// Independent raking reference: iterative proportional fitting over the margins, to convergence.
std::vector<double> ipf(const otcal::ConstraintSystem& sys) {
  std::vector<double> w = sys.design_weights;
  for (int sweep = 0; sweep < 100000; ++sweep) {
    double change = 0;
    for (index_t r = 0; r < sys.A.rows; ++r) {
      double s = 0;
      for (std::int64_t q = sys.A.indptr[r]; q < sys.A.indptr[r + 1]; ++q) s += w[sys.A.index(q)];
      const double f = sys.targets[r] / s;
      change = std::max(change, std::fabs(f - 1));
      for (std::int64_t q = sys.A.indptr[r]; q < sys.A.indptr[r + 1]; ++q) w[sys.A.index(q)] *= f;
    }
    if (change < 1e-15) break;
  }
  return w;
}

TEST(CalibrationExact, RakingEqualsIterativeProportionalFitting) {
  for (int trial = 0; trial < 4; ++trial) {
    Case c = random_case(2 + trial % 3, 3 + trial, 0, 300);
    SCOPED_TRACE("seed " + std::to_string(c.seed));
    auto ctx = quiet_ctx();
    const auto res = otcal::calibrate_exact(ctx, c.sys, {.calfun = otcal::CalFun::raking, .epsilon = 1e-12});
    ASSERT_TRUE(res.converged);
    const auto ref = ipf(c.sys);
    for (index_t i = 0; i < c.sys.A.cols; ++i) ASSERT_NEAR(res.weights[i], ref[i], 1e-9 * ref[i]) << "record " << i;
  }
}

TEST(CalibrationExact, EveryMethodMeetsTargetsAndBounds) {
  struct M {
    otcal::CalFun f;
    double lo, hi;
    const char* name;
  };
  const M methods[] = {{otcal::CalFun::linear, -INFINITY, INFINITY, "linear"},
                       {otcal::CalFun::linear, 0.8, 1.25, "truncated linear"},
                       {otcal::CalFun::raking, -INFINITY, INFINITY, "raking"},
                       {otcal::CalFun::raking, 0.8, 1.25, "bounded raking"},
                       {otcal::CalFun::logit, 0.7, 1.3, "logit"}};
  for (int trial = 0; trial < 3; ++trial) {
    Case c = random_case(3, 4 + trial, 2, 400);
    SCOPED_TRACE("seed " + std::to_string(c.seed));
    for (const auto& m : methods) {
      SCOPED_TRACE(m.name);
      auto ctx = quiet_ctx();
      const auto res = otcal::calibrate_exact(ctx, c.sys, {.calfun = m.f, .lower = m.lo, .upper = m.hi});
      ASSERT_TRUE(res.converged);
      EXPECT_LT(res.max_ratio, 1e-7);
      EXPECT_LT(misfit_ratio(c.sys, res.weights), 1e-7);  // independent check of the estimate
      for (double g : res.g) {
        ASSERT_GE(g, m.lo - 1e-12);
        ASSERT_LE(g, m.hi + 1e-12);
      }
    }
  }
}

TEST(CalibrationExact, TruncatedLinearHitsBoundsWhenTight) {
  Case c = random_case(2, 5, 1, 300);
  SCOPED_TRACE("seed " + std::to_string(c.seed));
  for (auto& t : c.sys.targets) t *= 1.1;  // needs g around 1.1 while g* spans [0.9, 1.1]
  auto ctx = quiet_ctx();
  const auto res = otcal::calibrate_exact(ctx, c.sys, {.calfun = otcal::CalFun::linear, .lower = 0.9, .upper = 1.3});
  ASSERT_TRUE(res.converged);
  for (double g : res.g) {
    ASSERT_GE(g, 0.9 - 1e-12);
    ASSERT_LE(g, 1.3 + 1e-12);
  }
  EXPECT_LT(misfit_ratio(c.sys, res.weights), 1e-7);
}

TEST(CalibrationExact, InfeasibleBoundsFailClearlyAndForceReturnsBest) {
  Case c = random_case(2, 3, 0, 200);
  SCOPED_TRACE("seed " + std::to_string(c.seed));
  for (auto& t : c.sys.targets) t *= 1.5;  // every g would have to average 1.5 > upper
  auto ctx = quiet_ctx();
  for (auto f : {otcal::CalFun::linear, otcal::CalFun::raking, otcal::CalFun::logit}) {
    otcal::ExactOptions o{.calfun = f, .lower = 0.5, .upper = 1.2};
    try {
      otcal::calibrate_exact(ctx, c.sys, o);
      ADD_FAILURE() << "expected CalibrationFailed";
    } catch (const otcal::CalibrationFailed& e) {
      EXPECT_NE(std::string(e.what()).find("Calibration failed"), std::string::npos);
      EXPECT_NE(std::string(e.what()).find("m0="), std::string::npos) << e.what();  // names targets
    }
    o.force = true;
    const auto res = otcal::calibrate_exact(ctx, c.sys, o);
    EXPECT_FALSE(res.converged);
    EXPECT_GE(res.max_ratio, 1e-7);
    EXPECT_FALSE(res.worst_targets.empty());
    EXPECT_EQ(res.weights.size(), c.sys.design_weights.size());
  }
}

TEST(CalibrationExact, InconsistentMarginsFail) {
  Case c = random_case(2, 3, 0, 200);
  SCOPED_TRACE("seed " + std::to_string(c.seed));
  c.sys.targets[0] *= 1.3;  // margin m0 now sums to a different total than m1
  auto ctx = quiet_ctx();
  EXPECT_THROW(otcal::calibrate_exact(ctx, c.sys, {.calfun = otcal::CalFun::raking}), otcal::CalibrationFailed);
  EXPECT_THROW(otcal::calibrate_exact(ctx, c.sys, {.calfun = otcal::CalFun::linear}), otcal::CalibrationFailed);
  const auto res = otcal::calibrate_exact(ctx, c.sys, {.calfun = otcal::CalFun::linear, .force = true});
  EXPECT_FALSE(res.converged);
}

TEST(CalibrationExact, ZeroRows) {
  otcal::RecordTable t;
  t.add_numeric("a", {0, 1, 1, 0, 1});
  otcal::ConstraintSpec s;
  s.marginal = {{"a", {{"0", 2.5}, {"1", 3.5}, {"2", 0}}}};  // a=2: zero row, zero target -> dropped
  auto ctx = quiet_ctx();
  auto sys = otcal::build_constraints(ctx, t, s);
  const auto res = otcal::calibrate_exact(ctx, sys, {.calfun = otcal::CalFun::raking});
  EXPECT_TRUE(res.converged);
  ASSERT_EQ(res.dropped_constraints, std::vector<std::string>{"a=2"});
  EXPECT_NEAR(res.weights[0], 1.25, 1e-6);  // converged to epsilon = 1e-7 relative to 1 + t
  EXPECT_NEAR(res.weights[1], 3.5 / 3, 1e-6);
  sys.targets[2] = 1;  // zero row, non-zero target: infeasible, named
  try {
    otcal::calibrate_exact(ctx, sys, {});
    ADD_FAILURE();
  } catch (const otcal::InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("'a=2'"), std::string::npos);
  }
}

TEST(CalibrationExact, PrescaleTriggersAbove20AndStillMeetsTargets) {
  Case c = random_case(2, 4, 1, 300);
  SCOPED_TRACE("seed " + std::to_string(c.seed));
  for (auto& t : c.sys.targets) t *= 100;
  auto ctx = quiet_ctx();
  for (auto f : {otcal::CalFun::raking, otcal::CalFun::linear}) {
    const auto res = otcal::calibrate_exact(ctx, c.sys, {.calfun = f, .lower = 0, .upper = INFINITY});
    ASSERT_TRUE(res.converged);
    EXPECT_LT(misfit_ratio(c.sys, res.weights), 1e-7);
    // g relative to the original design weights, around 100
    for (std::size_t i = 0; i < res.g.size(); ++i) ASSERT_NEAR(res.g[i] * c.sys.design_weights[i], res.weights[i], 1e-9 * res.weights[i]);
  }
}

TEST(CalibrationExact, OptionErrors) {
  Case c = random_case(1, 3, 0, 50);
  auto ctx = quiet_ctx();
  EXPECT_THROW(otcal::calibrate_exact(ctx, c.sys, {.calfun = otcal::CalFun::logit}), otcal::InvalidArgument);
  EXPECT_THROW(otcal::calibrate_exact(ctx, c.sys, {.lower = 1.1, .upper = 2}), otcal::InvalidArgument);
}

TEST(CalibrationExact, PeakWithinPlan) {
  Case c = random_case(3, 10, 2, 20000);
  SCOPED_TRACE("seed " + std::to_string(c.seed));
  auto ctx = quiet_ctx();
  ctx.statistics().push_scope();
  const auto res = otcal::calibrate_exact(ctx, c.sys, {.calfun = otcal::CalFun::raking});
  const auto peak = ctx.statistics().pop_scope();
  EXPECT_TRUE(res.converged);
  EXPECT_LE(static_cast<std::size_t>(peak.peak), res.plan.planned_peak);
  EXPECT_LE(res.plan.planned_peak, ctx.memory_budget());
  EXPECT_LT(static_cast<std::size_t>(peak.peak), static_cast<std::size_t>(c.sys.A.rows) * c.sys.A.cols * 8);
}

TEST(CalibrationExact, TrimmingSemantics) {
  const auto seed = std::random_device{}();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> u(0, 1);
  std::vector<double> g(300), d(300);
  for (auto& x : g) x = 0.3 + 2 * u(rng);
  for (auto& x : d) x = 1 + 4 * u(rng);
  const double a = 0.6, b = 1.8;
  const auto tr = otcal::trim_g(g, d, a, b);
  double mass = 0, d_in = 0, before = 0, after = 0;
  index_t n_out = 0;
  for (std::size_t i = 0; i < g.size(); ++i) {
    const bool out = g[i] < a || g[i] > b;
    n_out += out;
    mass += (g[i] - std::clamp(g[i], a, b)) * d[i];
    if (!out) d_in += d[i];
    before += d[i] * g[i];
    after += d[i] * tr.values[i];
  }
  EXPECT_EQ(tr.n_trimmed, n_out);
  for (std::size_t i = 0; i < g.size(); ++i) {
    const bool out = g[i] < a || g[i] > b;
    ASSERT_NEAR(tr.values[i], out ? std::clamp(g[i], a, b) : g[i] + mass / d_in, 1e-12);
  }
  EXPECT_NEAR(after, before, 1e-9 * before);  // the trimmed mass is spread, not lost
  EXPECT_NE(tr.warnings.back().find("weights were trimmed"), std::string::npos);

  std::vector<double> w(200);
  for (auto& x : w) x = std::exp(2 * u(rng));
  double wsum = 0;
  for (double x : w) wsum += x;
  const auto once = otcal::trim_weights(w, 1.5, 5.0, false);
  const auto strict = otcal::trim_weights(w, 1.5, 5.0, true);
  double s1 = 0, s2 = 0;
  for (double x : once.values) s1 += x;
  for (double x : strict.values) {
    s2 += x;
    EXPECT_GE(x, 1.5 - 1e-12);
    EXPECT_LE(x, 5.0 + 1e-12);
  }
  EXPECT_NEAR(s1, wsum, 1e-9 * wsum);
  EXPECT_NEAR(s2, wsum, 1e-9 * wsum);
  const auto fail = otcal::trim_weights({10, 10, 10}, 0, 1, true);
  EXPECT_NE(fail.warnings.back().find("trimming failed"), std::string::npos);

  Case c = random_case(2, 4, 1, 300);
  auto ctx = quiet_ctx();
  const auto plain = otcal::calibrate_exact(ctx, c.sys, {.calfun = otcal::CalFun::linear});
  const auto trimmed = otcal::calibrate_exact(ctx, c.sys, {.calfun = otcal::CalFun::linear, .trim = std::pair{0.97, 1.03}});
  const auto ref = otcal::trim_g(plain.g, c.sys.design_weights, 0.97, 1.03);
  for (std::size_t i = 0; i < ref.values.size(); ++i) ASSERT_NEAR(trimmed.g[i], ref.values[i], 1e-12);
}

// R rake(): sweeps of per-margin post-stratification; the test's IPF does the same sweep (rows of a
// margin are disjoint), so after the same number of sweeps both agree, and tight control converges
// to the raking solution.
TEST(CalibrationExact, RakeSemantics) {
  Case c = random_case(3, 4, 0, 400);
  SCOPED_TRACE("seed " + std::to_string(c.seed));
  auto ctx = quiet_ctx();
  const auto loose = otcal::rake(ctx, c.sys);  // maxit 10, epsilon 1 (absolute)
  ASSERT_TRUE(loose.converged);
  std::vector<double> w = c.sys.design_weights;
  for (int sweep = 0; sweep < loose.n_iterations; ++sweep)
    for (index_t r = 0; r < c.sys.A.rows; ++r) {
      double s = 0;
      for (std::int64_t q = c.sys.A.indptr[r]; q < c.sys.A.indptr[r + 1]; ++q) s += w[c.sys.A.index(q)];
      for (std::int64_t q = c.sys.A.indptr[r]; q < c.sys.A.indptr[r + 1]; ++q) w[c.sys.A.index(q)] *= c.sys.targets[r] / s;
    }
  for (std::size_t i = 0; i < w.size(); ++i) ASSERT_NEAR(loose.weights[i], w[i], 1e-12 * w[i]);
  EXPECT_LT(loose.history.back().loss, 1.0);
  const auto tight = otcal::rake(ctx, c.sys, {.max_sweeps = 1000, .epsilon = 1e-15});
  const auto ref = ipf(c.sys);
  for (std::size_t i = 0; i < ref.size(); ++i) ASSERT_NEAR(tight.weights[i], ref[i], 1e-9 * ref[i]);
  const auto stopped = otcal::rake(ctx, c.sys, {.max_sweeps = 1, .epsilon = 1e-15});
  EXPECT_FALSE(stopped.converged);
  EXPECT_NE(stopped.diagnostics.warnings.back().find("Raking did not converge after 1 iterations"), std::string::npos);
}

TEST(CalibrationExact, GregWithVariance) {
  Case c = random_case(2, 3, 1, 150);
  SCOPED_TRACE("seed " + std::to_string(c.seed));
  std::mt19937_64 rng(c.seed);
  std::uniform_real_distribution<double> u(0.5, 2);
  const index_t n = c.sys.A.cols, k = c.sys.A.rows;
  const Eigen::MatrixXd X = dense(c.sys.A);
  const Eigen::VectorXd d = Eigen::Map<const Eigen::VectorXd>(c.sys.design_weights.data(), n);
  const Eigen::VectorXd t = Eigen::Map<const Eigen::VectorXd>(c.sys.targets.data(), k);
  auto ctx = quiet_ctx();
  std::vector<double> per_record(n), per_constraint(k);
  for (auto& v : per_record) v = u(rng);
  for (auto& v : per_constraint) v = u(rng);
  for (int mode = 0; mode < 2; ++mode) {
    otcal::ExactOptions o;
    o.variance = mode == 0 ? per_record : per_constraint;
    Eigen::VectorXd s2(n);
    for (index_t i = 0; i < n; ++i) s2[i] = mode == 0 ? per_record[i] : X.col(i).dot(Eigen::Map<const Eigen::VectorXd>(per_constraint.data(), k));
    const auto res = otcal::calibrate_exact(ctx, c.sys, o);
    const Eigen::MatrixXd T = X * (d.array() / s2.array()).matrix().asDiagonal() * X.transpose();
    const Eigen::VectorXd lambda = T.completeOrthogonalDecomposition().solve(t - X * d);
    for (index_t i = 0; i < n; ++i) {
      const double w = d[i] * (1 + X.col(i).dot(lambda) / s2[i]);
      ASSERT_NEAR(res.weights[i], w, 1e-10 * std::max(1.0, std::fabs(w))) << "mode " << mode << " record " << i;
    }
  }
  otcal::ExactOptions bad;
  bad.variance = std::vector<double>(n, 1.0);
  bad.variance[4] = -1;
  EXPECT_THROW(otcal::calibrate_exact(ctx, c.sys, bad), otcal::InvalidArgument);
}

}  // namespace
