// The CPU kernel of the online LSE: detail::exp2_nonpositive (float32 error against std::exp2 in
// long double over the whole nonpositive range; the special values the potentials rely on,
// docs/sinkhorn.md §5: -inf -> 0, NaN -> NaN; the flush below 2^-126), the vectorised granule sum
// equal, bit for bit, to its lanes summed one by one, and the exponent formula (fused for d <= 3)
// equal, bit for bit, to its definition written entry by entry.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "cpu/row_formulas.hpp"
#include "cpu/row_reductions.hpp"
#include "otcal/detail/exp2.hpp"
#include "support/process.hpp"

namespace {

using otcal::detail::exp2_nonpositive;

// |got - 2^x| in units of the float32 ulp of 2^x (2^x normal).
double ulp_error(float x) {
  const long double ref = std::exp2l(static_cast<long double>(x));
  const long double ulp = std::ldexp(1.0L, std::ilogb(static_cast<double>(ref)) - 23);
  return static_cast<double>(std::fabs(static_cast<long double>(exp2_nonpositive(x)) - ref) / ulp);
}

// The bound stated in exp2.hpp (measured once over every float of [-126, 0]: 0.952 ulp).
constexpr double kMaxUlp = 1.5;

TEST(CpuExp2, Float32WithinBoundOverTheNonpositiveRange) {
  const std::uint64_t seed = testsupport::fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  double worst = 0;
  float worst_x = 0;
  auto check = [&](float x) {
    const double e = ulp_error(x);
    if (e > worst) worst = e, worst_x = x;
  };
  // Uniform over [-126, 0] (every exponent k of the reduction), and uniform in the bits of
  // [-1, 0] (every reduced argument, tiny ones included).
  std::uniform_real_distribution<float> wide(-126.0f, 0.0f);
  std::uniform_int_distribution<std::uint32_t> bits(0x80000000u, 0xBF800000u);
  for (int s = 0; s < 400000; ++s) {
    check(wide(rng));
    const std::uint32_t b = bits(rng);
    float x;
    std::memcpy(&x, &b, sizeof x);
    check(x);
  }
  // Both ends of each rounding interval of k (r = +-0.5).
  for (int k = -125; k <= 0; ++k) {
    check(std::nextafter(k - 0.5f, 0.0f));
    check(std::nextafter(k - 0.5f, -200.0f));
  }
  EXPECT_LE(worst, kMaxUlp) << "at x = " << worst_x;
}

TEST(CpuExp2, Float32SpecialValues) {
  constexpr float kInf = std::numeric_limits<float>::infinity();
  EXPECT_EQ(exp2_nonpositive(0.0f), 1.0f);
  EXPECT_EQ(exp2_nonpositive(-0.0f), 1.0f);
  EXPECT_EQ(exp2_nonpositive(-1.0f), 0.5f);
  EXPECT_EQ(exp2_nonpositive(-126.0f), std::ldexp(1.0f, -126));  // the smallest normal, exactly
  // Below the normal range: exactly 0, no subnormals.
  EXPECT_EQ(exp2_nonpositive(std::nextafter(-126.0f, -kInf)), 0.0f);
  EXPECT_EQ(exp2_nonpositive(-126.4f), 0.0f);
  EXPECT_EQ(exp2_nonpositive(-149.0f), 0.0f);
  EXPECT_EQ(exp2_nonpositive(-1e30f), 0.0f);
  EXPECT_EQ(exp2_nonpositive(-kInf), 0.0f);
  EXPECT_TRUE(std::isnan(exp2_nonpositive(std::numeric_limits<float>::quiet_NaN())));
  EXPECT_TRUE(std::isnan(exp2_nonpositive(-std::numeric_limits<float>::quiet_NaN())));
  constexpr double kInfD = std::numeric_limits<double>::infinity();
  EXPECT_EQ(exp2_nonpositive(-1022.0), std::ldexp(1.0, -1022));
  EXPECT_EQ(exp2_nonpositive(std::nextafter(-1022.0, -kInfD)), 0.0);
  EXPECT_EQ(exp2_nonpositive(-kInfD), 0.0);
  EXPECT_TRUE(std::isnan(exp2_nonpositive(std::numeric_limits<double>::quiet_NaN())));
}

// The lane sum of the LSE, written out one element at a time: lane l takes j = l mod kSumLanes.
template <class T>
T lanes_one_by_one(const std::vector<T>& t, T mx) {
  constexpr int L = otcal::cpu::kSumLanes<T>;
  T lane[L] = {};
  for (std::size_t j = 0; j < t.size(); ++j) lane[j % L] += exp2_nonpositive(T(t[j] - mx));
  T s = T(0);
  for (int l = 0; l < L; ++l) s += lane[l];
  return s;
}

template <class T>
void expect_granule_sum_is_its_lanes() {
  const std::uint64_t seed = testsupport::fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<T> dist(T(-150), T(0));
  for (const otcal::index_t jn : {otcal::index_t{1}, otcal::index_t{7}, otcal::index_t{37}, otcal::kReductionGranule}) {
    std::vector<T> t(static_cast<std::size_t>(jn));
    for (auto& v : t) v = dist(rng);
    t[rng() % t.size()] = -std::numeric_limits<T>::infinity();  // a column with no mass
    T mx = -std::numeric_limits<T>::infinity();
    for (const T v : t) mx = std::max(mx, v);
    if (!(mx > -std::numeric_limits<T>::infinity())) continue;  // jn = 1 drew the -inf
    const T got = otcal::cpu::granule_exp2_sum(t.data(), jn, mx);
    const T want = lanes_one_by_one(t, mx);
    EXPECT_EQ(std::memcmp(&got, &want, sizeof(T)), 0) << "jn = " << jn << ": " << got << " vs " << want;
    EXPECT_GE(got, T(1));  // the max contributes exactly 1
  }
}

TEST(CpuExp2, GranuleSumIsItsLanesFloat32) { expect_granule_sum_is_its_lanes<float>(); }
TEST(CpuExp2, GranuleSumIsItsLanesFloat64) { expect_granule_sum_is_its_lanes<double>(); }

// t_j = fma(-c_ij, c_scale, h_j h_scale) with c_ij summed over k = 0..d-1 in order (the
// definition the fused sweep must keep), and its max; with a NaN potential somewhere.
template <class T>
void expect_exponents_are_their_definition(int d) {
  const std::uint64_t seed = testsupport::fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed) + ", d = " + std::to_string(d));
  std::mt19937_64 rng(seed);
  std::normal_distribution<T> normal(T(0), T(1));
  const otcal::index_t n = 5, m = 300;  // a full granule and a partial one
  std::vector<T> x(static_cast<std::size_t>(n * d)), y(static_cast<std::size_t>(m * d)), h(m);
  for (auto& v : x) v = normal(rng);
  for (auto& v : y) v = normal(rng);
  for (auto& v : h) v = normal(rng);
  h[rng() % 37] = -std::numeric_limits<T>::infinity();  // a column without mass
  const T h_scale = T(1.4426950408889634 / 0.3), c_scale = T(1.4426950408889634 / 0.3 / 1.7);
  const otcal::cpu::ExponentFormula<otcal::CostKind::sqeuclidean, T> formula{
      {x.data(), nullptr, n, d}, {y.data(), nullptr, m, d}, T(2), h.data(), h_scale, c_scale};
  for (int with_nan = 0; with_nan < 2; ++with_nan) {
    if (with_nan) h[260 + rng() % 40] = std::numeric_limits<T>::quiet_NaN();
    for (otcal::index_t i = 0; i < n; ++i)
      for (otcal::index_t j0 = 0; j0 < m; j0 += otcal::kReductionGranule) {
        const otcal::index_t jn = std::min(otcal::kReductionGranule, m - j0);
        typename decltype(formula)::Columns columns;
        formula.columns(j0, jn, columns);
        alignas(64) T t[otcal::kReductionGranule];
        const T mx = formula.row(columns, i, j0, jn, t);
        T want_max = -std::numeric_limits<T>::infinity();
        bool nan = false;
        for (otcal::index_t j = 0; j < jn; ++j) {
          T acc = T(0);
          for (int k = 0; k < d; ++k) {
            const T diff = x[k * n + i] - y[k * m + j0 + j];
            acc = k == 0 && d > 1 ? diff * diff : acc + diff * diff;
          }
          const T want = otcal::cpu::fma_t(-acc, c_scale, h[j0 + j] * h_scale);
          ASSERT_TRUE(std::memcmp(&t[j], &want, sizeof(T)) == 0 || (want != want && t[j] != t[j]))
              << "i = " << i << ", j = " << j0 + j << ": " << t[j] << " vs " << want;
          nan |= want != want;
          if (want > want_max) want_max = want;
        }
        if (nan) EXPECT_TRUE(mx != mx) << "a NaN exponent must reach the max (j0 = " << j0 << ")";
        else EXPECT_EQ(mx, want_max) << "j0 = " << j0;
      }
  }
}

TEST(CpuExponentFormula, EqualsItsDefinitionFloat32) {
  for (int d : {1, 2, 3, 5}) expect_exponents_are_their_definition<float>(d);
}
TEST(CpuExponentFormula, EqualsItsDefinitionFloat64) {
  for (int d : {1, 2, 3, 5}) expect_exponents_are_their_definition<double>(d);
}

}  // namespace
