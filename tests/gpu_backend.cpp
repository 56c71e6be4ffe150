// The CUDA backend against the CPU backend (the reference backend, itself tested against dense
// float64 references in the cpu suite): every primitive on random clouds with prime sizes, -inf
// potentials, every cost kind, float and double; row_lse on both CUDA paths (fused: one block walks
// every column part; split: the parts go to separate blocks and a second kernel merges them), with
// every row compared with the CPU; full solves on Context::cuda(0) against Context::cpu() on the
// fused path (n = 257, m = 131) and on the split path (m = 4099 > 2048 columns, n = 97 rows) in
// float32 and float64, for two costs, balanced, unbalanced and with parallel updates; batch-size
// invariance and the memory contract on CUDA. Label gpu: the binary exits 77 (skipped) where no
// CUDA device works (tests/support/test_main.cpp).
//
// What "equal" means in each comparison (the kinds are named at the assertions):
//  [exact]  bitwise. (a) CUDA against CUDA: across tile sizes and across the fused and split paths
//           the kernels perform the same operations in the same order (docs/sinkhorn.md §10,
//           host-layer.md §6). (b) Data movement: the resident dimension-major layout is a copy.
//           (c) Arithmetic without exp/log and in the same order on both backends (point norms:
//           sum of x_k^2 for k = 0..d-1 then IEEE sqrt; potential_update: tau (eps log w - fin(eps
//           lse)); validity flags): the CUDA code is compiled with -fmad=false and the host code
//           with -ffp-contract=off, so every +, -, *, / and sqrt rounds once on both sides.
//  [rel]    |got - want| <= tol * max(1, |want|), infinities equal, where exp2/exp/log or the
//           order of a reduction differ between the backends ("not bitwise equal to the CPU's:
//           different granules and exponential implementations", host-layer.md §6): the CPU sums
//           2^t with its polynomial exp2 in granules of 256 columns, CUDA with the device exp2 in
//           chunks of 32. tol = 1e-12 (float64) and 1e-5 (float32): a sum of positive terms each
//           off by a few ulp is off by a few ulp relative, i.e. the LSE by a few ulp absolute,
//           plus the rounding of t - max against different maxima (|t| * ulp); the float32 bound
//           leaves two orders of magnitude over FLT_EPSILON for 32-term float chunks. The fast
//           sqeuclidean kernel (d <= 8) rounds relative to the terms of its bias form, not to the
//           result: its rows are compared to 2e-5 (float32) and 1e-12 (float64) of fast_lse_scale.
//  [solve]  full solves. float64: 1e-9 relative (floor 1) on f, g, reg_ot_cost and the computed
//           errors, the conformance tolerance of docs/sinkhorn.md §11.1; n_iters and converged
//           equal. float32: the per-step [rel] differences accumulate over the iterations of a
//           fixed-length solve, so f and g are compared to kSolveTol32 = 2e-4 * max(1, |v|) and
//           the errors and reg_ot_cost to 1e-3 relative (floor 1e-6); n_iters equal by
//           construction. The CPU float32 solve itself is within about 1e-5 of the CPU float64
//           solve on these problems, so 2e-4 is float32 noise, while a bug in the split path
//           (a lost or doubled part) moves potentials by O(epsilon).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <memory>
#include <random>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "core/backend.hpp"
#include "otcal/sinkhorn.hpp"
#include "support/reference.hpp"

namespace {

using otcal::index_t;
using otcal::detail::Backend;
using otcal::detail::Cloud;
using otcal::detail::CostParams;
using otcal::CostKind;

constexpr double kInf = std::numeric_limits<double>::infinity();

template <class T>
constexpr double tolerance() {
  return std::is_same_v<T, double> ? 1e-12 : 1e-5;
}

std::uint64_t fresh_seed() {
  std::random_device rd;
  return (static_cast<std::uint64_t>(rd()) << 32) ^ rd();
}

// Relative agreement, with an absolute floor of tol for values near 0; infinities must match.
void expect_close(const std::vector<double>& got, const std::vector<double>& want, double tol, const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  for (std::size_t i = 0; i < got.size(); ++i) {
    if (!std::isfinite(want[i])) {
      EXPECT_EQ(got[i], want[i]) << what << "[" << i << "]";
      continue;
    }
    EXPECT_NEAR(got[i], want[i], tol * std::max(1.0, std::fabs(want[i]))) << what << "[" << i << "]";
  }
}

// The scale of the fast squared-Euclidean row LSE's error (cuda/lse_fast.cuh, d <= 8), per row:
// the kernel forms t'_ij = h_j/eps - |v_j|^2/(eps s) + 2 u_i.v_j/(eps s) (natural-log units here)
// with u = x_i - y_0, v = y_j - y_0, so its rounding is relative to the largest of those terms, not
// to the result (include/otcal/detail/lse_fast_math.hpp; tests/test_lse_fast_math.cpp measures the
// emulation against a float64 reference at < 0.2 of a bound of about 2 (d + 3) eps_T * scale).
// scale_i = max(1, |want_i|, max|h|/eps + (2 |u_i| max|v| + max|v|^2) / (eps s)); x [n, d] and
// y [m, d] row-major, the rows' and the columns' cloud.
std::vector<double> fast_lse_scale(const std::vector<double>& x, index_t n, const std::vector<double>& y, index_t m,
                                   index_t d, const std::vector<double>& h, double eps, double inv_scale,
                                   const std::vector<double>& want) {
  double vmax = 0, hmax = 0;
  for (index_t j = 0; j < m; ++j) {
    double v2 = 0;
    for (index_t k = 0; k < d; ++k) v2 += (y[j * d + k] - y[k]) * (y[j * d + k] - y[k]);
    vmax = std::max(vmax, std::sqrt(v2));
    if (std::isfinite(h[static_cast<std::size_t>(j)])) hmax = std::max(hmax, std::fabs(h[static_cast<std::size_t>(j)]));
  }
  std::vector<double> scale(static_cast<std::size_t>(n));
  for (index_t i = 0; i < n; ++i) {
    double u2 = 0;
    for (index_t k = 0; k < d; ++k) u2 += (x[i * d + k] - y[k]) * (x[i * d + k] - y[k]);
    const double terms = hmax / eps + (2 * std::sqrt(u2) * vmax + vmax * vmax) * inv_scale / eps;
    scale[static_cast<std::size_t>(i)] = std::max({1.0, std::fabs(want[static_cast<std::size_t>(i)]), terms});
  }
  return scale;
}

// The fast path's tolerance: 2e-5 (float32) and 1e-12 (float64) of the scale above. The
// emulation's bound is 2 (d + 3) eps_T * scale, 1.3e-6 * scale at d = 8 in float32; the device
// exp2 (ex2.approx, 2^-22 relative) and the CPU reference's own float32 rounding (its exponent
// |t| * eps_T, |t| <= scale) stay well inside 2e-5.
template <class T>
constexpr double fast_lse_tolerance() {
  return std::is_same_v<T, double> ? 1e-12 : 2e-5;
}

void expect_close_scaled(const std::vector<double>& got, const std::vector<double>& want,
                         const std::vector<double>& scale, double tol, const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  for (std::size_t i = 0; i < got.size(); ++i) {
    if (!std::isfinite(want[i])) {
      EXPECT_EQ(got[i], want[i]) << what << "[" << i << "]";
      continue;
    }
    EXPECT_NEAR(got[i], want[i], tol * scale[i]) << what << "[" << i << "]";
  }
}

// One backend with the context it runs on and helpers to move test data in and out.
template <class T>
struct Side {
  otcal::Context ctx;
  std::unique_ptr<Backend<T>> be;

  explicit Side(bool cuda)
      : ctx(cuda ? otcal::Context::cuda(0, {.memory_budget = std::size_t{512} << 20})
                 : otcal::Context::cpu({.memory_budget = std::size_t{512} << 20})),
        be(cuda ? otcal::detail::make_cuda_backend<T>(ctx) : otcal::detail::make_cpu_backend<T>(ctx)) {}

  otcal::Buffer<T> buffer(index_t count) {
    return otcal::Buffer<T>(ctx.workspace(), static_cast<std::size_t>(count), ctx.compute_stream());
  }
  otcal::Buffer<double> doubles(index_t count) {
    return otcal::Buffer<double>(ctx.workspace(), static_cast<std::size_t>(count), ctx.compute_stream());
  }
  otcal::Buffer<T> put(const std::vector<double>& host) {
    auto b = buffer(static_cast<index_t>(host.size()));
    be->upload(host.data(), b.data(), static_cast<index_t>(host.size()));
    return b;
  }
  std::vector<double> get(const T* p, index_t count) {
    std::vector<double> host(static_cast<std::size_t>(count));
    be->download(p, host.data(), count);
    return host;
  }

  struct Resident {
    otcal::Buffer<T> x, norms;
    Cloud<T> cloud;
  };
  // Row-major host [n, d] -> resident dimension-major cloud with its norms.
  Resident cloud(const std::vector<double>& rows, index_t n, index_t d) {
    Resident r;
    r.x = buffer(n * d);
    be->upload_cloud(otcal::ConstMatrix::of(rows.data(), n, d), r.x.data());
    r.norms = buffer(n);
    be->point_norms(r.x.data(), n, static_cast<int>(d), r.norms.data());
    r.cloud = {r.x.data(), r.norms.data(), n, static_cast<int>(d)};
    return r;
  }
};

// Potentials ~ N(0, 1) with about 10% -inf entries (zero-weight points).
std::vector<double> random_potentials(index_t n, std::mt19937_64& rng, double neg_inf_fraction = 0.1) {
  std::normal_distribution<double> g(0.0, 1.0);
  std::uniform_real_distribution<double> u(0.0, 1.0);
  std::vector<double> v(static_cast<std::size_t>(n));
  for (auto& x : v) x = u(rng) < neg_inf_fraction ? -kInf : g(rng);
  return v;
}

std::vector<double> as_T_values(const std::vector<double>& v, bool is_float) {
  std::vector<double> out(v);
  if (is_float)
    for (auto& x : out) x = static_cast<double>(static_cast<float>(x));
  return out;
}

const CostParams kCosts[] = {{CostKind::sqeuclidean, 2.0},
                             {CostKind::euclidean, 2.0},
                             {CostKind::cosine, 2.0},
                             {CostKind::pnorm, 1.5},
                             {CostKind::sq_pnorm, 1.5}};

std::string cost_name(const CostParams& c) {
  switch (c.kind) {
    case CostKind::sqeuclidean: return "sqeuclidean";
    case CostKind::euclidean: return "euclidean";
    case CostKind::cosine: return "cosine";
    case CostKind::pnorm: return "pnorm";
    default: return "sq_pnorm";
  }
}

template <class T>
class CudaVsCpu : public ::testing::Test {
 protected:
  Side<T> cpu{false};
  Side<T> gpu{true};
};

using Types = ::testing::Types<float, double>;
TYPED_TEST_SUITE(CudaVsCpu, Types);

TYPED_TEST(CudaVsCpu, UploadNormsLogWeightsAndElementwise) {
  using T = TypeParam;
  const std::uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  for (const index_t d : {3, 17}) {
    const index_t n = 257;
    const ref::Clouds c = ref::random_clouds(n, 131, d, seed + d);
    auto rc = this->cpu.cloud(c.x, n, d);
    auto rg = this->gpu.cloud(c.x, n, d);
    // The resident layout is dimension-major: compare against the host transpose, exactly.
    std::vector<double> want(static_cast<std::size_t>(n * d));
    for (index_t i = 0; i < n; ++i)
      for (index_t k = 0; k < d; ++k)
        want[static_cast<std::size_t>(k * n + i)] = static_cast<double>(static_cast<T>(c.x[i * d + k]));
    EXPECT_EQ(this->gpu.get(rg.x.data(), n * d), want);  // [exact] a copy
    // [exact] sum of squares in k order, then IEEE sqrt, on both backends (-fmad=false).
    EXPECT_EQ(this->gpu.get(rg.norms.data(), n), this->cpu.get(rc.norms.data(), n)) << "norms d=" << d;
  }

  const index_t n = 263;
  std::vector<double> w = ref::random_weights(n, seed + 1, 0.2);
  auto wc = this->cpu.put(w), wg = this->gpu.put(w);
  auto lc = this->cpu.buffer(n), lg = this->gpu.buffer(n);
  this->cpu.be->log_weights(wc.data(), lc.data(), n);
  this->gpu.be->log_weights(wg.data(), lg.data(), n);
  // [rel] device log vs glibc log, each within an ulp or so.
  expect_close(this->gpu.get(lg.data(), n), this->cpu.get(lc.data(), n), tolerance<T>(), "log_weights");

  const std::vector<double> lse = random_potentials(n, rng, 0.05);
  auto sc = this->cpu.put(lse), sg = this->gpu.put(lse);
  auto pc = this->cpu.buffer(n), pg = this->gpu.buffer(n);
  auto lcg = this->gpu.put(this->cpu.get(lc.data(), n));  // the CPU's log weights, on the device
  for (const double tau : {1.0, 0.7}) {
    this->cpu.be->potential_update(sc.data(), lc.data(), 0.37, tau, pc.data(), n);
    this->gpu.be->potential_update(sg.data(), lcg.data(), 0.37, tau, pg.data(), n);
    // [exact] the inputs are the same bits (the CPU's log weights are uploaded to both sides, so
    // no log differs) and the update is *, -, * in one order (-fmad=false on the device).
    EXPECT_EQ(this->gpu.get(pg.data(), n), this->cpu.get(pc.data(), n)) << "potential_update tau " << tau;
  }

  // marginal_error / transported_mass: -inf potentials only where the weight is 0 (elsewhere the
  // unbalanced target w exp(-pot/rho) would be +inf on both sides and prove nothing).
  std::vector<double> pot = random_potentials(n, rng, 0.0);
  for (std::size_t i = 0; i < pot.size(); ++i)
    if (w[i] == 0.0) pot[i] = -kInf;
  std::vector<double> lse2(static_cast<std::size_t>(n));
  std::normal_distribution<double> g(-5.0, 1.0);
  for (auto& x : lse2) x = g(rng);
  auto potc = this->cpu.put(pot), potg = this->gpu.put(pot);
  auto l2c = this->cpu.put(lse2), l2g = this->gpu.put(lse2);
  for (const double rho : {kInf, 2.5})
    for (const double p : {1.0, 2.0}) {
      const double want = otcal::detail::fold(this->cpu.be->marginal_error(potc.data(), l2c.data(), wc.data(), 0.3, rho, p, n));
      const double got = otcal::detail::fold(this->gpu.be->marginal_error(potg.data(), l2g.data(), wg.data(), 0.3, rho, p, n));
      EXPECT_NEAR(got, want, tolerance<T>() * std::max(1.0, std::fabs(want))) << "rho " << rho << " p " << p;
    }
  const double mass_c = otcal::detail::fold(this->cpu.be->transported_mass(potc.data(), l2c.data(), 0.3, n));
  const double mass_g = otcal::detail::fold(this->gpu.be->transported_mass(potg.data(), l2g.data(), 0.3, n));
  EXPECT_GT(mass_c, 0.0);
  EXPECT_NEAR(mass_g, mass_c, tolerance<T>() * std::max(1.0, mass_c));
}

TYPED_TEST(CudaVsCpu, ValidityFlags) {
  using T = TypeParam;
  const std::uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  const index_t n = 1009;  // several reduction blocks' worth is not needed; odd size is
  std::vector<double> w = ref::random_weights(n, seed, 0.0);
  std::uniform_int_distribution<index_t> pick(0, n - 1);
  const index_t zero_w = pick(rng);
  w[static_cast<std::size_t>(zero_w)] = 0.0;
  auto wc = this->cpu.put(w), wg = this->gpu.put(w);

  std::vector<double> clean = random_potentials(n, rng, 0.0);
  clean[static_cast<std::size_t>(zero_w)] = -kInf;  // legal: -inf where the weight is 0
  struct Variant {
    const char* name;
    double value;
  };
  const Variant variants[] = {{"clean", 0.0}, {"nan", std::nan("")}, {"+inf", kInf}, {"-inf with mass", -kInf}};
  for (const Variant& v : variants) {
    std::vector<double> pot = clean;
    if (std::string(v.name) != "clean") {
      index_t at = pick(rng);
      while (at == zero_w) at = pick(rng);
      pot[static_cast<std::size_t>(at)] = v.value;
    }
    auto pc = this->cpu.put(pot), pg = this->gpu.put(pot);
    const unsigned want = this->cpu.be->potential_flags(pc.data(), wc.data(), n);
    EXPECT_EQ(this->gpu.be->potential_flags(pg.data(), wg.data(), n), want) << v.name;
    EXPECT_EQ(this->gpu.be->value_flags(pg.data(), n), this->cpu.be->value_flags(pc.data(), n)) << v.name;
    if (std::string(v.name) == "clean") EXPECT_EQ(want, 0u);
    else EXPECT_NE(want, 0u) << v.name;
  }
}

// row_lse, row_apply and cost_moments for every cost kind, d = 3 and 17, several tile sizes.
TYPED_TEST(CudaVsCpu, RowLseApplyAndMomentsEveryCost) {
  using T = TypeParam;
  const std::uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  const index_t n = 257, m = 131;
  for (const index_t d : {3, 17}) {
    const ref::Clouds c = ref::random_clouds(n, m, d, seed + d);
    auto xc = this->cpu.cloud(c.x, n, d), xg = this->gpu.cloud(c.x, n, d);
    auto yc = this->cpu.cloud(c.y, m, d), yg = this->gpu.cloud(c.y, m, d);
    const std::vector<double> f = random_potentials(n, rng), gpot = random_potentials(m, rng);
    auto fc = this->cpu.put(f), fg = this->gpu.put(f);
    auto hc = this->cpu.put(gpot), hg = this->gpu.put(gpot);
    for (const CostParams& cost : kCosts) {
      SCOPED_TRACE(cost_name(cost) + " d=" + std::to_string(d));
      const double inv_scale = 0.5, eps = 0.4;
      // Column LSE reduced over the rows too (the g-update direction): swapped roles.
      for (const bool swap : {false, true}) {
        const auto& rc = swap ? yc : xc;
        const auto& cc = swap ? xc : yc;
        const auto& rg = swap ? yg : xg;
        const auto& cg = swap ? xg : yg;
        const index_t rows = rc.cloud.n;
        auto oc = this->cpu.buffer(rows), og = this->gpu.buffer(rows);
        std::vector<double> first;
        for (const index_t tile : {index_t{1}, index_t{7}, rows, rows + 5}) {
          auto stc = this->cpu.doubles(2 * tile * this->cpu.be->lse_partials_per_row(cc.cloud.n));
          auto stg = this->gpu.doubles(2 * tile * this->gpu.be->lse_partials_per_row(cc.cloud.n));
          this->cpu.be->row_lse({rc.cloud, cc.cloud, cost, inv_scale, eps, swap ? fc.data() : hc.data(), oc.data(),
                                 stc.data(), tile});
          this->gpu.be->row_lse({rg.cloud, cg.cloud, cost, inv_scale, eps, swap ? fg.data() : hg.data(), og.data(),
                                 stg.data(), tile});
          const std::vector<double> got = this->gpu.get(og.data(), rows);
          const std::vector<double> want = this->cpu.get(oc.data(), rows);
          if (cost.kind == CostKind::sqeuclidean && d <= 8)  // the fast kernel: [rel] to its scale
            expect_close_scaled(got, want,
                                fast_lse_scale(swap ? c.y : c.x, rows, swap ? c.x : c.y, cc.cloud.n, d,
                                               as_T_values(swap ? f : gpot, std::is_same_v<T, float>), eps, inv_scale,
                                               want),
                                fast_lse_tolerance<T>(), "row_lse tile " + std::to_string(tile));
          else
            expect_close(got, want, tolerance<T>(), "row_lse tile " + std::to_string(tile));
          if (first.empty()) first = got;
          else EXPECT_EQ(got, first) << "row_lse differs between tile sizes on CUDA, tile " << tile;
        }
      }
      // row_apply with k = 1 (marginals) and k = 3 (a barycentric projection).
      for (const index_t k : {index_t{1}, index_t{3}}) {
        std::vector<double> v(static_cast<std::size_t>(m * k));
        std::normal_distribution<double> g(0.0, 1.0);
        for (auto& x : v) x = g(rng);
        auto vc = this->cpu.put(v), vg = this->gpu.put(v);
        auto oc = this->cpu.buffer(n * k), og = this->gpu.buffer(n * k);
        for (const index_t tile : {index_t{7}, n}) {
          auto ac = this->cpu.doubles(tile * k), ag = this->gpu.doubles(tile * k);
          this->cpu.be->row_apply({xc.cloud, yc.cloud, cost, inv_scale, eps, fc.data(), hc.data(), vc.data(), k,
                                   oc.data(), ac.data(), tile});
          this->gpu.be->row_apply({xg.cloud, yg.cloud, cost, inv_scale, eps, fg.data(), hg.data(), vg.data(), k,
                                   og.data(), ag.data(), tile});
          expect_close(this->gpu.get(og.data(), n * k), this->cpu.get(oc.data(), n * k), tolerance<T>(),
                       "row_apply k " + std::to_string(k) + " tile " + std::to_string(tile));
        }
      }
      auto pc = this->cpu.doubles(3 * n), pg = this->gpu.doubles(3 * n);
      const auto mc = this->cpu.be->cost_moments(xc.cloud, yc.cloud, cost, 7, pc.data());
      const auto mg = this->gpu.be->cost_moments(xg.cloud, yg.cloud, cost, 7, pg.data());
      EXPECT_GT(mc.sum_sq, 0.0);
      // [rel] float64 sums of the same entries in a different order (granules vs fixed grid).
      EXPECT_NEAR(mg.sum, mc.sum, tolerance<T>() * std::max(1.0, std::fabs(mc.sum)));
      EXPECT_NEAR(mg.sum_sq, mc.sum_sq, tolerance<T>() * std::max(1.0, mc.sum_sq));
      // The maximum is one entry: [exact] where an entry is pure arithmetic (no pow), else [rel].
      if (cost.kind == CostKind::pnorm || cost.kind == CostKind::sq_pnorm)
        EXPECT_NEAR(mg.max_abs, mc.max_abs, tolerance<T>() * std::max(1.0, mc.max_abs));
      else
        EXPECT_EQ(mg.max_abs, mc.max_abs);
    }
  }
}

// A wide other cloud (m > 2048) makes the CUDA backend cut the columns into parts. With few rows
// the parts go to different blocks and are merged by a second kernel (split); with enough rows to
// fill the device for several waves, or with more than 8 tiles (kMaxSplitTiles in
// cuda_backend.cu), one block walks all parts (fused). Here the large cloud (40009 rows) is
// passed with tiles of ceil(n/9) rows, which forces the fused path on any device. Every row of
// both paths is compared with the CPU [rel], and the paths with each other [exact], for two costs.
TYPED_TEST(CudaVsCpu, RowLseSplitColumnsMatchesFusedAndCpu) {
  using T = TypeParam;
  const std::uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  const index_t d = 3, m = 4099, n_small = 257, n_large = 40009;
  ASSERT_GT(this->gpu.be->lse_partials_per_row(m), 1) << "m = 4099 should be split into parts";
  const ref::Clouds c = ref::random_clouds(n_large, m, d, seed);
  const std::vector<double> x_small(c.x.begin(), c.x.begin() + n_small * d);
  const std::vector<double> h = random_potentials(m, rng);
  auto yg = this->gpu.cloud(c.y, m, d), yc = this->cpu.cloud(c.y, m, d);
  auto hg = this->gpu.put(h), hc = this->cpu.put(h);
  auto xs = this->gpu.cloud(x_small, n_small, d);
  auto xl = this->gpu.cloud(c.x, n_large, d), xlc = this->cpu.cloud(c.x, n_large, d);
  // The CPU reference for every row of the large cloud (its first n_small rows are x_small).
  auto olc = this->cpu.buffer(n_large);
  auto stc = this->cpu.doubles(2 * n_large * this->cpu.be->lse_partials_per_row(m));
  auto os = this->gpu.buffer(n_small), ol = this->gpu.buffer(n_large);
  auto stl = this->gpu.doubles(2 * n_large * this->gpu.be->lse_partials_per_row(m));

  for (const CostParams cost : {CostParams{CostKind::sqeuclidean, 2.0}, CostParams{CostKind::cosine, 2.0}}) {
    SCOPED_TRACE(cost_name(cost));
    this->cpu.be->row_lse({xlc.cloud, yc.cloud, cost, 1.0, 0.25, hc.data(), olc.data(), stc.data(), n_large});
    const std::vector<double> want = this->cpu.get(olc.data(), n_large);
    const std::vector<double> want_small(want.begin(), want.begin() + n_small);
    // sqeuclidean at d = 3 runs the fast kernel: [rel] to its scale; cosine the engine: [rel].
    const bool fast = cost.kind == CostKind::sqeuclidean;
    const std::vector<double> scale =
        fast_lse_scale(c.x, n_large, c.y, m, d, as_T_values(h, std::is_same_v<T, float>), 0.25, 1.0, want);
    const std::vector<double> scale_small(scale.begin(), scale.begin() + n_small);
    const auto expect_rows_close = [&](const std::vector<double>& got, const std::vector<double>& w,
                                       const std::vector<double>& sc, const std::string& what) {
      if (fast) expect_close_scaled(got, w, sc, fast_lse_tolerance<T>(), what);
      else expect_close(got, w, tolerance<T>(), what);
    };

    // Split path: 257 rows are 3 blocks of 128, far below 2 per SM; tile sizes 1, 100 and all.
    std::vector<double> split;
    for (const index_t tile : {index_t{1}, index_t{100}, n_small}) {
      auto st = this->gpu.doubles(2 * tile * this->gpu.be->lse_partials_per_row(m));
      this->gpu.be->row_lse({xs.cloud, yg.cloud, cost, 1.0, 0.25, hg.data(), os.data(), st.data(), tile});
      const std::vector<double> got = this->gpu.get(os.data(), n_small);
      expect_rows_close(got, want_small, scale_small, "split row_lse tile " + std::to_string(tile));  // [rel]
      if (split.empty()) split = got;
      else EXPECT_EQ(got, split) << "split row_lse differs between tile sizes, tile " << tile;  // [exact]
    }

    // Fused path (9 tiles): every one of the 40009 rows against the CPU [rel]; the shared rows [exact].
    this->gpu.be->row_lse({xl.cloud, yg.cloud, cost, 1.0, 0.25, hg.data(), ol.data(), stl.data(), (n_large + 8) / 9});
    const std::vector<double> fused = this->gpu.get(ol.data(), n_large);
    expect_rows_close(fused, want, scale, "fused row_lse");
    const std::vector<double> fused_small(fused.begin(), fused.begin() + n_small);
    EXPECT_EQ(fused_small, split) << "fused and split paths differ on the same rows";
  }
}

// The fast squared-Euclidean row LSE (cuda/lse_fast.cuh, d = 1..8; d = 64 checks the engine
// fallback next to it) against the CPU backend, on ragged sizes: one part (m = 131), parts on the
// split path (m = 4099: 3 parts, 97 and 1000 rows), with -inf columns, tile sizes 1, 7 and all
// [exact] across them (tiles 1 and 7 give more than 8 tiles, so they take the fused path, the
// whole cloud as one tile the split path); then the fused path with parts (4099 rows in tiles of
// ceil(n/9); m = 2111: 2 parts) [exact] against the split path on its first 300 rows. Every row
// against the CPU, [rel] to the fast kernel's scale (fast_lse_scale); float32 at d = 64 runs the
// tensor-core kernel (3xTF32, the same bias form, so the same scale), float64 the engine.
TYPED_TEST(CudaVsCpu, RowLseFastSqeuclideanEveryPath) {
  using T = TypeParam;
  const bool is_float = std::is_same_v<T, float>;
  const std::uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  const CostParams cost{CostKind::sqeuclidean, 2.0};
  const double eps = 0.3, inv_scale = 0.7;
  for (const index_t d : {1, 3, 8, 64})
    for (const auto& [n, m] : {std::pair<index_t, index_t>{257, 131}, {97, 4099}, {1000, 4099}}) {
      SCOPED_TRACE("d " + std::to_string(d) + " n " + std::to_string(n) + " m " + std::to_string(m));
      const ref::Clouds c = ref::random_clouds(n, m, d, seed + static_cast<std::uint64_t>(d * 7919 + n));
      const std::vector<double> h = random_potentials(m, rng);
      auto xc = this->cpu.cloud(c.x, n, d), xg = this->gpu.cloud(c.x, n, d);
      auto yc = this->cpu.cloud(c.y, m, d), yg = this->gpu.cloud(c.y, m, d);
      auto hc = this->cpu.put(h), hg = this->gpu.put(h);
      auto oc = this->cpu.buffer(n), og = this->gpu.buffer(n);
      auto stc = this->cpu.doubles(2 * n * this->cpu.be->lse_partials_per_row(m));
      this->cpu.be->row_lse({xc.cloud, yc.cloud, cost, inv_scale, eps, hc.data(), oc.data(), stc.data(), n});
      const std::vector<double> want = this->cpu.get(oc.data(), n);
      const std::vector<double> scale = fast_lse_scale(c.x, n, c.y, m, d, as_T_values(h, is_float), eps, inv_scale, want);
      std::vector<double> first;
      for (const index_t tile : {index_t{1}, index_t{7}, n}) {
        auto stg = this->gpu.doubles(2 * tile * this->gpu.be->lse_partials_per_row(m));
        this->gpu.be->row_lse({xg.cloud, yg.cloud, cost, inv_scale, eps, hg.data(), og.data(), stg.data(), tile});
        const std::vector<double> got = this->gpu.get(og.data(), n);
        if (d <= 8 || is_float) expect_close_scaled(got, want, scale, fast_lse_tolerance<T>(), "tile " + std::to_string(tile));
        else expect_close(got, want, tolerance<T>(), "tile " + std::to_string(tile));
        if (first.empty()) first = got;
        else EXPECT_EQ(got, first) << "row_lse differs between tile sizes on CUDA, tile " << tile;  // [exact]
      }
    }

  // The fused path with parts, against the split path on the same rows and against the CPU.
  const index_t n_fused = 4099, m = 2111, n_small = 300, fused_tile = (n_fused + 8) / 9;
  ASSERT_GT(this->gpu.be->lse_partials_per_row(m), 1) << "m = 2111 should be split into parts";
  for (const index_t d : {1, 3, 8}) {
    SCOPED_TRACE("fused d " + std::to_string(d));
    const ref::Clouds c = ref::random_clouds(n_fused, m, d, seed + static_cast<std::uint64_t>(d));
    const std::vector<double> h = random_potentials(m, rng);
    const std::vector<double> x_small(c.x.begin(), c.x.begin() + n_small * d);
    auto xl = this->gpu.cloud(c.x, n_fused, d), xlc = this->cpu.cloud(c.x, n_fused, d);
    auto xs = this->gpu.cloud(x_small, n_small, d);
    auto yg = this->gpu.cloud(c.y, m, d), yc = this->cpu.cloud(c.y, m, d);
    auto hg = this->gpu.put(h), hc = this->cpu.put(h);
    auto olc = this->cpu.buffer(n_fused), ol = this->gpu.buffer(n_fused), os = this->gpu.buffer(n_small);
    auto stc = this->cpu.doubles(2 * n_fused * this->cpu.be->lse_partials_per_row(m));
    auto stl = this->gpu.doubles(2 * n_fused * this->gpu.be->lse_partials_per_row(m));
    auto sts = this->gpu.doubles(2 * n_small * this->gpu.be->lse_partials_per_row(m));
    this->cpu.be->row_lse({xlc.cloud, yc.cloud, cost, inv_scale, eps, hc.data(), olc.data(), stc.data(), n_fused});
    this->gpu.be->row_lse({xl.cloud, yg.cloud, cost, inv_scale, eps, hg.data(), ol.data(), stl.data(), fused_tile});
    this->gpu.be->row_lse({xs.cloud, yg.cloud, cost, inv_scale, eps, hg.data(), os.data(), sts.data(), n_small});
    const std::vector<double> want = this->cpu.get(olc.data(), n_fused);
    const std::vector<double> fused = this->gpu.get(ol.data(), n_fused);
    expect_close_scaled(fused, want, fast_lse_scale(c.x, n_fused, c.y, m, d, as_T_values(h, is_float), eps, inv_scale, want),
                        fast_lse_tolerance<T>(), "fused row_lse");
    const std::vector<double> fused_small(fused.begin(), fused.begin() + n_small);
    EXPECT_EQ(fused_small, this->gpu.get(os.data(), n_small)) << "fused and split paths differ on the same rows";
  }
}

// The CPU and CUDA results of one solve, compared under the [solve] rules of the file comment.
void expect_solves_agree(const otcal::SinkhornResult& got, const otcal::SinkhornResult& want, bool float32) {
  const double tol = float32 ? 2e-4 : 1e-9;       // f, g
  const double tol_cost = float32 ? 1e-3 : 1e-9;  // reg_ot_cost and errors, relative
  // Errors fall to the rounding floor of the precision (about 1e-15 in float64, 1e-6 in float32,
  // measured on the CPU), where only an absolute bound makes sense.
  const double err_floor = float32 ? 1e-5 : 1e-12;
  EXPECT_EQ(got.n_iters, want.n_iters);
  EXPECT_EQ(got.converged, want.converged);
  EXPECT_FALSE(got.diverged);
  // The scale and epsilon come from float64 cost moments summed in another order: [rel] 1e-11
  // (sqrt(N) u ~ 1e-13 for N = 4e5 entries; std = sqrt(E[C^2] - E[C]^2) may lose a digit more.)
  EXPECT_NEAR(got.scale, want.scale, 1e-11 * want.scale);
  EXPECT_NEAR(got.epsilon, want.epsilon, 1e-11 * want.epsilon);
  expect_close(got.f, want.f, tol, "f");
  expect_close(got.g, want.g, tol, "g");
  EXPECT_NEAR(got.reg_ot_cost, want.reg_ot_cost, tol_cost * std::max(1.0, std::fabs(want.reg_ot_cost)));
  ASSERT_EQ(got.errors.size(), want.errors.size());
  for (std::size_t q = 0; q < want.errors.size(); ++q) {
    if (!std::isfinite(want.errors[q]) || want.errors[q] < 0) {  // not computed (+inf) or not run (-1)
      EXPECT_EQ(got.errors[q], want.errors[q]) << "errors[" << q << "]";
      continue;
    }
    EXPECT_NEAR(got.errors[q], want.errors[q], tol_cost * want.errors[q] + err_floor) << "errors[" << q << "]";
  }
}

// A full solve on the split path: the f-update reduces n = 97 rows (one block) over m = 4099
// columns (3 parts of 2048), so every f-update goes through the split kernels and their merge;
// the g-update (4099 rows over 97 columns, one part) stays fused. float32 and float64, two costs
// (sqeuclidean; cosine, which also uses the resident norms), balanced Gauss-Seidel, unbalanced
// (tau_a = 0.8, tau_b = 0.9) and parallel updates; zero weights in a give -inf potentials.
// float64 runs to convergence (threshold 1e-6); float32 runs a fixed 200 iterations so that the
// iteration counts agree by construction, and so do parallel updates (balanced Jacobi updates
// oscillate and never converge, in OTT-JAX too). CUDA is also compared with itself at batch size 7
// [exact].
TEST(CudaSinkhorn, SplitPathSolveMatchesCpuEveryPrecisionCostAndUpdate) {
  const std::uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  const ref::Clouds c = ref::random_clouds(97, 4099, 3, seed);
  const std::vector<double> a = ref::random_weights(c.n, seed + 1, 0.1);
  const std::vector<double> b = ref::random_weights(c.m, seed + 2);
  const std::size_t budget = std::size_t{256} << 20;
  const auto quiet = [](const std::string&) {};
  const otcal::Context cpu = otcal::Context::cpu({.memory_budget = budget, .on_warning = quiet});
  const otcal::Context gpu = otcal::Context::cuda(0, {.memory_budget = budget, .on_warning = quiet});
  ASSERT_GT(otcal::detail::make_cuda_backend<double>(gpu)->lse_partials_per_row(c.m), 1)
      << "the f-update must take the split path";
  otcal::PointCloud geom;
  geom.x = otcal::ConstMatrix::of(c.x.data(), c.n, c.d);
  geom.y = otcal::ConstMatrix::of(c.y.data(), c.m, c.d);
  struct Variant {
    const char* name;
    double tau_a, tau_b;
    bool parallel;
  };
  const Variant variants[] = {{"balanced", 1.0, 1.0, false}, {"unbalanced", 0.8, 0.9, false},
                              {"parallel", 1.0, 1.0, true}};
  for (const auto precision : {otcal::DType::float64, otcal::DType::float32}) {
    const bool f32 = precision == otcal::DType::float32;
    for (const std::string cost : {"sqeuclidean", "cosine"}) {
      geom.options.cost = otcal::Cost::parse(cost);
      for (const Variant& v : variants) {
        SCOPED_TRACE(std::string(f32 ? "float32 " : "float64 ") + cost + " " + v.name);
        otcal::SinkhornOptions so;  // epsilon: 0.05 std(C), from one moment pass on each backend
        so.precision = precision;
        so.tau_a = v.tau_a;
        so.tau_b = v.tau_b;
        so.parallel_dual_updates = v.parallel;
        const bool fixed_length = f32 || v.parallel;
        if (fixed_length) so.min_iterations = so.max_iterations = 200;
        else so.threshold = 1e-6;
        const auto av = otcal::ConstVector::of(a.data(), c.n), bv = otcal::ConstVector::of(b.data(), c.m);
        const otcal::SinkhornResult want = otcal::sinkhorn(cpu, geom, av, bv, so);
        if (!fixed_length) ASSERT_TRUE(want.converged);
        const otcal::SinkhornResult got = otcal::sinkhorn(gpu, geom, av, bv, so);
        expect_solves_agree(got, want, f32);
        EXPECT_LE(got.memory.peak_bytes, got.memory.planned_peak_bytes);
        so.batch_size = 7;
        const otcal::SinkhornResult batched = otcal::sinkhorn(gpu, geom, av, bv, so);
        EXPECT_EQ(batched.f, got.f) << "batch size 7 vs planned on CUDA";  // [exact]
        EXPECT_EQ(batched.g, got.g) << "batch size 7 vs planned on CUDA";
        EXPECT_EQ(batched.n_iters, got.n_iters);
      }
    }
  }
}

otcal::SinkhornResult solve(const otcal::Context& ctx, const ref::Clouds& c, const std::vector<double>& a,
                            const std::vector<double>& b, std::optional<index_t> batch) {
  otcal::PointCloud geom;
  geom.x = otcal::ConstMatrix::of(c.x.data(), c.n, c.d);
  geom.y = otcal::ConstMatrix::of(c.y.data(), c.m, c.d);
  otcal::SinkhornOptions so;
  so.epsilon = 0.1;
  so.threshold = 1e-6;
  so.batch_size = batch;
  return otcal::sinkhorn(ctx, geom, otcal::ConstVector::of(a.data(), c.n), otcal::ConstVector::of(b.data(), c.m), so);
}

TEST(CudaSinkhorn, MatchesCpuBatchInvariantAndWithinPlannedPeak) {
  const std::uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  const ref::Clouds c = ref::random_clouds(257, 131, 3, seed);
  const std::vector<double> a = ref::random_weights(c.n, seed + 1, 0.1);
  const std::vector<double> b = ref::random_weights(c.m, seed + 2);
  const std::size_t budget = std::size_t{64} << 20;
  const auto quiet = [](const std::string&) {};
  const otcal::Context cpu = otcal::Context::cpu({.memory_budget = budget, .on_warning = quiet});
  const otcal::Context gpu = otcal::Context::cuda(0, {.memory_budget = budget, .on_warning = quiet});

  const otcal::SinkhornResult want = solve(cpu, c, a, b, std::nullopt);
  ASSERT_TRUE(want.converged);
  std::vector<double> first_f, first_g;
  for (const std::optional<index_t> batch : {std::optional<index_t>{}, std::optional<index_t>{1},
                                             std::optional<index_t>{7}, std::optional<index_t>{c.n}}) {
    SCOPED_TRACE("batch " + (batch ? std::to_string(*batch) : std::string("planned")));
    const otcal::SinkhornResult got = solve(gpu, c, a, b, batch);
    EXPECT_TRUE(got.converged);
    expect_solves_agree(got, want, false);  // [solve] float64
    EXPECT_GT(got.memory.peak_bytes, 0u);
    EXPECT_LE(got.memory.peak_bytes, got.memory.planned_peak_bytes);
    EXPECT_LE(got.memory.peak_bytes, budget);
    if (first_f.empty()) {
      first_f = got.f;
      first_g = got.g;
    } else {
      // [exact] batch size is a memory knob: bitwise on CUDA too (docs/sinkhorn.md §10).
      EXPECT_EQ(got.f, first_f) << "f across batch sizes";
      EXPECT_EQ(got.g, first_g) << "g across batch sizes";
    }
  }
}

}  // namespace
