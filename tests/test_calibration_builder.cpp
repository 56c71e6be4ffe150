// Constraint-system builder (docs/calibration.md §1-§2) against a dense build written here.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <string>

#include "otcal/calibration.hpp"
#include "otcal/context.hpp"
#include "otcal/detail/philox.hpp"
#include "otcal/errors.hpp"
#include "support/process.hpp"

namespace {

using otcal::index_t;

struct RandomProblem {
  otcal::RecordTable table;
  otcal::ConstraintSpec spec;
  std::vector<std::vector<double>> dense;  // k x n, independent build
  std::vector<std::string> names;
};

// A random mix: integer and string margins (with a targeted-but-absent category), continuous
// columns with exact zeros, linear constraints, and a total.
RandomProblem random_problem(std::mt19937_64& rng, index_t n) {
  RandomProblem p;
  std::uniform_int_distribution<int> ncat(2, 6);
  std::uniform_real_distribution<double> unif(0.0, 1.0);
  const int n_int_margins = 1 + static_cast<int>(rng() % 3);
  for (int m = 0; m < n_int_margins; ++m) {
    const int c = ncat(rng);
    std::vector<double> col(n);
    for (auto& v : col) v = static_cast<double>(rng() % c) * 10;  // categories 0, 10, 20, ...
    std::vector<std::pair<std::string, double>> cats;
    for (int j = c; j >= 0; --j)  // reverse order, plus one category (c*10) absent from the data
      cats.emplace_back(std::to_string(j * 10), 100.0 * unif(rng));
    const std::string name = "int" + std::to_string(m);
    for (const auto& [key, t] : cats) {
      std::vector<double> row(n, 0.0);
      for (index_t i = 0; i < n; ++i) row[i] = (col[i] == std::stod(key)) ? 1.0 : 0.0;
      p.dense.push_back(row);
      p.names.push_back(name + "=" + key);
    }
    p.table.add_numeric(name, col);
    p.spec.marginal.emplace_back(name, cats);
  }
  {
    const std::vector<std::string> levels = {"north", "south", "east", "west"};
    std::vector<std::string> col(n);
    for (auto& v : col) v = levels[rng() % levels.size()];
    std::vector<std::pair<std::string, double>> cats;
    for (const auto& l : levels) cats.emplace_back(l, 50.0 * unif(rng));
    for (const auto& [key, t] : cats) {
      std::vector<double> row(n, 0.0);
      for (index_t i = 0; i < n; ++i) row[i] = col[i] == key ? 1.0 : 0.0;
      p.dense.push_back(row);
      p.names.push_back("region=" + key);
    }
    p.table.add_strings("region", col);
    p.spec.marginal.emplace_back("region", cats);
  }
  const int n_cont = static_cast<int>(rng() % 3);
  for (int c = 0; c < n_cont; ++c) {
    std::vector<double> col(n);
    for (auto& v : col) v = unif(rng) < 0.3 ? 0.0 : std::exp(3 * unif(rng)) - 2;
    const std::string name = "income" + std::to_string(c);
    p.dense.push_back(col);
    p.names.push_back(name);
    p.table.add_numeric(name, col);
    p.spec.continuous.emplace_back(name, 1000 * unif(rng));
  }
  const int n_lin = static_cast<int>(rng() % 3);
  for (int c = 0; c < n_lin; ++c) {
    otcal::LinearConstraint lc;
    lc.name = "lin" + std::to_string(c);
    lc.coefficients.resize(n);
    for (auto& v : lc.coefficients) v = unif(rng) < 0.5 ? 0.0 : unif(rng) - 0.5;
    lc.target = unif(rng);
    p.dense.push_back(lc.coefficients);
    p.names.push_back(lc.name);
    p.spec.linear.push_back(lc);
  }
  if (rng() % 2) {
    p.spec.total = static_cast<double>(n);
    p.dense.push_back(std::vector<double>(n, 1.0));
    p.names.push_back("total");
  }
  std::vector<double> w(n);
  for (auto& v : w) v = 1 + unif(rng);
  p.table.add_numeric("weight", w);
  return p;
}

TEST(CalibrationBuilder, SparseEqualsDenseBuildExactly) {
  const auto seed = testsupport::fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  auto ctx = otcal::Context::cpu({.memory_budget = 64u << 20, .on_warning = [](const std::string&) {}});
  for (int trial = 0; trial < 20; ++trial) {
    const index_t n = 1 + static_cast<index_t>(rng() % 700);
    RandomProblem p = random_problem(rng, n);
    const auto sys = otcal::build_constraints(ctx, p.table, p.spec);
    const index_t k = static_cast<index_t>(p.dense.size());
    ASSERT_EQ(sys.A.rows, k);
    ASSERT_EQ(sys.A.cols, n);
    ASSERT_EQ(sys.names, p.names);
    std::int64_t expected_nnz = 0;
    for (const auto& row : p.dense)
      for (double v : row) expected_nnz += v != 0;
    ASSERT_EQ(sys.A.nnz(), expected_nnz);
    for (index_t r = 0; r < k; ++r) {
      std::vector<double> row(n, 0.0);
      for (std::int64_t q = sys.A.indptr[r]; q < sys.A.indptr[r + 1]; ++q) {
        if (q > sys.A.indptr[r]) ASSERT_LT(sys.A.index(q - 1), sys.A.index(q)) << "indices ascending";
        ASSERT_NE(sys.A.values[q], 0.0) << "only non-zeros are stored";
        row[sys.A.index(q)] = sys.A.values[q];
      }
      ASSERT_EQ(row, p.dense[r]) << "row " << p.names[r];
    }
    EXPECT_EQ(sys.design_weights, p.table.find("weight")->numbers);
    // transpose = dense transpose
    const auto At = otcal::transpose(sys.A);
    ASSERT_EQ(At.nnz(), expected_nnz);
    for (index_t i = 0; i < n; ++i) {
      std::vector<double> col(k, 0.0);
      for (std::int64_t q = At.indptr[i]; q < At.indptr[i + 1]; ++q) col[At.index(q)] = At.values[q];
      for (index_t r = 0; r < k; ++r) ASSERT_EQ(col[r], p.dense[r][i]);
    }
  }
}

template <class T>
bool same_bits(const std::vector<T>& a, const std::vector<T>& b) {
  return a.size() == b.size() && (a.empty() || std::memcmp(a.data(), b.data(), a.size() * sizeof(T)) == 0);
}

// Issue 12: the build that consumes its table (the CLI's) frees each column after its last reader
// and still gives the system of the build that keeps the table, bit for bit. Columns are shared
// between row kinds here: a margin column is also a continuous target (so it must outlive its
// margin), the weight column is sometimes a continuous target too, a linear constraint copies a
// column, and one column is read by nothing.
TEST(CalibrationBuilder, ConsumingBuildEqualsKeepingBuildAndEmptiesTable) {
  const auto seed = testsupport::fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> unif(0.0, 1.0);
  auto ctx = otcal::Context::cpu({.memory_budget = 64u << 20, .on_warning = [](const std::string&) {}});
  for (int trial = 0; trial < 20; ++trial) {
    SCOPED_TRACE("trial " + std::to_string(trial));
    const index_t n = 1 + static_cast<index_t>(rng() % 700);
    RandomProblem p = random_problem(rng, n);
    p.spec.continuous.emplace_back("int0", 1000 * unif(rng));  // margin and continuous share int0
    if (rng() % 2) p.spec.continuous.emplace_back("weight", 1000 * unif(rng));
    if (const otcal::TableColumn* income = p.table.find("income0"))
      p.spec.linear.push_back({"lin_income0", income->numbers, unif(rng)});
    std::vector<double> unused(n);
    for (auto& v : unused) v = unif(rng);
    p.table.add_numeric("unused", unused);
    const std::size_t n_columns = p.table.columns.size();

    const otcal::ConstraintSystem kept = otcal::build_constraints(ctx, p.table, p.spec);
    ASSERT_GT(kept.A.nnz(), 0);
    for (const otcal::TableColumn& c : p.table.columns)
      ASSERT_TRUE(c.numeric ? c.numbers.size() == static_cast<std::size_t>(n) : c.strings.size() == static_cast<std::size_t>(n))
          << "the keeping build left column '" << c.name << "' alone";

    const otcal::ConstraintSystem consumed = otcal::build_constraints(ctx, std::move(p.table), p.spec);
    EXPECT_EQ(consumed.A.rows, kept.A.rows);
    EXPECT_EQ(consumed.A.cols, kept.A.cols);
    EXPECT_EQ(consumed.A.dtype, kept.A.dtype);
    EXPECT_TRUE(same_bits(consumed.A.indptr, kept.A.indptr));
    EXPECT_TRUE(same_bits(consumed.A.indices32, kept.A.indices32));
    EXPECT_TRUE(same_bits(consumed.A.indices64, kept.A.indices64));
    EXPECT_TRUE(same_bits(consumed.A.values, kept.A.values));
    EXPECT_TRUE(same_bits(consumed.targets, kept.targets));
    EXPECT_TRUE(same_bits(consumed.design_weights, kept.design_weights));
    EXPECT_EQ(consumed.names, kept.names);
    EXPECT_EQ(consumed.n_categorical, kept.n_categorical);
    EXPECT_EQ(consumed.margin_offsets, kept.margin_offsets);
    EXPECT_EQ(consumed.warnings, kept.warnings);

    // NOLINTNEXTLINE(bugprone-use-after-move): the overload empties the columns in place
    ASSERT_EQ(p.table.columns.size(), n_columns);
    EXPECT_EQ(p.table.n_records, n);
    for (const otcal::TableColumn& c : p.table.columns) {
      EXPECT_TRUE(c.numbers.empty() && c.strings.empty()) << "column '" << c.name << "' still holds values";
      EXPECT_EQ(c.numbers.capacity(), 0u) << "column '" << c.name << "' still holds its storage";
      EXPECT_EQ(c.strings.capacity(), 0u) << "column '" << c.name << "' still holds its storage";
    }
  }
}

TEST(CalibrationBuilder, EmptySpecGivesZeroByN) {
  auto ctx = otcal::Context::cpu();
  otcal::RecordTable t;
  t.add_numeric("a", {1, 2, 3});
  const auto sys = otcal::build_constraints(ctx, t, {});
  EXPECT_EQ(sys.A.rows, 0);
  EXPECT_EQ(sys.A.cols, 3);
  EXPECT_EQ(sys.A.nnz(), 0);
  EXPECT_EQ(sys.design_weights, std::vector<double>(3, 1.0));  // no "weight" column: ones
}

TEST(CalibrationBuilder, PeakWithinPlanAndNoDenseAllocation) {
  const auto seed = testsupport::fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  const std::size_t budget = 8u << 20;
  auto ctx = otcal::Context::cpu({.memory_budget = budget});
  auto s = otcal::make_synthetic_survey(50000, 4, 50, 2, seed);  // k = 202, dense would be 80 MB
  ctx.statistics().push_scope();
  const auto sys = otcal::build_constraints(ctx, s.table, s.spec);
  const auto peak = ctx.statistics().pop_scope();
  const std::size_t dense_bytes = static_cast<std::size_t>(sys.A.rows) * sys.A.cols * 8;
  EXPECT_GT(peak.peak, 0);
  EXPECT_LE(static_cast<std::size_t>(peak.peak), sys.planned_peak_bytes);
  EXPECT_LE(sys.planned_peak_bytes, budget);
  EXPECT_LT(static_cast<std::size_t>(peak.peak) * 10, dense_bytes);
  EXPECT_EQ(sys.A.nnz(), 4 * 50000 + sys.A.indptr[sys.A.rows] - sys.A.indptr[200]);
}

void expect_invalid(const otcal::RecordTable& t, const otcal::ConstraintSpec& spec, const std::string& needle) {
  auto ctx = otcal::Context::cpu();
  try {
    otcal::build_constraints(ctx, t, spec);
    ADD_FAILURE() << "expected InvalidArgument containing '" << needle << "'";
  } catch (const otcal::InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

otcal::RecordTable small_table() {
  otcal::RecordTable t;
  t.add_numeric("age", {1, 2, 2, 3});
  t.add_strings("sex", {"m", "f", "f", "m"});
  t.add_numeric("income", {10, 0, 5, 7});
  return t;
}
otcal::ConstraintSpec small_spec() {
  otcal::ConstraintSpec s;
  s.marginal = {{"age", {{"1", 1}, {"2", 2}, {"3", 1}}}, {"sex", {{"m", 2}, {"f", 2}}}};
  s.continuous = {{"income", 22}};
  return s;
}

TEST(CalibrationBuilder, ValidationErrors) {
  const auto t = small_table();
  { auto s = small_spec(); s.marginal.push_back({"height", {{"1", 1}}}); expect_invalid(t, s, "Margin variable 'height' not in data columns"); }
  { auto s = small_spec(); s.marginal[0].second.pop_back(); expect_invalid(t, s, "Data contains categories not in targets for 'age': {3}"); }
  { auto s = small_spec(); s.marginal[1].second.pop_back(); expect_invalid(t, s, "not in targets for 'sex': {f}"); }
  { auto tt = small_table(); tt.columns[0].numbers[1] = NAN; expect_invalid(tt, small_spec(), "not in targets for 'age': {nan}"); }
  { auto tt = small_table(); tt.columns[1].strings[1] = ""; expect_invalid(tt, small_spec(), "not in targets for 'sex'"); }
  { auto s = small_spec(); s.continuous.push_back({"wealth", 3}); expect_invalid(t, s, "Continuous variable 'wealth' not in data columns"); }
  { auto tt = small_table(); tt.columns[2].numbers[2] = NAN; expect_invalid(tt, small_spec(), "Continuous variable 'income' has a non-finite value"); }
  { auto tt = small_table(); tt.columns[2].numbers[0] = INFINITY; expect_invalid(tt, small_spec(), "'income' has a non-finite"); }
  { auto s = small_spec(); s.linear.push_back({"lc", {1, 2, 3}, 1}); expect_invalid(t, s, "LinearConstraint 'lc' has 3 coefficients, expected one per record (4)"); }
  { auto s = small_spec(); s.linear.push_back({"lc", {1, NAN, 3, 4}, 1}); expect_invalid(t, s, "LinearConstraint 'lc' has non-finite coefficients"); }
  { auto s = small_spec(); s.linear.push_back({"", {1, 2, 3, 4}, 1}); expect_invalid(t, s, "name must be non-empty"); }
  { auto s = small_spec(); s.linear.push_back({"income", {1, 2, 3, 4}, 1}); expect_invalid(t, s, "Duplicate constraint name 'income'"); }
  { auto s = small_spec(); s.marginal[0].second[0].second = NAN; expect_invalid(t, s, "Target 'age=1' is not finite"); }
  { auto s = small_spec(); s.continuous[0].second = -INFINITY; expect_invalid(t, s, "Target 'income' is not finite"); }
  { auto tt = small_table(); tt.add_numeric("weight", {1, NAN, 1, 1}); expect_invalid(tt, small_spec(), "Weight column 'weight' has a non-finite value"); }
}

TEST(CalibrationBuilder, NumericKeysMatchByValueAndWarningsFire) {
  auto t = small_table();
  auto s = small_spec();
  s.marginal[0].second = {{"1.0", 1}, {"2", 2}, {"3", -1}, {"4", 1}};  // 4 absent: zero support; -1 negative
  std::vector<std::string> seen;
  auto ctx = otcal::Context::cpu({.on_warning = [&](const std::string& w) { seen.push_back(w); }});
  const auto sys = otcal::build_constraints(ctx, t, s);
  EXPECT_EQ(sys.names[0], "age=1.0");
  EXPECT_EQ(sys.A.indptr[1] - sys.A.indptr[0], 1);
  EXPECT_EQ(sys.A.indptr[4] - sys.A.indptr[3], 0);
  auto has = [&](const std::string& needle) {
    for (const auto& w : sys.warnings)
      if (w.find(needle) != std::string::npos) return true;
    return false;
  };
  EXPECT_TRUE(has("zero support"));
  EXPECT_TRUE(has("age=4"));
  EXPECT_TRUE(has("negative"));
  EXPECT_TRUE(has("order of magnitude"));  // a zero-sum column is also more than 10x off
  EXPECT_EQ(seen.size(), sys.warnings.size());
}

TEST(CalibrationBuilder, LowSupportWarning) {
  otcal::RecordTable t;
  std::vector<double> c(300, 0.0);
  c[7] = 1;
  t.add_numeric("flag", c);
  otcal::ConstraintSpec s;
  s.marginal = {{"flag", {{"0", 299}, {"1", 1}}}};
  auto ctx = otcal::Context::cpu({.on_warning = [](const std::string&) {}});
  const auto sys = otcal::build_constraints(ctx, t, s);
  bool found = false;
  for (const auto& w : sys.warnings) found |= w.find("fewer than 1%") != std::string::npos && w.find("flag=1") != std::string::npos;
  EXPECT_TRUE(found);
}

// Random123 known-answer vectors for Philox4x32-10.
TEST(CalibrationPhilox, KnownAnswers) {
  using otcal::detail::Philox4x32;
  auto r = otcal::detail::philox4x32_10(Philox4x32{{0, 0, 0, 0}}, 0, 0);
  EXPECT_EQ(r.v[0], 0x6627e8d5u);
  EXPECT_EQ(r.v[1], 0xe169c58du);
  EXPECT_EQ(r.v[2], 0xbc57ac4cu);
  EXPECT_EQ(r.v[3], 0x9b00dbd8u);
  r = otcal::detail::philox4x32_10(Philox4x32{{0x243f6a88u, 0x85a308d3u, 0x13198a2eu, 0x03707344u}}, 0xa4093822u, 0x299f31d0u);
  EXPECT_EQ(r.v[0], 0xd16cfe09u);
  EXPECT_EQ(r.v[1], 0x94fdccebu);
  EXPECT_EQ(r.v[2], 0x5001e420u);
  EXPECT_EQ(r.v[3], 0x24126ea1u);
}

TEST(CalibrationPhilox, UniformsInUnitInterval) {
  const auto seed = testsupport::fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  double mean = 0;
  const int N = 100000;
  for (int i = 0; i < N; ++i) {
    const double u = otcal::detail::philox_uniform(seed, i, otcal::detail::RandomPurpose::dropout_mask, 3);
    ASSERT_GE(u, 0.0);
    ASSERT_LT(u, 1.0);
    mean += u;
  }
  EXPECT_NEAR(mean / N, 0.5, 0.01);
}

// Issue 11: the exact calibrators and rake() refuse a negative design weight, naming the record
// (docs/calibration.md §1), instead of a pseudo-inverse step on an indefinite Newton matrix.
TEST(CalibrationDesignWeights, ExactMethodsRefuseNegativeDesignWeights) {
  const std::uint64_t seed = testsupport::fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  const otcal::Context ctx = otcal::Context::cpu({.on_warning = [](const std::string&) {}});
  const index_t n = 200;
  otcal::ConstraintSystem sys =
      otcal::build_constraints(ctx, otcal::make_synthetic_survey(n, 2, 3, 1, seed).table,
                               otcal::make_synthetic_survey(n, 2, 3, 1, seed).spec);
  const index_t bad = static_cast<index_t>(seed % static_cast<std::uint64_t>(n));
  sys.design_weights[bad] = -0.5;
  for (const otcal::CalFun f : {otcal::CalFun::linear, otcal::CalFun::raking, otcal::CalFun::logit}) {
    otcal::ExactOptions o;
    o.calfun = f;
    o.lower = 0.2;
    o.upper = 5;
    try {
      otcal::calibrate_exact(ctx, sys, o);
      ADD_FAILURE() << "a negative design weight was calibrated";
    } catch (const otcal::InvalidArgument& e) {
      EXPECT_NE(std::string(e.what()).find("record " + std::to_string(bad) + " is -0.5"), std::string::npos) << e.what();
    }
  }
  try {
    otcal::rake(ctx, sys);
    ADD_FAILURE() << "a negative design weight was raked";
  } catch (const otcal::InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("record " + std::to_string(bad) + " is negative"), std::string::npos) << e.what();
  }
}

}  // namespace
