// NaN in the CUDA online log-sum-exp (cuda/row_reductions.cuh, include/otcal/detail/lse_math.hpp):
// the CUDA twin of tests/test_lse_nan.cpp. The device LSE merges a float64 state every 32-column
// chunk and across column parts (split path: a merge kernel; fused path: in the row's thread), so a
// NaN potential in the first, a middle or the last chunk, on either side of a part boundary, must
// give NaN marginals on both paths, like the CPU backend. A cosine problem whose costs are NaN must
// diverge on CUDA as on the CPU. Padding lanes of a partial last chunk must not poison a row.
// Also what -fmad=false promises (docs/host-layer.md §6): the cost of every pair is the CPU's bits
// for sqeuclidean, euclidean and cosine, so the exact max |c| agrees bitwise across backends.
// Label gpu: the binary exits 77 (skipped) where no CUDA device works (tests/support/test_main.cpp).
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <optional>
#include <string>
#include <vector>

#include "otcal/errors.hpp"
#include "otcal/sinkhorn.hpp"
#include "support/reference.hpp"

namespace {

using otcal::index_t;

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr double kInf = std::numeric_limits<double>::infinity();

// The CUDA backend's cut (cuda/cuda_backend.cu): chunks of 32 columns, parts of whole chunks,
// at most 64 parts and at least 64 chunks per part. Which path a call takes depends on the device
// (fused from 16 row blocks per SM, or when the split path would need more than 8 tiles); 41 000
// rows in one tile take the split path on an H100/H200, 300 rows always do. The fused path's NaN
// handling is the same lse_merge in the row's thread; tests/gpu_backend.cpp forces that path
// (many tiles) and checks it is bitwise the split path's.
constexpr index_t kChunk = 32;
constexpr index_t kManyRows = 41000;
constexpr index_t kSplitRows = 300;
constexpr index_t kCols = 4500;  // 141 chunks: 3 parts of 47 chunks (1504 columns)

otcal::ContextOptions quiet() {
  otcal::ContextOptions o;
  o.memory_budget = std::size_t{1} << 30;
  o.on_warning = [](const std::string&) {};
  return o;
}

otcal::Potentials zero_potentials(index_t n, index_t m, otcal::DType precision, const std::string& cost = "sqeuclidean") {
  otcal::Potentials p;
  p.f.assign(static_cast<std::size_t>(n), 0.0);
  p.g.assign(static_cast<std::size_t>(m), 0.0);
  p.epsilon = 0.5;
  p.scale = 1.0;
  p.cost = otcal::Cost::parse(cost);
  p.precision = precision;
  return p;
}

// Columns to poison: chunk edges, part edges (1504, 3008) and the last column.
std::vector<index_t> nan_positions() {
  const index_t part = 47 * kChunk;
  return {0, 1, kChunk - 1, kChunk, 1000, part - 1, part, 2 * part - 1, 2 * part, kCols - 1};
}

class GpuLseNaN : public ::testing::TestWithParam<otcal::DType> {};

TEST_P(GpuLseNaN, MarginalIsNaNWhereverTheNaNSitsOnBothPaths) {
  const otcal::DType precision = GetParam();
  const otcal::Context gpu = otcal::Context::cuda(0, quiet());
  const otcal::Context cpu = otcal::Context::cpu(quiet());
  for (index_t rows : {kSplitRows, kManyRows}) {
    const ref::Clouds c = ref::random_clouds(rows, kCols, 2, 77 + static_cast<std::uint64_t>(rows));
    otcal::PointCloud geom;
    geom.x = otcal::ConstMatrix::of(c.x.data(), rows, 2);
    geom.y = otcal::ConstMatrix::of(c.y.data(), kCols, 2);
    const otcal::Problem on_gpu = otcal::Problem::upload(gpu, geom, {}, {}, precision);
    const std::string path = rows == kManyRows ? "41000 rows" : "300 rows";
    {
      const auto clean = otcal::marginal(on_gpu, zero_potentials(rows, kCols, precision), 1);
      for (double v : clean) ASSERT_TRUE(std::isfinite(v) && v > 0) << path << ": a NaN-free marginal must be finite";
    }
    for (index_t at : nan_positions()) {
      otcal::Potentials pot = zero_potentials(rows, kCols, precision);
      pot.g[static_cast<std::size_t>(at)] = kNaN;
      pot.g[static_cast<std::size_t>((at + kCols / 2) % kCols)] = -kInf;  // a zero-weight column elsewhere
      for (std::optional<index_t> bs : {std::optional<index_t>{}, std::optional<index_t>{7}}) {
        const auto marg = otcal::marginal(on_gpu, pot, 1, bs);
        index_t not_nan = 0, first_bad = -1;
        for (index_t i = 0; i < rows; ++i)
          if (!std::isnan(marg[static_cast<std::size_t>(i)]) && not_nan++ == 0) first_bad = i;
        EXPECT_EQ(not_nan, 0) << path << ", NaN g at column " << at << ", batch "
                              << (bs ? std::to_string(*bs) : "planned") << ": row " << first_bad << " gave "
                              << (first_bad >= 0 ? marg[static_cast<std::size_t>(first_bad)] : 0.0);
      }
    }
    if (rows == kSplitRows) {  // the CPU agrees (the reference backend, tests/test_lse_nan.cpp)
      const otcal::Problem on_cpu = otcal::Problem::upload(cpu, geom, {}, {}, precision);
      otcal::Potentials pot = zero_potentials(rows, kCols, precision);
      pot.g[0] = kNaN;
      for (double v : otcal::marginal(on_cpu, pot, 1)) EXPECT_TRUE(std::isnan(v)) << "cpu";
    }
  }
  // The other axis: rows of y (4500, split into parts of x's 41000 columns) against x, NaN in f.
  const ref::Clouds c = ref::random_clouds(kManyRows, kCols, 2, 78);
  otcal::PointCloud geom;
  geom.x = otcal::ConstMatrix::of(c.x.data(), kManyRows, 2);
  geom.y = otcal::ConstMatrix::of(c.y.data(), kCols, 2);
  const otcal::Problem on_gpu = otcal::Problem::upload(gpu, geom, {}, {}, precision);
  for (index_t at : {index_t{0}, index_t{640}, index_t{20000}, kManyRows - 1}) {
    otcal::Potentials pot = zero_potentials(kManyRows, kCols, precision);
    pot.f[static_cast<std::size_t>(at)] = kNaN;
    const auto marg = otcal::marginal(on_gpu, pot, 0);
    index_t not_nan = 0;
    for (double v : marg) not_nan += std::isnan(v) ? 0 : 1;
    EXPECT_EQ(not_nan, 0) << "NaN f at row " << at;
  }
}

// Clouds whose cosine norms overflow the working precision (inf / inf would make NaN costs, and
// inf * 0 against a padding lane would poison a row) no longer reach the kernels: the CUDA
// upload refuses them as the CPU's does (docs/sinkhorn.md §1.2), naming the cloud's row, wherever
// the point sits among chunks and parts.
TEST_P(GpuLseNaN, OverflowingCosineNormsAreRefusedInEveryChunkAndPart) {
  const otcal::DType precision = GetParam();
  const double huge = precision == otcal::DType::float32 ? 1e30 : 1e200;  // squares overflow in T
  const otcal::Context gpu = otcal::Context::cuda(0, quiet());
  const index_t n = 3000;  // 94 chunks: 2 parts of 47
  for (index_t at : {index_t{0}, kChunk - 1, kChunk, index_t{1503}, index_t{1504}, n / 2, n - 1}) {
    ref::Clouds c = ref::random_clouds(n, n, 2, 5 + static_cast<std::uint64_t>(at));
    c.x[static_cast<std::size_t>(2 * at)] = huge;
    c.x[static_cast<std::size_t>(2 * at + 1)] = huge;
    otcal::PointCloud geom;
    geom.x = otcal::ConstMatrix::of(c.x.data(), n, 2);
    geom.options.cost = otcal::Cost::parse("cosine");
    otcal::SinkhornOptions o;
    o.precision = precision;
    o.epsilon = 0.1;
    o.max_iterations = 10;
    const std::string what = "huge point at " + std::to_string(at);
    try {
      otcal::sinkhorn(gpu, geom, {}, {}, o);
      ADD_FAILURE() << what << ": accepted clouds whose cosine norms overflow";
    } catch (const otcal::InvalidArgument& e) {
      EXPECT_NE(std::string(e.what()).find("(row " + std::to_string(at) + ")"), std::string::npos)
          << what << ": " << e.what();
    }
  }
}

// -fmad=false: the device accumulates sum_k (x_k - y_k)^2 and the dot products unfused, k = 0..d-1,
// as the CPU does, and sqrt and division are IEEE on both, so every cost entry has the CPU's bits.
// The maximum over all pairs does not depend on the reduction order, so it must agree bitwise
// (the sums do not: chunks of 32 on CUDA, granules of 256 on the CPU).
TEST_P(GpuLseNaN, CostEntriesAreTheCpusBits) {
  const otcal::DType precision = GetParam();
  const otcal::Context gpu = otcal::Context::cuda(0, quiet());
  const otcal::Context cpu = otcal::Context::cpu(quiet());
  for (const char* cost : {"sqeuclidean", "euclidean", "cosine"}) {
    for (index_t d : {index_t{3}, index_t{17}}) {  // 17: two shared-memory slabs of coordinates
      const ref::Clouds c = ref::random_clouds(257, 389, d, 1000 + static_cast<std::uint64_t>(d), 3.0);
      otcal::PointCloud geom;
      geom.x = otcal::ConstMatrix::of(c.x.data(), c.n, d);
      geom.y = otcal::ConstMatrix::of(c.y.data(), c.m, d);
      geom.options.cost = otcal::Cost::parse(cost);
      const double want = otcal::cost_statistics(otcal::Problem::upload(cpu, geom, {}, {}, precision)).max_abs;
      const double got = otcal::cost_statistics(otcal::Problem::upload(gpu, geom, {}, {}, precision)).max_abs;
      EXPECT_EQ(std::memcmp(&got, &want, sizeof(double)), 0)
          << cost << ", d = " << d << ": max |c| " << got << " on CUDA vs " << want << " on the CPU";
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Precisions, GpuLseNaN, ::testing::Values(otcal::DType::float64, otcal::DType::float32),
                         [](const auto& info) { return std::string(otcal::dtype_name(info.param)); });

}  // namespace
