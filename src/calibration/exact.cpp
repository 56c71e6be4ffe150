// Exact calibrators (spec/calibration.md §4): Deville-Sarndal distance functions with R survey's
// F and F', Newton on the dual lambda as grake does (eta0 = 0, step halving on non-finite g,
// prescaling), GREG closed form for unbounded linear, pinv by truncated symmetric eigensolve.
#include <Eigen/Dense>

#include <algorithm>
#include <cfloat>
#include <cstdio>
#include <limits>
#include <cmath>
#include <numeric>
#include <string>

#include "calibration/kernels.hpp"
#include "otcal/calibration.hpp"
#include "otcal/errors.hpp"

namespace otcal {

namespace {

std::string fmt(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.6g", v);
  return buf;
}

struct Distance {
  CalFun calfun;
  double L, U;
  double logit_a = 0;  // A = (U - L) / ((U - 1)(1 - L))

  Distance(CalFun f, double lower, double upper) : calfun(f), L(lower), U(upper) {
    if (f == CalFun::logit) {
      if (!std::isfinite(L) || !std::isfinite(U) || !(L < 1 && 1 < U))
        throw InvalidArgument("Logit calibration requires finite bounds lower < 1 < upper (got " +
                              fmt(L) + ", " + fmt(U) + ")");
      logit_a = (U - L) / ((U - 1) * (1 - L));
    }
  }
  double F(double u) const {
    switch (calfun) {
      case CalFun::linear: return std::clamp(1 + u, L, U);
      case CalFun::raking: return std::clamp(std::exp(u), L, U);
      case CalFun::logit: {
        const double e = std::exp(logit_a * u);
        return (L * (U - 1) + U * (1 - L) * e) / ((U - 1) + (1 - L) * e);
      }
    }
    return 0;
  }
  // R tests u (not F(u)) against the bounds for linear and raking: reproduced (§4.2).
  double dF(double u) const {
    switch (calfun) {
      case CalFun::linear: return (L - 1 < u && u < U - 1) ? 1.0 : 0.0;
      case CalFun::raking: return (L - 1 < u && u < U - 1) ? std::exp(u) : 0.0;
      case CalFun::logit: {
        const double e = std::exp(logit_a * u);
        const double den = (U - 1) + (1 - L) * e;
        return logit_a * e * (U - 1) * (1 - L) * (U - L) / (den * den);
      }
    }
    return 0;
  }
};

// Δ = pinv(T) b with eigenvalues below 256·DBL_EPSILON·λmax truncated (T symmetric PSD).
Eigen::VectorXd pinv_solve(const Eigen::Map<Eigen::MatrixXd>& T, const Eigen::VectorXd& b) {
  Eigen::SelfAdjointEigenSolver<Eigen::MatrixXd> es(T);
  if (es.info() != Eigen::Success) throw NumericalError("calibration: eigendecomposition of the Newton matrix failed");
  const Eigen::VectorXd& ev = es.eigenvalues();
  const double lmax = ev.cwiseAbs().maxCoeff();
  const double tol = 256 * DBL_EPSILON * lmax;
  Eigen::VectorXd y = es.eigenvectors().transpose() * b;
  for (Eigen::Index j = 0; j < y.size(); ++j) y[j] = ev[j] > tol ? y[j] / ev[j] : 0.0;
  return es.eigenvectors() * y;
}

}  // namespace

CalibrationResult calibrate_exact(const Context& ctx, const ConstraintSystem& sys, const ExactOptions& o) {
  const CsrMatrix& A = sys.A;
  const index_t n = A.cols, k = A.rows;
  if (static_cast<index_t>(sys.design_weights.size()) != n)
    throw InvalidArgument("calibrate: design_weights has " + std::to_string(sys.design_weights.size()) +
                          " values, expected one per record (" + std::to_string(n) + ")");
  if (!(o.lower <= 1 && 1 <= o.upper))
    throw InvalidArgument("calibrate: bounds on g must satisfy lower <= 1 <= upper (got " + fmt(o.lower) +
                          ", " + fmt(o.upper) + ")");
  if (o.max_iterations < 1) throw InvalidArgument("calibrate: max_iterations must be >= 1");
  if (!(o.epsilon > 0)) throw InvalidArgument("calibrate: epsilon must be > 0");
  if (!o.variance.empty() && static_cast<index_t>(o.variance.size()) != n && static_cast<index_t>(o.variance.size()) != k)
    throw InvalidArgument("calibrate: variance must have one value per record (" + std::to_string(n) +
                          ") or one per constraint (" + std::to_string(k) + ")");
  const Distance dist(o.calfun, o.lower, o.upper);

  CalibrationResult res;
  // Drop zero-row zero-target constraints; a zero row with a non-zero target is infeasible.
  std::vector<index_t> active_rows, active_of(static_cast<std::size_t>(k), -1);
  for (index_t r = 0; r < k; ++r) {
    if (A.indptr[r + 1] == A.indptr[r]) {
      if (sys.targets[r] != 0)
        throw InvalidArgument("Constraint '" + sys.names[r] + "' has no record with a non-zero coefficient but target " +
                              fmt(sys.targets[r]) + "; it cannot be met: drop it or fix the data");
      res.dropped_constraints.push_back(sys.names[r]);
      continue;
    }
    active_of[r] = static_cast<index_t>(active_rows.size());
    active_rows.push_back(r);
  }
  const index_t ka = static_cast<index_t>(active_rows.size());

  // Workspace: d, u, g, F', v, best g (6 n) + transpose apply out (n) + T (ka²) + accumulator (4 k).
  // Not in the workspace: the transpose Aᵀ (nnz, like the CSR input itself) and Eigen's
  // eigensolver copies of T (about 2 ka² float64), which a device backend would take from the
  // budget through its solver's workspace query.
  ByteModel model{"calibrate_exact",
                  7 * align_up(static_cast<std::size_t>(n) * 8) +
                      align_up(static_cast<std::size_t>(ka) * static_cast<std::size_t>(ka) * 8) +
                      calib::RowAccumulator::bytes(k),
                  0, 1, 1};
  if (model.fixed_bytes + planner_headroom(ctx.memory_budget()) > ctx.memory_budget())
    throw BudgetTooSmall("calibrate_exact needs at least " + format_bytes(model.fixed_bytes + planner_headroom(ctx.memory_budget())) +
                             " (7 float64 per record + the " + std::to_string(ka) + "² Newton matrix); budget is " +
                             format_bytes(ctx.memory_budget()),
                         model.fixed_bytes);
  res.plan.rows = n;
  res.plan.n_tiles = 1;
  res.plan.planned_peak = model.fixed_bytes;

  MemoryResource& mr = ctx.workspace();
  const CsrMatrix At = transpose(A);
  Buffer<double> d(mr, n), u(mr, n), g(mr, n), dF(mr, n), v(mr, n), tmp(mr, n), best_g(mr, n);
  double best_ratio = INFINITY;  // the best iterate is what force returns on failure
  auto keep_if_best = [&](double r) {
    if (r < best_ratio) {
      best_ratio = r;
      for (index_t i = 0; i < n; ++i) best_g[i] = g[i];
    }
  };
  Buffer<double> T(mr, static_cast<std::size_t>(ka * ka));
  calib::RowAccumulator acc(mr, A);
  std::vector<double> S(static_cast<std::size_t>(k)), eta(static_cast<std::size_t>(k), 0.0);
  for (index_t i = 0; i < n; ++i) d[i] = sys.design_weights[i];
  // σ²_i: all 1, per record, or x_iᵀ v for a length-k v (§4.1); must be positive and finite.
  std::vector<double> sigma2_of;
  if (!o.variance.empty()) {
    sigma2_of.resize(static_cast<std::size_t>(n));
    if (static_cast<index_t>(o.variance.size()) == n && n != k)
      sigma2_of = o.variance;
    else
      calib::transpose_apply(At, o.variance.data(), 0, n, sigma2_of.data());
    for (index_t i = 0; i < n; ++i)
      if (!(sigma2_of[i] > 0 && std::isfinite(sigma2_of[i])))
        throw InvalidArgument("calibrate: variance gives sigma^2 = " + fmt(sigma2_of[i]) + " for record " +
                              std::to_string(i) + "; it must be positive and finite");
  }
  auto sigma2 = [&](index_t i) { return sigma2_of.empty() ? 1.0 : sigma2_of[i]; };

  auto estimate = [&](const double* w) {  // S = A w
    acc.reset();
    acc.add_batch(0, n, w);
    acc.finish(S.data());
  };
  auto recompute = [&]() -> bool {  // u = Aᵀη / σ², g = F(u), F'(u); false if any non-finite
    calib::transpose_apply(At, eta.data(), 0, n, tmp.data());
    bool finite = true;
#pragma omp parallel for schedule(static) reduction(&& : finite)
    for (index_t i = 0; i < n; ++i) {
      u[i] = tmp[i] / sigma2(i);
      g[i] = dist.F(u[i]);
      dF[i] = dist.dF(u[i]);
      finite = finite && std::isfinite(g[i]) && std::isfinite(dF[i]);
    }
    return finite;
  };
  auto misfit_at_g = [&](Eigen::VectorXd& misfit) {
#pragma omp parallel for schedule(static)
    for (index_t i = 0; i < n; ++i) v[i] = d[i] * g[i];
    estimate(v.data());
    for (index_t a = 0; a < ka; ++a) misfit[a] = sys.targets[active_rows[a]] - S[active_rows[a]];
  };
  auto ratio_of = [&](const Eigen::VectorXd& misfit) {
    double worst = 0;
    for (index_t a = 0; a < ka; ++a) {
      const double r = std::fabs(misfit[a]) / (1 + std::fabs(sys.targets[active_rows[a]]));
      if (!std::isfinite(r)) return std::numeric_limits<double>::infinity();  // NaN never reads as converged
      worst = std::max(worst, r);
    }
    return worst;
  };
  auto build_T = [&]() {
#pragma omp parallel for schedule(static)
    for (index_t i = 0; i < n; ++i) v[i] = d[i] * dF[i] / sigma2(i);
    calib::accumulate_newton_matrix(A, At, active_rows, active_of, v.data(), T.data());
  };
  Eigen::Map<Eigen::MatrixXd> Tm(T.data(), ka, ka);  // symmetric: row/column order irrelevant
  Eigen::VectorXd misfit(ka);

  recompute();
  double prescale = 1;
  const bool greg = o.calfun == CalFun::linear && std::isinf(o.lower) && std::isinf(o.upper);
  if (!greg && ka > 0) {
    estimate(d.data());  // t̂ = A d
    double rmin = INFINITY, rsum = 0;
    for (index_t a = 0; a < ka; ++a) {
      const double r = sys.targets[active_rows[a]] / S[active_rows[a]];
      rmin = std::min(rmin, r);
      rsum += r;
    }
    if (rmin > 20) {
      prescale = rsum / static_cast<double>(ka);
      for (index_t i = 0; i < n; ++i) d[i] *= prescale;
      if (std::isfinite(o.lower) || std::isfinite(o.upper))
        ctx.warn("calibrate: targets are more than 20 times the design totals; design weights were rescaled by " +
                 fmt(prescale) + " and the bounds apply after the rescaling");
    }
  }

  int iter = 1;
  double ratio = 0;
  bool failed = false;
  if (ka == 0) {
    res.converged = true;
  } else if (greg) {
    // §4.4: one solve, g = 1 + xᵀ pinv(T) (t - t̂) / σ².
    build_T();
    misfit_at_g(misfit);  // g = 1 at η = 0
    const Eigen::VectorXd delta = pinv_solve(Tm, misfit);
    for (index_t a = 0; a < ka; ++a) eta[active_rows[a]] = delta[a];
    recompute();
    misfit_at_g(misfit);
    ratio = ratio_of(misfit);
    res.history.push_back({1, "newton", ratio, {}});
    failed = !(ratio < o.epsilon);
  } else {
    for (;;) {
      build_T();
      misfit_at_g(misfit);
      Eigen::VectorXd delta = pinv_solve(Tm, misfit);
      keep_if_best(ratio_of(misfit));
      for (index_t a = 0; a < ka; ++a) eta[active_rows[a]] += delta[a];
      bool finite = recompute();
      while (iter < o.max_iterations && !finite) {  // step halving on non-finite g or F'
        ++iter;
        delta /= 2;
        for (index_t a = 0; a < ka; ++a) eta[active_rows[a]] -= delta[a];
        finite = recompute();
      }
      misfit_at_g(misfit);
      ratio = ratio_of(misfit);
      keep_if_best(ratio);
      res.history.push_back({iter, "newton", ratio, {}});
      if (ratio < o.epsilon) break;
      ++iter;
      if (iter > o.max_iterations) {
        failed = true;
        break;
      }
    }
  }
  res.n_iterations = iter;
  res.max_ratio = ratio;
  res.converged = !failed;

  res.g.resize(static_cast<std::size_t>(n));
  res.weights.resize(static_cast<std::size_t>(n));
  if (failed && best_ratio < ratio) {
    ratio = best_ratio;
    for (index_t i = 0; i < n; ++i) g[i] = best_g[i];
    res.max_ratio = ratio;
  }
  for (index_t i = 0; i < n; ++i) {
    res.g[i] = g[i] * prescale;
    res.weights[i] = sys.design_weights[i] * res.g[i];
  }
  if (failed) {
    // Name the constraints with the largest ratios.
    std::vector<index_t> order(static_cast<std::size_t>(ka));
    std::iota(order.begin(), order.end(), 0);
    misfit_at_g(misfit);  // at the returned iterate
    std::vector<double> rat(static_cast<std::size_t>(ka));
    for (index_t a = 0; a < ka; ++a) rat[a] = std::fabs(misfit[a]) / (1 + std::fabs(sys.targets[active_rows[a]]));
    std::sort(order.begin(), order.end(), [&](index_t x, index_t y) { return rat[x] > rat[y]; });
    std::string worst;
    for (std::size_t j = 0; j < order.size() && j < 5; ++j) {
      res.worst_targets.push_back(sys.names[active_rows[order[j]]]);
      worst += (j ? ", " : "") + sys.names[active_rows[order[j]]] + " (" + fmt(rat[order[j]]) + ")";
    }
    const std::string msg = "Calibration failed: eps=" + fmt(ratio) + " in " + std::to_string(iter) +
                            " iterations (epsilon " + fmt(o.epsilon) + "); worst targets: " + worst +
                            ". Check that the targets are consistent (margins summing to the same total) and "
                            "the bounds feasible, or pass force to keep the best weights";
    if (!o.force) throw CalibrationFailed(msg);
    ctx.warn(msg);
  }
  std::vector<std::string> trim_warnings;
  if (o.trim) {
    TrimResult tr = trim_g(res.g, sys.design_weights, o.trim->first, o.trim->second);
    res.g = std::move(tr.values);
    for (index_t i = 0; i < n; ++i) res.weights[i] = sys.design_weights[i] * res.g[i];
    trim_warnings = std::move(tr.warnings);
  }
  res.diagnostics = diagnose(sys, res.weights, {}, o.lower, o.upper);
  for (auto& w : trim_warnings) res.diagnostics.warnings.push_back(std::move(w));
  if (!res.dropped_constraints.empty())
    res.diagnostics.warnings.push_back(std::to_string(res.dropped_constraints.size()) +
                                       " zero-row constraint(s) with target 0 were dropped");
  return res;
}

TrimResult trim_g(const std::vector<double>& g, const std::vector<double>& d, double a, double b) {
  if (g.size() != d.size()) throw InvalidArgument("trim: g and design weights differ in length");
  if (!(a <= b)) throw InvalidArgument("trim: lower " + fmt(a) + " must be <= upper " + fmt(b));
  TrimResult r;
  r.values.resize(g.size());
  double mass = 0, d_in = 0;
  std::vector<char> out(g.size());
  for (std::size_t i = 0; i < g.size(); ++i) {
    r.values[i] = std::clamp(g[i], a, b);
    out[i] = g[i] < a || g[i] > b;
    r.n_trimmed += out[i];
    mass += (g[i] - r.values[i]) * d[i];
    if (!out[i]) d_in += d[i];
  }
  if (r.n_trimmed > 0) {
    if (d_in > 0) {
      const double delta = mass / d_in;
      for (std::size_t i = 0; i < g.size(); ++i)
        if (!out[i]) r.values[i] += delta;
    } else {
      r.warnings.push_back("trimming failed: every unit was trimmed, so the trimmed mass could not be spread");
    }
    r.warnings.push_back(std::to_string(r.n_trimmed) + " weights were trimmed");
  }
  return r;
}

TrimResult trim_weights(const std::vector<double>& w, double lower, double upper, bool strict) {
  if (!(lower <= upper)) throw InvalidArgument("trim_weights: lower " + fmt(lower) + " must be <= upper " + fmt(upper));
  TrimResult r;
  r.values = w;
  std::vector<char> ever(w.size(), 0);
  for (int pass = 0; pass < 1000; ++pass) {
    double excess = 0;
    index_t trimmed_now = 0;
    for (std::size_t i = 0; i < w.size(); ++i) {
      const double c = std::clamp(r.values[i], lower, upper);
      if (c != r.values[i]) {
        excess += r.values[i] - c;
        r.values[i] = c;
        ever[i] = 1;
        ++trimmed_now;
      }
    }
    if (trimmed_now == 0) break;
    r.n_trimmed += trimmed_now;
    index_t free_units = 0;
    for (char e : ever) free_units += !e;
    if (free_units == 0) {
      r.warnings.push_back("trimming failed: no untrimmed unit is left to take the excess weight");
      break;
    }
    const double share = excess / static_cast<double>(free_units);
    for (std::size_t i = 0; i < w.size(); ++i)
      if (!ever[i]) r.values[i] += share;
    if (!strict) break;
  }
  return r;
}

}  // namespace otcal
