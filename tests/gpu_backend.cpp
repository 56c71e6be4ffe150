// The CUDA backend against the CPU backend (the reference backend, itself tested against dense
// float64 references in the cpu suite): every primitive on random clouds with prime sizes, -inf
// potentials, every cost kind, float and double; a full solve on Context::cuda(0) against
// Context::cpu(); batch-size invariance and the memory contract on CUDA. Label gpu: the binary
// exits 77 (skipped) where no CUDA device works (tests/support/test_main.cpp).
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <memory>
#include <random>
#include <string>
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
    EXPECT_EQ(this->gpu.get(rg.x.data(), n * d), want);
    expect_close(this->gpu.get(rg.norms.data(), n), this->cpu.get(rc.norms.data(), n), tolerance<T>(), "norms");
  }

  const index_t n = 263;
  std::vector<double> w = ref::random_weights(n, seed + 1, 0.2);
  auto wc = this->cpu.put(w), wg = this->gpu.put(w);
  auto lc = this->cpu.buffer(n), lg = this->gpu.buffer(n);
  this->cpu.be->log_weights(wc.data(), lc.data(), n);
  this->gpu.be->log_weights(wg.data(), lg.data(), n);
  expect_close(this->gpu.get(lg.data(), n), this->cpu.get(lc.data(), n), tolerance<T>(), "log_weights");

  const std::vector<double> lse = random_potentials(n, rng, 0.05);
  auto sc = this->cpu.put(lse), sg = this->gpu.put(lse);
  auto pc = this->cpu.buffer(n), pg = this->gpu.buffer(n);
  for (const double tau : {1.0, 0.7}) {
    this->cpu.be->potential_update(sc.data(), lc.data(), 0.37, tau, pc.data(), n);
    this->gpu.be->potential_update(sg.data(), lg.data(), 0.37, tau, pg.data(), n);
    expect_close(this->gpu.get(pg.data(), n), this->cpu.get(pc.data(), n), tolerance<T>(), "potential_update");
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
      const double want = this->cpu.be->marginal_error(potc.data(), l2c.data(), wc.data(), 0.3, rho, p, n);
      const double got = this->gpu.be->marginal_error(potg.data(), l2g.data(), wg.data(), 0.3, rho, p, n);
      EXPECT_NEAR(got, want, tolerance<T>() * std::max(1.0, std::fabs(want))) << "rho " << rho << " p " << p;
    }
  const double mass_c = this->cpu.be->transported_mass(potc.data(), l2c.data(), 0.3, n);
  const double mass_g = this->gpu.be->transported_mass(potg.data(), l2g.data(), 0.3, n);
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
          expect_close(got, this->cpu.get(oc.data(), rows), tolerance<T>(), "row_lse tile " + std::to_string(tile));
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
      EXPECT_NEAR(mg.sum, mc.sum, tolerance<T>() * std::max(1.0, std::fabs(mc.sum)));
      EXPECT_NEAR(mg.sum_sq, mc.sum_sq, tolerance<T>() * std::max(1.0, mc.sum_sq));
      EXPECT_NEAR(mg.max_abs, mc.max_abs, tolerance<T>() * std::max(1.0, mc.max_abs));
    }
  }
}

// A wide other cloud (m > 2048) makes the CUDA backend cut the columns into parts. With few rows
// the parts go to different blocks and are merged by a second kernel; with enough rows one block
// walks all parts. Both must equal the CPU to tolerance and each other bit for bit.
TYPED_TEST(CudaVsCpu, RowLseSplitColumnsMatchesFusedAndCpu) {
  using T = TypeParam;
  const std::uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  const index_t d = 3, m = 4099, n_small = 257, n_large = 40009;  // 40009 rows fill any current GPU
  ASSERT_GT(this->gpu.be->lse_partials_per_row(m), 1) << "m = 4099 should be split into parts";
  const ref::Clouds c = ref::random_clouds(n_large, m, d, seed);
  const std::vector<double> x_small(c.x.begin(), c.x.begin() + n_small * d);
  const std::vector<double> h = random_potentials(m, rng);
  auto yg = this->gpu.cloud(c.y, m, d), yc = this->cpu.cloud(c.y, m, d);
  auto hg = this->gpu.put(h), hc = this->cpu.put(h);
  const CostParams cost{CostKind::sqeuclidean, 2.0};

  auto xs = this->gpu.cloud(x_small, n_small, d);
  auto xsc = this->cpu.cloud(x_small, n_small, d);
  auto os = this->gpu.buffer(n_small), osc = this->cpu.buffer(n_small);
  for (const index_t tile : {index_t{1}, index_t{100}, n_small}) {
    auto st = this->gpu.doubles(2 * tile * this->gpu.be->lse_partials_per_row(m));
    this->gpu.be->row_lse({xs.cloud, yg.cloud, cost, 1.0, 0.25, hg.data(), os.data(), st.data(), tile});
    auto stc = this->cpu.doubles(2 * tile);
    this->cpu.be->row_lse({xsc.cloud, yc.cloud, cost, 1.0, 0.25, hc.data(), osc.data(), stc.data(), tile});
    expect_close(this->gpu.get(os.data(), n_small), this->cpu.get(osc.data(), n_small), tolerance<T>(),
                 "split row_lse tile " + std::to_string(tile));
  }
  const std::vector<double> split = this->gpu.get(os.data(), n_small);

  auto xl = this->gpu.cloud(c.x, n_large, d);
  auto ol = this->gpu.buffer(n_large);
  auto st = this->gpu.doubles(2 * n_large * this->gpu.be->lse_partials_per_row(m));
  this->gpu.be->row_lse({xl.cloud, yg.cloud, cost, 1.0, 0.25, hg.data(), ol.data(), st.data(), n_large});
  const std::vector<double> fused = this->gpu.get(ol.data(), n_large);
  for (index_t i = 0; i < n_small; ++i) EXPECT_EQ(fused[static_cast<std::size_t>(i)], split[static_cast<std::size_t>(i)]) << i;
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
    EXPECT_EQ(got.n_iters, want.n_iters);
    expect_close(got.f, want.f, 1e-9, "f");
    expect_close(got.g, want.g, 1e-9, "g");
    EXPECT_NEAR(got.reg_ot_cost, want.reg_ot_cost, 1e-9 * std::max(1.0, std::fabs(want.reg_ot_cost)));
    EXPECT_GT(got.memory.peak_bytes, 0u);
    EXPECT_LE(got.memory.peak_bytes, got.memory.planned_peak_bytes);
    EXPECT_LE(got.memory.peak_bytes, budget);
    if (first_f.empty()) {
      first_f = got.f;
      first_g = got.g;
    } else {
      // Batch size is a memory knob: to rounding on CUDA (this backend is in fact bitwise).
      expect_close(got.f, first_f, 1e-12, "f across batch sizes");
      expect_close(got.g, first_g, 1e-12, "g across batch sizes");
    }
  }
}

}  // namespace
