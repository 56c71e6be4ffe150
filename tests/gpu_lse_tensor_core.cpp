// The tensor-core float32 row LSE (cuda/lse_tensor_core.cuh: 3xTF32 mma.sync inner products in the
// bias form) launched through its own launcher, against the CPU backend's float32 row_lse (the
// reference backend) and a float64 dense LSE written here, for d = 8, 16, 64 and 100 (d padded to
// 104 in shared memory), ragged n (not a multiple of the 64-row block) and m (a partial last chunk
// of 32 columns; m = 4099: three column parts), -inf potentials (one whole chunk of them, and a
// problem with every column at -inf), a NaN coordinate in one row (that row NaN, the others
// unchanged), a NaN potential (every row NaN), clouds far from the origin (the centring), and the
// fused and split paths, which must agree bit for bit (same operations in the same order) for
// every tile size. The launcher declines what it does not do (d < 8, other costs).
//
// Tolerance [rel]: |got - want| <= 1e-5 max(1, |want|) on the natural-log value, the float32
// tolerance of the CUDA-vs-CPU LSE in tests/gpu_backend.cpp. Here (unit boxes, s = d/6 the mean
// cost, eps >= 0.05) the exponent's float32 roundings are ulps of the bias terms |b_j|,
// |a_i . y'_j| <= about 2 kappa d <= 350 (log2 units), i.e. ~1e-5 absolute on values whose
// magnitude is 4 to 50, ~1e-6 relative at worst; 3xTF32 adds about 2^-20 of sum |a_k y'_k|
// (tests/test_tf32_split.cpp), ex2.approx 2 ulp per term. An emulation of this arithmetic in
// numpy (TF32 rounding on the bits, float32 sequential accumulation) gave at most 5.4e-7 relative
// against float64 on these problems (offset 100 included). The CPU float32 backend has errors of
// the same kind. 1e-5 leaves a margin of about 20, while a lost lo product (2^-11 of the inner
// products, ~0.1 absolute) or a lost column or chunk fails it by orders of magnitude.
//
// Label gpu: the binary exits 77 (skipped) where no CUDA device works (tests/support/test_main.cpp).
// Without the CUDA backend it is built but has nothing to launch.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "core/backend.hpp"
#include "otcal/context.hpp"
#include "support/process.hpp"

#if defined(OTCAL_TEST_LSE_TENSOR_CORE)
#include <cuda_runtime.h>

namespace lse_tc_test {
std::string run_lse_tensor_core(const otcal::detail::RowLseArgs<float>& a, otcal::index_t max_parts, bool split,
                                bool* applied);
}  // namespace lse_tc_test

namespace {

using otcal::index_t;
using otcal::detail::Cloud;
using otcal::CostKind;
using otcal::detail::RowLseArgs;

constexpr double kInf = std::numeric_limits<double>::infinity();
constexpr double kTol = 1e-5;
constexpr index_t kChunk = 32;

// The CUDA backend's cut of the columns (cuda/cuda_backend.cu, lse_max_parts): parts of at least
// 64 chunks, at most 64 parts.
index_t lse_max_parts(index_t m) {
  const index_t chunks = (m + kChunk - 1) / kChunk;
  return std::clamp<index_t>((chunks + 63) / 64, 1, 64);
}

// A device array of floats, freed on scope exit.
struct DeviceFloats {
  float* p = nullptr;
  explicit DeviceFloats(const std::vector<float>& host) {
    EXPECT_EQ(cudaMalloc(&p, std::max<std::size_t>(1, host.size()) * sizeof(float)), cudaSuccess);
    if (!host.empty()) cudaMemcpy(p, host.data(), host.size() * sizeof(float), cudaMemcpyHostToDevice);
  }
  explicit DeviceFloats(std::size_t count) {
    EXPECT_EQ(cudaMalloc(&p, std::max<std::size_t>(1, count) * sizeof(float)), cudaSuccess);
  }
  ~DeviceFloats() { cudaFree(p); }
  std::vector<float> get(std::size_t count) const {
    std::vector<float> host(count);
    cudaMemcpy(host.data(), p, count * sizeof(float), cudaMemcpyDeviceToHost);
    return host;
  }
};
struct DeviceDoubles {
  double* p = nullptr;
  explicit DeviceDoubles(std::size_t count) {
    EXPECT_EQ(cudaMalloc(&p, std::max<std::size_t>(1, count) * sizeof(double)), cudaSuccess);
  }
  ~DeviceDoubles() { cudaFree(p); }
};

// One problem in float32, host side: clouds row-major [n, d] and [m, d], potentials h.
struct Problem {
  index_t n = 0, m = 0;
  int d = 0;
  std::vector<float> x, y, h;
  double eps = 0.1, inv_scale = 1.0;
};

std::vector<float> dimension_major(const std::vector<float>& rows, index_t n, int d) {
  std::vector<float> out(rows.size());
  for (index_t i = 0; i < n; ++i)
    for (int k = 0; k < d; ++k) out[static_cast<std::size_t>(k * n + i)] = rows[static_cast<std::size_t>(i * d + k)];
  return out;
}

// ln sum_j exp(h_j/eps - |x_i - y_j|^2 inv_scale/eps) in float64 from the float32 inputs, with
// the max taken out; NaN anywhere in the row gives NaN, no finite term gives -inf.
std::vector<double> dense_lse(const Problem& p) {
  std::vector<double> out(static_cast<std::size_t>(p.n));
  std::vector<double> t(static_cast<std::size_t>(p.m));
  for (index_t i = 0; i < p.n; ++i) {
    double mx = -kInf;
    bool nan = false;
    for (index_t j = 0; j < p.m; ++j) {
      double c = 0;
      for (int k = 0; k < p.d; ++k) {
        const double diff = static_cast<double>(p.x[i * p.d + k]) - static_cast<double>(p.y[j * p.d + k]);
        c += diff * diff;
      }
      t[j] = static_cast<double>(p.h[j]) / p.eps - c * p.inv_scale / p.eps;
      nan = nan || std::isnan(t[j]);
      mx = std::max(mx, t[j]);
    }
    if (nan) {
      out[i] = std::numeric_limits<double>::quiet_NaN();
      continue;
    }
    if (mx == -kInf) {
      out[i] = -kInf;
      continue;
    }
    double s = 0;
    for (index_t j = 0; j < p.m; ++j) s += std::exp(t[j] - mx);
    out[i] = mx + std::log(s);
  }
  return out;
}

// The CPU backend's float32 row_lse (the reference backend).
std::vector<double> cpu_lse(const Problem& p) {
  const otcal::Context ctx = otcal::Context::cpu();
  auto be = otcal::detail::make_cpu_backend<float>(ctx);
  const std::vector<float> xd = dimension_major(p.x, p.n, p.d), yd = dimension_major(p.y, p.m, p.d);
  std::vector<float> out(static_cast<std::size_t>(p.n));
  std::vector<double> state(static_cast<std::size_t>(2 * p.n));
  RowLseArgs<float> a;
  a.rows = Cloud<float>{xd.data(), nullptr, p.n, p.d};
  a.cols = Cloud<float>{yd.data(), nullptr, p.m, p.d};
  a.cost = {CostKind::sqeuclidean, 2.0};
  a.inv_scale = p.inv_scale;
  a.eps = p.eps;
  a.col_potential = p.h.data();
  a.out = out.data();
  a.state = state.data();
  a.tile_rows = p.n;
  be->row_lse(a);
  return std::vector<double>(out.begin(), out.end());
}

// The tensor-core LSE on the device: fused (tile 0) or split with the given tile rows.
std::vector<float> device_lse(const Problem& p, index_t split_tile, CostKind kind = CostKind::sqeuclidean,
                              bool* applied_out = nullptr) {
  const DeviceFloats x(dimension_major(p.x, p.n, p.d)), y(dimension_major(p.y, p.m, p.d)), h(p.h);
  DeviceFloats out(static_cast<std::size_t>(p.n));
  const index_t parts = lse_max_parts(p.m);
  const index_t tile = split_tile > 0 ? split_tile : p.n;
  DeviceDoubles state(static_cast<std::size_t>(2 * tile * parts));
  RowLseArgs<float> a;
  a.rows = Cloud<float>{x.p, nullptr, p.n, p.d};
  a.cols = Cloud<float>{y.p, nullptr, p.m, p.d};
  a.cost = {kind, 2.0};
  a.inv_scale = p.inv_scale;
  a.eps = p.eps;
  a.col_potential = h.p;
  a.out = out.p;
  a.state = state.p;
  a.tile_rows = tile;
  bool applied = false;
  const std::string err = lse_tc_test::run_lse_tensor_core(a, parts, split_tile > 0, &applied);
  EXPECT_EQ(err, "") << "CUDA error";
  if (applied_out != nullptr) *applied_out = applied;
  else EXPECT_TRUE(applied) << "the launcher declined d = " << p.d;
  return out.get(static_cast<std::size_t>(p.n));
}

// Clouds uniform in the unit box (shifted by `offset` in every coordinate), N(0, 1) potentials
// with 10% -inf, s = d/6 (the mean cost of two such clouds).
Problem random_problem(index_t n, index_t m, int d, double eps, double offset, std::uint64_t seed) {
  Problem p;
  p.n = n;
  p.m = m;
  p.d = d;
  p.eps = eps;
  p.inv_scale = 6.0 / d;
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> g(0.0, 1.0);
  std::uniform_real_distribution<double> u(0.0, 1.0);
  p.x.resize(static_cast<std::size_t>(n * d));
  p.y.resize(static_cast<std::size_t>(m * d));
  for (auto& v : p.x) v = static_cast<float>(u(rng) + offset);
  for (auto& v : p.y) v = static_cast<float>(u(rng) + offset);
  p.h.resize(static_cast<std::size_t>(m));
  for (auto& v : p.h) v = u(rng) < 0.1 ? -std::numeric_limits<float>::infinity() : static_cast<float>(g(rng));
  return p;
}

// [rel] with a floor of 1; non-finite references must be matched exactly (NaN by NaN).
double expect_close(const std::vector<float>& got, const std::vector<double>& want, const std::string& what) {
  double worst = 0;
  for (std::size_t i = 0; i < want.size(); ++i) {
    const double g = static_cast<double>(got[i]);
    if (std::isnan(want[i])) {
      EXPECT_TRUE(std::isnan(g)) << what << " row " << i << ": " << g << ", want NaN";
      continue;
    }
    if (!std::isfinite(want[i])) {
      EXPECT_EQ(g, want[i]) << what << " row " << i;
      continue;
    }
    const double rel = std::fabs(g - want[i]) / std::max(1.0, std::fabs(want[i]));
    worst = std::max(worst, rel);
    EXPECT_LE(rel, kTol) << what << " row " << i << ": " << g << ", want " << want[i];
  }
  return worst;
}

void expect_bitwise(const std::vector<float>& a, const std::vector<float>& b, const std::string& what) {
  ASSERT_EQ(a.size(), b.size());
  index_t differ = 0, first = -1;
  for (std::size_t i = 0; i < a.size(); ++i) {
    const bool same = (std::isnan(a[i]) && std::isnan(b[i])) || a[i] == b[i];
    if (!same && differ++ == 0) first = static_cast<index_t>(i);
  }
  EXPECT_EQ(differ, 0) << what << ": first at row " << first;
}

// Fused against the CPU float32 backend and the float64 dense LSE, and split (two tile sizes)
// bitwise against fused.
void check_problem(const Problem& p, const std::string& what) {
  const std::vector<float> fused = device_lse(p, 0);
  const double e_cpu = expect_close(fused, cpu_lse(p), what + " vs CPU float32");
  const double e_f64 = expect_close(fused, dense_lse(p), what + " vs float64");
  for (const index_t tile : {index_t{37}, p.n}) expect_bitwise(device_lse(p, tile), fused, what + ", split tile " + std::to_string(tile));
  std::printf("%s: max rel error vs CPU float32 %.2e, vs float64 %.2e\n", what.c_str(), e_cpu, e_f64);
}

TEST(GpuLseTensorCore, MatchesTheCpuBackendAndFloat64AcrossDimensionsSizesAndPaths) {
  const std::uint64_t seed = testsupport::fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::uint64_t draw = seed;
  for (const int d : {8, 16, 64, 100})
    for (const index_t m : {index_t{45}, index_t{4099}})  // a partial chunk; 3 parts of 43 chunks
      for (const double eps : {0.05, 0.5}) {
        const index_t n = d == 100 ? 131 : 197;  // not multiples of the 64-row block
        const Problem p = random_problem(n, m, d, eps, 0.0, ++draw);
        check_problem(p, "d " + std::to_string(d) + " m " + std::to_string(m) + " eps " + std::to_string(eps));
      }
  // Far from the origin: without the centring |x|^2 ~ 1e4 d would swamp the distances.
  for (const int d : {16, 64}) {
    const Problem p = random_problem(133, 300, d, 0.1, 100.0, ++draw);
    check_problem(p, "offset 100, d " + std::to_string(d));
  }
}

TEST(GpuLseTensorCore, NegInfColumnsNaNRowsAndNaNPotentials) {
  const std::uint64_t seed = testsupport::fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  const int d = 24;  // padded to 24: three k-steps
  Problem p = random_problem(150, 2500, d, 0.1, 0.0, seed);  // 79 chunks: 2 parts
  // A whole chunk of -inf columns (chunk 1), and the first column of a part.
  for (index_t j = 32; j < 64; ++j) p.h[static_cast<std::size_t>(j)] = -std::numeric_limits<float>::infinity();
  p.h[40 * 32] = -std::numeric_limits<float>::infinity();  // parts of 40 chunks
  // A NaN coordinate in rows 0, 70 (second block) and 149 (the last): those rows NaN, the rest finite.
  for (const index_t i : {index_t{0}, index_t{70}, index_t{149}})
    p.x[static_cast<std::size_t>(i * d + 5)] = std::numeric_limits<float>::quiet_NaN();
  check_problem(p, "NaN rows");
  const std::vector<float> out = device_lse(p, 0);
  for (index_t i = 0; i < p.n; ++i) {
    const bool nan_row = i == 0 || i == 70 || i == 149;
    EXPECT_EQ(std::isnan(out[static_cast<std::size_t>(i)]), nan_row) << "row " << i;
  }

  // A NaN potential in the last column: every row NaN (docs/sinkhorn.md §10), on both paths.
  Problem q = random_problem(100, 2500, d, 0.1, 0.0, seed + 7);
  q.h.back() = std::numeric_limits<float>::quiet_NaN();
  for (const index_t tile : {index_t{0}, index_t{41}})
    for (const float v : device_lse(q, tile)) EXPECT_TRUE(std::isnan(v)) << "tile " << tile;

  // Every column at -inf: no mass, -inf for every row (the empty state), on both paths.
  Problem z = random_problem(70, 90, d, 0.1, 0.0, seed + 8);
  std::fill(z.h.begin(), z.h.end(), -std::numeric_limits<float>::infinity());
  for (const index_t tile : {index_t{0}, index_t{33}})
    for (const float v : device_lse(z, tile)) EXPECT_EQ(v, -std::numeric_limits<float>::infinity()) << "tile " << tile;
}

TEST(GpuLseTensorCore, DeclinesWhatItDoesNotDo) {
  const std::uint64_t seed = testsupport::fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  bool applied = true;
  const Problem small = random_problem(20, 40, 7, 0.1, 0.0, seed);
  device_lse(small, 0, CostKind::sqeuclidean, &applied);
  EXPECT_FALSE(applied) << "d = 7";
  const Problem other = random_problem(20, 40, 16, 0.1, 0.0, seed + 1);
  device_lse(other, 0, CostKind::euclidean, &applied);
  EXPECT_FALSE(applied) << "euclidean cost";
}

}  // namespace

#else

TEST(GpuLseTensorCore, NeedsTheCudaBackend) { GTEST_SKIP() << "built without the CUDA backend"; }

#endif
