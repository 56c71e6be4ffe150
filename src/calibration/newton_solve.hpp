#pragma once
// The Newton step of the exact calibrators, T Δ = b with T = A D Aᵀ (D = diag(d F'/σ²) >= 0,
// docs/calibration.md §4.3), solved by a Cholesky factorization that drops dependent constraints
// as it meets them, in T's own (budgeted) storage.
//
// Why dropping gives the pseudo-inverse's weights. Marginal indicator rows of one categorical
// column sum to the all-ones row, so with two or more categorical columns T is singular; the old
// step was Δ = pinv(T) b. Factor T column by column without pivoting: the pivot of column j is the
// squared distance of row j of A D^½ from the span of the kept rows before it, so it is 0 (up to
// rounding) exactly when constraint j depends on earlier ones over the records with D_i > 0.
// Those columns are dropped (Δ_j = 0) and the kept ones form a positive definite T_KK, solved
// exactly. The result solves T Δ = b whenever b is consistent (b ∈ range(T)): each dropped row is
// a combination of kept rows, and so is its b_j. For two solutions Δ1, Δ2 of a consistent system,
// (Δ1-Δ2)ᵀ A D Aᵀ (Δ1-Δ2) = 0, i.e. D^½ Aᵀ Δ1 = D^½ Aᵀ Δ2: Aᵀ Δ, hence u, g and the weights, is
// the same on every record with D_i > 0 as pinv's minimum-norm Δ gives. b is consistent when the
// targets are (margins of the same total): the misfit b = t - A w has yᵀ b = yᵀ t for every
// dependency yᵀ A = 0. The solver measures the inconsistency on the dropped rows during the forward
// substitution (b_j - (T Δ)_j) and reports it, so the caller can fall back to the pseudo-inverse
// (least squares) when the targets disagree by more than the convergence test could ignore.
//
// Dependencies are found in every factorization at no extra cost (a dropped pivot is a comparison
// inside the same O(ka³/3) pass), so a dependency that appears later (a logit record reaching a
// bound, F' = 0) is found in the step where it appears. The drop test is relative to the column's
// own diagonal (a dependent pivot is rounding of that size) with an absolute floor of
// 256·DBL_EPSILON·trace(T), the old eigenvalue cut-off's scale.
//
// Blocked like Eigen's LLT: an unblocked left-looking panel of kPanel columns, then the trailing
// rank-kPanel update of the lower triangle (Eigen's blocked selfadjoint rank update). Only the lower
// triangle of the column-major T is read and written; the factor L overwrites it. O(ka) scratch.
#include <Eigen/Dense>

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <vector>

#include "otcal/types.hpp"

namespace otcal::calib {

struct NewtonFactor {
  std::vector<char> dropped;  // per column: 1 = dependent constraint, Δ_j = 0
  index_t n_dropped = 0;
  bool ok = false;            // false: a non-finite pivot (T not usable)
};

// Drop when the Schur pivot is below this fraction of the column's diagonal: dependent pivots are
// rounding, ~ka·DBL_EPSILON of it at worst; a kept near-dependent column would amplify rounding.
inline constexpr double kDropRelative = 1e-9;
inline constexpr Eigen::Index kPanel = 64;

// Lower triangle of T (column-major, n x n) -> L with L Lᵀ = T on the kept columns; dropped
// columns of L are zero.
inline NewtonFactor factor_dropping_dependent(Eigen::Map<Eigen::MatrixXd> T) {
  const Eigen::Index n = T.rows();
  NewtonFactor f;
  f.dropped.assign(static_cast<std::size_t>(n), 0);
  Eigen::VectorXd diag0 = T.diagonal();
  const double absolute = 256 * DBL_EPSILON * diag0.cwiseAbs().sum();
  for (Eigen::Index j0 = 0; j0 < n; j0 += kPanel) {
    const Eigen::Index jb = std::min(kPanel, n - j0);
    for (Eigen::Index j = j0; j < j0 + jb; ++j) {
      const Eigen::Index below = n - j;
      if (j > j0)  // the panel's earlier columns (earlier panels came through the trailing update)
        T.col(j).tail(below).noalias() -= T.block(j, j0, below, j - j0) * T.row(j).segment(j0, j - j0).transpose();
      const double d = T(j, j);
      if (!std::isfinite(d)) return f;
      if (!(d > std::max(kDropRelative * diag0[j], absolute))) {
        f.dropped[static_cast<std::size_t>(j)] = 1;
        ++f.n_dropped;
        T.col(j).tail(below).setZero();
        continue;
      }
      const double s = std::sqrt(d);
      T(j, j) = s;
      T.col(j).tail(below - 1) /= s;
    }
    const Eigen::Index rest = n - j0 - jb;
    if (rest > 0)
      T.bottomRightCorner(rest, rest).selfadjointView<Eigen::Lower>().rankUpdate(T.block(j0 + jb, j0, rest, jb), -1);
  }
  f.ok = true;
  return f;
}

// Δ from the factor: forward and back substitution over the kept columns, Δ_j = 0 on dropped ones.
// `inconsistency[j]` (dropped j only, else 0) is |b_j - (T Δ)_j| and `scale[j]` the size of the
// terms it came from (|b_j| + Σ_k |L_jk y_k|), so rounding reads as a tiny ratio.
struct NewtonSolve {
  Eigen::VectorXd delta;
  double worst_inconsistency_ratio = 0;  // max over dropped j of inconsistency / max(scale, allowance)
};

// `allowance[j]`: an inconsistency the caller can ignore outright (the convergence test could not
// see it); the ratio is taken against max(1e-8·scale, allowance).
inline NewtonSolve solve_with_factor(const Eigen::Map<Eigen::MatrixXd>& L, const NewtonFactor& f,
                                     const Eigen::VectorXd& b, const Eigen::VectorXd& allowance) {
  const Eigen::Index n = L.rows();
  Eigen::VectorXd x = b, mag = b.cwiseAbs();
  NewtonSolve s;
  for (Eigen::Index j = 0; j < n; ++j) {
    if (f.dropped[static_cast<std::size_t>(j)]) {
      const double bound = std::max(1e-8 * mag[j], allowance[j]);
      const double r = std::fabs(x[j]);
      s.worst_inconsistency_ratio = std::max(s.worst_inconsistency_ratio, bound > 0 ? r / bound : (r > 0 ? INFINITY : 0));
      x[j] = 0;
      continue;
    }
    x[j] /= L(j, j);
    const Eigen::Index below = n - j - 1;
    x.tail(below).noalias() -= L.col(j).tail(below) * x[j];
    mag.tail(below) += L.col(j).tail(below).cwiseAbs() * std::fabs(x[j]);
  }
  for (Eigen::Index j = n - 1; j >= 0; --j) {
    if (f.dropped[static_cast<std::size_t>(j)]) continue;  // x[j] stays 0
    const Eigen::Index below = n - j - 1;
    x[j] = (x[j] - L.col(j).tail(below).dot(x.tail(below))) / L(j, j);
  }
  s.delta = std::move(x);
  return s;
}

}  // namespace otcal::calib
