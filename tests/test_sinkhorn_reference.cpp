// otcal's Sinkhorn against the naive dense float64 reference (tests/support/reference.cpp), which
// follows OTT-JAX's formulas literally: potentials, plan, errors, n_iters and reg_ot_cost.
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "otcal/sinkhorn.hpp"
#include "support/process.hpp"
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

// "pnorm" with p = 1.5 -> "pnorm:1.5".
std::string cost_spec(const std::string& cost, double p) {
  return cost == "pnorm" || cost == "sq_pnorm" ? cost + ":" + std::to_string(p) : cost;
}

// One otcal solve of clouds c with weights a, b and the reference's options, on a quiet CPU context.
otcal::SinkhornResult solve(const ref::Clouds& c, const std::vector<double>& a, const std::vector<double>& b,
                            const std::string& cost, const std::string& scale, const ref::Options& o,
                            otcal::DType precision, std::optional<otcal::index_t> batch, int threads) {
  otcal::PointCloud geom;
  geom.x = otcal::ConstMatrix::of(c.x.data(), c.n, c.d);
  geom.y = otcal::ConstMatrix::of(c.y.data(), c.m, c.d);
  geom.options.cost = otcal::Cost::parse(cost);
  geom.options.scale = otcal::ScaleCost::parse(scale);
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
  so.precision = precision;
  const otcal::Context ctx = otcal::Context::cpu(
      {.memory_budget = std::size_t{256} << 20, .threads = threads, .on_warning = [](const std::string&) {}});
  return otcal::sinkhorn(ctx, geom, otcal::ConstVector::of(a.data(), c.n), otcal::ConstVector::of(b.data(), c.m), so);
}

otcal::SinkhornResult run(const ref::Clouds& c, const std::vector<double>& a, const std::vector<double>& b,
                          const Case& k, const ref::Options& o, std::optional<otcal::index_t> batch = {}) {
  return solve(c, a, b, cost_spec(k.cost, k.p), k.scale, o, otcal::DType::float64, batch, 0);
}

class SinkhornVsReference : public ::testing::TestWithParam<Case> {};

TEST_P(SinkhornVsReference, PotentialsPlanCostAgreeTo1e9) {
  const Case k = GetParam();
  const std::uint64_t seed = testsupport::fresh_seed();
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
  const std::uint64_t seed = testsupport::fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  const auto c = ref::random_clouds(19, 17, 2, seed);
  auto a = ref::random_weights(c.n, seed + 1, 0.2);
  auto b = ref::random_weights(c.m, seed + 2, 0.2);
  // At least one zero weight on each side (a 20 % draw gives none in about 2 % of the seeds), so
  // the -inf check at the end always has something to check.
  for (auto* w : {&a, &b}) {
    (*w)[seed % w->size()] = 0.0;
    double total = 0;
    for (double v : *w) total += v;
    ASSERT_GT(total, 0.0);
    for (double& v : *w) v /= total;
  }
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

// ---------------------------------------------------------------------------------------------
// Sizes that cross the CPU backend's structure. The cases above stay below 256 points a side, so
// every row reduction is a single granule and every tile runs serially. Here n > 512 and
// 256 < m <= 512 (or the reverse, by case): both half-steps fold two or three reduction granules of
// 256 with a partial last one (the across-granule LSE merge, docs/host-layer.md §6), and
// n·m·d is far above the 2^16 steps from which a tile becomes an OpenMP parallel region
// (src/cpu/row_engine.hpp). The batch sizes put tile edges inside granules, below the parallel
// threshold (7 rows) and above it (293 rows, planned), at 1, 2 and 3 threads. Every cost runs in
// float64 (1e-9, as above) and in float32 against the same float64 reference, with the bound of
// float32_bound(). Fixed-length mode (10 iterations) keeps the naive reference cheap.

struct LargeCase {
  std::string cost;
  double p;
  int d;
  std::string scale, relative;
  double epsilon, tau_a, tau_b, init, decay;
  bool parallel;
  double zero_fraction;
};

// GoogleTest prints a parameter of a failing test with this (rather than as raw bytes).
void PrintTo(const LargeCase& k, std::ostream* os) {
  *os << k.cost << " d " << k.d << " scale " << k.scale << " tau " << k.tau_a << "/" << k.tau_b
      << (k.parallel ? " parallel" : "") << " init " << k.init << " decay " << k.decay;
}

std::vector<LargeCase> large_cases() {
  return {
      {"sqeuclidean", 2, 3, "mean", "", -1, 1, 1, 1, 1, false, 0.05},   // zero weights on both sides
      {"euclidean", 2, 3, "max_cost", "mean", 0.1, 0.8, 0.9, 1, 1, false, 0},  // unbalanced
      {"cosine", 2, 4, "1", "", -1, 1, 1, 1, 1, true, 0},               // parallel (Jacobi) updates
      {"pnorm", 1.5, 2, "mean", "", -1, 1, 1, 20, 0.7, false, 0},      // epsilon scheduler
      {"sq_pnorm", 3, 2, "mean", "std", 0.2, 1, 0.7, 1, 1, false, 0},  // relative std, tau_b < 1
  };
}

// Bound on max |f32 - f64| (the same for g) after K iterations, derived to first order in the
// float32 unit roundoff u = 2^-24, with Cmax = max_ij C_ij (scaled cost), eps_t the scheduled
// epsilon of iteration t and M = max|f| + max|g| + Cmax + eps_0 log(n m), all from the float64
// reference. A float32 half-step at eps_t differs from the float64 one by:
//  (a) the cost entries. The coordinates are rounded to float32 once, which moves C_ij by at most
//      dC_in = max_ij |C(fl(x_i), fl(y_j)) - C(x_i, y_j)| / s (measured here in float64). In the
//      float32 arithmetic on the rounded coordinates a difference of two floats has relative
//      error u, and sqeuclidean, euclidean, pnorm:p and sq_pnorm:p are sums of non-negative terms
//      followed by at most a root or power and the division by s: relative error
//      r_C = (p (d + 2) + 4) u (p = 2 for the first two). Cosine's dot product cancels: its error
//      is absolute, (2d + 6) u / s. So |dC_ij| <= dC = dC_in + r_C Cmax (cosine: + (2d + 6) u / s).
//  (b) the resolved s and eps, float64 statistics of those entries: a mean or max of
//      non-negative entries has the entries' relative error r_s = r_C + dC_in / mean(C); a std
//      has r_eps = r_s + (r_C + dC_in / mean) (1 + mean^2 / std^2) (the cancellation in
//      E[C^2] - E[C]^2). s moves every C_ij by Cmax r_s; eps_t moves eps_t LSE(z / eps_t) and
//      eps_t log w by at most eps_t r_eps 2 log(n m) (d/d eps of eps LSE(z / eps) is an entropy).
//  (c) the exponent (g_j - C_ij) / eps_t formed in float32 (<= 4 roundings of operands bounded by
//      M: <= 4u M after the factor eps_t), the float32 exp2 terms (relative <= 4u each: <= 4u eps_t
//      after the log) and the new potential tau (eps_t log w - eps_t LSE) (<= 4 roundings of
//      numbers bounded by M: 4u M). The running LSE state is float64: nothing at order u.
//  (d) no amplification: the c-transform f -> eps_t LSE((f - C) / eps_t) is 1-Lipschitz in the
//      sup norm and tau <= 1 only shrinks it, so the errors of the 2K half-steps at most add up.
// Hence ||f32 - f64||_inf <= 2K (dC + Cmax r_s + 8u M) + (sum over half-steps of eps_t)
// (2 log(n m) r_eps + 4u), doubled for second-order terms. It is a worst case: errors do not
// actually pile up over the half-steps and the observed error is 100-1000 times smaller. But a
// dropped granule, a wrong merge or a wrong tile edge errs by a fraction of eps, above it here.
struct Float32Bound {
  double potential = 0;   // absolute, on f and g
  double cost_entry = 0;  // dC: absolute, on one scaled cost entry
  double rel_s = 0, rel_eps = 0;
};

Float32Bound float32_bound(const ref::Clouds& c, const std::string& cost, double p, const ref::Result& want,
                           const ref::Options& o) {
  const double u = std::ldexp(1.0, -24);
  ref::Clouds r = c;
  for (auto& v : r.x) v = static_cast<float>(v);
  for (auto& v : r.y) v = static_cast<float>(v);
  const ref::Mat C = ref::dense_cost(c, cost, p), Cr = ref::dense_cost(r, cost, p);
  double d_in = 0, cmax = 0, csum = 0, csum2 = 0;
  for (std::size_t i = 0; i < C.size(); ++i)
    for (std::size_t j = 0; j < C[i].size(); ++j) {
      d_in = std::max(d_in, std::fabs(Cr[i][j] - C[i][j]) / want.scale);
      const double v = C[i][j] / want.scale;
      cmax = std::max(cmax, v);
      csum += v;
      csum2 += v * v;
    }
  const double nm = double(c.n) * double(c.m);
  const double mean = csum / nm, sd = std::sqrt(std::max(0.0, csum2 / nm - mean * mean));
  const double d = double(c.d);
  const double pp = cost == "sqeuclidean" || cost == "euclidean" ? 2.0 : p;
  const double r_C = cost == "cosine" ? (2 * d + 6) * u / want.scale / mean : (pp * (d + 2) + 4) * u;
  Float32Bound b;
  b.cost_entry = d_in + (cost == "cosine" ? (2 * d + 6) * u / want.scale : r_C * cmax);
  const double r_entry = r_C + d_in / mean;
  b.rel_s = o.scale == "mean" || o.scale == "max_cost" ? r_entry : 0.0;
  b.rel_eps = b.rel_s + (o.relative == "mean" ? r_entry : r_entry * (1 + mean * mean / (sd * sd)));
  if (o.epsilon > 0 && o.relative.empty()) b.rel_eps = 0;  // an absolute epsilon
  double fmax = 0, gmax = 0;
  for (double v : want.f)
    if (std::isfinite(v)) fmax = std::max(fmax, std::fabs(v));
  for (double v : want.g)
    if (std::isfinite(v)) gmax = std::max(gmax, std::fabs(v));
  double eps_sum = 0;
  for (int t = 0; t < o.max_iter; ++t) eps_sum += 2 * std::max(o.init * std::pow(o.decay, t), 1.0) * want.epsilon;
  const double M = fmax + gmax + cmax + eps_sum / (2 * o.max_iter) * o.init * std::log(nm);
  b.potential = 2.0 * (2.0 * o.max_iter * (b.cost_entry + cmax * b.rel_s + 8.0 * u * M) +
                       eps_sum * (2.0 * std::log(nm) * b.rel_eps + 4.0 * u));
  return b;
}

double finite_max_abs(const std::vector<double>& v) {
  double mx = 0;
  for (double x : v)
    if (std::isfinite(x)) mx = std::max(mx, std::fabs(x));
  return mx;
}

class SinkhornVsReferenceAcrossGranules : public ::testing::TestWithParam<LargeCase> {};

TEST_P(SinkhornVsReferenceAcrossGranules, Float64To1e9AndFloat32WithinItsBound) {
  const LargeCase k = GetParam();
  const std::uint64_t seed = testsupport::fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  std::int64_t n = std::uniform_int_distribution<std::int64_t>(513, 600)(rng);  // 3 granules, last partial
  std::int64_t m = std::uniform_int_distribution<std::int64_t>(257, 330)(rng);  // 2 granules, last partial
  if (rng() % 2) std::swap(n, m);  // either axis may be the longer one
  SCOPED_TRACE("n " + std::to_string(n) + " m " + std::to_string(m) + " d " + std::to_string(k.d));
  ASSERT_GT(n * m * k.d, std::int64_t{1} << 16) << "must cross the parallel threshold";
  const auto c = ref::random_clouds(n, m, k.d, seed + 1);
  const auto a = ref::random_weights(n, seed + 2, k.zero_fraction);
  const auto b = ref::random_weights(m, seed + 3, k.zero_fraction);
  ref::Options o;
  o.scale = k.scale;
  o.relative = k.relative;
  o.epsilon = k.epsilon;
  o.tau_a = k.tau_a;
  o.tau_b = k.tau_b;
  o.init = k.init;
  o.decay = k.decay;
  o.parallel = k.parallel;
  o.threshold = 1e-3;
  o.inner = 5;
  o.min_iter = o.max_iter = 10;  // fixed length: the reference runs exactly 10 iterations, 2 blocks
  const ref::Result want = ref::sinkhorn(c, a, b, k.cost, k.p, o);
  const std::string cost = cost_spec(k.cost, k.p);

  const Float32Bound b32 = float32_bound(c, k.cost, k.p, want, o);
  double total_mass = 0;  // sum_ij P_ij of the reference
  for (const auto& row : want.plan)
    for (double v : row) total_mass += v;
  double mass_a = 0, mass_b = 0;
  for (double v : a) mass_a += v;
  for (double v : b) mass_b += v;

  // Random right-hand sides for P V (reduces over m) and P^T V (reduces over n).
  std::normal_distribution<double> N;
  std::vector<double> vm(m * 2), vn(n * 2);
  for (auto& x : vm) x = N(rng);
  for (auto& x : vn) x = N(rng);
  std::vector<double> want_pv(n * 2, 0.0), mag_pv(n * 2, 0.0), want_ptv(m * 2, 0.0), mag_ptv(m * 2, 0.0);
  for (std::int64_t i = 0; i < n; ++i)
    for (std::int64_t j = 0; j < m; ++j)
      for (int col = 0; col < 2; ++col) {
        const double P = want.plan[i][j];
        want_pv[i * 2 + col] += P * vm[j * 2 + col];
        mag_pv[i * 2 + col] += P * std::fabs(vm[j * 2 + col]);
        want_ptv[j * 2 + col] += P * vn[i * 2 + col];
        mag_ptv[j * 2 + col] += P * std::fabs(vn[i * 2 + col]);
      }

  struct Run {
    std::optional<otcal::index_t> batch;
    int threads;
  };
  for (const otcal::DType precision : {otcal::DType::float64, otcal::DType::float32}) {
    const bool f64 = precision == otcal::DType::float64;
    // float64: below the parallel threshold (7 rows a tile), above it (293 rows, planned), 1-3
    // threads; float32: the same engine with another value type, planned and 7.
    const std::vector<Run> runs = f64 ? std::vector<Run>{{std::nullopt, 2}, {7, 1}, {293, 3}}
                                      : std::vector<Run>{{std::nullopt, 2}, {7, 3}};
    for (const Run& run : runs) {
      SCOPED_TRACE(std::string(otcal::dtype_name(precision)) + " batch " +
                   (run.batch ? std::to_string(*run.batch) : std::string("planned")) + " threads " +
                   std::to_string(run.threads));
      const otcal::SinkhornResult got = solve(c, a, b, cost, k.scale, o, precision, run.batch, run.threads);
      if (run.batch == otcal::index_t{293}) EXPECT_EQ(got.batch_size, 293);
      EXPECT_NEAR(got.scale, want.scale, (f64 ? 1e-12 : 2 * b32.rel_s) * want.scale);
      EXPECT_NEAR(got.epsilon, want.epsilon, (f64 ? 1e-12 : 2 * b32.rel_eps) * want.epsilon);
      EXPECT_EQ(got.n_iters, want.n_iters);
      const double last_err = want.errors.back();
      ASSERT_EQ(got.errors.size(), want.errors.size());
      for (std::size_t q = 0; q + 1 < got.errors.size(); ++q) EXPECT_EQ(got.errors[q], want.errors[q]) << q;
      ASSERT_TRUE(std::isfinite(got.errors.back()));
      if (f64) {
        EXPECT_NEAR(got.errors.back(), last_err, 1e-7 * last_err + 1e-13);
        if (std::fabs(last_err - o.threshold) > 1e-6 * o.threshold) EXPECT_EQ(got.converged, want.converged);
      }
      double worst_f = 0, worst_g = 0;
      auto check = [&](const std::vector<double>& gv, const std::vector<double>& wv, const char* what, double& worst) {
        ASSERT_EQ(gv.size(), wv.size()) << what;
        for (std::size_t i = 0; i < gv.size(); ++i) {
          if (std::isinf(wv[i])) {
            EXPECT_EQ(gv[i], wv[i]) << what << "[" << i << "]";
            continue;
          }
          const double tol = f64 ? 1e-9 * std::max(1.0, std::fabs(wv[i])) : b32.potential;
          worst = std::max(worst, std::fabs(gv[i] - wv[i]));
          EXPECT_NEAR(gv[i], wv[i], tol) << what << "[" << i << "]";
        }
      };
      check(got.f, want.f, "f", worst_f);
      check(got.g, want.g, "g", worst_g);
      if (!f64)
        std::printf("[ float32  ] %s n %lld m %lld: max |df| %.3g, |dg| %.3g, bound %.3g\n", k.cost.c_str(),
                    static_cast<long long>(n), static_cast<long long>(m), worst_f, worst_g, b32.potential);
      // reg_ot_cost moves by at most (sum a + sum b + 3 sum P) times the potential error (first order).
      const double cost_tol = f64 ? 1e-9 * std::max(1.0, std::fabs(want.reg_ot_cost))
                                  : 2.0 * (mass_a + mass_b + 3.0 * total_mass) * b32.potential;
      EXPECT_NEAR(got.reg_ot_cost, want.reg_ot_cost, cost_tol);

      // The plan, through apply_transport on both axes (both reductions cross granules too).
      // float32: each entry P_ij moves by a relative (|df_i| + |dg_j| + |dC_ij|) / eps.
      const double plan_rel = f64 ? 1e-9 : 2.0 * (2.0 * b32.potential + b32.cost_entry) / want.epsilon;
      otcal::PointCloud geom;
      geom.x = otcal::ConstMatrix::of(c.x.data(), c.n, c.d);
      geom.y = otcal::ConstMatrix::of(c.y.data(), c.m, c.d);
      geom.options.cost = otcal::Cost::parse(cost);
      geom.options.scale = otcal::ScaleCost::parse(k.scale);
      const otcal::Context ctx = otcal::Context::cpu({.threads = run.threads, .on_warning = [](const std::string&) {}});
      const auto pv = otcal::apply_transport(ctx, geom, got, otcal::ConstMatrix::of(vm.data(), m, 2), 1, run.batch);
      const auto ptv = otcal::apply_transport(ctx, geom, got, otcal::ConstMatrix::of(vn.data(), n, 2), 0, run.batch);
      ASSERT_EQ(pv.size(), want_pv.size());
      ASSERT_EQ(ptv.size(), want_ptv.size());
      for (std::size_t q = 0; q < pv.size(); ++q)
        EXPECT_NEAR(pv[q], want_pv[q], plan_rel * std::max(mag_pv[q], 1e-300)) << "P V [" << q << "]";
      for (std::size_t q = 0; q < ptv.size(); ++q)
        EXPECT_NEAR(ptv[q], want_ptv[q], plan_rel * std::max(mag_ptv[q], 1e-300)) << "P^T V [" << q << "]";
    }
  }
}

INSTANTIATE_TEST_SUITE_P(EveryCost, SinkhornVsReferenceAcrossGranules, ::testing::ValuesIn(large_cases()),
                         [](const auto& info) { return info.param.cost; });

}  // namespace
