// The budget acceptance case: n = m = 200,000, d = 3 on the CPU under a 64 MiB budget. One
// iteration (three passes over 4e10 cost entries) — minutes on 2 cores, hence label slow.
#include <gtest/gtest.h>

#include <random>

#include "otcal/errors.hpp"
#include "otcal/sinkhorn.hpp"
#include "support/reference.hpp"

TEST(Sinkhorn200k, SolvesUnder64MiBWithPeakWithinBudget) {
  const auto c = ref::random_clouds(200000, 200000, 3, std::random_device{}());
  otcal::PointCloud geom;
  geom.x = otcal::ConstMatrix::of(c.x.data(), c.n, c.d);
  geom.y = otcal::ConstMatrix::of(c.y.data(), c.m, c.d);
  geom.options.scale = otcal::ScaleCost::parse("mean");  // closed form for sqeuclidean: no extra pass
  otcal::SinkhornOptions o;
  o.epsilon = 0.01;
  o.max_iterations = 1;
  o.inner_iterations = 1;
  const std::size_t budget = std::size_t{64} << 20;
  auto ctx = otcal::Context::cpu({.memory_budget = budget, .on_warning = [](const std::string&) {}});
  const auto r = otcal::sinkhorn(ctx, geom, {}, {}, o);
  EXPECT_EQ(r.n_iters, 1);
  EXPECT_LE(r.memory.peak_bytes, r.memory.planned_peak_bytes);
  EXPECT_LE(r.memory.planned_peak_bytes, budget);
  std::printf("200k x 200k: peak %zu bytes, planned %zu, budget %zu, tile rows %lld, %.1f s\n", r.memory.peak_bytes,
              r.memory.planned_peak_bytes, budget, static_cast<long long>(r.batch_size), r.elapsed_s);
  for (double v : r.f) ASSERT_TRUE(std::isfinite(v));

  auto small = otcal::Context::cpu({.memory_budget = std::size_t{16} << 20});
  try {
    otcal::sinkhorn(small, geom, {}, {}, o);
    FAIL() << "16 MiB cannot hold two 200k-point clouds and their potentials";
  } catch (const otcal::BudgetTooSmall& e) {
    EXPECT_EQ(small.statistics().allocations().total, 0);
    EXPECT_GT(e.required_bytes(), std::size_t{16} << 20);
    EXPECT_LE(e.required_bytes(), budget);
  }
}
