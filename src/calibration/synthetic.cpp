// Synthetic survey problems for tests and benches: consistent targets (weighted totals of a
// perturbed copy of the design weights), so every calfun has a feasible solution.
#include <cmath>
#include <string>

#include "otcal/calibration.hpp"
#include "otcal/detail/philox.hpp"
#include "otcal/errors.hpp"

namespace otcal {

SyntheticSurvey make_synthetic_survey(index_t n, int n_margin_columns, int categories_per_column, int n_continuous,
                                      std::uint64_t seed) {
  if (n < 1 || n_margin_columns < 0 || categories_per_column < 1 || n_continuous < 0)
    throw InvalidArgument("make_synthetic_survey: need n >= 1, categories >= 1 and non-negative column counts");
  using detail::philox_draw;
  using detail::RandomPurpose;
  // Draws keyed by (seed, record, column): independent of thread count.
  auto uniform = [&](index_t i, std::uint32_t column, std::uint32_t draw) {
    return detail::uniform_double(
        philox_draw(seed, static_cast<std::uint64_t>(i), RandomPurpose::subsample_init, column, draw));
  };
  SyntheticSurvey out;
  std::vector<double> d(static_cast<std::size_t>(n)), wstar(static_cast<std::size_t>(n));
#pragma omp parallel for schedule(static)
  for (index_t i = 0; i < n; ++i) {
    d[i] = 1.0 + 2.0 * uniform(i, 0, 0);
    wstar[i] = d[i] * std::exp(0.2 * (uniform(i, 0, 1) - 0.5));  // g* in [0.905, 1.105]
  }
  for (int c = 0; c < n_margin_columns; ++c) {
    std::vector<double> col(static_cast<std::size_t>(n));
    std::vector<double> totals(static_cast<std::size_t>(categories_per_column), 0.0);
#pragma omp parallel for schedule(static)
    for (index_t i = 0; i < n; ++i)
      col[i] = std::floor(uniform(i, 1 + static_cast<std::uint32_t>(c), 0) * categories_per_column);
    for (index_t i = 0; i < n; ++i) totals[static_cast<std::size_t>(col[i])] += wstar[i];
    std::vector<std::pair<std::string, double>> cats;
    for (int j = 0; j < categories_per_column; ++j) cats.emplace_back(std::to_string(j), totals[j]);
    const std::string name = "m" + std::to_string(c);
    out.table.add_numeric(name, std::move(col));
    out.spec.marginal.emplace_back(name, std::move(cats));
  }
  for (int c = 0; c < n_continuous; ++c) {
    std::vector<double> col(static_cast<std::size_t>(n));
    double total = 0;
#pragma omp parallel for schedule(static)
    for (index_t i = 0; i < n; ++i)  // positive, skewed (income-like), some exact zeros
      col[i] = uniform(i, 10000 + static_cast<std::uint32_t>(c), 0) < 0.2
                   ? 0.0
                   : std::exp(2.0 * uniform(i, 10000 + static_cast<std::uint32_t>(c), 1));
    for (index_t i = 0; i < n; ++i) total += col[i] * wstar[i];
    const std::string name = "x" + std::to_string(c);
    out.table.add_numeric(name, std::move(col));
    out.spec.continuous.emplace_back(name, total);
  }
  out.table.add_numeric("weight", std::move(d));
  return out;
}

}  // namespace otcal
