// Diagnostics of a weight vector against a constraint system (docs/calibration.md §5).
#include <algorithm>
#include <cmath>
#include <limits>

#include "calibration/kernels.hpp"
#include "otcal/calibration.hpp"
#include "otcal/errors.hpp"

namespace otcal {

Diagnostics diagnose(const ConstraintSystem& sys, const std::vector<double>& w, const std::vector<std::string>& excluded,
                     double lower, double upper) {
  const CsrMatrix& A = sys.A;
  const index_t n = A.cols, k = A.rows;
  if (static_cast<index_t>(w.size()) != n)
    throw InvalidArgument("diagnose: weights have " + std::to_string(w.size()) + " values, expected " + std::to_string(n));
  const double nan = std::numeric_limits<double>::quiet_NaN();
  Diagnostics dg;
  std::vector<double> S(static_cast<std::size_t>(k), 0.0);
  for (index_t r = 0; r < k; ++r) {  // row sums in record order (deterministic)
    double s = 0;
    for (std::int64_t p = A.indptr[r]; p < A.indptr[r + 1]; ++p) s += A.values[p] * w[A.index(p)];
    S[r] = s;
  }
  double sum_err = 0, sum_sq = 0;
  index_t n_close = 0;
  std::vector<std::string> zero_support, low_support, negative;
  for (index_t r = 0; r < k; ++r) {
    TargetDiagnostic t;
    t.name = sys.names[r];
    t.target = sys.targets[r];
    t.estimate = S[r];
    t.error = S[r] - t.target;
    t.abs_error = std::fabs(t.error);
    t.rel_error = t.target == 0 ? nan : t.error / t.target;
    t.rel_abs_error = t.target == 0 ? nan : t.abs_error / std::fabs(t.target);
    t.within_tol = t.abs_error / std::max(t.target + 1, 1e-12) < 0.1;
    t.excluded = std::find(excluded.begin(), excluded.end(), t.name) != excluded.end();
    t.support = A.indptr[r + 1] - A.indptr[r];
    t.support_fraction = n > 0 ? static_cast<double>(t.support) / static_cast<double>(n) : 0;
    const double rel = t.target > 0 ? t.abs_error / t.target : 0.0;  // microplex's rule
    dg.max_error = std::max(dg.max_error, rel);
    sum_err += rel;
    sum_sq += rel * rel;
    n_close += t.within_tol;
    if (t.support == 0) zero_support.push_back(t.name);
    else if (t.support_fraction < 0.01) low_support.push_back(t.name);
    if (t.target < 0) negative.push_back(t.name);
    dg.targets.push_back(std::move(t));
  }
  if (k > 0) {
    dg.mean_error = sum_err / static_cast<double>(k);
    dg.rmse = std::sqrt(sum_sq / static_cast<double>(k));
    dg.pct_close = static_cast<double>(n_close) / static_cast<double>(k);
    dg.pct_within_10 = 100.0 * dg.pct_close;
  }
  auto names = [](const std::vector<std::string>& v) {
    std::string s;
    for (std::size_t i = 0; i < v.size() && i < 10; ++i) s += (i ? ", " : "") + v[i];
    return v.size() > 10 ? s + ", ..." : s;
  };
  if (!zero_support.empty())
    dg.warnings.push_back(std::to_string(zero_support.size()) + " target(s) have zero support: " + names(zero_support));
  if (!low_support.empty())
    dg.warnings.push_back(std::to_string(low_support.size()) + " target(s) are supported by fewer than 1% of records: " +
                          names(low_support));
  if (!negative.empty())
    dg.warnings.push_back(std::to_string(negative.size()) + " target(s) are negative: " + names(negative));

  // Weight statistics (population std, ddof 0).
  WeightStatistics& st = dg.weights;
  if (n > 0) {
    st.min = *std::min_element(w.begin(), w.end());
    st.max = *std::max_element(w.begin(), w.end());
    double s = 0, s2 = 0;
    for (double x : w) {
      s += x;
      s2 += x * x;
      st.n_zero += (x == 0);
      st.n_negative += (x < 0);
    }
    st.sum = s;
    st.mean = s / static_cast<double>(n);
    double var = 0;
    for (double x : w) var += (x - st.mean) * (x - st.mean);
    st.std = std::sqrt(var / static_cast<double>(n));
    st.cv = st.std / st.mean;
    st.n_eff = s2 > 0 ? s * s / s2 : 0;
    st.efficiency = st.n_eff / static_cast<double>(n);
    st.deff = s * s > 0 ? static_cast<double>(n) * s2 / (s * s) : nan;
    // g = w / d relative to the design weights
    const auto& d = sys.design_weights;
    st.g_min = std::numeric_limits<double>::infinity();
    st.g_max = -std::numeric_limits<double>::infinity();
    double dg_sum = 0, d_sum = 0, dg2 = 0;
    for (index_t i = 0; i < n; ++i) {
      if (d[i] == 0) continue;
      const double g = w[i] / d[i];
      st.g_min = std::min(st.g_min, g);
      st.g_max = std::max(st.g_max, g);
      const double tol = 1e-9 * std::max(1.0, std::fabs(g));
      if (std::isfinite(lower) && std::fabs(g - lower) <= tol) ++st.n_at_lower;
      if (std::isfinite(upper) && std::fabs(g - upper) <= tol) ++st.n_at_upper;
      dg_sum += d[i] * g;
      d_sum += d[i];
      dg2 += d[i] * g * g;
    }
    st.design_efficiency = (d_sum * dg2) > 0 ? dg_sum * dg_sum / (d_sum * dg2) : nan;
    if (st.n_negative > 0) dg.warnings.push_back(std::to_string(st.n_negative) + " weight(s) are negative");
  }
  return dg;
}

}  // namespace otcal
