// n = m = 20,000 on the CPU with batch 256 (docs/sparsify.md §9 item 17 at scale): the measured
// peak stays <= the planned peak <= the budget, far below n*m values, and the result is checked
// against a few rows recomputed here in float64.
#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <random>

#include "otcal/sparsify.hpp"
#include "support/process.hpp"
#include "support/reference.hpp"

TEST(SparsifyLarge, TwentyThousandSquaredWithinBudget) {
  const std::int64_t n = 20000, m = 20000, bs = 256;
  const auto seed = testsupport::fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  const ref::Clouds c = ref::random_clouds(n, m, 2, seed);
  otcal::SinkhornResult r;
  r.f.assign(n, 0.0);
  r.g.assign(m, 0.0);
  r.epsilon = 0.05;
  r.scale = 1.0;
  otcal::PointCloud g;
  g.x = otcal::ConstMatrix::of(c.x.data(), n, 2);
  g.y = otcal::ConstMatrix::of(c.y.data(), m, 2);
  otcal::ContextOptions co;
  co.memory_budget = std::size_t{64} << 20;
  const auto ctx = otcal::Context::cpu(co);
  otcal::SparsifyOptions o;
  o.mode = otcal::SparsifyMode::threshold;
  o.value = 0.5;  // keeps ~1% of the entries: the CSR stays small
  o.batch_size = bs;
  const auto t0 = std::chrono::steady_clock::now();
  const auto res = otcal::sparsify(ctx, g, r, o);
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("n = m = 20000, bs = 256: %.2f s, nnz %lld, peak %zu bytes, planned %zu, budget %zu\n", secs,
              static_cast<long long>(res.csr.nnz()), res.memory.peak_bytes, res.memory.planned_peak_bytes,
              res.memory.budget_bytes);
  EXPECT_EQ(res.batch_size, bs);
  EXPECT_LE(res.memory.peak_bytes, res.memory.planned_peak_bytes);
  EXPECT_LE(res.memory.planned_peak_bytes, co.memory_budget);
  // batch * m * sizeof(value) + O(n + m) inputs and per-row scalars.
  // (Inputs: x, y with d = 2 and f, g; per row: max, count, offset; 32 buffers of alignment slack.)
  const std::size_t formula = bs * m * sizeof(double) + (n + m) * 2 * sizeof(double) + (n + m) * sizeof(double) +
                              bs * (sizeof(double) + 16) + 32 * 256;
  EXPECT_LE(res.memory.planned_peak_bytes, formula);
  // Rows spread over the blocks, recomputed in float64.
  for (std::int64_t i : {std::int64_t{0}, std::int64_t{255}, std::int64_t{256}, std::int64_t{12345}, n - 1}) {
    std::int64_t k = res.csr.indptr[i];
    for (std::int64_t j = 0; j < m; ++j) {
      const double dx = c.x[2 * i] - c.y[2 * j], dy = c.x[2 * i + 1] - c.y[2 * j + 1];
      const double t = std::exp(-(dx * dx + dy * dy) / r.epsilon);
      if (t >= o.value.value() * (1 + 1e-12)) {
        ASSERT_LT(k, res.csr.indptr[i + 1]) << "row " << i << " misses column " << j;
        ASSERT_EQ(res.csr.index(k), j) << "row " << i;
        EXPECT_NEAR(res.csr.values[k], t, 1e-12 * t);
        ++k;
      } else if (k < res.csr.indptr[i + 1] && res.csr.index(k) == j) {
        EXPECT_NEAR(t, o.value.value(), 1e-12);  // kept only on the rounding edge of the threshold
        ++k;
      }
    }
    EXPECT_EQ(k, res.csr.indptr[i + 1]) << "row " << i;
  }
}
