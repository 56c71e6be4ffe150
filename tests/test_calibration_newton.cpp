// The exact calibrators' Newton step (src/calibration/newton_solve.hpp, docs/calibration.md §4.3):
// a Cholesky that drops dependent constraints must give the pseudo-inverse step's Aᵀ Δ, find
// exactly the margins' dependencies, and whole calibrations must match a dense Newton iteration
// with a pseudo-inverse written here (Eigen's complete orthogonal decomposition).
#include <gtest/gtest.h>

#include <Eigen/Dense>
#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "calibration/kernels.hpp"
#include "calibration/newton_solve.hpp"
#include "otcal/calibration.hpp"
#include "otcal/context.hpp"
#include "otcal/detail/calib_math.hpp"
#include "support/process.hpp"

namespace {

using otcal::index_t;

// A survey's constraint matrix, dense: `columns` categorical columns of cats[c] categories each
// (every category used) and one continuous column. Margins of one column sum to the all-ones row,
// so every column after the first brings one dependent row.
Eigen::MatrixXd random_constraints(std::mt19937_64& rng, const std::vector<int>& cats, index_t n) {
  int rows = 1;
  for (int c : cats) rows += c;
  Eigen::MatrixXd X = Eigen::MatrixXd::Zero(rows, n);
  std::uniform_real_distribution<double> u(0, 1);
  int base = 0;
  for (int c : cats) {
    for (index_t i = 0; i < n; ++i) X(base + (i < c ? i : static_cast<index_t>(u(rng) * c) % c), i) = 1;
    base += c;
  }
  for (index_t i = 0; i < n; ++i) X(base, i) = u(rng) < 0.2 ? 0.0 : std::exp(2 * u(rng));
  return X;
}

TEST(CalibrationNewton, DropsExactlyTheMarginDependenciesAndGivesThePseudoInverseStep) {
  const std::uint64_t seed = testsupport::fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> u(0, 1);
  for (int trial = 0; trial < 12; ++trial) {
    SCOPED_TRACE("trial " + std::to_string(trial));
    std::vector<int> cats(1 + trial % 4);
    for (int& c : cats) c = 2 + static_cast<int>(u(rng) * 6);
    const index_t n = 150 + static_cast<index_t>(u(rng) * 300);
    const Eigen::MatrixXd X = random_constraints(rng, cats, n);
    Eigen::VectorXd D(n);
    for (index_t i = 0; i < n; ++i) D[i] = 0.5 + 3 * u(rng);
    const Eigen::MatrixXd T = X * D.asDiagonal() * X.transpose();
    const Eigen::Index k = T.rows();
    Eigen::VectorXd x(k);
    for (Eigen::Index j = 0; j < k; ++j) x[j] = u(rng) - 0.5;
    const Eigen::VectorXd b = T * x;  // consistent
    // Only the lower triangle is read: the other one holds NaN.
    std::vector<double> storage(static_cast<std::size_t>(k * k));
    Eigen::Map<Eigen::MatrixXd> L(storage.data(), k, k);
    L = T;
    L.triangularView<Eigen::StrictlyUpper>().setConstant(NAN);
    const otcal::calib::NewtonFactor f = otcal::calib::factor_dropping_dependent(L);
    ASSERT_TRUE(f.ok);
    EXPECT_EQ(f.n_dropped, static_cast<index_t>(cats.size()) - 1);
    const Eigen::VectorXd none = Eigen::VectorXd::Zero(k);
    const otcal::calib::NewtonSolve s = otcal::calib::solve_with_factor(L, f, b, none);
    EXPECT_LE(s.worst_inconsistency_ratio, 1.0);
    // Aᵀ Δ equals Aᵀ pinv(T) b (= Aᵀ x: T Δ = b determines Aᵀ Δ when D > 0).
    const Eigen::VectorXd ref = X.transpose() * T.completeOrthogonalDecomposition().solve(b);
    const Eigen::VectorXd got = X.transpose() * s.delta;
    ASSERT_TRUE(got.allFinite());
    EXPECT_LT((got - ref).cwiseAbs().maxCoeff(), 1e-10 * (1 + ref.cwiseAbs().maxCoeff()));
    EXPECT_LT((got - X.transpose() * x).cwiseAbs().maxCoeff(), 1e-10 * (1 + ref.cwiseAbs().maxCoeff()));
    if (cats.size() >= 2) {
      // Inconsistent right-hand side (margin 0's total differs from margin 1's): reported.
      Eigen::VectorXd bad = b;
      bad.segment(0, cats[0]).array() += 1e-3 * b.cwiseAbs().maxCoeff() / cats[0];
      const otcal::calib::NewtonSolve si = otcal::calib::solve_with_factor(L, f, bad, none);
      EXPECT_GT(si.worst_inconsistency_ratio, 1.0);
    }
  }
}

// Dense Newton on the dual with a pseudo-inverse step (no prescaling: the synthetic targets are
// within 20 times the design totals), to a tighter tolerance than the library's run.
std::vector<double> dense_newton(const otcal::ConstraintSystem& sys, const otcal::detail::DistanceMath& dist) {
  const index_t k = sys.A.rows, n = sys.A.cols;
  Eigen::MatrixXd X = Eigen::MatrixXd::Zero(k, n);
  for (index_t r = 0; r < k; ++r)
    for (std::int64_t q = sys.A.indptr[r]; q < sys.A.indptr[r + 1]; ++q) X(r, sys.A.index(q)) = sys.A.values[q];
  const Eigen::VectorXd d = Eigen::Map<const Eigen::VectorXd>(sys.design_weights.data(), n);
  const Eigen::VectorXd t = Eigen::Map<const Eigen::VectorXd>(sys.targets.data(), k);
  Eigen::VectorXd eta = Eigen::VectorXd::Zero(k), g(n), dF(n);
  for (int it = 0; it < 60; ++it) {
    const Eigen::VectorXd u = X.transpose() * eta;
    for (index_t i = 0; i < n; ++i) {
      g[i] = dist.F(u[i]);
      dF[i] = dist.dF(u[i]);
    }
    const Eigen::VectorXd b = t - X * d.cwiseProduct(g);
    double ratio = 0;
    for (index_t r = 0; r < k; ++r) ratio = std::max(ratio, std::fabs(b[r]) / (1 + std::fabs(t[r])));
    if (ratio < 1e-14) break;
    const Eigen::MatrixXd T = X * d.cwiseProduct(dF).asDiagonal() * X.transpose();
    eta += T.completeOrthogonalDecomposition().solve(b);
  }
  std::vector<double> w(static_cast<std::size_t>(n));
  for (index_t i = 0; i < n; ++i) w[i] = d[i] * g[i];
  return w;
}

TEST(CalibrationNewton, DependentMarginsMatchADensePseudoInverseNewton) {
  struct M {
    otcal::CalFun f;
    otcal::detail::CalFunCode code;
    double lo, hi;
    const char* name;
  };
  const M methods[] = {{otcal::CalFun::raking, otcal::detail::CalFunCode::raking, -INFINITY, INFINITY, "raking"},
                       {otcal::CalFun::linear, otcal::detail::CalFunCode::linear, -INFINITY, INFINITY, "linear"},
                       {otcal::CalFun::logit, otcal::detail::CalFunCode::logit, 0.7, 1.4, "logit"}};
  const std::uint64_t seed = testsupport::fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  for (int trial = 0; trial < 6; ++trial) {
    const int margins = 2 + trial % 3;
    SCOPED_TRACE("trial " + std::to_string(trial) + ", " + std::to_string(margins) + " categorical columns");
    auto ctx = otcal::Context::cpu({.memory_budget = 256u << 20, .on_warning = [](const std::string&) {}});
    auto s = otcal::make_synthetic_survey(250 + 50 * trial, margins, 3 + trial % 4, 1, seed + trial);
    const otcal::ConstraintSystem sys = otcal::build_constraints(ctx, s.table, s.spec);
    for (const auto& m : methods) {
      SCOPED_TRACE(m.name);
      otcal::detail::DistanceMath dist;
      dist.calfun = m.code;
      dist.L = m.lo;
      dist.U = m.hi;
      if (m.f == otcal::CalFun::logit) dist.logit_a = (m.hi - m.lo) / ((m.hi - 1) * (1 - m.lo));
      const auto res =
          otcal::calibrate_exact(ctx, sys, {.calfun = m.f, .lower = m.lo, .upper = m.hi, .epsilon = 1e-12});
      ASSERT_TRUE(res.converged);
      const std::vector<double> ref = dense_newton(sys, dist);
      for (std::size_t i = 0; i < ref.size(); ++i)
        ASSERT_NEAR(res.weights[i], ref[i], 1e-10 * std::max(1.0, std::fabs(ref[i]))) << "record " << i;
    }
  }
}

}  // namespace

namespace {

// The Newton matrix is assembled in parallel over its rows, each entry by one thread in record
// order, with records in chunks of kNewtonChunkRecords: the weights must be bitwise the same for
// every thread count. Enough records for several chunks.
TEST(CalibrationNewton, WeightsAreBitwiseTheSameForEveryThreadCount) {
  const std::uint64_t seed = testsupport::fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  auto s = otcal::make_synthetic_survey(3 * otcal::calib::kNewtonChunkRecords + 1234, 3, 7, 2, seed);
  auto ctx1 = otcal::Context::cpu({.memory_budget = 512u << 20, .threads = 1, .on_warning = [](const std::string&) {}});
  const otcal::ConstraintSystem sys = otcal::build_constraints(ctx1, s.table, s.spec);
  for (otcal::CalFun f : {otcal::CalFun::raking, otcal::CalFun::linear}) {
    const auto one = otcal::calibrate_exact(ctx1, sys, {.calfun = f, .epsilon = 1e-12});
    for (int threads : {2, 3, 5}) {
      SCOPED_TRACE("threads " + std::to_string(threads));
      auto ctx = otcal::Context::cpu(
          {.memory_budget = 512u << 20, .threads = threads, .on_warning = [](const std::string&) {}});
      const auto many = otcal::calibrate_exact(ctx, sys, {.calfun = f, .epsilon = 1e-12});
      ASSERT_TRUE(many.converged);
      ASSERT_EQ(one.weights, many.weights);
    }
  }
}

}  // namespace

namespace {

// The Newton-matrix pass starts each record's tail at its slot (fill_newton_slots) instead of a
// binary search: on a random CSR with continuous values, zero v, inactive rows and several chunks,
// the upper triangle must be bitwise each entry's sum over its records in ascending order, with
// slots and without, and the slots must be the entries' positions in their records' Aᵀ slices.
TEST(CalibrationNewton, SlotsGiveTheRecordOrderSumsOfTheSearchBitwise) {
  const std::uint64_t seed = testsupport::fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> u(0, 1);
  const index_t k = 37, n = 2 * otcal::calib::kNewtonChunkRecords + 777;
  std::vector<std::vector<std::pair<index_t, double>>> rows(static_cast<std::size_t>(k));
  for (index_t i = 0; i < n; ++i)
    for (index_t r = 0; r < k; ++r)
      if (r != 5 && u(rng) < 0.15)  // row 5 stays empty (inactive)
        rows[static_cast<std::size_t>(r)].push_back({i, u(rng) < 0.5 ? 1.0 : std::exp(3 * u(rng) - 1)});
  otcal::CsrMatrix A;
  A.rows = k;
  A.cols = n;
  A.indptr.assign(1, 0);
  for (const auto& row : rows) {
    for (const auto& [i, x] : row) {
      A.indices32.push_back(static_cast<std::int32_t>(i));
      A.values.push_back(x);
    }
    A.indptr.push_back(static_cast<std::int64_t>(A.values.size()));
  }
  const otcal::CsrMatrix At = otcal::transpose(A);
  std::vector<double> v(static_cast<std::size_t>(n));
  for (double& x : v) x = u(rng) < 0.05 ? 0.0 : 0.1 + 2 * u(rng);
  const otcal::calib::CsrView Av = otcal::calib::csr_view(A), Atv = otcal::calib::csr_view(At);
  std::vector<std::uint16_t> slot(static_cast<std::size_t>(A.nnz()));
  otcal::calib::fill_newton_slots(Av, Atv, slot.data());
  for (index_t r = 0; r < k; ++r)
    for (std::int64_t p = A.indptr[r]; p < A.indptr[r + 1]; ++p)
      ASSERT_EQ(At.indices32[At.indptr[A.indices32[p]] + slot[p]], r) << "entry " << p;

  for (bool drop_some : {false, true}) {
    SCOPED_TRACE(drop_some ? "rows 0, 5 and 20 inactive" : "all non-empty rows active");
    std::vector<index_t> active_rows, active_of(static_cast<std::size_t>(k), -1);
    for (index_t r = 0; r < k; ++r)
      if (r != 5 && !(drop_some && (r == 0 || r == 20))) {
        active_of[r] = static_cast<index_t>(active_rows.size());
        active_rows.push_back(r);
      }
    const auto ka = static_cast<index_t>(active_rows.size());
    // Reference: each entry summed over records ascending, the pass's product (x_a v_i) x_b.
    std::vector<double> ref(static_cast<std::size_t>(ka * ka), 0.0);
    for (index_t i = 0; i < n; ++i)
      for (std::int64_t qa = At.indptr[i]; qa < At.indptr[i + 1]; ++qa) {
        const index_t a = active_of[At.indices32[qa]];
        const double wi = At.values[qa] * v[i];
        if (a < 0 || wi == 0) continue;
        for (std::int64_t qb = qa; qb < At.indptr[i + 1]; ++qb) {
          const index_t b = active_of[At.indices32[qb]];
          if (b >= 0) ref[a * ka + b] += wi * At.values[qb];
        }
      }
    std::vector<double> searched(ref.size(), NAN), slotted(ref.size(), NAN);
    otcal::calib::accumulate_newton_matrix(Av, Atv, active_rows, active_of, v.data(), searched.data());
    otcal::calib::accumulate_newton_matrix(Av, Atv, active_rows, active_of, v.data(), slotted.data(), slot.data());
    for (index_t a = 0; a < ka; ++a)
      for (index_t b = a; b < ka; ++b) {
        ASSERT_NE(ref[a * ka + b], 0.0) << a << ", " << b;  // every pair shares records
        ASSERT_EQ(searched[a * ka + b], ref[a * ka + b]) << a << ", " << b;
        ASSERT_EQ(slotted[a * ka + b], ref[a * ka + b]) << a << ", " << b;
      }
  }
}

}  // namespace

namespace {

// A constraint matrix shaped like a survey's: `cats` categorical margins (each record in at most
// one row of each, value 1; some records in none, margin rows `empty_row` without records), then
// `continuous` rows of positive values with holes. Rows listed in `broken` get a second category
// for a few records (margin `broken_twice`) or a value 2 (margin `broken_value`).
struct MarginMatrix {
  otcal::CsrMatrix A;
  std::vector<index_t> offsets;
};

MarginMatrix margin_matrix(std::mt19937_64& rng, const std::vector<int>& cats, int continuous, index_t n,
                           int broken_twice, int broken_value) {
  std::uniform_real_distribution<double> u(0, 1);
  std::vector<std::vector<std::pair<index_t, double>>> rows;
  MarginMatrix m;
  for (std::size_t p = 0; p < cats.size(); ++p) {
    m.offsets.push_back(static_cast<index_t>(rows.size()));
    const std::size_t base = rows.size();
    rows.resize(base + static_cast<std::size_t>(cats[p]));
    for (index_t i = 0; i < n; ++i) {
      if (u(rng) < 0.1) continue;  // a missing category
      // the margin's last row stays empty (inactive)
      const auto c = static_cast<std::size_t>(u(rng) * (cats[p] - 1)) % static_cast<std::size_t>(cats[p] - 1);
      rows[base + c].push_back({i, static_cast<int>(p) == broken_value && u(rng) < 0.01 ? 2.0 : 1.0});
      if (static_cast<int>(p) == broken_twice && c > 0 && u(rng) < 0.01) rows[base + c - 1].push_back({i, 1.0});
    }
    for (std::size_t r = base; r < rows.size(); ++r) std::sort(rows[r].begin(), rows[r].end());
  }
  m.offsets.push_back(static_cast<index_t>(rows.size()));
  for (int c = 0; c < continuous; ++c) {
    rows.emplace_back();
    for (index_t i = 0; i < n; ++i)
      if (u(rng) < 0.7) rows.back().push_back({i, std::exp(3 * u(rng) - 1)});
  }
  m.A.rows = static_cast<index_t>(rows.size());
  m.A.cols = n;
  m.A.indptr.assign(1, 0);
  for (const auto& row : rows) {
    for (const auto& [i, x] : row) {
      m.A.indices32.push_back(static_cast<std::int32_t>(i));
      m.A.values.push_back(x);
    }
    m.A.indptr.push_back(static_cast<std::int64_t>(m.A.values.size()));
  }
  return m;
}

// Over categorical margins T's entries are weighted counts (tally_newton_margins): with missing
// categories, inactive rows, continuous rows, zero v, several chunks and a margin that fails the
// check (left to the generic pass), the upper triangle must be bitwise the generic pass's.
TEST(CalibrationNewton, MarginTalliesGiveTheGenericNewtonMatrixBitwise) {
  const std::uint64_t seed = testsupport::fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> u(0, 1);
  const index_t n = 2 * otcal::calib::kNewtonChunkRecords + 555;
  struct Case {
    int twice, value;
    bool large;  // margins 2 and 4 of ~200 categories: their block is tallied in T itself
    const char* name;
  };
  for (const Case& cs : {Case{-1, -1, false, "every margin checked"}, Case{1, 3, false, "margins 1 and 3 fail the check"},
                         Case{0, -1, true, "large margins, margin 0 fails the check"}}) {
    SCOPED_TRACE(cs.name);
    std::vector<int> cats(5);
    for (int& c : cats) c = 3 + static_cast<int>(u(rng) * 9);
    if (cs.large) cats[2] = cats[4] = 190 + static_cast<int>(u(rng) * 20);
    ASSERT_EQ(cs.large, (cats[2] + 1) * (cats[4] + 1) > otcal::calib::kTallyBlockCells);
    const MarginMatrix m = margin_matrix(rng, cats, 3, n, cs.twice, cs.value);
    const otcal::CsrMatrix& A = m.A;
    const index_t k = A.rows;
    std::vector<index_t> active_rows, active_of(static_cast<std::size_t>(k), -1);
    for (index_t r = 0; r < k; ++r)
      if (A.indptr[r + 1] > A.indptr[r]) {
        active_of[r] = static_cast<index_t>(active_rows.size());
        active_rows.push_back(r);
      }
    const auto ka = static_cast<index_t>(active_rows.size());
    ASSERT_LT(ka, k);  // some margin rows are inactive
    const otcal::CsrMatrix At = otcal::transpose(A);
    const otcal::calib::CsrView Av = otcal::calib::csr_view(A), Atv = otcal::calib::csr_view(At);
    std::vector<double> v(static_cast<std::size_t>(n));
    for (double& x : v) x = u(rng) < 0.05 ? 0.0 : 0.1 + 2 * u(rng);

    std::vector<std::uint16_t> cat16(cats.size() * static_cast<std::size_t>(n));
    std::vector<std::int32_t> cat32(cat16.size());
    const auto mc = otcal::calib::fill_margin_categories(Av, m.offsets, active_of, ka, cat16.data());
    const auto mc32 = otcal::calib::fill_margin_categories(Av, m.offsets, active_of, ka, cat32.data());
    std::vector<index_t> expect_checked;
    for (int p = 0; p < static_cast<int>(cats.size()); ++p)
      if (p != cs.twice && p != cs.value) expect_checked.push_back(p);
    EXPECT_EQ(mc.slot, expect_checked);
    EXPECT_EQ(mc32.slot, expect_checked);
    EXPECT_EQ(mc.other_rows, mc32.other_rows);

    std::vector<double> generic(static_cast<std::size_t>(ka * ka), NAN), tallied(generic.size(), NAN),
        tallied32(generic.size(), NAN);
    otcal::calib::accumulate_newton_matrix(Av, Atv, active_rows, active_of, v.data(), generic.data());
    otcal::calib::tally_newton_margins(Av, active_rows, mc, cat16.data(), v.data(), tallied.data());
    otcal::calib::accumulate_newton_matrix(Av, Atv, active_rows, active_of, v.data(), tallied.data(), nullptr,
                                           &mc.other_rows);
    otcal::calib::tally_newton_margins(Av, active_rows, mc32, cat32.data(), v.data(), tallied32.data());
    otcal::calib::accumulate_newton_matrix(Av, Atv, active_rows, active_of, v.data(), tallied32.data(), nullptr,
                                           &mc32.other_rows);
    index_t nonzero = 0;
    for (index_t a = 0; a < ka; ++a)
      for (index_t b = a; b < ka; ++b) {
        const double g = generic[a * ka + b];
        nonzero += g != 0;
        ASSERT_EQ(std::memcmp(&tallied[a * ka + b], &g, sizeof g), 0) << a << ", " << b << ": " << tallied[a * ka + b] << " vs " << g;
        ASSERT_EQ(std::memcmp(&tallied32[a * ka + b], &g, sizeof g), 0) << a << ", " << b;
      }
    // Entries between different rows of one margin are 0 (no record is in both); most of the
    // others hold sums, the margins sharing records.
    index_t within = 0;
    for (int c : cats) within += static_cast<index_t>(c - 1) * (c - 2) / 2;
    EXPECT_GT(nonzero, (ka * (ka + 1) / 2 - within) / 2);
  }
}

// Whole calibrations: a system built with margins (tallied T) gives bitwise the weights of the same
// system with its margins hidden (margin_offsets = {0}: the generic pass), for every thread count.
TEST(CalibrationNewton, TalliedMarginsGiveTheGenericWeightsBitwise) {
  const std::uint64_t seed = testsupport::fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  auto s = otcal::make_synthetic_survey(2 * otcal::calib::kNewtonChunkRecords + 999, 3, 6, 2, seed);
  auto ctx1 = otcal::Context::cpu({.memory_budget = 512u << 20, .threads = 1, .on_warning = [](const std::string&) {}});
  const otcal::ConstraintSystem sys = otcal::build_constraints(ctx1, s.table, s.spec);
  ASSERT_GE(sys.margin_offsets.size(), 3u);
  otcal::ConstraintSystem hidden = sys;
  hidden.margin_offsets = {0};
  for (otcal::CalFun f : {otcal::CalFun::raking, otcal::CalFun::linear}) {
    const auto generic = otcal::calibrate_exact(ctx1, hidden, {.calfun = f, .epsilon = 1e-12});
    ASSERT_TRUE(generic.converged);
    for (int threads : {1, 2, 3}) {
      SCOPED_TRACE("threads " + std::to_string(threads));
      auto ctx = otcal::Context::cpu(
          {.memory_budget = 512u << 20, .threads = threads, .on_warning = [](const std::string&) {}});
      const auto tallied = otcal::calibrate_exact(ctx, sys, {.calfun = f, .epsilon = 1e-12});
      ASSERT_TRUE(tallied.converged);
      ASSERT_EQ(generic.weights, tallied.weights);
    }
  }
}

}  // namespace
