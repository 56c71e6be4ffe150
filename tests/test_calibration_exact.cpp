// Exact calibrators (docs/calibration.md §4) against closed forms and independent references
// written here: dense GREG with Eigen, iterative proportional fitting for raking.
#include <gtest/gtest.h>

#include <Eigen/Dense>
#include <algorithm>
#include <cmath>
#include <random>
#include <string>

#include "otcal/calibration.hpp"
#include "otcal/context.hpp"
#include "otcal/errors.hpp"
#include "support/process.hpp"

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

// A synthetic survey; `seed` is the test's fresh seed (testsupport::fresh_seed, printed by the
// caller), plus an offset when a test draws several problems.
Case random_case(int margins, int cats, int cont, index_t n, std::uint64_t seed) {
  Case c;
  c.seed = seed;
  auto ctx = quiet_ctx();
  auto s = otcal::make_synthetic_survey(n, margins, cats, cont, c.seed);
  c.sys = otcal::build_constraints(ctx, s.table, s.spec);
  return c;
}

TEST(CalibrationExact, UnboundedLinearEqualsDenseGreg) {
  const std::uint64_t seed = testsupport::fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  for (int trial = 0; trial < 5; ++trial) {
    Case c = random_case(2 + trial % 2, 3 + trial, 2, 200 + 37 * trial, seed + trial);
    SCOPED_TRACE("trial " + std::to_string(trial));
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
  const std::uint64_t seed = testsupport::fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  for (int trial = 0; trial < 4; ++trial) {
    Case c = random_case(2 + trial % 3, 3 + trial, 0, 300, seed + trial);
    SCOPED_TRACE("trial " + std::to_string(trial));
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
  const std::uint64_t seed = testsupport::fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  for (int trial = 0; trial < 3; ++trial) {
    Case c = random_case(3, 4 + trial, 2, 400, seed + trial);
    SCOPED_TRACE("trial " + std::to_string(trial));
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

// Bounded raking, R's calibrate(calfun = "raking", bounds = c(L, U)), against an answer known in
// closed form rather than computed by another solver. The calibrated g minimises
// sum_i d_i G(g_i), G(g) = g log g - g + 1, over L <= g_i <= U subject to A (d o g) = t
// (docs/calibration.md §4.1). G is strictly convex, so the minimiser is unique, and the
// Lagrangian sum_i d_i (G(g_i) - g_i x_i'lambda) + lambda't separates per record: for a given
// lambda each g_i minimises d_i (G(g) - g x_i'lambda) over [L, U], i.e. g_i = clip(exp(x_i'lambda),
// L, U) (G' = log). So for any lambda*, g*_i = clip(exp(x_i'lambda*), L, U) together with the
// targets t = A (d o g*) satisfies the KKT conditions: g* is *the* calibrated g, which the R-style
// Newton must find to its tolerance.
//
// R's F' tests u against L - 1 and U - 1 instead of log L and log U (§4.2), so a record whose u
// lies between log U and U - 1 is clipped yet still counted in the Newton matrix; the bound U is
// therefore chosen (from the drawn u: margins only, one u per cell, at most 4^2 values) with no
// cell within 0.01 of that band and some cells clipped. The lower bound is 0 (inactive, and
// L - 1 = -1 lies far below every u) in the case checked.
// Note: with an active lower bound the R-style Newton stalls at ratios of 1e-7 .. 1e-4 on a share
// of these problems (about 6 % with L alone, 20 % with both bounds, most of them when a cell lies
// between log L and L - 1, where F' = 0 although F is not clipped), so those are not asserted here.
TEST(CalibrationExact, BoundedRakingEqualsAKnownKktSolution) {
  const std::uint64_t seed = testsupport::fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  Case base = random_case(2, 4, 0, 400, seed + 1);
  const index_t n = base.sys.A.cols, k = base.sys.A.rows;
  // Draw lambda* until a suitable U exists for its u (one or two draws, as a rule).
  std::uniform_real_distribution<double> spread(-0.15, 0.15);
  const double margin = 0.01;
  std::vector<double> u;
  double U = NAN;
  for (int attempt = 0; attempt < 100 && !std::isfinite(U); ++attempt) {
    std::vector<double> lambda(k);
    for (auto& l : lambda) l = spread(rng);
    u.assign(n, 0.0);
    for (index_t r = 0; r < k; ++r)
      for (std::int64_t q = base.sys.A.indptr[r]; q < base.sys.A.indptr[r + 1]; ++q)
        u[base.sys.A.index(q)] += base.sys.A.values[q] * lambda[r];
    std::vector<double> values = u;  // the distinct u of the cells
    std::sort(values.begin(), values.end());
    values.erase(std::unique(values.begin(), values.end()), values.end());
    auto count_in = [&](double lo, double hi) {  // u values in [lo, hi]
      return std::count_if(values.begin(), values.end(), [&](double v) { return v >= lo && v <= hi; });
    };
    auto upper_clear = [&](double h) {  // log h < h - 1: the band is [log h, h - 1]
      return count_in(std::log(h) - margin, h - 1 + margin) == 0 && values.back() > h - 1 + margin;
    };
    auto pick = [&](double from, double to, auto&& ok) -> double {
      std::vector<double> grid;
      for (double v = from; v <= to + 1e-12; v += 0.0025) grid.push_back(v);
      std::shuffle(grid.begin(), grid.end(), rng);
      for (double v : grid)
        if (ok(v)) return v;
      return NAN;
    };
    U = pick(1.07, 1.30, upper_clear);
  }
  ASSERT_TRUE(std::isfinite(U)) << "no suitable upper bound in 100 draws";
  struct Bounds {
    double lo, hi;
  };
  for (const Bounds bounds : {Bounds{0.0, U}}) {
    SCOPED_TRACE("bounds [" + std::to_string(bounds.lo) + ", " + std::to_string(bounds.hi) + "]");
    Case c = base;
    std::vector<double> g_star(n);
    index_t at_lo = 0, at_hi = 0;
    for (index_t i = 0; i < n; ++i) {
      g_star[i] = std::clamp(std::exp(u[i]), bounds.lo, bounds.hi);
      at_lo += g_star[i] == bounds.lo;
      at_hi += g_star[i] == bounds.hi;
    }
    if (bounds.lo > 0) EXPECT_GT(at_lo, 0) << "the lower bound must be active somewhere";
    if (std::isfinite(bounds.hi)) EXPECT_GT(at_hi, 0) << "the upper bound must be active somewhere";
    for (index_t r = 0; r < k; ++r) {  // t = A (d o g*)
      double t = 0;
      for (std::int64_t q = c.sys.A.indptr[r]; q < c.sys.A.indptr[r + 1]; ++q) {
        const index_t i = c.sys.A.index(q);
        t += c.sys.A.values[q] * c.sys.design_weights[i] * g_star[i];
      }
      c.sys.targets[r] = t;
    }
    auto ctx = quiet_ctx();
    const auto res = otcal::calibrate_exact(ctx, c.sys,
                                            {.calfun = otcal::CalFun::raking, .lower = bounds.lo, .upper = bounds.hi,
                                             .max_iterations = 200, .epsilon = 1e-12, .force = true});
    ASSERT_TRUE(res.converged) << "max ratio " << res.max_ratio;
    ASSERT_EQ(res.g.size(), static_cast<std::size_t>(n));
    for (index_t i = 0; i < n; ++i) {
      ASSERT_NEAR(res.g[i], g_star[i], 1e-9 * g_star[i]) << "record " << i << " (u = " << u[i] << ")";
      ASSERT_NEAR(res.weights[i], c.sys.design_weights[i] * g_star[i], 1e-9 * c.sys.design_weights[i] * g_star[i]);
    }
  }
}

TEST(CalibrationExact, TruncatedLinearHitsBoundsWhenTight) {
  Case c = random_case(2, 5, 1, 300, testsupport::fresh_seed());
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
  Case c = random_case(2, 3, 0, 200, testsupport::fresh_seed());
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
  Case c = random_case(2, 3, 0, 200, testsupport::fresh_seed());
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
  Case c = random_case(2, 4, 1, 300, testsupport::fresh_seed());
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
  Case c = random_case(1, 3, 0, 50, testsupport::fresh_seed());
  SCOPED_TRACE("seed " + std::to_string(c.seed));
  auto ctx = quiet_ctx();
  EXPECT_THROW(otcal::calibrate_exact(ctx, c.sys, {.calfun = otcal::CalFun::logit}), otcal::InvalidArgument);
  EXPECT_THROW(otcal::calibrate_exact(ctx, c.sys, {.lower = 1.1, .upper = 2}), otcal::InvalidArgument);
}

TEST(CalibrationExact, PeakWithinPlan) {
  Case c = random_case(3, 10, 2, 20000, testsupport::fresh_seed());
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
  const auto seed = testsupport::fresh_seed();
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

  Case c = random_case(2, 4, 1, 300, seed + 1);
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
  Case c = random_case(3, 4, 0, 400, testsupport::fresh_seed());
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
  Case c = random_case(2, 3, 1, 150, testsupport::fresh_seed());
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
