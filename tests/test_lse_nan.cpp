// NaN in the online log-sum-exp (include/otcal/detail/lse_math.hpp): a NaN anywhere in a row must
// reach the row's LSE, whatever chunk, granule or part it sits in, so that marginals, the marginal
// error and reg_ot_cost come out NaN and the solver's non-finite error check fires. Unit tests of
// lse_merge / lse_natural with NaN in every position, then end to end on the CPU backend: NaN
// potentials in the first, a middle and the last granule (m <= 256, > 256, > 512) give NaN
// marginals for every row, and a cosine problem whose costs are NaN diverges. The same contract on
// CUDA (32-column chunks and column parts) is tests/gpu_lse_nan.cpp.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <optional>
#include <string>
#include <vector>

#include "otcal/detail/lse_math.hpp"
#include "otcal/errors.hpp"
#include "otcal/sinkhorn.hpp"
#include "support/reference.hpp"

namespace {

using otcal::index_t;
using otcal::detail::LseState;

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr double kInf = std::numeric_limits<double>::infinity();

// ---- the merge and the finish ------------------------------------------------------------------

// Partial states as the backends produce them: a chunk with mass, an empty chunk (all -inf), and
// the two shapes a NaN takes (a NaN chunk max with sum 1; a NaN sum after a merge).
const LseState kMass[] = {{3.0, 1.5}, {-2.0, 7.0}, {10.0, 1.0}, {0.25, 2.0}, {-40.0, 31.0}};
const LseState kEmpty = {-kInf, 0.0};
const LseState kNaNStates[] = {{kNaN, 1.0}, {4.0, kNaN}, {kNaN, kNaN}};

double merged(const std::vector<LseState>& parts) {
  LseState acc = otcal::detail::lse_empty();
  for (const LseState& p : parts) otcal::detail::lse_merge(acc, p.max, p.sum);
  return otcal::detail::lse_natural(acc);
}

TEST(LseMerge, NaNInEveryPositionReachesTheResult) {
  for (std::size_t len = 1; len <= 6; ++len) {
    for (std::size_t at = 0; at < len; ++at) {
      for (const LseState& bad : kNaNStates) {
        for (bool with_empty : {false, true}) {
          std::vector<LseState> parts;
          for (std::size_t k = 0; k < len; ++k)
            parts.push_back(k == at ? bad : (with_empty && k % 2 == 1) ? kEmpty : kMass[k % 5]);
          const double r = merged(parts);
          EXPECT_TRUE(std::isnan(r)) << "length " << len << ", NaN state {" << bad.max << ", " << bad.sum
                                     << "} at " << at << (with_empty ? ", empty states between" : "") << ": got " << r;
        }
      }
    }
  }
}

TEST(LseMerge, NaNStaysThroughEmptyAndLargerStates) {
  LseState acc = otcal::detail::lse_empty();
  otcal::detail::lse_merge(acc, kNaN, 1.0);
  otcal::detail::lse_merge(acc, -kInf, 0.0);   // empty: the identity
  otcal::detail::lse_merge(acc, 1e300, 1.0);   // a larger max
  otcal::detail::lse_merge(acc, -1e300, 1.0);  // a smaller one
  otcal::detail::lse_merge(acc, kInf, 1.0);    // +inf
  EXPECT_TRUE(std::isnan(otcal::detail::lse_natural(acc)));
}

TEST(LseMerge, MergingNaNPartialsInPartOrder) {
  // The CUDA split path: per-part states, each from its own chunks, merged in part order.
  for (std::size_t bad_part = 0; bad_part < 3; ++bad_part) {
    std::vector<LseState> parts;
    for (std::size_t part = 0; part < 3; ++part) {
      LseState st = otcal::detail::lse_empty();
      for (std::size_t chunk = 0; chunk < 4; ++chunk) {
        if (part == bad_part && chunk == 1) otcal::detail::lse_merge(st, kNaN, 1.0);
        else otcal::detail::lse_merge(st, kMass[chunk].max, kMass[chunk].sum);
      }
      parts.push_back(st);
    }
    EXPECT_TRUE(std::isnan(merged(parts))) << "NaN in part " << bad_part;
  }
}

TEST(LseNatural, FinishesEveryKindOfState) {
  EXPECT_EQ(otcal::detail::lse_natural(otcal::detail::lse_empty()), -kInf);
  EXPECT_TRUE(std::isnan(otcal::detail::lse_natural({kNaN, 1.0})));
  EXPECT_TRUE(std::isnan(otcal::detail::lse_natural({2.0, kNaN})));
  EXPECT_TRUE(std::isnan(otcal::detail::lse_natural({kNaN, kNaN})));
  EXPECT_EQ(otcal::detail::lse_natural({kInf, 1.0}), kInf);
  // Ordinary states round exactly as before: ln2 * (max + log2 sum).
  EXPECT_EQ(otcal::detail::lse_natural({3.0, 2.0}), otcal::detail::kLn2 * 4.0);
  EXPECT_EQ(otcal::detail::lse_natural({-1.5, 3.0}), otcal::detail::kLn2 * (-1.5 + std::log2(3.0)));
}

TEST(LseMerge, FiniteMergesAreUnchanged) {
  // Without NaN the merge is the plain online LSE: compare with a direct float64 sum.
  const std::vector<LseState> parts = {kMass[0], kEmpty, kMass[1], kMass[2], kEmpty, kMass[3], kMass[4]};
  double direct = 0;
  double mx = -kInf;
  for (const LseState& p : parts) mx = std::max(mx, p.max);
  for (const LseState& p : parts)
    if (p.sum > 0) direct += p.sum * std::exp2(p.max - mx);
  EXPECT_NEAR(merged(parts), otcal::detail::kLn2 * (mx + std::log2(direct)), 1e-13);
  EXPECT_EQ(merged({kEmpty, kEmpty}), -kInf);
}

// ---- end to end on the CPU backend ---------------------------------------------------------------

otcal::Context quiet_cpu() {
  return otcal::Context::cpu({.memory_budget = std::size_t{256} << 20, .on_warning = [](const std::string&) {}});
}

otcal::Potentials zero_potentials(index_t n, index_t m, otcal::DType precision) {
  otcal::Potentials p;
  p.f.assign(static_cast<std::size_t>(n), 0.0);
  p.g.assign(static_cast<std::size_t>(m), 0.0);
  p.epsilon = 0.5;
  p.scale = 1.0;
  p.cost = otcal::Cost::parse("sqeuclidean");
  p.precision = precision;
  return p;
}

// Column positions to poison: the first, inside and at the ends of granules of 256, the last.
std::vector<index_t> nan_positions(index_t cols) {
  std::vector<index_t> out;
  for (index_t j : {index_t{0}, index_t{1}, index_t{100}, index_t{255}, index_t{256}, index_t{300}, index_t{511},
                    index_t{512}, index_t{600}, cols - 1})
    if (j < cols && (out.empty() || out.back() < j)) out.push_back(j);
  return out;
}

class CpuLseNaN : public ::testing::TestWithParam<otcal::DType> {};

TEST_P(CpuLseNaN, MarginalIsNaNForEveryRowWhatEverGranuleHoldsTheNaN) {
  const otcal::DType precision = GetParam();
  const otcal::Context ctx = quiet_cpu();
  for (index_t cols : {index_t{200}, index_t{300}, index_t{700}}) {
    const index_t rows = 37;
    const ref::Clouds c = ref::random_clouds(rows, cols, 2, 1234 + static_cast<std::uint64_t>(cols));
    otcal::PointCloud geom;
    geom.x = otcal::ConstMatrix::of(c.x.data(), rows, 2);
    geom.y = otcal::ConstMatrix::of(c.y.data(), cols, 2);
    const otcal::Problem problem = otcal::Problem::upload(ctx, geom, {}, {}, precision);
    {
      const auto clean = otcal::marginal(problem, zero_potentials(rows, cols, precision), 1);
      for (double v : clean) ASSERT_TRUE(std::isfinite(v) && v > 0) << "a NaN-free marginal must be finite";
    }
    for (index_t at : nan_positions(cols)) {
      for (bool neg_inf_too : {false, true}) {
        otcal::Potentials pot = zero_potentials(rows, cols, precision);
        pot.g[static_cast<std::size_t>(at)] = kNaN;
        if (neg_inf_too) pot.g[static_cast<std::size_t>((at + cols / 2) % cols)] = -kInf;  // a zero-weight column
        for (std::optional<index_t> bs : {std::optional<index_t>{}, std::optional<index_t>{1}}) {
          const auto marg = otcal::marginal(problem, pot, 1, bs);  // P 1: rows of x against every column
          ASSERT_EQ(marg.size(), static_cast<std::size_t>(rows));
          for (index_t i = 0; i < rows; ++i)
            EXPECT_TRUE(std::isnan(marg[static_cast<std::size_t>(i)]))
                << "m = " << cols << ", NaN g at column " << at << (neg_inf_too ? " (and a -inf column)" : "")
                << ", batch " << (bs ? std::to_string(*bs) : "planned") << ": row " << i << " gave "
                << marg[static_cast<std::size_t>(i)];
        }
      }
      // The other axis: rows of y against x, the NaN in f.
      otcal::Potentials pot = zero_potentials(rows, cols, precision);
      pot.f[static_cast<std::size_t>(at % rows)] = kNaN;
      const auto marg0 = otcal::marginal(problem, pot, 0);
      for (std::size_t j = 0; j < marg0.size(); ++j)
        EXPECT_TRUE(std::isnan(marg0[j])) << "NaN f at row " << at % rows << ": column " << j << " gave " << marg0[j];
    }
  }
}

// A cosine cost is NaN between two points whose norms overflow (inf / inf), although every
// coordinate is finite. Such clouds no longer reach the kernels: the upload refuses costs that
// overflow the working precision (docs/sinkhorn.md §1.2), naming the cloud, in every granule.
TEST_P(CpuLseNaN, NaNCostsMakeTheSolveDivergeInEveryGranule) {
  const otcal::DType precision = GetParam();
  const double huge = precision == otcal::DType::float32 ? 1e30 : 1e200;  // squares overflow in T
  const otcal::Context ctx = quiet_cpu();
  for (index_t n : {index_t{200}, index_t{300}, index_t{520}}) {  // one, two and three granules
    for (index_t at : {index_t{0}, n / 2, n - 1}) {
      ref::Clouds c = ref::random_clouds(n, n, 2, 99 + static_cast<std::uint64_t>(n + at));
      c.x[static_cast<std::size_t>(2 * at)] = huge;
      c.x[static_cast<std::size_t>(2 * at + 1)] = huge;
      otcal::PointCloud geom;
      geom.x = otcal::ConstMatrix::of(c.x.data(), n, 2);  // y = x: row `at` meets itself at column `at`
      geom.options.cost = otcal::Cost::parse("cosine");
      otcal::SinkhornOptions o;
      o.precision = precision;
      o.epsilon = 0.1;
      o.max_iterations = 10;
      const std::string what = "n = " + std::to_string(n) + ", huge point at " + std::to_string(at);
      try {
        otcal::sinkhorn(ctx, geom, {}, {}, o);
        ADD_FAILURE() << what << ": accepted clouds whose cosine norms overflow";
      } catch (const otcal::InvalidArgument& e) {
        EXPECT_NE(std::string(e.what()).find("(row " + std::to_string(at) + ")"), std::string::npos)
            << what << ": " << e.what();
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Precisions, CpuLseNaN, ::testing::Values(otcal::DType::float64, otcal::DType::float32),
                         [](const auto& info) { return std::string(otcal::dtype_name(info.param)); });

}  // namespace
