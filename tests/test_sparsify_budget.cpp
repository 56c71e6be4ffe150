// Memory contract of sparsify (docs/sparsify.md §7.3, §9 item 17): the peak measured by the
// statistics adaptor stays <= the planned peak <= the budget, a budget below the minimum fails
// before anything is allocated naming the minimum, and an explicit batch over budget is an error.
#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <random>

#include "otcal/errors.hpp"
#include "otcal/sparsify.hpp"
#include "support/process.hpp"
#include "support/reference.hpp"

namespace {

otcal::Context ctx_with_budget(std::size_t budget) {
  otcal::ContextOptions o;
  o.memory_budget = budget;
  o.on_warning = [](const std::string&) {};
  return otcal::Context::cpu(o);
}

struct Problem {
  ref::Clouds c;
  otcal::SinkhornResult r;
  otcal::PointCloud geom() const {
    otcal::PointCloud g;
    g.x = otcal::ConstMatrix::of(c.x.data(), c.n, c.d);
    g.y = otcal::ConstMatrix::of(c.y.data(), c.m, c.d);
    return g;
  }
};

Problem problem(std::int64_t n, std::int64_t m, std::uint64_t seed) {
  Problem p;
  p.c = ref::random_clouds(n, m, 2, seed);
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> N(0.0, 0.2);
  p.r.f.resize(n);
  p.r.g.resize(m);
  for (auto& v : p.r.f) v = N(rng);
  for (auto& v : p.r.g) v = N(rng);
  p.r.epsilon = 0.05;
  p.r.scale = 1.0;
  p.r.n = n;
  p.r.m = m;
  return p;
}

// sizeof(value) * m per block row: the dense block is the dominant term of the formula.
void expect_within_plan(const otcal::SparsifyResult& res, std::size_t budget, std::int64_t m) {
  EXPECT_GT(res.memory.peak_bytes, 0u);
  EXPECT_LE(res.memory.peak_bytes, res.memory.planned_peak_bytes);
  EXPECT_LE(res.memory.planned_peak_bytes, budget);
  EXPECT_GE(res.memory.planned_peak_bytes, static_cast<std::size_t>(res.batch_size * m) * sizeof(double));
}

TEST(SparsifyBudget, PeakWithinPlanInEveryMode) {
  const auto seed = testsupport::fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  const Problem p = problem(301, 257, seed);
  const std::size_t budget = std::size_t{3} << 20;
  for (const char* mode : {"threshold", "percentile", "min_row", "mass"}) {
    SCOPED_TRACE(mode);
    otcal::SparsifyOptions o;
    o.mode = otcal::parse_sparsify_mode(mode);
    o.value = o.mode == otcal::SparsifyMode::percentile ? 90.0 : o.mode == otcal::SparsifyMode::mass ? 0.9 : 1e-3;
    if (o.mode == otcal::SparsifyMode::min_row) o.value.reset();
    for (auto bs : {std::optional<std::int64_t>{}, std::optional<std::int64_t>{17}}) {
      o.batch_size = bs;
      const auto res = otcal::sparsify(ctx_with_budget(budget), p.geom(), p.r, o);
      expect_within_plan(res, budget, p.c.m);
      if (!bs) EXPECT_EQ(res.batch_size, 301) << "the whole plan fits: one block";
    }
    o.batch_size.reset();
    // A budget that holds only a few rows: planned, not failed, and still within the plan.
    // (The percentile's two 65 536-bin histograms take 1 MiB of the fixed bytes.)
    const std::size_t small = o.mode == otcal::SparsifyMode::percentile ? std::size_t{1300} << 10 : std::size_t{300} << 10;
    const auto res = otcal::sparsify(ctx_with_budget(small), p.geom(), p.r, o);
    EXPECT_LT(res.batch_size, 301);
    EXPECT_EQ(res.plan.n_tiles, (301 + res.batch_size - 1) / res.batch_size);
    expect_within_plan(res, small, p.c.m);
  }
}

TEST(SparsifyBudget, TooSmallBudgetNamesTheMinimumAndExplicitBatchOverBudgetFails) {
  const auto seed = testsupport::fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  const Problem p = problem(50, 4000, seed);
  otcal::SparsifyOptions o;
  o.mode = otcal::SparsifyMode::threshold;
  o.value = 0.1;
  const std::size_t tiny = 40000;  // below one row of 4000 float64 values plus the inputs
  try {
    otcal::sparsify(ctx_with_budget(tiny), p.geom(), p.r, o);
    ADD_FAILURE() << "expected BudgetTooSmall";
  } catch (const otcal::BudgetTooSmall& e) {
    EXPECT_GT(e.required_bytes(), tiny);
    EXPECT_GT(e.required_bytes(), 4000u * sizeof(double));
    EXPECT_NE(std::string(e.what()).find(std::to_string(e.required_bytes())), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("sparsify"), std::string::npos) << e.what();
    // The minimum it names is enough.
    EXPECT_NO_THROW(otcal::sparsify(ctx_with_budget(e.required_bytes()), p.geom(), p.r, o));
  }
  o.batch_size = 40;  // 40 rows of 32 KB do not fit 512 KiB: never silently shrunk
  EXPECT_THROW(otcal::sparsify(ctx_with_budget(std::size_t{512} << 10), p.geom(), p.r, o), otcal::BudgetTooSmall);
}

}  // namespace
