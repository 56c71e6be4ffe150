// otcal's Sinkhorn against the naive dense float64 reference (tests/support/reference.cpp), which
// follows OTT-JAX's formulas literally: potentials, plan, errors, n_iters and reg_ot_cost.
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "otcal/sinkhorn.hpp"
#include "support/reference.hpp"

namespace {

struct Case {
  std::string cost;
  double p;
  std::string scale;
  double tau_a, tau_b;
  std::string relative;
  double epsilon;
};

std::string case_name(const Case& c) {
  std::string s = c.cost + "_" + c.scale + "_" + std::to_string(int(c.tau_a * 100)) + "_" +
                  std::to_string(int(c.tau_b * 100)) + "_" + (c.relative.empty() ? "abs" : c.relative);
  for (auto& ch : s)
    if (!isalnum(ch)) ch = '_';
  return s;
}

void expect_close(const std::vector<double>& got, const std::vector<double>& want, double tol, const char* what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  for (std::size_t i = 0; i < got.size(); ++i) {
    if (std::isinf(want[i])) {
      EXPECT_EQ(got[i], want[i]) << what << "[" << i << "]";
      continue;
    }
    EXPECT_NEAR(got[i], want[i], tol * std::max(1.0, std::fabs(want[i]))) << what << "[" << i << "]";
  }
}

otcal::SinkhornResult run(const ref::Clouds& c, const std::vector<double>& a, const std::vector<double>& b,
                          const Case& k, const ref::Options& o, std::optional<otcal::index_t> batch = {}) {
  otcal::Context ctx = otcal::Context::cpu({.memory_budget = std::size_t{256} << 20});
  otcal::PointCloud geom;
  geom.x = otcal::ConstMatrix::of(c.x.data(), c.n, c.d);
  geom.y = otcal::ConstMatrix::of(c.y.data(), c.m, c.d);
  geom.options.cost = otcal::Cost::parse(k.cost == "pnorm" || k.cost == "sq_pnorm"
                                             ? k.cost + ":" + std::to_string(k.p)
                                             : k.cost);
  geom.options.scale = otcal::ScaleCost::parse(k.scale);
  otcal::SinkhornOptions so;
  if (o.epsilon > 0) so.epsilon = o.epsilon;
  so.relative_epsilon = o.relative == "mean"  ? otcal::RelativeEpsilon::mean
                        : o.relative == "std" ? otcal::RelativeEpsilon::std
                                              : otcal::RelativeEpsilon::none;
  so.epsilon_init = o.init;
  so.epsilon_decay = o.decay;
  so.tau_a = o.tau_a;
  so.tau_b = o.tau_b;
  so.threshold = o.threshold;
  so.norm_error = o.norm_error;
  so.inner_iterations = o.inner;
  so.min_iterations = o.min_iter;
  so.max_iterations = o.max_iter;
  so.parallel_dual_updates = o.parallel;
  so.batch_size = batch;
  ctx = otcal::Context::cpu({.memory_budget = std::size_t{256} << 20, .on_warning = [](const std::string&) {}});
  return otcal::sinkhorn(ctx, geom, otcal::ConstVector::of(a.data(), c.n), otcal::ConstVector::of(b.data(), c.m), so);
}

class SinkhornVsReference : public ::testing::TestWithParam<Case> {};

TEST_P(SinkhornVsReference, PotentialsPlanCostAgreeTo1e9) {
  const Case k = GetParam();
  std::random_device rd;
  const std::uint64_t seed = rd();
  SCOPED_TRACE("seed " + std::to_string(seed));
  const auto c = ref::random_clouds(23, 31, 3, seed);
  auto a = ref::random_weights(c.n, seed + 1);
  auto b = ref::random_weights(c.m, seed + 2);
  ref::Options o;
  o.scale = k.scale;
  o.tau_a = k.tau_a;
  o.tau_b = k.tau_b;
  o.relative = k.relative;
  o.epsilon = k.epsilon;
  o.threshold = 1e-6;
  o.max_iter = 300;
  const ref::Result want = ref::sinkhorn(c, a, b, k.cost, k.p, o);
  const otcal::SinkhornResult got = run(c, a, b, k, o);

  EXPECT_NEAR(got.scale, want.scale, 1e-12 * want.scale);
  EXPECT_NEAR(got.epsilon, want.epsilon, 1e-12 * want.epsilon);
  EXPECT_EQ(got.n_iters, want.n_iters);
  EXPECT_EQ(got.converged, want.converged);
  expect_close(got.f, want.f, 1e-9, "f");
  expect_close(got.g, want.g, 1e-9, "g");
  EXPECT_NEAR(got.reg_ot_cost, want.reg_ot_cost, 1e-9 * std::max(1.0, std::fabs(want.reg_ot_cost)));
  ASSERT_EQ(got.errors.size(), want.errors.size());
  for (std::size_t i = 0; i < got.errors.size(); ++i) {
    if (want.errors[i] <= 0 || std::isinf(want.errors[i])) {
      EXPECT_EQ(got.errors[i], want.errors[i]) << i;
    } else {
      EXPECT_NEAR(got.errors[i], want.errors[i], 1e-7 * want.errors[i] + 1e-13) << i;
    }
  }

  // Plan entries from the potentials, rebuilt online through apply_transport on indicator-free
  // random vectors: P v must equal the dense plan times v.
  otcal::Context ctx = otcal::Context::cpu({.on_warning = [](const std::string&) {}});
  otcal::PointCloud geom;
  geom.x = otcal::ConstMatrix::of(c.x.data(), c.n, c.d);
  geom.y = otcal::ConstMatrix::of(c.y.data(), c.m, c.d);
  geom.options.cost = otcal::Cost::parse(k.cost == "pnorm" || k.cost == "sq_pnorm" ? k.cost + ":" + std::to_string(k.p) : k.cost);
  geom.options.scale = otcal::ScaleCost::parse(k.scale);
  std::mt19937_64 rng(seed + 3);
  std::normal_distribution<double> N;
  std::vector<double> v(c.m * 2);
  for (auto& x : v) x = N(rng);
  const auto pv = otcal::apply_transport(ctx, geom, got, otcal::ConstMatrix::of(v.data(), c.m, 2), 1);
  for (std::int64_t i = 0; i < c.n; ++i)
    for (int col = 0; col < 2; ++col) {
      double want_pv = 0, mag = 0;
      for (std::int64_t j = 0; j < c.m; ++j) {
        want_pv += want.plan[i][j] * v[j * 2 + col];
        mag += want.plan[i][j] * std::fabs(v[j * 2 + col]);
      }
      EXPECT_NEAR(pv[i * 2 + col], want_pv, 1e-9 * std::max(mag, 1e-300)) << i << "," << col;
    }
}

std::vector<Case> cases() {
  std::vector<Case> out;
  const std::vector<std::pair<std::string, double>> costs = {
      {"sqeuclidean", 2}, {"euclidean", 2}, {"cosine", 2}, {"pnorm", 1.5}, {"sq_pnorm", 3}};
  for (const auto& [cost, p] : costs) {
    std::vector<std::string> scales = {"1", "0.7", "mean", "max_cost"};
    if (cost == "sqeuclidean") {
      scales.push_back("max_norm");
      scales.push_back("max_bound");
    }
    for (const auto& s : scales) {
      out.push_back({cost, p, s, 1, 1, "", -1});            // default eps = 0.05 std
      out.push_back({cost, p, s, 0.8, 0.6, "mean", 0.1});   // unbalanced, relative mean
    }
    out.push_back({cost, p, "mean", 1, 0.9, "std", 0.2});
    out.push_back({cost, p, "mean", 1, 1, "", 0.05});       // absolute epsilon
  }
  return out;
}

INSTANTIATE_TEST_SUITE_P(AllCostsAndScales, SinkhornVsReference, ::testing::ValuesIn(cases()),
                         [](const auto& info) { return case_name(info.param) + "_" + std::to_string(info.index); });

TEST(SinkhornSemantics, SchedulerZeroWeightsParallelAndNormError) {
  std::random_device rd;
  const std::uint64_t seed = rd();
  SCOPED_TRACE("seed " + std::to_string(seed));
  const auto c = ref::random_clouds(19, 17, 2, seed);
  auto a = ref::random_weights(c.n, seed + 1, 0.2);
  auto b = ref::random_weights(c.m, seed + 2, 0.2);
  for (int variant = 0; variant < 4; ++variant) {
    ref::Options o;
    o.scale = "mean";
    o.epsilon = 0.02;
    o.threshold = 1e-7;
    o.max_iter = 400;
    if (variant == 0) {
      o.init = 50;
      o.decay = 0.8;
    } else if (variant == 1) {
      o.parallel = true;
      o.max_iter = 200;
    } else if (variant == 2) {
      o.norm_error = 2;
      o.inner = 7;
      o.min_iter = 20;
    } else {
      o.tau_a = 0.7;
      o.max_iter = 95;  // not a multiple of inner: whole blocks still run
    }
    Case k{"sqeuclidean", 2, "mean", o.tau_a, o.tau_b, "", o.epsilon};
    const auto want = ref::sinkhorn(c, a, b, "sqeuclidean", 2, o);
    const auto got = run(c, a, b, k, o);
    SCOPED_TRACE("variant " + std::to_string(variant));
    EXPECT_EQ(got.n_iters, want.n_iters);
    EXPECT_EQ(got.converged, want.converged);
    expect_close(got.f, want.f, 1e-9, "f");
    expect_close(got.g, want.g, 1e-9, "g");
    EXPECT_NEAR(got.reg_ot_cost, want.reg_ot_cost, 1e-9 * std::max(1.0, std::fabs(want.reg_ot_cost)));
    for (std::size_t i = 0; i < a.size(); ++i)
      if (a[i] == 0) EXPECT_EQ(got.f[i], -INFINITY) << "zero weight must give a -inf potential";
  }
}

}  // namespace
