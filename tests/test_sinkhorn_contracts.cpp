// Sinkhorn contracts beyond the reference values: batch-size and thread-count invariance (bitwise
// on the CPU), the memory budget, validation of every input, divergence, marginals.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>

#include "otcal/errors.hpp"
#include "otcal/sinkhorn.hpp"
#include "support/process.hpp"
#include "support/reference.hpp"
#include "support/sinkhorn_fixtures.hpp"

namespace {

using testsupport::bitwise_equal;
using testsupport::geometry;
using testsupport::quiet_cpu;

class BatchInvariance : public ::testing::TestWithParam<std::tuple<std::string, otcal::DType>> {};

TEST_P(BatchInvariance, BitwiseEqualPotentialsForEveryBatchSizeAndThreadCount) {
  const auto [cost, precision] = GetParam();
  const std::uint64_t seed = testsupport::fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  const auto c = ref::random_clouds(293, 401, 3, seed);  // primes, n < m, m > granule
  const auto a = ref::random_weights(c.n, seed + 1, 0.05);
  const auto b = ref::random_weights(c.m, seed + 2);
  otcal::SinkhornOptions o;
  o.precision = precision;
  o.max_iterations = 60;
  o.threshold = 1e-9;
  o.tau_b = 0.9;
  const auto geom = geometry(c, cost);
  auto solve = [&](std::optional<otcal::index_t> bs, int threads) {
    o.batch_size = bs;
    return otcal::sinkhorn(quiet_cpu(std::size_t{256} << 20, threads), geom,
                           otcal::ConstVector::of(a.data(), c.n), otcal::ConstVector::of(b.data(), c.m), o);
  };
  const auto base = solve(c.n, 2);
  for (otcal::index_t bs : {otcal::index_t{1}, otcal::index_t{7}, otcal::index_t{64}, otcal::index_t{257},
                            c.n, c.m + 5}) {
    const auto r = solve(bs, 2);
    EXPECT_TRUE(bitwise_equal(r.f, base.f)) << "batch " << bs;
    EXPECT_TRUE(bitwise_equal(r.g, base.g)) << "batch " << bs;
    EXPECT_EQ(r.reg_ot_cost, base.reg_ot_cost) << "batch " << bs;
    EXPECT_TRUE(bitwise_equal(r.errors, base.errors)) << "batch " << bs;
  }
  const auto planned = solve(std::nullopt, 2);
  EXPECT_TRUE(bitwise_equal(planned.f, base.f));
  for (int threads : {1, 4}) {
    const auto r = solve(7, threads);
    EXPECT_TRUE(bitwise_equal(r.f, base.f)) << threads << " threads";
    EXPECT_TRUE(bitwise_equal(r.g, base.g)) << threads << " threads";
    EXPECT_EQ(r.reg_ot_cost, base.reg_ot_cost) << threads << " threads";
  }
}

INSTANTIATE_TEST_SUITE_P(Costs, BatchInvariance,
                         ::testing::Combine(::testing::Values("sqeuclidean", "cosine", "pnorm:1.5"),
                                            ::testing::Values(otcal::DType::float64, otcal::DType::float32)));

TEST(SinkhornBudget, PeakWithinPlanWithinBudgetAndTooSmallFailsBeforeAllocating) {
  const std::uint64_t seed = testsupport::fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  const auto c = ref::random_clouds(1201, 1303, 3, seed);
  const auto geom = geometry(c);
  otcal::SinkhornOptions o;
  o.max_iterations = 20;
  const std::size_t budget = std::size_t{1} << 20;
  auto ctx = quiet_cpu(budget);
  const auto r = otcal::sinkhorn(ctx, geom, {}, {}, o);
  EXPECT_GT(r.memory.peak_bytes, 0u);
  EXPECT_LE(r.memory.peak_bytes, r.memory.planned_peak_bytes);
  EXPECT_LE(r.memory.planned_peak_bytes, budget);
  EXPECT_EQ(ctx.statistics().bytes().value, 0) << "everything freed";

  auto tiny = quiet_cpu(64 << 10);
  try {
    otcal::sinkhorn(tiny, geom, {}, {}, o);
    FAIL() << "a 64 KiB budget cannot hold the clouds";
  } catch (const otcal::BudgetTooSmall& e) {
    EXPECT_EQ(tiny.statistics().allocations().total, 0) << "refused before allocating";
    EXPECT_NE(std::string(e.what()).find(std::to_string(e.required_bytes())), std::string::npos);
    // The named minimum is enough.
    auto enough = quiet_cpu(e.required_bytes());
    EXPECT_NO_THROW(otcal::sinkhorn(enough, geom, {}, {}, o));
  }
  // An explicit batch that does not fit is refused, never shrunk.
  o.batch_size = 1'000'000'000;
  EXPECT_NO_THROW(otcal::sinkhorn(quiet_cpu(budget), geom, {}, {}, o)) << "batch > n is clamped";
}

TEST(SinkhornMarginals, MetToThresholdAfterConvergence) {
  const std::uint64_t seed = testsupport::fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  const auto c = ref::random_clouds(211, 173, 4, seed);
  const auto a = ref::random_weights(c.n, seed + 1, 0.1);
  const auto b = ref::random_weights(c.m, seed + 2, 0.1);
  const auto geom = geometry(c);
  otcal::SinkhornOptions o;
  o.threshold = 1e-6;
  auto ctx = quiet_cpu();
  const auto r = otcal::sinkhorn(ctx, geom, otcal::ConstVector::of(a.data(), c.n), otcal::ConstVector::of(b.data(), c.m), o);
  ASSERT_TRUE(r.converged);
  const auto col = otcal::marginal(ctx, geom, r, 0);
  const auto row = otcal::marginal(ctx, geom, r, 1);
  double eb = 0, ea = 0;
  for (std::size_t j = 0; j < b.size(); ++j) eb += std::fabs(col[j] - b[j]);
  for (std::size_t i = 0; i < a.size(); ++i) ea += std::fabs(row[i] - a[i]);
  EXPECT_LT(eb, o.threshold);
  EXPECT_LT(ea, 1e-12) << "the f-update makes P1 = a";
  for (std::size_t j = 0; j < b.size(); ++j)
    if (b[j] == 0) EXPECT_EQ(col[j], 0.0) << "zero-weight columns carry no mass";
  // apply with ones equals the marginal
  std::vector<double> ones(c.m, 1.0);
  const auto p1 = otcal::apply_transport(ctx, geom, r, otcal::ConstMatrix::of(ones.data(), c.m, 1), 1, 5);
  for (std::size_t i = 0; i < a.size(); ++i) EXPECT_NEAR(p1[i], row[i], 1e-14);
}

TEST(SinkhornDivergence, NaNPotentialsAreANumericalErrorNamingTheIteration) {
  const std::uint64_t seed = testsupport::fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  const auto c = ref::random_clouds(40, 40, 2, seed);
  otcal::PointCloud geom;
  geom.x = otcal::ConstMatrix::of(c.x.data(), c.n, c.d);  // y = x: zero costs on the diagonal
  geom.options.scale = {otcal::ScaleCost::Kind::value, 1e-320};  // 1/s = inf, 0 * inf = NaN
  otcal::SinkhornOptions o;
  o.epsilon = 0.1;
  try {
    otcal::sinkhorn(quiet_cpu(), geom, {}, {}, o);
    FAIL() << "expected divergence";
  } catch (const otcal::NumericalError& e) {
    EXPECT_NE(std::string(e.what()).find("iteration 9"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("epsilon"), std::string::npos) << e.what();
  }
  o.on_divergence = otcal::OnDivergence::return_result;
  const auto r = otcal::sinkhorn(quiet_cpu(), geom, {}, {}, o);
  EXPECT_TRUE(r.diverged);
  EXPECT_FALSE(r.converged);
}

TEST(SinkhornConvergence, NonConvergenceIsAWarningAndMinIterationsMultipleRunsOn) {
  const std::uint64_t seed = testsupport::fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  const auto c = ref::random_clouds(50, 60, 3, seed);
  const auto geom = geometry(c);
  otcal::SinkhornOptions o;
  o.max_iterations = 10;
  o.threshold = 1e-14;
  const auto r = otcal::sinkhorn(quiet_cpu(), geom, {}, {}, o);
  EXPECT_FALSE(r.converged);
  EXPECT_EQ(r.n_iters, 10);
  ASSERT_FALSE(r.warnings.empty());
  EXPECT_NE(r.warnings.back().find("did not converge"), std::string::npos);
  o.max_iterations = 2000;
  o.threshold = 1e-3;
  o.min_iterations = 20;  // a positive multiple of inner_iterations: must not stop at 20 with +inf
  const auto s = otcal::sinkhorn(quiet_cpu(), geom, {}, {}, o);
  EXPECT_TRUE(s.converged);
  EXPECT_GE(s.n_iters, 30);
}

TEST(SinkhornValidation, EveryBadInputIsNamed) {
  const std::uint64_t seed = testsupport::fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  const auto c = ref::random_clouds(10, 12, 2, seed);
  const auto geom = geometry(c);
  auto expect_bad = [&](auto&& call, const std::string& needle) {
    try {
      call();
      ADD_FAILURE() << "accepted; expected an error mentioning " << needle;
    } catch (const otcal::InvalidArgument& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  auto with = [&](auto mutate) {
    return [&, mutate] {
      otcal::SinkhornOptions o;
      mutate(o);
      otcal::sinkhorn(quiet_cpu(), geom, {}, {}, o);
    };
  };
  expect_bad(with([](auto& o) { o.epsilon = 0.0; }), "epsilon");
  expect_bad(with([](auto& o) { o.epsilon = -1.0; }), "epsilon");
  expect_bad(with([](auto& o) { o.tau_a = 0.0; }), "tau_a");
  expect_bad(with([](auto& o) { o.tau_b = 1.5; }), "tau_b");
  expect_bad(with([](auto& o) { o.epsilon_decay = 1.2; }), "epsilon_decay");
  expect_bad(with([](auto& o) { o.inner_iterations = 0; }), "inner_iterations");
  expect_bad(with([](auto& o) { o.min_iterations = 50, o.max_iterations = 10; }), "min_iterations");
  expect_bad(with([](auto& o) { o.min_iterations = 25, o.max_iterations = 25; }), "multiple");
  expect_bad(with([](auto& o) { o.batch_size = 0; }), "batch_size");
  expect_bad(with([](auto& o) { o.norm_error = 0.5; }), "norm_error");
  std::vector<double> a(c.n, 1.0 / c.n);
  a[3] = -0.1;
  expect_bad([&] { otcal::sinkhorn(quiet_cpu(), geom, otcal::ConstVector::of(a.data(), c.n), {}, {}); }, "a[3]");
  std::vector<double> zeros(c.m, 0.0);
  expect_bad([&] { otcal::sinkhorn(quiet_cpu(), geom, {}, otcal::ConstVector::of(zeros.data(), c.m), {}); }, "sums to 0");
  expect_bad([&] { otcal::sinkhorn(quiet_cpu(), geom, otcal::ConstVector::of(a.data(), c.n - 1), {}, {}); }, "a has");
  auto bad = c;
  bad.x[7] = std::nan("");
  expect_bad([&] { otcal::sinkhorn(quiet_cpu(), geometry(bad), {}, {}, {}); }, "x holds nan");
  bad = c;
  bad.y[5] = INFINITY;
  expect_bad([&] { otcal::sinkhorn(quiet_cpu(), geometry(bad), {}, {}, {}); }, "y holds inf");
  auto g2 = geom;
  g2.y.cols = 1;
  g2.y.rows = c.m * 2;
  expect_bad([&] { otcal::sinkhorn(quiet_cpu(), g2, {}, {}, {}); }, "columns");
  expect_bad([&] { otcal::sinkhorn(quiet_cpu(), geometry(c, "euclidean", "max_norm"), {}, {}, {}); }, "max_norm");
  expect_bad([&] { otcal::sinkhorn(quiet_cpu(), geometry(c, "cosine", "max_bound"), {}, {}, {}); }, "max_bound");
  expect_bad([&] { otcal::Cost::parse("pnorm:0.5"); }, "p must");
  expect_bad([&] { otcal::Cost::parse("hamming"); }, "hamming");
  expect_bad([&] { otcal::ScaleCost::parse("std"); }, "std");
  expect_bad([&] { otcal::ScaleCost::parse("-2"); }, "> 0");
}

}  // namespace

// The error history holds the blocks run, not max_iterations / inner_iterations slots: a huge
// max_iterations on a problem that converges early allocates nothing for blocks never run
// (before: 2^31 / 10 slots, 1.7 GB, or std::bad_alloc).
TEST(SinkhornHistory, BoundedByTheBlocksRun) {
  const std::uint64_t seed = testsupport::fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  const auto c = ref::random_clouds(50, 40, 3, seed);
  otcal::SinkhornOptions o;
  o.epsilon = 0.5;
  o.max_iterations = 2147483647;
  o.inner_iterations = 10;
  o.min_iterations = 20;  // the blocks before it are kept, as +inf (not computed)
  const auto r = otcal::sinkhorn(quiet_cpu(), geometry(c), {}, {}, o);
  ASSERT_TRUE(r.converged);
  ASSERT_EQ(r.n_iters % 10, 0);
  ASSERT_EQ(static_cast<otcal::index_t>(r.errors.size()), r.n_iters / 10);
  EXPECT_TRUE(std::isinf(r.errors[0]));  // block ending at iteration 9 < min_iterations
  EXPECT_LT(r.errors.back(), o.threshold);
  for (double e : r.errors) EXPECT_NE(e, -1.0) << "no slot of a block that did not run";
}

namespace {
// A cloud of n points in d dimensions with coordinates of magnitude about `scale`.
std::vector<double> scaled_points(otcal::index_t n, otcal::index_t d, double scale, std::mt19937_64& rng) {
  std::normal_distribution<double> normal;
  std::vector<double> p(static_cast<std::size_t>(n * d));
  for (double& v : p) v = scale * (normal(rng) + 0.5);
  return p;
}

void expect_overflow_refused(const otcal::PointCloud& geom, otcal::DType precision, const std::string& cloud) {
  try {
    otcal::Problem::upload(quiet_cpu(), geom, {}, {}, precision);
    ADD_FAILURE() << "accepted; expected the cost overflow to be refused";
  } catch (const otcal::InvalidArgument& e) {
    const std::string what = e.what();
    EXPECT_EQ(what.rfind(cloud + " has a point of norm", 0), 0u) << what;
    EXPECT_NE(what.find(geom.options.cost.name()), std::string::npos) << what;
    EXPECT_NE(what.find(otcal::dtype_name(precision)), std::string::npos) << what;
    EXPECT_NE(what.find("rescale the points"), std::string::npos) << what;
  }
}
}  // namespace

// Coordinates whose costs overflow the working precision are refused at upload, naming the cloud
// (before: the cost was +inf, "epsilon resolved to 0", or with an explicit epsilon a silent
// unconverged solve). Costs that fit are accepted: the check is a bound, not a blanket limit.
TEST(SinkhornCostRange, CostsThatOverflowThePrecisionAreRefusedAtUpload) {
  const std::uint64_t seed = testsupport::fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  const otcal::index_t n = 30, m = 20, d = 3;
  const std::vector<double> small = scaled_points(n, d, 1.0, rng);
  const std::vector<double> huge = scaled_points(m, d, 1e160, rng);
  const std::vector<double> big32 = scaled_points(m, d, 1e20, rng);
  auto geom = [&](const std::vector<double>& x, otcal::index_t nx, const std::vector<double>& y, otcal::index_t my,
                  const char* cost) {
    otcal::PointCloud g;
    g.x = otcal::ConstMatrix::of(x.data(), nx, d);
    g.y = otcal::ConstMatrix::of(y.data(), my, d);
    g.options.cost = otcal::Cost::parse(cost);
    g.options.scale = otcal::ScaleCost::parse("1");
    return g;
  };
  // float64: sqeuclidean, euclidean (its accumulator is the square), pnorm:3 and sq_pnorm:1.5 (1e240
  // accumulated, then raised to 4/3), the big cloud as y; pnorm:1.5 (1e240) fits.
  for (const char* cost : {"sqeuclidean", "euclidean", "pnorm:3", "sq_pnorm:1.5"})
    expect_overflow_refused(geom(small, n, huge, m, cost), otcal::DType::float64, "y");
  EXPECT_NO_THROW(otcal::Problem::upload(quiet_cpu(), geom(small, n, huge, m, "pnorm:1.5"), {}, {},
                                         otcal::DType::float64));
  // float32 overflows from about 1.8e19 for sqeuclidean; the same clouds fit float64.
  expect_overflow_refused(geom(big32, m, small, n, "sqeuclidean"), otcal::DType::float32, "x");
  expect_overflow_refused(geom(big32, m, small, n, "cosine"), otcal::DType::float32, "x");
  EXPECT_NO_THROW(otcal::Problem::upload(quiet_cpu(), geom(big32, m, small, n, "sqeuclidean"), {}, {},
                                         otcal::DType::float64));
  // The one-call solve (what Python's sinkhorn uses) refuses too, before any iteration.
  otcal::SinkhornOptions o;
  o.epsilon = 1.0;
  EXPECT_THROW(otcal::sinkhorn(quiet_cpu(), geom(huge, m, small, n, "sqeuclidean"), {}, {}, o), otcal::InvalidArgument);
  // Large but representable costs (1e200) still solve.
  const std::vector<double> large = scaled_points(m, d, 1e100, rng);
  o.epsilon = 1e199;
  EXPECT_NO_THROW(otcal::sinkhorn(quiet_cpu(), geom(large, m, small, n, "sqeuclidean"), {}, {}, o));
}
