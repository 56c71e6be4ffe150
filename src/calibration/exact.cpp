// Exact calibrators (docs/calibration.md §4): Deville-Sarndal distance functions with R survey's
// F and F', Newton on the dual lambda as grake does (eta0 = 0, step halving on non-finite g,
// prescaling), GREG closed form for unbounded linear. The Newton step is a Cholesky solve that drops
// dependent constraints (newton_solve.hpp), the same weights as the pseudo-inverse step; the
// truncated symmetric eigensolve (pinv) remains for targets that are not consistent.
#include <Eigen/Dense>

#include <algorithm>
#include <cfloat>
#include <cstdio>
#include <limits>
#include <memory>
#include <cmath>
#include <numeric>
#include <optional>
#include <string>

#include "calibration/calib_backend.hpp"
#include "calibration/distributed.hpp"
#include "calibration/kernels.hpp"
#include "calibration/newton_solve.hpp"
#include "calibration/workspace_layouts.hpp"
#include "core/operation.hpp"
#include "otcal/calibration.hpp"
#include "otcal/errors.hpp"

namespace otcal {

namespace {

std::string fmt(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.6g", v);
  return buf;
}

// Validates the bounds and fills the shared element math (include/otcal/detail/calib_math.hpp).
detail::DistanceMath make_distance(CalFun f, double L, double U) {
  detail::DistanceMath m;
  m.L = L;
  m.U = U;
  m.calfun = f == CalFun::linear ? detail::CalFunCode::linear
                                 : (f == CalFun::raking ? detail::CalFunCode::raking : detail::CalFunCode::logit);
  if (f == CalFun::logit) {
    if (!std::isfinite(L) || !std::isfinite(U) || !(L < 1 && 1 < U))
      throw InvalidArgument("Logit calibration requires finite bounds lower < 1 < upper (got " + fmt(L) + ", " +
                            fmt(U) + ")");
    m.logit_a = (U - L) / ((U - 1) * (1 - L));
  }
  return m;
}

// The CPU passes over the operation's workspace (calib::exact_layout): OpenMP, fixed reduction
// order (bitwise reproducible). Distributed (comm != nullptr, §8): S is folded from every rank's
// granule partials (bitwise the one-process S), the finite flag is all-reduced, and T is the
// rank-order fold of every rank's T over its own records (see newton_matrix).
class CpuExactPasses final : public calib::ExactPasses {
 public:
  CpuExactPasses(const detail::Workspace& ws, const calib::CpuExactIds& ids, const CsrMatrix& A,
                 const calib::CsrView& At, const std::vector<index_t>& active_rows,
                 const std::vector<index_t>& active_of, const std::vector<double>& design, const double* sigma2,
                 const detail::DistanceMath& dist, Communicator* comm, const std::vector<index_t>& margin_offsets)
      : A_(calib::csr_view(A)), At_(At), active_rows_(active_rows), active_of_(active_of), sigma2_(sigma2),
        dist_(dist), n_(A.cols), d_(ws.get(ids.d)), u_(ws.get(ids.u)), g_(ws.get(ids.g)), dF_(ws.get(ids.dF)),
        v_(ws.get(ids.v)), tmp_(ws.get(ids.tmp)), best_g_(ws.get(ids.best_g)), slot_(ws.get(ids.slot)),
        cat16_(ws.get(ids.cat16)), cat32_(ws.get(ids.cat32)), acc_(A_, ws, ids.acc), comm_(comm) {
    for (index_t i = 0; i < n_; ++i) d_[i] = design[i];
    if (slot_) calib::fill_newton_slots(A_, At_, slot_);
    const index_t ka = static_cast<index_t>(active_rows_.size());
    if (cat16_)
      margins_ = calib::fill_margin_categories(A_, margin_offsets, active_of_, ka, cat16_);
    else if (cat32_)
      margins_ = calib::fill_margin_categories(A_, margin_offsets, active_of_, ka, cat32_);
  }
  void scale_design(double f) override {
    for (index_t i = 0; i < n_; ++i) d_[i] *= f;
  }
  bool recompute(const double* eta) override {
    calib::transpose_apply(At_, eta, 0, n_, tmp_);
    bool finite = true;
#pragma omp parallel for schedule(static) reduction(&& : finite)
    for (index_t i = 0; i < n_; ++i) {
      u_[i] = tmp_[i] / sigma2(i);
      g_[i] = dist_.F(u_[i]);
      dF_[i] = dist_.dF(u_[i]);
      finite = finite && std::isfinite(g_[i]) && std::isfinite(dF_[i]);
    }
    if (comm_) finite = comm_->all_min(finite ? 1.0 : 0.0) > 0;  // every rank halves the same step
    return finite;
  }
  void estimate_design(double* S) override { estimate(d_, S); }
  void estimate_weights(double* S) override {
#pragma omp parallel for schedule(static)
    for (index_t i = 0; i < n_; ++i) v_[i] = d_[i] * g_[i];
    estimate(v_, S);
  }
  void newton_matrix(double* T) override {
#pragma omp parallel for schedule(static)
    for (index_t i = 0; i < n_; ++i) v_[i] = d_[i] * dF_[i] / sigma2(i);
    if (!margins_.any()) {
      calib::accumulate_newton_matrix(A_, At_, active_rows_, active_of_, v_, T, slot_);
    } else {
      if (cat16_)
        calib::tally_newton_margins(A_, active_rows_, margins_, cat16_, v_, T);
      else
        calib::tally_newton_margins(A_, active_rows_, margins_, cat32_, v_, T);
      if (!margins_.other_rows.empty())
        calib::accumulate_newton_matrix(A_, At_, active_rows_, active_of_, v_, T, slot_, &margins_.other_rows);
    }
    if (comm_) fold_over_ranks(T);
  }
  void keep_best() override {
    for (index_t i = 0; i < n_; ++i) best_g_[i] = g_[i];
  }
  void restore_best() override {
    for (index_t i = 0; i < n_; ++i) g_[i] = best_g_[i];
  }
  void download_g(double* g) override {
    for (index_t i = 0; i < n_; ++i) g[i] = g_[i];
  }

 private:
  double sigma2(index_t i) const { return sigma2_ ? sigma2_[i] : 1.0; }
  void estimate(const double* w, double* S) {  // S = A w
    acc_.reset();
    acc_.add_batch(0, n_, w);
    acc_.finish(S, comm_);
  }
  // T = 0 + T_0 + T_1 + ... over the ranks' own T in rank order, entry by entry, on the upper
  // triangle (T is bitwise symmetric): ka(ka+1)/2 doubles per hop. One process sums each entry
  // over all records in record order; splitting that sum at the rank boundaries regroups it, so T
  // matches the one-process T to rounding (~1e-16 relative), not bit for bit. Making it bitwise
  // would mean either chaining the accumulation itself through the ranks (serializing the
  // dominant O(Σ nnz_i²) pass) or per-granule T partials (ka² per granule). The Newton step,
  // hence g, inherits that rounding: results agree with one process to ~1e-13, and S, the
  // misfits and every stop decision are computed identically on every rank.
  void fold_over_ranks(double* T) {
    const auto ka = static_cast<std::size_t>(active_rows_.size());
    std::vector<double> running(ka * (ka + 1) / 2, 0.0);
    detail::ordered_fold(*comm_, running, [&](std::vector<double>& acc) {
      std::size_t q = 0;
      for (std::size_t a = 0; a < ka; ++a)
        for (std::size_t b = a; b < ka; ++b) acc[q++] += T[a * ka + b];
    });
    std::size_t q = 0;
    for (std::size_t a = 0; a < ka; ++a)
      for (std::size_t b = a; b < ka; ++b) T[a * ka + b] = T[b * ka + a] = running[q++];
  }
  calib::CsrView A_, At_;
  const std::vector<index_t>&active_rows_, &active_of_;
  const double* sigma2_;
  detail::DistanceMath dist_;
  index_t n_;
  double *d_, *u_, *g_, *dF_, *v_, *tmp_, *best_g_;
  std::uint16_t* slot_;  // null when k > 65536 or with margins: the Newton-matrix pass searches instead
  std::uint16_t* cat16_;  // each record's category per margin (one of the two, or neither: no margins)
  std::int32_t* cat32_;
  calib::MarginCategories margins_;  // the checked margins, whose entries of T are tallied
  calib::RowAccumulator acc_;
  Communicator* comm_;
};

// trim_g over the ranks' records (§4.5, §8): the trimmed mass and the untrimmed design total are
// sums in record order, chained through the ranks, so the shift equals the one-process one (one
// process: the same loop, folded locally).
TrimResult trim_g_over(Communicator& comm, const std::vector<double>& g, const std::vector<double>& d, double a,
                       double b) {
  TrimResult r;
  r.values.resize(g.size());
  std::vector<char> out(g.size());
  std::uint64_t trimmed = 0;
  for (std::size_t i = 0; i < g.size(); ++i) {
    r.values[i] = std::clamp(g[i], a, b);
    out[i] = g[i] < a || g[i] > b;
    trimmed += out[i];
  }
  comm.all_sum(&trimmed, 1);
  r.n_trimmed = static_cast<index_t>(trimmed);
  std::vector<double> sums{0.0, 0.0};  // mass, d_in
  detail::ordered_fold(comm, sums, [&](std::vector<double>& acc) {
    for (std::size_t i = 0; i < g.size(); ++i) {
      acc[0] += (g[i] - r.values[i]) * d[i];
      if (!out[i]) acc[1] += d[i];
    }
  });
  if (r.n_trimmed > 0) {
    if (sums[1] > 0) {
      const double delta = sums[0] / sums[1];
      for (std::size_t i = 0; i < g.size(); ++i)
        if (!out[i]) r.values[i] += delta;
    } else {
      r.warnings.push_back("trimming failed: every unit was trimmed, so the trimmed mass could not be spread");
    }
    r.warnings.push_back(std::to_string(r.n_trimmed) + " weights were trimmed");
  }
  return r;
}

// The fallback step (targets inconsistent over the dependent constraints, or a non-finite T):
// Δ = pinv(T) b, the least-squares minimum-norm step, with eigenvalues below 256·DBL_EPSILON·λmax
// truncated (T symmetric PSD; only its lower triangle is read, the other one may be stale). The
// eigendecomposition runs in T's own storage (T is rebuilt before every solve): Eigen's
// SelfAdjointEigenSolver would copy T and keep its ka² eigenvectors outside the workspace, which
// at a few thousand constraints is as much memory again as the budgeted T. These are the steps of
// SelfAdjointEigenSolver::compute (scale to [-1, 1], Householder tridiagonalization, implicit QR),
// bit for bit; only O(ka) vectors are allocated.
Eigen::VectorXd pinv_solve(Eigen::Map<Eigen::MatrixXd> T, const Eigen::VectorXd& b) {
  const Eigen::Index n = T.rows();
  Eigen::VectorXd ev(n);
  if (n == 1) {
    ev[0] = T(0, 0);
    T(0, 0) = 1;  // the eigenvector
  } else {
    T.triangularView<Eigen::StrictlyUpper>().setZero();  // only the lower triangle is read
    double scale = T.cwiseAbs().maxCoeff();
    if (scale == 0) scale = 1;
    T.triangularView<Eigen::Lower>() /= scale;
    Eigen::VectorXd subdiag(n - 1), hcoeffs(n - 1);
    Eigen::internal::tridiagonalization_inplace(T, hcoeffs);
    ev = T.diagonal();
    subdiag = T.diagonal<-1>();
    Eigen::HouseholderSequence<Eigen::Map<Eigen::MatrixXd>, Eigen::VectorXd> q(T, hcoeffs);
    q.setLength(n - 1).setShift(1);
    T = q;  // Q, formed in place over the Householder vectors
    if (Eigen::internal::computeFromTridiagonal_impl(ev, subdiag, 30, true, T) != Eigen::Success)
      throw NumericalError("calibration: eigendecomposition of the Newton matrix failed");
    ev *= scale;
  }
  const double lmax = ev.cwiseAbs().maxCoeff();
  const double tol = 256 * DBL_EPSILON * lmax;
  Eigen::VectorXd y = T.transpose() * b;
  for (Eigen::Index j = 0; j < y.size(); ++j) y[j] = ev[j] > tol ? y[j] / ev[j] : 0.0;
  return T * y;
}

}  // namespace

CalibrationResult calibrate_exact(const Context& ctx, const ConstraintSystem& sys, const ExactOptions& o) {
  const CsrMatrix& A = sys.A;
  const index_t n = A.cols, k = A.rows;
  // Distributed (§8): A and design_weights hold this rank's records; collectives first, so that a
  // failure on one rank below is raised on every rank instead of leaving the others waiting.
  Communicator& comm = ctx.communicator();
  const calib::RecordLayout rl = calib::record_layout(comm, n, "calibrate");
  calib::require_same(comm, static_cast<std::uint64_t>(k), "calibrate: the number of constraints");
  Communicator* fold_comm = rl.distributed ? &comm : nullptr;
  if (rl.distributed && ctx.kind() == DeviceKind::cuda)
    throw InvalidArgument("calibrate: distributed calibration runs on CPU contexts only");
  const std::vector<std::int64_t> support = calib::global_row_support(comm, A);
  std::optional<detail::DistanceMath> dist_checked;
  detail::agreed(comm, [&] {
    if (static_cast<index_t>(sys.design_weights.size()) != n)
      throw InvalidArgument("calibrate: design_weights has " + std::to_string(sys.design_weights.size()) +
                            " values, expected one per record (" + std::to_string(n) + ")");
    // G(w/d) is defined for d >= 0; a negative d makes T indefinite and pinv discards the
    // negative part, so the "solution" would be silently wrong (docs/calibration.md §1).
    for (index_t i = 0; i < n; ++i)
      if (sys.design_weights[i] < 0)
        throw InvalidArgument("calibrate: the design weight of record " + std::to_string(rl.offset + i) + " is " +
                              fmt(sys.design_weights[i]) +
                              "; the exact calibrators need design weights >= 0 (the gradient calibrator floors "
                              "negative ones)");
    if (!(o.lower <= 1 && 1 <= o.upper))
      throw InvalidArgument("calibrate: bounds on g must satisfy lower <= 1 <= upper (got " + fmt(o.lower) +
                            ", " + fmt(o.upper) + ")");
    if (o.max_iterations < 1) throw InvalidArgument("calibrate: max_iterations must be >= 1");
    if (!(o.epsilon > 0)) throw InvalidArgument("calibrate: epsilon must be > 0");
    if (!o.variance.empty() && static_cast<index_t>(o.variance.size()) != n &&
        static_cast<index_t>(o.variance.size()) != k)
      throw InvalidArgument("calibrate: variance must have one value per record (" + std::to_string(n) +
                            ") or one per constraint (" + std::to_string(k) + ")");
    dist_checked = make_distance(o.calfun, o.lower, o.upper);
  });
  const detail::DistanceMath dist = *dist_checked;

  CalibrationResult res;
  res.record_offset = rl.offset;
  res.total_records = rl.total;
  // Drop zero-row zero-target constraints; a zero row with a non-zero target is infeasible. A row
  // is active when some record on some rank has an entry in it (all-reduced supports).
  std::vector<index_t> active_rows, active_of(static_cast<std::size_t>(k), -1);
  for (index_t r = 0; r < k; ++r) {
    if (support[static_cast<std::size_t>(r)] == 0) {
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

  // One declaration for the whole run (calib::exact_layout), planned before anything is allocated.
  std::optional<calib::ExactLayout> layout_slot;
  std::optional<detail::OperationScope> scope;
  std::optional<detail::Workspace> ws_slot;
  detail::agreed(comm, [&] {
    layout_slot.emplace(calib::exact_layout(ctx, sys, o, ka));
    res.plan = calib::plan_calibration(layout_slot->decl, ctx, n);
    scope.emplace(ctx);
    ws_slot.emplace(ctx.workspace(), layout_slot->decl, res.plan.rows, ctx.compute_stream());
  });
  const calib::ExactLayout& layout = *layout_slot;
  const detail::Workspace& ws = *ws_slot;

  std::vector<double> S(static_cast<std::size_t>(k)), eta(static_cast<std::size_t>(k), 0.0);
  // σ²_i: all 1, per record, or x_iᵀ v for a length-k v (§4.1); must be positive and finite. On
  // CUDA Aᵀ is built on the host for the upload and σ² is computed there too.
  CsrMatrix At_host;
  calib::CsrView At;
  if (layout.on_device) {
    At_host = transpose(A);
    At = calib::csr_view(At_host);
  } else {
    At = calib::transpose_into(A, ws, layout.cpu.At);
  }
  std::vector<double> sigma2_host;
  double* sigma2 = nullptr;
  if (!o.variance.empty()) {
    if (layout.on_device) sigma2_host.resize(static_cast<std::size_t>(n));
    sigma2 = layout.on_device ? sigma2_host.data() : ws.get(layout.cpu.sigma2);
    if (static_cast<index_t>(o.variance.size()) == n && n != k)
      std::copy(o.variance.begin(), o.variance.end(), sigma2);
    else
      calib::transpose_apply(At, o.variance.data(), 0, n, sigma2);
  }
  detail::agreed(comm, [&] {
    for (index_t i = 0; sigma2 && i < n; ++i)
      if (!(sigma2[i] > 0 && std::isfinite(sigma2[i])))
        throw InvalidArgument("calibrate: variance gives sigma^2 = " + fmt(sigma2[i]) + " for record " +
                              std::to_string(rl.offset + i) + "; it must be positive and finite");
  });

  // T lives in the workspace on the CPU; on CUDA it stays in the device workspace (T_data null:
  // newton_matrix does not download it) and the passes solve it there (newton_device.hpp).
  std::unique_ptr<calib::ExactPasses> passes;
  double* T_data = nullptr;
  if (layout.on_device) {
    passes = calib::make_cuda_exact_passes(ctx, ws, layout.device, A, At_host, active_rows, sys.design_weights,
                                           sigma2_host, dist);
  } else {
    passes = std::make_unique<CpuExactPasses>(ws, layout.cpu, A, At, active_rows, active_of, sys.design_weights,
                                              sigma2, dist, fold_comm, sys.margin_offsets);
    T_data = ws.get(layout.cpu.T);
  }
  double best_ratio = INFINITY;  // the best iterate is what force returns on failure
  auto keep_if_best = [&](double r) {
    if (r < best_ratio) {
      best_ratio = r;
      passes->keep_best();
    }
  };
  auto recompute = [&]() -> bool { return passes->recompute(eta.data()); };
  auto misfit_at_g = [&](Eigen::VectorXd& misfit) {
    passes->estimate_weights(S.data());
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
  auto build_T = [&]() { passes->newton_matrix(T_data); };
  // The caller's hook; distributed, one rank's interrupt stops every rank after the same step.
  auto report = [&](const CalibrationProgress& p) {
    if (!o.progress) return;
    if (rl.distributed)
      detail::agreed(comm, [&] { o.progress(p); });
    else
      o.progress(p);
  };
  Eigen::Map<Eigen::MatrixXd> Tm(T_data, ka, ka);  // symmetric: row/column order irrelevant
  Eigen::VectorXd misfit(ka);
  // An inconsistency on the dependent constraints that the convergence test cannot see (a
  // thousandth of epsilon on the row's own ratio) plus rounding of the totals' size: below it the
  // reduced Cholesky step stands; above it (targets that disagree) the step is pinv's least squares.
  Eigen::VectorXd allowance(ka);
  {
    double largest = 0;
    for (index_t a = 0; a < ka; ++a) largest = std::max(largest, std::fabs(sys.targets[active_rows[a]]));
    for (index_t a = 0; a < ka; ++a)
      allowance[a] = 1e-3 * o.epsilon * (1 + std::fabs(sys.targets[active_rows[a]])) + 1e-13 * (1 + largest);
  }
  // Δ for T Δ = b (T just built): factor in place dropping dependent constraints; when that cannot
  // stand for pinv (non-finite pivot, or inconsistent dropped rows) rebuild T and take pinv's step.
  auto newton_step = [&](const Eigen::VectorXd& b) -> Eigen::VectorXd {
    if (layout.on_device) {  // the same step on the device: potrf, or pinv for a singular T
      Eigen::VectorXd delta(ka);
      passes->newton_solve(b.data(), delta.data());
      return delta;
    }
    const calib::NewtonFactor f = calib::factor_dropping_dependent(Tm);
    if (f.ok) {
      calib::NewtonSolve s = calib::solve_with_factor(Tm, f, b, allowance);
      if (s.worst_inconsistency_ratio <= 1) return std::move(s.delta);
    }
    build_T();
    return pinv_solve(Tm, b);
  };

  recompute();
  double prescale = 1;
  const bool greg = o.calfun == CalFun::linear && std::isinf(o.lower) && std::isinf(o.upper);
  if (!greg && ka > 0) {
    passes->estimate_design(S.data());  // t̂ = A d
    double rmin = INFINITY, rsum = 0;
    for (index_t a = 0; a < ka; ++a) {
      const double r = sys.targets[active_rows[a]] / S[active_rows[a]];
      rmin = std::min(rmin, r);
      rsum += r;
    }
    if (rmin > 20) {
      prescale = rsum / static_cast<double>(ka);
      passes->scale_design(prescale);
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
    const Eigen::VectorXd delta = newton_step(misfit);
    for (index_t a = 0; a < ka; ++a) eta[active_rows[a]] = delta[a];
    recompute();
    misfit_at_g(misfit);
    ratio = ratio_of(misfit);
    res.history.push_back({1, "newton", ratio, {}});
    report(CalibrationProgress{"newton", 1, 1, ratio});
    failed = !(ratio < o.epsilon);
  } else {
    for (;;) {
      build_T();
      misfit_at_g(misfit);
      Eigen::VectorXd delta = newton_step(misfit);
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
      report(CalibrationProgress{"newton", iter, o.max_iterations, ratio});
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
    passes->restore_best();
    res.max_ratio = ratio;
  }
  passes->download_g(res.g.data());
  for (index_t i = 0; i < n; ++i) {
    res.g[i] = res.g[i] * prescale;
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
    TrimResult tr = trim_g_over(comm, res.g, sys.design_weights, o.trim->first, o.trim->second);
    res.g = std::move(tr.values);
    for (index_t i = 0; i < n; ++i) res.weights[i] = sys.design_weights[i] * res.g[i];
    trim_warnings = std::move(tr.warnings);
  }
  res.diagnostics = diagnose(ctx, sys, res.weights, {}, o.lower, o.upper);
  for (auto& w : trim_warnings) res.diagnostics.warnings.push_back(std::move(w));
  if (!res.dropped_constraints.empty())
    res.diagnostics.warnings.push_back(std::to_string(res.dropped_constraints.size()) +
                                       " zero-row constraint(s) with target 0 were dropped");
  passes.reset();
  ws_slot.reset();
  res.memory = calib::memory_report(ctx, res.plan, scope->finish());
  return res;
}

TrimResult trim_g(const std::vector<double>& g, const std::vector<double>& d, double a, double b) {
  if (g.size() != d.size()) throw InvalidArgument("trim: g and design weights differ in length");
  if (!(a <= b)) throw InvalidArgument("trim: lower " + fmt(a) + " must be <= upper " + fmt(b));
  return trim_g_over(*single_process(), g, d, a, b);
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
