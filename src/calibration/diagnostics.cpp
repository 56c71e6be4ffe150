// Diagnostics of a weight vector against a constraint system (docs/calibration.md §5).
#include <algorithm>
#include <cmath>
#include <limits>

#include "calibration/distributed.hpp"
#include "calibration/kernels.hpp"
#include "otcal/calibration.hpp"
#include "otcal/errors.hpp"

namespace otcal {

namespace {

// Every sum over records runs in record order; distributed, the rank-order chain of ordered_fold
// continues each one where the previous rank stopped, so the sums are the one-process ones bit for
// bit (each rank's pass waits for the previous rank's, once per diagnosis: O(nnz) in all).
// `support` (entries per row) and `n_total` are over all ranks.
Diagnostics diagnose_over(Communicator& comm, const ConstraintSystem& sys, const std::vector<double>& w,
                          const std::vector<std::string>& excluded, double lower, double upper,
                          const std::vector<std::int64_t>& support, index_t n_total) {
  const CsrMatrix& A = sys.A;
  const index_t n_local = A.cols, k = A.rows;
  const double nan = std::numeric_limits<double>::quiet_NaN();
  const bool distributed = comm.size() > 1;
  Diagnostics dg;
  // One chain: the k row sums S, then Σw, Σw², Σ d g, Σ d, Σ d g² (g = w / d where d != 0).
  const auto& d = sys.design_weights;
  std::vector<double> run(static_cast<std::size_t>(k) + 5, 0.0);
  detail::ordered_fold(comm, run, [&](std::vector<double>& acc) {
    for (index_t r = 0; r < k; ++r) {  // row sums in record order (deterministic)
      double s = acc[static_cast<std::size_t>(r)];
      for (std::int64_t p = A.indptr[r]; p < A.indptr[r + 1]; ++p) s += A.values[p] * w[A.index(p)];
      acc[static_cast<std::size_t>(r)] = s;
    }
    double* tail = acc.data() + k;
    for (double x : w) {
      tail[0] += x;
      tail[1] += x * x;
    }
    for (index_t i = 0; i < n_local; ++i) {
      if (d[i] == 0) continue;
      const double g = w[i] / d[i];
      tail[2] += d[i] * g;
      tail[3] += d[i];
      tail[4] += d[i] * g * g;
    }
  });
  std::vector<double> S(run.begin(), run.begin() + k);
  const index_t n = n_total;
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
    t.support = support[static_cast<std::size_t>(r)];
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
    const double inf = std::numeric_limits<double>::infinity();
    if (!distributed) {
      st.min = *std::min_element(w.begin(), w.end());
      st.max = *std::max_element(w.begin(), w.end());
    } else {  // a rank without records contributes the identities
      st.min = comm.all_min(w.empty() ? inf : *std::min_element(w.begin(), w.end()));
      st.max = comm.all_max(w.empty() ? -inf : *std::max_element(w.begin(), w.end()));
    }
    const double* tail = run.data() + k;
    const double s = tail[0], s2 = tail[1];
    st.sum = s;
    st.mean = s / static_cast<double>(n);
    std::vector<double> var{0.0};
    detail::ordered_fold(comm, var, [&](std::vector<double>& acc) {
      for (double x : w) acc[0] += (x - st.mean) * (x - st.mean);
    });
    st.std = std::sqrt(var[0] / static_cast<double>(n));
    st.cv = st.std / st.mean;
    st.n_eff = s2 > 0 ? s * s / s2 : 0;
    st.efficiency = st.n_eff / static_cast<double>(n);
    st.deff = s * s > 0 ? static_cast<double>(n) * s2 / (s * s) : nan;
    // g = w / d relative to the design weights
    st.g_min = inf;
    st.g_max = -inf;
    std::uint64_t counts[4] = {0, 0, 0, 0};  // zero, negative, at lower, at upper
    for (index_t i = 0; i < n_local; ++i) {
      counts[0] += (w[i] == 0);
      counts[1] += (w[i] < 0);
      if (d[i] == 0) continue;
      const double g = w[i] / d[i];
      st.g_min = std::min(st.g_min, g);
      st.g_max = std::max(st.g_max, g);
      const double tol = 1e-9 * std::max(1.0, std::fabs(g));
      if (std::isfinite(lower) && std::fabs(g - lower) <= tol) ++counts[2];
      if (std::isfinite(upper) && std::fabs(g - upper) <= tol) ++counts[3];
    }
    if (distributed) {
      comm.all_sum(counts, 4);
      st.g_min = comm.all_min(st.g_min);
      st.g_max = comm.all_max(st.g_max);
    }
    st.n_zero = static_cast<index_t>(counts[0]);
    st.n_negative = static_cast<index_t>(counts[1]);
    st.n_at_lower = static_cast<index_t>(counts[2]);
    st.n_at_upper = static_cast<index_t>(counts[3]);
    const double dg_sum = tail[2], d_sum = tail[3], dg2 = tail[4];
    st.design_efficiency = (d_sum * dg2) > 0 ? dg_sum * dg_sum / (d_sum * dg2) : nan;
    if (st.n_negative > 0) dg.warnings.push_back(std::to_string(st.n_negative) + " weight(s) are negative");
  }
  return dg;
}

}  // namespace

Diagnostics diagnose(const ConstraintSystem& sys, const std::vector<double>& w, const std::vector<std::string>& excluded,
                     double lower, double upper) {
  if (static_cast<index_t>(w.size()) != sys.A.cols)
    throw InvalidArgument("diagnose: weights have " + std::to_string(w.size()) + " values, expected " +
                          std::to_string(sys.A.cols));
  auto one = single_process();
  return diagnose_over(*one, sys, w, excluded, lower, upper, calib::global_row_support(*one, sys.A), sys.A.cols);
}

Diagnostics diagnose(const Context& ctx, const ConstraintSystem& sys, const std::vector<double>& w,
                     const std::vector<std::string>& excluded, double lower, double upper) {
  Communicator& comm = ctx.communicator();
  const calib::RecordLayout layout = calib::record_layout(comm, sys.A.cols, "diagnose");
  calib::require_same(comm, static_cast<std::uint64_t>(sys.A.rows), "diagnose: the number of constraints");
  detail::agreed(comm, [&] {
    if (static_cast<index_t>(w.size()) != sys.A.cols)
      throw InvalidArgument("diagnose: weights have " + std::to_string(w.size()) + " values, expected " +
                            std::to_string(sys.A.cols));
    if (sys.design_weights.size() != w.size())
      throw InvalidArgument("diagnose: design_weights must have one value per record");
  });
  return diagnose_over(comm, sys, w, excluded, lower, upper, calib::global_row_support(comm, sys.A), layout.total);
}

}  // namespace otcal
