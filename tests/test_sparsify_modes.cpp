// sparsify against dense float64 references written here (docs/sparsify.md §9). Every test runs
// through both sources: a dense random matrix, and the point-cloud plan T_ij = exp((f_i + g_j -
// c_ij / s) / eps) of random clouds and potentials. For the point-cloud source the reference
// matrix is the plan materialised through sparsify (threshold 0 reproduces it), which is first
// checked against the float64 formula evaluated here.
#include <cstdlib>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <numeric>
#include <random>

#include "otcal/errors.hpp"
#include "otcal/sparsify.hpp"
#include "support/process.hpp"
#include "support/reference.hpp"

namespace {

using otcal::SparsifyMode;
using otcal::SparsifyOptions;
using otcal::SparsifyResult;

// OTCAL_TEST_SEED reproduces a failure reported with its seed (tests/support/process.hpp).
using testsupport::fresh_seed;

otcal::Context cpu_ctx(std::vector<std::string>* warnings = nullptr, std::size_t budget = std::size_t{256} << 20) {
  otcal::ContextOptions o;
  o.memory_budget = budget;
  if (warnings) o.on_warning = [warnings](const std::string& w) { warnings->push_back(w); };
  else o.on_warning = [](const std::string&) {};
  return otcal::Context::cpu(o);
}

std::vector<double> to_dense(const otcal::CsrMatrix& c) {
  std::vector<double> d(static_cast<std::size_t>(c.rows * c.cols), 0.0);
  for (std::int64_t i = 0; i < c.rows; ++i)
    for (std::int64_t k = c.indptr[i]; k < c.indptr[i + 1]; ++k) d[i * c.cols + c.index(k)] = c.values[k];
  return d;
}

// CSR invariants (docs/sparsify.md §6): indptr shape, strictly ascending columns, no explicit zeros, values >= 0.
void expect_valid_csr(const otcal::CsrMatrix& c, std::int64_t n, std::int64_t m) {
  ASSERT_EQ(c.rows, n);
  ASSERT_EQ(c.cols, m);
  ASSERT_EQ(static_cast<std::int64_t>(c.indptr.size()), n + 1);
  EXPECT_EQ(c.indptr[0], 0);
  EXPECT_EQ(static_cast<std::int64_t>(c.values.size()), c.nnz());
  EXPECT_EQ(static_cast<std::int64_t>(c.indices32.size()), c.nnz());
  for (std::int64_t i = 0; i < n; ++i) {
    ASSERT_LE(c.indptr[i], c.indptr[i + 1]);
    for (std::int64_t k = c.indptr[i]; k < c.indptr[i + 1]; ++k) {
      EXPECT_GT(c.values[k], 0.0);
      EXPECT_GE(c.index(k), 0);
      EXPECT_LT(c.index(k), m);
      if (k > c.indptr[i]) EXPECT_LT(c.index(k - 1), c.index(k));
    }
  }
}

bool csr_equal(const otcal::CsrMatrix& a, const otcal::CsrMatrix& b) {
  return a.rows == b.rows && a.cols == b.cols && a.indptr == b.indptr && a.indices32 == b.indices32 &&
         a.indices64 == b.indices64 && a.values == b.values;
}

// A plan under test: its dense values and a way to sparsify it.
struct PlanCase {
  std::string source;  // "dense" or "cloud"
  std::int64_t n = 0, m = 0;
  std::vector<double> T;  // row-major reference values
  std::function<SparsifyResult(const SparsifyOptions&)> run;
};

bool row_has_mass(const PlanCase& p, std::int64_t i) {
  for (std::int64_t j = 0; j < p.m; ++j)
    if (p.T[i * p.m + j] > 0) return true;
  return false;
}

// Dense random non-negative matrix (uniform, with a few exact zeros); rows in zero_rows all zero.
PlanCase dense_case(std::int64_t n, std::int64_t m, std::uint64_t seed, const std::vector<std::int64_t>& zero_rows = {}) {
  PlanCase p;
  p.source = "dense";
  p.n = n;
  p.m = m;
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> U(0.0, 1.0);
  p.T.resize(n * m);
  for (auto& v : p.T) v = U(rng) < 0.05 ? 0.0 : U(rng);
  for (auto i : zero_rows) std::fill(p.T.begin() + i * m, p.T.begin() + (i + 1) * m, 0.0);
  auto data = std::make_shared<std::vector<double>>(p.T);
  p.run = [data, n, m](const SparsifyOptions& o) {
    return otcal::sparsify(cpu_ctx(), otcal::ConstMatrix::of(data->data(), n, m), o, {1.25, true});
  };
  return p;
}

struct CloudProblem {
  ref::Clouds c;
  otcal::SinkhornResult r;
};

// Random clouds and potentials; rows in zero_rows get f_i = -inf (a massless row).
std::shared_ptr<CloudProblem> cloud_problem(std::int64_t n, std::int64_t m, std::uint64_t seed,
                                            const std::vector<std::int64_t>& zero_rows = {}, double epsilon = 0.4) {
  auto cp = std::make_shared<CloudProblem>();
  cp->c = ref::random_clouds(n, m, 3, seed);
  std::mt19937_64 rng(seed + 1);
  std::normal_distribution<double> N(0.0, 0.3);
  otcal::SinkhornResult& r = cp->r;
  r.n = n;
  r.m = m;
  r.d = 3;
  r.f.resize(n);
  r.g.resize(m);
  for (auto& v : r.f) v = N(rng);
  for (auto& v : r.g) v = N(rng);
  for (auto i : zero_rows) r.f[i] = -HUGE_VAL;
  r.epsilon = epsilon;
  r.scale = 2.5;
  r.reg_ot_cost = 0.75;
  r.converged = true;
  r.precision = otcal::DType::float64;
  return cp;
}

otcal::PointCloud geometry_of(const CloudProblem& cp) {
  otcal::PointCloud g;
  g.x = otcal::ConstMatrix::of(cp.c.x.data(), cp.c.n, cp.c.d);
  g.y = otcal::ConstMatrix::of(cp.c.y.data(), cp.c.m, cp.c.d);
  return g;
}

PlanCase cloud_case(std::int64_t n, std::int64_t m, std::uint64_t seed, const std::vector<std::int64_t>& zero_rows = {},
                    double epsilon = 0.4) {
  auto cp = cloud_problem(n, m, seed, zero_rows, epsilon);
  PlanCase p;
  p.source = "cloud";
  p.n = n;
  p.m = m;
  p.run = [cp](const SparsifyOptions& o) { return otcal::sparsify(cpu_ctx(), geometry_of(*cp), cp->r, o); };
  SparsifyOptions all;
  all.mode = SparsifyMode::threshold;
  all.value = 0.0;
  p.T = to_dense(p.run(all).csr);
  // The materialised plan is the float64 formula, evaluated here independently.
  const ref::Mat C = ref::dense_cost(cp->c, "sqeuclidean", 2.0);
  for (std::int64_t i = 0; i < n; ++i)
    for (std::int64_t j = 0; j < m; ++j) {
      const double want = std::exp((cp->r.f[i] + cp->r.g[j] - C[i][j] / cp->r.scale) / cp->r.epsilon);
      EXPECT_NEAR(p.T[i * m + j], want, 1e-12 * want) << "plan entry (" << i << ", " << j << ")";
    }
  return p;
}

std::vector<PlanCase> both(std::int64_t n, std::int64_t m, std::uint64_t seed, const std::vector<std::int64_t>& zero_rows = {}) {
  std::vector<PlanCase> v;
  v.push_back(dense_case(n, m, seed, zero_rows));
  v.push_back(cloud_case(n, m, seed, zero_rows));
  return v;
}

// where(T >= thr, T, 0) on rows with mass (docs/sparsify.md §4).
std::vector<double> keep_at_least(const PlanCase& p, double thr) {
  std::vector<double> out(p.T.size(), 0.0);
  for (std::int64_t i = 0; i < p.n; ++i) {
    if (!row_has_mass(p, i)) continue;
    for (std::int64_t j = 0; j < p.m; ++j) {
      const double v = p.T[i * p.m + j];
      if (v >= thr && v != 0) out[i * p.m + j] = v;
    }
  }
  return out;
}

// Mass rule written from the spec (§4.4), with a full stable sort.
std::vector<double> mass_reference(const PlanCase& p, double value, std::int64_t max_k) {
  std::vector<double> out(p.T.size(), 0.0);
  for (std::int64_t i = 0; i < p.n; ++i) {
    const double* row = &p.T[i * p.m];
    std::vector<std::int64_t> order(p.m);
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](auto a, auto b) { return row[a] > row[b]; });
    double tot = 0;
    for (std::int64_t j = 0; j < p.m; ++j) tot += row[j];
    if (!(tot > 0)) continue;
    const double target = value >= 1 ? HUGE_VAL : value * tot;
    std::int64_t k = 0;
    double cum = 0;
    for (std::int64_t r = 0; r < p.m; ++r) {
      cum += row[order[r]];
      if (cum < target) ++k;
    }
    k = std::min(k + 1, p.m);
    if (max_k > 0) k = std::min(k, max_k);
    for (std::int64_t r = 0; r < k; ++r) out[i * p.m + order[r]] = row[order[r]];
  }
  return out;
}

double max_abs_diff(const std::vector<double>& a, const std::vector<double>& b) {
  double d = 0;
  for (std::size_t k = 0; k < a.size(); ++k) d = std::max(d, std::fabs(a[k] - b[k]));
  return d;
}

double pearson(const std::vector<double>& a, const std::vector<double>& b) {
  const double n = static_cast<double>(a.size());
  const double ma = std::accumulate(a.begin(), a.end(), 0.0) / n, mb = std::accumulate(b.begin(), b.end(), 0.0) / n;
  double sab = 0, saa = 0, sbb = 0;
  for (std::size_t k = 0; k < a.size(); ++k) {
    sab += (a[k] - ma) * (b[k] - mb);
    saa += (a[k] - ma) * (a[k] - ma);
    sbb += (b[k] - mb) * (b[k] - mb);
  }
  return sab / std::sqrt(saa * sbb);
}

// pull = M v for a random v.
std::vector<double> pull(const std::vector<double>& M, std::int64_t n, std::int64_t m, const std::vector<double>& v) {
  std::vector<double> out(n, 0.0);
  for (std::int64_t i = 0; i < n; ++i)
    for (std::int64_t j = 0; j < m; ++j) out[i] += M[i * m + j] * v[j];
  return out;
}

SparsifyOptions opts(SparsifyMode mode, std::optional<double> value = {}, std::optional<std::int64_t> bs = {}) {
  SparsifyOptions o;
  o.mode = mode;
  o.value = value;
  o.batch_size = bs;
  return o;
}

#define TRACE_SEED(seed) SCOPED_TRACE("seed " + std::to_string(seed))

TEST(SparsifyThreshold, ValuesAndShapes) {
  const auto seed = fresh_seed();
  TRACE_SEED(seed);
  for (auto [n, m] : {std::pair<std::int64_t, std::int64_t>{7, 2}, {91, 103}})
    for (const PlanCase& p : both(n, m, seed)) {
      SCOPED_TRACE(p.source + " " + std::to_string(n) + "x" + std::to_string(m));
      for (double value : {0.0, 0.1, 1.0}) {
        SCOPED_TRACE("value " + std::to_string(value));
        const SparsifyResult res = p.run(opts(SparsifyMode::threshold, value, 4));
        expect_valid_csr(res.csr, n, m);
        EXPECT_EQ(res.threshold, value);
        const std::vector<double> got = to_dense(res.csr);
        EXPECT_EQ(got, keep_at_least(p, value));
        if (value == 0.0) EXPECT_EQ(got, p.T);
        if (value == 1.0 && *std::max_element(p.T.begin(), p.T.end()) < 1.0) EXPECT_EQ(res.csr.nnz(), 0);
        // moscot checks that pulls through the sparsified plan correlate with the full ones; a
        // correlation over 7 rows, or over a plan that keeps a handful of entries, is noise (it
        // failed for about 1 seed in 15). The exact form: with v in [0, 1), each row's pull moves
        // by at most the mass that row dropped.
        std::mt19937_64 rng(seed + 7);
        std::uniform_real_distribution<double> U(0, 1);
        std::vector<double> v(m);
        for (auto& x : v) x = U(rng);
        const std::vector<double> pg = pull(got, n, m, v), pt = pull(p.T, n, m, v);
        for (std::int64_t i = 0; i < n; ++i) {
          double dropped = 0;
          for (std::int64_t j = 0; j < m; ++j) dropped += p.T[i * m + j] - got[i * m + j];
          EXPECT_LE(std::fabs(pg[i] - pt[i]), dropped * (1 + 1e-12) + 1e-300) << "row " << i;
          EXPECT_LE(pg[i], pt[i] * (1 + 1e-12)) << "row " << i;
        }
      }
    }
}

TEST(SparsifyMass, ReconstructionWithValueOne) {
  const auto seed = fresh_seed();
  TRACE_SEED(seed);
  for (auto [n, m] : {std::pair<std::int64_t, std::int64_t>{7, 2}, {91, 103}, {103, 91}})
    for (const PlanCase& p : both(n, m, seed))
      for (std::int64_t bs : {1, 4}) {
        SCOPED_TRACE(p.source + " " + std::to_string(n) + "x" + std::to_string(m) + " bs " + std::to_string(bs));
        const SparsifyResult res = p.run(opts(SparsifyMode::mass, 1.0, bs));
        expect_valid_csr(res.csr, n, m);
        EXPECT_TRUE(std::isnan(res.threshold));
        EXPECT_EQ(to_dense(res.csr), p.T);
      }
}

TEST(SparsifyMass, RetentionAndSpecRule) {
  const auto seed = fresh_seed();
  TRACE_SEED(seed);
  for (const PlanCase& p : both(37, 53, seed))
    for (double value : {0.3, 0.7, 0.95}) {
      SCOPED_TRACE(p.source + " value " + std::to_string(value));
      const SparsifyResult res = p.run(opts(SparsifyMode::mass, value, 5));
      expect_valid_csr(res.csr, p.n, p.m);
      const std::vector<double> got = to_dense(res.csr);
      EXPECT_EQ(got, mass_reference(p, value, 0));
      for (std::int64_t i = 0; i < p.n; ++i) {
        double kept = 0, tot = 0;
        for (std::int64_t j = 0; j < p.m; ++j) {
          const double g = got[i * p.m + j];
          if (g != 0) EXPECT_EQ(g, p.T[i * p.m + j]);
          kept += g;
          tot += p.T[i * p.m + j];
        }
        EXPECT_GE(kept, value * tot - 1e-9) << "row " << i;
      }
    }
}

TEST(SparsifyMass, MaxKCapsAndArgmax) {
  const auto seed = fresh_seed();
  TRACE_SEED(seed);
  for (const PlanCase& p : both(29, 41, seed)) {
    SCOPED_TRACE(p.source);
    auto o = opts(SparsifyMode::mass, 0.9, 3);
    o.max_k = 3;
    const SparsifyResult capped = p.run(o);
    expect_valid_csr(capped.csr, p.n, p.m);
    for (std::int64_t i = 0; i < p.n; ++i) EXPECT_LE(capped.csr.indptr[i + 1] - capped.csr.indptr[i], 3);
    EXPECT_EQ(to_dense(capped.csr), mass_reference(p, 0.9, 3));

    o.value = 0.99;
    o.max_k = 1;
    const SparsifyResult top = p.run(o);
    for (std::int64_t i = 0; i < p.n; ++i) {
      ASSERT_EQ(top.csr.indptr[i + 1] - top.csr.indptr[i], 1);
      const double* row = &p.T[i * p.m];
      const std::int64_t argmax = std::max_element(row, row + p.m) - row;  // first maximum: lowest column
      EXPECT_EQ(top.csr.index(top.csr.indptr[i]), argmax);
      EXPECT_EQ(top.csr.values[top.csr.indptr[i]], row[argmax]);
    }
  }
}

TEST(SparsifyMass, TiesKeepLowerColumnsAndExactlyK) {
  // Row of equal entries: value 0.5 of 8 equal entries needs 4 (cum reaches target exactly at 4).
  std::vector<double> T(3 * 8, 0.25);
  const auto res = otcal::sparsify(cpu_ctx(), otcal::ConstMatrix::of(T.data(), 3, 8), opts(SparsifyMode::mass, 0.5));
  for (std::int64_t i = 0; i < 3; ++i) {
    ASSERT_EQ(res.csr.indptr[i + 1] - res.csr.indptr[i], 4);
    for (std::int64_t q = 0; q < 4; ++q) EXPECT_EQ(res.csr.index(res.csr.indptr[i] + q), q);
  }
}

// Long rows: m >= 300 and values that keep well over 64 entries per row, so the CPU backend's lazy
// partial sort (which sorts the first 64 candidates, then grows) must keep extending the sorted
// prefix; every shape above keeps fewer. Three plans: uniform entries, entries on a coarse grid
// (ties everywhere: the lower column wins, beyond position 64 too) and a flat point-cloud plan
// (eps = 8). Checked entry by entry against mass_reference (a full stable sort of every row).
TEST(SparsifyMass, LongRowsKeepMoreThan64EntriesExactlyAsTheSpec) {
  const auto seed = fresh_seed();
  TRACE_SEED(seed);
  std::mt19937_64 rng(seed);
  const std::int64_t n = 23, m = std::uniform_int_distribution<std::int64_t>(300, 420)(rng);
  SCOPED_TRACE("m " + std::to_string(m));
  std::vector<PlanCase> plans = {dense_case(n, m, seed, {4}), dense_case(n, m, seed + 1), cloud_case(n, m, seed, {7}, 8.0)};
  for (double& v : plans[1].T) v = std::floor(v * 8.0) / 8.0;  // ties: 8 levels (and zeros)
  {
    auto data = std::make_shared<std::vector<double>>(plans[1].T);
    plans[1].source = "dense grid";
    plans[1].run = [data, m](const SparsifyOptions& o) {
      return otcal::sparsify(cpu_ctx(), otcal::ConstMatrix::of(data->data(), n, m), o);
    };
  }
  for (const PlanCase& p : plans)
    for (double value : {0.5, 0.95})
      for (std::int64_t max_k : {std::int64_t{0}, std::int64_t{100}}) {
        SCOPED_TRACE(p.source + " value " + std::to_string(value) + " max_k " + std::to_string(max_k));
        const std::vector<double> want = mass_reference(p, value, max_k);
        std::int64_t longest = 0;  // the test is only meaningful if rows keep more than 64 entries
        for (std::int64_t i = 0; i < n; ++i)
          longest = std::max<std::int64_t>(longest, std::count_if(&want[i * m], &want[(i + 1) * m], [](double v) { return v != 0; }));
        EXPECT_GT(longest, 64) << "no row keeps more than 64 entries";
        for (std::optional<std::int64_t> bs : {std::optional<std::int64_t>{}, std::optional<std::int64_t>{6}}) {
          auto o = opts(SparsifyMode::mass, value, bs);
          if (max_k > 0) o.max_k = max_k;
          const SparsifyResult res = p.run(o);
          expect_valid_csr(res.csr, n, m);
          const std::vector<double> got = to_dense(res.csr);
          std::int64_t wrong = 0, first_wrong = -1;
          for (std::size_t q = 0; q < got.size(); ++q)
            if (got[q] != want[q]) {
              if (wrong++ == 0) first_wrong = static_cast<std::int64_t>(q);
            }
          EXPECT_EQ(wrong, 0) << "batch " << (bs ? std::to_string(*bs) : "planned") << ": first difference at row "
                              << first_wrong / m << " column " << first_wrong % m;
        }
      }
}

TEST(SparsifyMassless, EveryModeLeavesZeroRowsEmptyAndWarnsOnce) {
  const auto seed = fresh_seed();
  TRACE_SEED(seed);
  const std::vector<std::int64_t> zero_rows = {0, 5, 12};
  for (const PlanCase& p : both(19, 23, seed, zero_rows)) {
    double min_row_max = HUGE_VAL;
    for (std::int64_t i = 0; i < p.n; ++i)
      if (row_has_mass(p, i))
        min_row_max = std::min(min_row_max, *std::max_element(&p.T[i * p.m], &p.T[i * p.m] + p.m));
    // Statistics over the rows with mass only (docs/sparsify.md §3): what the thresholds must equal.
    std::vector<double> mass_entries;
    for (std::int64_t i = 0; i < p.n; ++i)
      if (row_has_mass(p, i)) mass_entries.insert(mass_entries.end(), &p.T[i * p.m], &p.T[i * p.m] + p.m);
    const double pct = 20.0;
    const double want_pct = ref::percentile_linear(mass_entries, pct);
    auto sampled_all = opts(SparsifyMode::percentile, pct);
    sampled_all.n_samples = p.n;
    auto exact = opts(SparsifyMode::percentile, pct);
    exact.percentile_method = otcal::PercentileMethod::exact;
    std::vector<SparsifyOptions> modes = {opts(SparsifyMode::threshold, 0.0), sampled_all, exact,
                                          opts(SparsifyMode::min_row), opts(SparsifyMode::mass, 0.8)};
    for (const auto& o : modes) {
      SCOPED_TRACE(p.source + " mode " + otcal::sparsify_mode_name(o.mode));
      std::vector<std::string> warnings;
      // The dense source runs on a context that records the warnings it emits.
      const SparsifyResult res = p.source == "dense"
                                     ? otcal::sparsify(cpu_ctx(&warnings), otcal::ConstMatrix::of(p.T.data(), p.n, p.m), o)
                                     : p.run(o);
      if (p.source == "dense") {
        ASSERT_EQ(warnings.size(), 1u);
        EXPECT_NE(warnings[0].find("3 row(s) of the transport plan carry no mass"), std::string::npos);
      }
      EXPECT_EQ(res.n_massless_rows, 3);
      EXPECT_EQ(std::count_if(res.warnings.begin(), res.warnings.end(),
                              [](const std::string& w) { return w.find("carry no mass") != std::string::npos; }),
                1);
      for (auto i : zero_rows) EXPECT_EQ(res.csr.indptr[i + 1], res.csr.indptr[i]) << "row " << i;
      if (o.mode == SparsifyMode::percentile) EXPECT_EQ(res.threshold, want_pct);
      if (o.mode == SparsifyMode::min_row) {
        EXPECT_EQ(res.threshold, min_row_max);
        EXPECT_GT(res.threshold, 0.0) << "threshold dragged to 0 by massless rows";
      }
      if (o.mode == SparsifyMode::threshold) continue;
      const bool below_every_max = o.mode != SparsifyMode::percentile || res.threshold <= min_row_max;
      if (below_every_max)
        for (std::int64_t i = 0; i < p.n; ++i)
          if (row_has_mass(p, i)) EXPECT_GT(res.csr.indptr[i + 1] - res.csr.indptr[i], 0) << "row " << i;
    }
  }
  // An all-zero matrix.
  std::vector<double> Z(5 * 4, 0.0);
  for (auto o : {opts(SparsifyMode::threshold, 0.0), opts(SparsifyMode::min_row), opts(SparsifyMode::mass, 1.0),
                 opts(SparsifyMode::percentile, 50.0)}) {
    const auto res = otcal::sparsify(cpu_ctx(), otcal::ConstMatrix::of(Z.data(), 5, 4), o);
    EXPECT_EQ(res.csr.nnz(), 0);
    EXPECT_EQ(res.n_massless_rows, 5);
  }
}

TEST(SparsifyValidation, MessagesAndOrder) {
  std::vector<double> T(6, 0.5);
  const auto M = otcal::ConstMatrix::of(T.data(), 2, 3);
  auto expect_invalid = [&](SparsifyOptions o, const std::string& msg) {
    try {
      otcal::sparsify(cpu_ctx(), M, o);
      ADD_FAILURE() << "expected InvalidArgument: " << msg;
    } catch (const otcal::InvalidArgument& e) {
      EXPECT_NE(std::string(e.what()).find(msg), std::string::npos) << e.what();
    }
  };
  expect_invalid(opts(SparsifyMode::mass), "If mode='mass', value must be in (0, 1].");
  expect_invalid(opts(SparsifyMode::mass, 1.5), "If mode='mass', value must be in (0, 1].");
  expect_invalid(opts(SparsifyMode::mass, 0.0), "If mode='mass', value must be in (0, 1].");
  auto o = opts(SparsifyMode::mass, 0.5);
  o.max_k = 0;
  expect_invalid(o, "max_k must be a positive integer, found 0.");
  o = opts(SparsifyMode::mass);  // value error wins over max_k error
  o.max_k = -1;
  expect_invalid(o, "If mode='mass', value must be in (0, 1].");
  expect_invalid(opts(SparsifyMode::threshold), "If mode='threshold', value cannot be None.");
  expect_invalid(opts(SparsifyMode::percentile), "If mode='percentile', value cannot be None.");
  expect_invalid(opts(SparsifyMode::percentile, 101.0), "value must be in [0, 100]");
  o = opts(SparsifyMode::percentile, 50.0);
  o.n_samples = 0;
  expect_invalid(o, "n_samples");
  expect_invalid(opts(static_cast<SparsifyMode>(9), 0.5), "unknown sparsify mode");
  EXPECT_THROW(otcal::parse_sparsify_mode("dense"), otcal::InvalidArgument);
  o = opts(SparsifyMode::threshold, 0.5);
  o.max_k = 3;
  expect_invalid(o, "max_k is only supported with mode='mass'.");
  o = opts(SparsifyMode::threshold);  // value error comes first (spec order)
  o.max_k = 3;
  expect_invalid(o, "If mode='threshold', value cannot be None.");
  expect_invalid(opts(SparsifyMode::min_row, {}, 0), "batch_size");
}

TEST(SparsifyMinRow, BatchIndependentAndEveryRowKeepsItsMax) {
  const auto seed = fresh_seed();
  TRACE_SEED(seed);
  for (const PlanCase& p : both(103, 89, seed)) {
    double thr = HUGE_VAL;
    for (std::int64_t i = 0; i < p.n; ++i) thr = std::min(thr, *std::max_element(&p.T[i * p.m], &p.T[i * p.m] + p.m));
    const auto want = keep_at_least(p, thr);
    for (std::int64_t bs : {1, 4, 103, 1000}) {
      SCOPED_TRACE(p.source + " bs " + std::to_string(bs));
      const SparsifyResult res = p.run(opts(SparsifyMode::min_row, {}, bs));
      EXPECT_EQ(res.threshold, thr);
      EXPECT_EQ(to_dense(res.csr), want);
      for (std::int64_t i = 0; i < p.n; ++i) EXPECT_GT(res.csr.indptr[i + 1] - res.csr.indptr[i], 0);
    }
  }
}

TEST(SparsifyMinRow, PeakedPlanStructure) {
  // Each row concentrated near one column (a plan-like T): a tiny eps on 1-D clouds, y a shuffled x.
  const auto seed = fresh_seed();
  TRACE_SEED(seed);
  const std::int64_t n = 120;
  auto cp = std::make_shared<CloudProblem>();
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> U(0, 10);
  cp->c.n = cp->c.m = n;
  cp->c.d = 1;
  cp->c.x.resize(n);
  std::uniform_real_distribution<double> jitter(-0.01, 0.01);
  for (std::int64_t i = 0; i < n; ++i) cp->c.x[i] = 0.1 * static_cast<double>(i) + jitter(rng);  // spacing ~0.1
  cp->c.y = cp->c.x;
  std::shuffle(cp->c.y.begin(), cp->c.y.end(), rng);
  cp->r.f.assign(n, 0.0);
  cp->r.g.assign(n, 0.0);
  cp->r.epsilon = 0.002;
  cp->r.scale = 1;
  cp->r.n = cp->r.m = n;
  const auto res = otcal::sparsify(cpu_ctx(), geometry_of(*cp), cp->r, opts(SparsifyMode::min_row));
  SparsifyOptions all = opts(SparsifyMode::threshold, 0.0);
  const auto T = to_dense(otcal::sparsify(cpu_ctx(), geometry_of(*cp), cp->r, all).csr);
  const auto got = to_dense(res.csr);
  EXPECT_LT(res.csr.nnz(), n * n / 10);
  for (std::int64_t i = 0; i < n; ++i) {
    const std::int64_t am = std::max_element(&T[i * n], &T[i * n] + n) - &T[i * n];
    EXPECT_EQ(got[i * n + am], T[i * n + am]) << "row " << i << " lost its argmax";
  }
  std::vector<double> v(n);
  for (auto& x : v) x = U(rng);
  EXPECT_GT(pearson(pull(got, n, n, v), pull(T, n, n, v)), 0.5);
}

TEST(SparsifyPercentile, AllRowsSampledEqualsDensePercentile) {
  const auto seed = fresh_seed();
  TRACE_SEED(seed);
  for (const PlanCase& p : both(43, 31, seed))
    for (double v : {0.0, 50.0, 100.0}) {
      SCOPED_TRACE(p.source + " v " + std::to_string(v));
      auto o = opts(SparsifyMode::percentile, v, 6);
      o.n_samples = p.n;
      o.seed = seed;
      const SparsifyResult res = p.run(o);
      const double thr = ref::percentile_linear(p.T, v);
      EXPECT_EQ(res.threshold, thr);
      EXPECT_EQ(to_dense(res.csr), keep_at_least(p, thr));
      o.percentile_method = otcal::PercentileMethod::exact;
      EXPECT_EQ(p.run(o).threshold, thr);
    }
}

TEST(SparsifyPercentile, SampledRowsDependOnSeedNotBatch) {
  const auto seed = fresh_seed();
  TRACE_SEED(seed);
  const PlanCase p = dense_case(97, 11, seed);
  auto o = opts(SparsifyMode::percentile, 30.0);
  o.n_samples = 10;
  o.seed = seed;
  // The sampled percentile must be the percentile of 10 whole rows: its value is some entry
  // interpolation among rows; compare to each 10-row subset is impossible, so check invariance and
  // that it lies within the range of T.
  const double thr1 = p.run([&] { auto q = o; q.batch_size = 1; return q; }()).threshold;
  const double thr2 = p.run([&] { auto q = o; q.batch_size = 97; return q; }()).threshold;
  EXPECT_EQ(thr1, thr2);
  EXPECT_GE(thr1, *std::min_element(p.T.begin(), p.T.end()));
  EXPECT_LE(thr1, *std::max_element(p.T.begin(), p.T.end()));
}

TEST(SparsifyBatch, BitwiseInvariantInEveryMode) {
  const auto seed = fresh_seed();
  TRACE_SEED(seed);
  for (auto [n, m] : {std::pair<std::int64_t, std::int64_t>{31, 37}, {37, 31}})
    for (const PlanCase& p : both(n, m, seed, {3})) {
      std::vector<SparsifyOptions> modes = {opts(SparsifyMode::threshold, 0.3), opts(SparsifyMode::percentile, 60.0),
                                            opts(SparsifyMode::min_row), opts(SparsifyMode::mass, 0.75)};
      auto exact = opts(SparsifyMode::percentile, 60.0);
      exact.percentile_method = otcal::PercentileMethod::exact;
      modes.push_back(exact);
      auto capped = opts(SparsifyMode::mass, 0.9);
      capped.max_k = 4;
      modes.push_back(capped);
      for (auto o : modes) {
        SCOPED_TRACE(p.source + " " + std::to_string(n) + "x" + std::to_string(m) + " mode " +
                     otcal::sparsify_mode_name(o.mode));
        o.n_samples = 9;
        if (o.mode != SparsifyMode::percentile || o.percentile_method == otcal::PercentileMethod::exact)
          o.n_samples.reset();
        o.seed = seed;
        o.batch_size.reset();
        const SparsifyResult planned = p.run(o);
        for (std::int64_t bs : {std::int64_t{1}, std::int64_t{7}, std::int64_t{13}, n, n + 5}) {
          o.batch_size = bs;
          const SparsifyResult res = p.run(o);
          EXPECT_EQ(res.batch_size, std::min(bs, n));
          EXPECT_TRUE(csr_equal(res.csr, planned.csr)) << "bs " << bs;
          EXPECT_TRUE(res.threshold == planned.threshold || (std::isnan(res.threshold) && std::isnan(planned.threshold)));
        }
      }
    }
}

TEST(SparsifySource, PointCloudEqualsMaterialisedDensePlan) {
  const auto seed = fresh_seed();
  TRACE_SEED(seed);
  const PlanCase cloud = cloud_case(27, 33, seed, {2});
  std::vector<SparsifyOptions> modes = {opts(SparsifyMode::threshold, 0.2), opts(SparsifyMode::percentile, 40.0),
                                        opts(SparsifyMode::min_row), opts(SparsifyMode::mass, 0.6)};
  auto exact = opts(SparsifyMode::percentile, 40.0);
  exact.percentile_method = otcal::PercentileMethod::exact;
  modes.push_back(exact);
  for (const auto& o : modes) {
    SCOPED_TRACE(otcal::sparsify_mode_name(o.mode));
    const auto a = cloud.run(o);
    const auto b = otcal::sparsify(cpu_ctx(), otcal::ConstMatrix::of(cloud.T.data(), cloud.n, cloud.m), o);
    EXPECT_TRUE(csr_equal(a.csr, b.csr));
    EXPECT_TRUE(a.threshold == b.threshold || (std::isnan(a.threshold) && std::isnan(b.threshold)));
  }
}

TEST(SparsifyMetadata, PropagatesCostAndConvergence) {
  const auto seed = fresh_seed();
  TRACE_SEED(seed);
  auto cp = cloud_problem(9, 8, seed);
  cp->r.reg_ot_cost = 3.5;
  cp->r.converged = false;
  const auto res = otcal::sparsify(cpu_ctx(), geometry_of(*cp), cp->r, opts(SparsifyMode::min_row));
  EXPECT_EQ(res.cost, 3.5);
  EXPECT_FALSE(res.converged);
  EXPECT_TRUE(res.is_linear);
  const PlanCase d = dense_case(4, 5, seed);
  const auto rd = d.run(opts(SparsifyMode::min_row));
  EXPECT_EQ(rd.cost, 1.25);
  EXPECT_TRUE(rd.converged);
}

TEST(SparsifyNumerics, NaNPotentialsRaise) {
  const auto seed = fresh_seed();
  TRACE_SEED(seed);
  auto cp = cloud_problem(9, 8, seed);
  cp->r.f[4] = std::nan("");
  for (auto o : {opts(SparsifyMode::threshold, 0.1), opts(SparsifyMode::min_row), opts(SparsifyMode::mass, 0.5),
                 opts(SparsifyMode::percentile, 50.0)}) {
    o.n_samples = 9;
    EXPECT_THROW(otcal::sparsify(cpu_ctx(), geometry_of(*cp), cp->r, o), otcal::NumericalError);
  }
  std::vector<double> T(12, 0.5);
  T[7] = std::nan("");
  EXPECT_THROW(otcal::sparsify(cpu_ctx(), otcal::ConstMatrix::of(T.data(), 3, 4), opts(SparsifyMode::threshold, 0.1)),
               otcal::NumericalError);
}

TEST(SparsifyShape, EmptyRowsGiveEmptyMatrixAndFloat32Values) {
  std::vector<double> none;
  const auto res = otcal::sparsify(cpu_ctx(), otcal::ConstMatrix{nullptr, otcal::DType::float64, 0, 6},
                                   opts(SparsifyMode::threshold, 0.0));
  EXPECT_EQ(res.csr.rows, 0);
  EXPECT_EQ(res.csr.cols, 6);
  EXPECT_EQ(res.csr.nnz(), 0);
  std::vector<float> F = {0.5f, 0.0f, 0.25f, 1.5f};
  const auto r32 = otcal::sparsify(cpu_ctx(), otcal::ConstMatrix::of(F.data(), 2, 2), opts(SparsifyMode::threshold, 0.3));
  EXPECT_EQ(r32.csr.dtype, otcal::DType::float32);
  EXPECT_EQ(r32.csr.nnz(), 2);
}

}  // namespace

namespace {

TEST(SparsifySink, PiecesInRowOrderEqualTheInMemoryResult) {
  const auto seed = fresh_seed();
  TRACE_SEED(seed);
  for (const PlanCase& p : both(23, 19, seed, {4})) {
    for (auto o : {opts(SparsifyMode::threshold, 0.2, 5), opts(SparsifyMode::mass, 0.7, 6),
                   opts(SparsifyMode::min_row, {}, 23)}) {
      SCOPED_TRACE(p.source + " " + otcal::sparsify_mode_name(o.mode));
      const SparsifyResult in_memory = p.run(o);
      otcal::CsrMatrix streamed;
      streamed.rows = p.n;
      streamed.cols = p.m;
      streamed.indptr = {0};
      std::int64_t next_row = 0;
      o.sink = [&](const otcal::CsrPiece& piece) {
        EXPECT_EQ(piece.row_offset, next_row);
        EXPECT_LE(piece.rows, *o.batch_size);
        next_row += piece.rows;
        const std::int64_t base = streamed.indptr.back();
        for (otcal::index_t r = 1; r <= piece.rows; ++r) streamed.indptr.push_back(base + piece.indptr[r]);
        streamed.indices32.insert(streamed.indices32.end(), piece.indices32, piece.indices32 + piece.nnz);
        streamed.values.insert(streamed.values.end(), piece.values, piece.values + piece.nnz);
      };
      const SparsifyResult sunk = p.run(o);
      EXPECT_EQ(next_row, p.n);
      EXPECT_TRUE(csr_equal(streamed, in_memory.csr));
      EXPECT_TRUE(sunk.csr.values.empty()) << "nothing is accumulated with a sink";
      EXPECT_EQ(sunk.csr.indptr, in_memory.csr.indptr);
      EXPECT_EQ(sunk.n_massless_rows, 1);
    }
  }
}

}  // namespace

#include "sparsify/row_sampling.hpp"

namespace {

TEST(SparsifyPercentile, SampledThresholdIsThePercentileOfTheHashedRows) {
  const auto seed = fresh_seed();
  TRACE_SEED(seed);
  const std::int64_t n = 61, m = 13, k = 9;
  for (const PlanCase& p : both(n, m, seed)) {
    SCOPED_TRACE(p.source);
    // The k rows with the smallest Philox(seed, i), ties by index (docs/sparsify.md §4.2), computed naively.
    std::vector<std::pair<std::uint64_t, std::int64_t>> h;
    for (std::int64_t i = 0; i < n; ++i) h.push_back({otcal::detail::sparsify_row_hash(seed, i), i});
    std::sort(h.begin(), h.end());
    std::vector<double> sample;
    for (std::int64_t r = 0; r < k; ++r)
      sample.insert(sample.end(), &p.T[h[r].second * m], &p.T[h[r].second * m] + m);
    auto o = opts(SparsifyMode::percentile, 65.0, 4);
    o.n_samples = k;
    o.seed = seed;
    const auto res = p.run(o);
    const double thr = ref::percentile_linear(sample, 65.0);
    EXPECT_EQ(res.threshold, thr);
    EXPECT_EQ(to_dense(res.csr), keep_at_least(p, thr));
    // Other seeds draw other subsets: not all of five further thresholds can coincide with this one.
    int differ = 0;
    for (std::uint64_t s = 1; s <= 5; ++s) {
      o.seed = seed + s;
      differ += p.run(o).threshold != thr ? 1 : 0;
    }
    EXPECT_GT(differ, 0);
  }
}

TEST(SparsifyFloat32, CloudPlanInvariantAndEqualToDenseFloat32) {
  const auto seed = fresh_seed();
  TRACE_SEED(seed);
  auto cp = cloud_problem(29, 31, seed, {6});
  cp->r.precision = otcal::DType::float32;
  for (auto& v : cp->r.f) v = static_cast<float>(v);
  for (auto& v : cp->r.g) v = static_cast<float>(v);
  auto run = [&](SparsifyOptions o) { return otcal::sparsify(cpu_ctx(), geometry_of(*cp), cp->r, o); };
  const auto all = run(opts(SparsifyMode::threshold, 0.0));
  EXPECT_EQ(all.csr.dtype, otcal::DType::float32);
  std::vector<float> T32(29 * 31, 0.0f);
  const auto Td = to_dense(all.csr);
  for (std::size_t k = 0; k < Td.size(); ++k) {
    T32[k] = static_cast<float>(Td[k]);
    EXPECT_EQ(static_cast<double>(T32[k]), Td[k]) << "values are float32";
  }
  auto exact = opts(SparsifyMode::percentile, 55.0);
  exact.percentile_method = otcal::PercentileMethod::exact;
  for (auto o : {opts(SparsifyMode::threshold, 0.3), opts(SparsifyMode::min_row), opts(SparsifyMode::mass, 0.8), exact}) {
    SCOPED_TRACE(otcal::sparsify_mode_name(o.mode));
    const auto dense = otcal::sparsify(cpu_ctx(), otcal::ConstMatrix::of(T32.data(), 29, 31), o);
    for (std::int64_t bs : {1, 7, 29}) {
      o.batch_size = bs;
      const auto res = run(o);
      EXPECT_TRUE(csr_equal(res.csr, dense.csr)) << "bs " << bs;
      EXPECT_TRUE(res.threshold == dense.threshold || (std::isnan(res.threshold) && std::isnan(dense.threshold)));
    }
  }
}

}  // namespace

#include <fstream>
#include <sstream>

namespace {

// docs/sparsify.md §1 / §9 item 10: the sparsifier never materialises rows through apply/push/pull. Rows come
// from PlanBlockSource::build only; this pins it at the source level for every file of the path.
TEST(SparsifySource, NeverCallsApplyPushOrPull) {
  const char* root = std::getenv("OTCAL_SOURCE_DIR");
  if (root == nullptr) GTEST_SKIP() << "OTCAL_SOURCE_DIR is not set";
  for (const char* file : {"src/sparsify/sparsify.cpp", "src/cpu/sparsify_cpu.cpp", "src/sparsify/sparsify_backend.hpp",
                           "src/core/radix_select.hpp"}) {
    std::ifstream in(std::string(root) + "/" + file);
    ASSERT_TRUE(in) << file;
    std::stringstream ss;
    ss << in.rdbuf();
    const std::string text = ss.str();
    for (const char* forbidden : {"apply_transport(", "row_apply(", "marginal(", "RowApplyArgs", "row_lse("})
      EXPECT_EQ(text.find(forbidden), std::string::npos) << file << " uses " << forbidden;
  }
}

}  // namespace
