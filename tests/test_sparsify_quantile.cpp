// The exact global percentile (docs/sparsify.md §7.1) against a sort-based numpy-linear reference
// written here, including ties and all-equal rows, for float32 and float64 plans; and
// scale_cost = median (the exact median of all n*m unscaled costs) against the dense median.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>

#include "otcal/sinkhorn.hpp"
#include "otcal/sparsify.hpp"
#include "sparsify/row_sampling.hpp"
#include "support/process.hpp"
#include "support/reference.hpp"

namespace {

otcal::Context cpu_ctx() {
  otcal::ContextOptions o;
  o.memory_budget = std::size_t{256} << 20;
  o.on_warning = [](const std::string&) {};
  return otcal::Context::cpu(o);
}

// numpy.percentile(v, q) (method "linear"), evaluated here from a full sort.
double numpy_percentile(std::vector<double> v, double q) {
  std::sort(v.begin(), v.end());
  const double h = q / 100.0 * static_cast<double>(v.size() - 1);
  const auto lo = static_cast<std::size_t>(std::floor(h));
  const std::size_t hi = std::min(lo + 1, v.size() - 1);
  const double t = h - static_cast<double>(lo);
  const double a = v[lo], b = v[hi];
  return t < 0.5 ? a + (b - a) * t : b - (b - a) * (1 - t);
}

const double kValues[] = {0.0, 1.0, 37.5, 50.0, 99.0, 100.0};

otcal::SparsifyOptions exact_opts(double v, std::int64_t bs) {
  otcal::SparsifyOptions o;
  o.mode = otcal::SparsifyMode::percentile;
  o.percentile_method = otcal::PercentileMethod::exact;
  o.value = v;
  o.batch_size = bs;
  return o;
}

template <class T>
void check_plan(const std::vector<T>& M, std::int64_t n, std::int64_t m) {
  std::vector<double> ref_vals;
  for (std::int64_t i = 0; i < n; ++i) {
    bool mass = false;
    for (std::int64_t j = 0; j < m; ++j) mass |= M[i * m + j] > 0;
    if (mass)
      for (std::int64_t j = 0; j < m; ++j) ref_vals.push_back(static_cast<double>(M[i * m + j]));
  }
  for (double v : kValues) {
    SCOPED_TRACE("value " + std::to_string(v));
    const double want = ref_vals.empty() ? HUGE_VAL : numpy_percentile(ref_vals, v);
    for (std::int64_t bs : {std::int64_t{1}, std::int64_t{5}, n}) {
      const auto res = otcal::sparsify(cpu_ctx(), otcal::ConstMatrix::of(M.data(), n, m), exact_opts(v, bs));
      EXPECT_EQ(res.threshold, want) << "bs " << bs;
    }
  }
}

TEST(ExactPercentile, RandomPlansFloat64AndFloat32) {
  const auto seed = testsupport::fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  std::exponential_distribution<double> E(3.0);
  const std::int64_t n = 37, m = 29;
  std::vector<double> D(n * m);
  for (auto& v : D) v = E(rng) * std::exp(-10 * E(rng));  // spread over many binades
  check_plan(D, n, m);
  std::vector<float> F(D.begin(), D.end());
  check_plan(F, n, m);
}

TEST(ExactPercentile, TiesAllEqualRowsAndZeroRows) {
  const auto seed = testsupport::fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int> pick(0, 4);
  const std::int64_t n = 23, m = 17;
  std::vector<double> D(n * m);
  const double levels[] = {0.0, 0.125, 0.3, 0.3 + 1e-16, 7.0};
  for (auto& v : D) v = levels[pick(rng)];
  for (std::int64_t j = 0; j < m; ++j) {
    D[2 * m + j] = 0.3;  // an all-equal row
    D[5 * m + j] = 0.0;  // a massless row, excluded from the statistic
  }
  check_plan(D, n, m);
  std::vector<float> F(D.begin(), D.end());
  check_plan(F, n, m);
  std::vector<double> all_equal(n * m, 0.75);
  check_plan(all_equal, n, m);
  std::vector<double> zeros(n * m, 0.0);
  check_plan(zeros, n, m);
}

// numpy's linear percentile interpolates with a + (b - a) t below t = 0.5 and with
// b - (b - a)(1 - t) from t = 0.5 on. The two forms agree in exact arithmetic and differ only by
// rounding, so a fixed q such as 37.5 rarely tells them apart. This picks, for the actual sorted
// values, percentiles whose t falls on each branch *and* whose two forms round to different
// doubles; an implementation with either one-sided form then fails exact equality for sure.
struct BranchPicks {
  std::vector<double> lower, upper;  // q values with t < 0.5, and with t >= 0.5
};

BranchPicks discriminating_percentiles(std::vector<double> v, std::mt19937_64& rng, std::size_t per_branch) {
  std::sort(v.begin(), v.end());
  const std::size_t N = v.size();
  BranchPicks picks;
  std::uniform_real_distribution<double> Q(0.0, 100.0);
  for (int attempt = 0; attempt < 20000; ++attempt) {
    if (picks.lower.size() >= per_branch && picks.upper.size() >= per_branch) break;
    // Every fourth candidate aims at t = 0.5 (the branch point itself belongs to the upper form).
    const double q = attempt % 4 == 3 ? 100.0 * (std::floor(Q(rng) / 100.0 * double(N - 1)) + 0.5) / double(N - 1)
                                      : Q(rng);
    if (!(q >= 0.0 && q <= 100.0)) continue;
    const double h = q / 100.0 * double(N - 1);  // numpy: (N - 1) * (q / 100)
    const auto lo = static_cast<std::size_t>(std::floor(h));
    const std::size_t hi = std::min(lo + 1, N - 1);
    const double t = h - double(lo), a = v[lo], b = v[hi];
    const double low_form = a + (b - a) * t, high_form = b - (b - a) * (1 - t);
    if (low_form == high_form) continue;  // this q cannot tell the forms apart
    auto& bucket = t < 0.5 ? picks.lower : picks.upper;
    if (bucket.size() < per_branch) bucket.push_back(q);
  }
  return picks;
}

template <class T>
void expect_exact_percentiles_on_both_branches(const std::vector<T>& M, std::int64_t n, std::int64_t m,
                                               std::mt19937_64& rng) {
  std::vector<double> vals;
  for (std::int64_t i = 0; i < n; ++i) {
    bool mass = false;
    for (std::int64_t j = 0; j < m; ++j) mass |= M[i * m + j] > 0;
    if (mass)
      for (std::int64_t j = 0; j < m; ++j) vals.push_back(static_cast<double>(M[i * m + j]));
  }
  const BranchPicks picks = discriminating_percentiles(vals, rng, 6);
  ASSERT_EQ(picks.lower.size(), 6u) << "no percentile separates the two forms on the lower branch";
  ASSERT_EQ(picks.upper.size(), 6u) << "no percentile separates the two forms on the upper branch";
  for (const auto* qs : {&picks.lower, &picks.upper})
    for (double q : *qs) {
      SCOPED_TRACE("q " + std::to_string(q) + (qs == &picks.upper ? " (t >= 0.5)" : " (t < 0.5)"));
      const double want = numpy_percentile(vals, q);
      for (std::int64_t bs : {std::int64_t{1}, std::int64_t{5}, n}) {
        const auto res = otcal::sparsify(cpu_ctx(), otcal::ConstMatrix::of(M.data(), n, m), exact_opts(q, bs));
        EXPECT_EQ(res.threshold, want) << "bs " << bs;
      }
    }
}

TEST(ExactPercentile, BothInterpolationBranchesExactly) {
  const auto seed = testsupport::fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  std::exponential_distribution<double> E(3.0);
  const std::int64_t n = 31, m = 26;  // N = 30 * 26 = 780 values (row 9 has no mass)
  std::vector<double> D(n * m);
  for (auto& v : D) v = E(rng) * std::exp(-4 * E(rng));
  std::fill(D.begin() + 9 * m, D.begin() + 10 * m, 0.0);
  expect_exact_percentiles_on_both_branches(D, n, m, rng);
  std::vector<float> F(D.begin(), D.end());
  expect_exact_percentiles_on_both_branches(F, n, m, rng);
}

// The sampled percentile (docs/sparsify.md §4.2) interpolates the same way over the entries of the
// k hashed rows (N = k m): picks for that N, on both branches.
TEST(SampledPercentile, BothInterpolationBranchesExactly) {
  const auto seed = testsupport::fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> U(0.0, 1.0);
  const std::int64_t n = 53, m = 17, k = 11;
  std::vector<double> D(n * m);
  for (auto& v : D) v = U(rng) * U(rng);
  std::vector<std::pair<std::uint64_t, std::int64_t>> h;  // the k rows with the smallest hash, ties by index
  for (std::int64_t i = 0; i < n; ++i) h.push_back({otcal::detail::sparsify_row_hash(seed, i), i});
  std::sort(h.begin(), h.end());
  std::vector<double> sample;
  for (std::int64_t r = 0; r < k; ++r) sample.insert(sample.end(), &D[h[r].second * m], &D[(h[r].second + 1) * m]);
  const BranchPicks picks = discriminating_percentiles(sample, rng, 6);
  ASSERT_EQ(picks.lower.size(), 6u);
  ASSERT_EQ(picks.upper.size(), 6u);
  for (const auto* qs : {&picks.lower, &picks.upper})
    for (double q : *qs) {
      SCOPED_TRACE("q " + std::to_string(q) + (qs == &picks.upper ? " (t >= 0.5)" : " (t < 0.5)"));
      const double want = numpy_percentile(sample, q);
      for (std::int64_t bs : {std::int64_t{1}, std::int64_t{4}, n}) {
        otcal::SparsifyOptions o;
        o.mode = otcal::SparsifyMode::percentile;
        o.value = q;
        o.n_samples = k;
        o.seed = seed;
        o.batch_size = bs;
        EXPECT_EQ(otcal::sparsify(cpu_ctx(), otcal::ConstMatrix::of(D.data(), n, m), o).threshold, want) << "bs " << bs;
      }
    }
}

TEST(ExactCostQuantile, EqualsDensePercentileOfCosts) {
  const auto seed = testsupport::fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  for (const char* cost : {"sqeuclidean", "euclidean", "cosine"}) {
    SCOPED_TRACE(cost);
    const ref::Clouds c = ref::random_clouds(41, 35, 3, seed);
    otcal::PointCloud g;
    g.x = otcal::ConstMatrix::of(c.x.data(), c.n, c.d);
    g.y = otcal::ConstMatrix::of(c.y.data(), c.m, c.d);
    g.options.cost = otcal::Cost::parse(cost);
    const ref::Mat C = ref::dense_cost(c, cost, 2.0);
    std::vector<double> all;
    for (const auto& row : C) all.insert(all.end(), row.begin(), row.end());
    for (double q : kValues) {
      const double want = numpy_percentile(all, q);
      EXPECT_NEAR(otcal::exact_cost_quantile(cpu_ctx(), g, q), want, 1e-12 * std::max(1.0, std::fabs(want))) << q;
    }
  }
}

TEST(ScaleCostMedian, SinkhornScaleIsTheDenseMedian) {
  const auto seed = testsupport::fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  const ref::Clouds c = ref::random_clouds(30, 44, 2, seed);
  otcal::PointCloud g;
  g.x = otcal::ConstMatrix::of(c.x.data(), c.n, c.d);
  g.y = otcal::ConstMatrix::of(c.y.data(), c.m, c.d);
  g.options.scale = otcal::ScaleCost::parse("median");
  const ref::Mat C = ref::dense_cost(c, "sqeuclidean", 2.0);
  std::vector<double> all;
  for (const auto& row : C) all.insert(all.end(), row.begin(), row.end());
  const double median = numpy_percentile(all, 50.0);
  otcal::SinkhornOptions so;
  so.epsilon = 0.1;
  so.max_iterations = 50;
  const auto res = otcal::sinkhorn(cpu_ctx(), g, {}, {}, so);
  EXPECT_NEAR(res.scale, median, 1e-12 * median);
  EXPECT_NEAR(otcal::resolve_geometry(cpu_ctx(), g, so).scale, median, 1e-12 * median);
  // The median's blocks and bins come from the budget and are in the plan.
  EXPECT_GT(res.memory.peak_bytes, std::size_t{1} << 20) << "the 1 MiB of histogram bins were measured";
  EXPECT_LE(res.memory.peak_bytes, res.memory.planned_peak_bytes);
  EXPECT_LE(res.memory.planned_peak_bytes, res.memory.budget_bytes);
}

}  // namespace
