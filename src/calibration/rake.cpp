// Iterative raking with R survey::rake() semantics (docs/calibration.md §4.6): sweeps of
// post-stratification per margin until the joint table of all margins changes by less than epsilon.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numeric>

#include "calibration/workspace_layouts.hpp"
#include "core/operation.hpp"
#include "otcal/calibration.hpp"
#include "otcal/errors.hpp"

namespace otcal {

CalibrationResult rake(const Context& ctx, const ConstraintSystem& sys, const RakeOptions& o) {
  const CsrMatrix& A = sys.A;
  const index_t n = A.cols;
  // §8: raking compares joint cells of all margins, which need a global numbering of the cells;
  // not sharded yet (calibrate_exact with CalFun::raking is).
  if (ctx.distributed())
    throw InvalidArgument("rake: not available on a distributed context yet; use calibrate_exact with CalFun::raking");
  if (o.max_sweeps < 1) throw InvalidArgument("rake: max_sweeps must be >= 1");
  if (!(o.epsilon > 0)) throw InvalidArgument("rake: epsilon must be > 0");
  if (sys.margin_offsets.size() < 2) throw InvalidArgument("rake: the constraint system has no marginal targets");
  if (static_cast<index_t>(sys.design_weights.size()) != n)
    throw InvalidArgument("rake: design_weights must have one value per record");
  for (index_t i = 0; i < n; ++i)  // a ratio of cell totals means nothing with negative weights in them
    if (sys.design_weights[i] < 0)
      throw InvalidArgument("rake: the design weight of record " + std::to_string(i) + " is negative (" +
                            std::to_string(sys.design_weights[i]) + "); raking needs design weights >= 0");
  const calib::RakeLayout layout = calib::rake_layout(ctx, sys);
  CalibrationResult res;
  res.plan = calib::plan_calibration(layout.decl, ctx, n);
  detail::OperationScope scope(ctx);
  const detail::Workspace ws(calib::host_scratch(ctx), layout.decl, res.plan.rows);
  double* w = ws.get(layout.weights);
  std::copy(sys.design_weights.begin(), sys.design_weights.end(), w);
  double dsum = 0;
  for (index_t i = 0; i < n; ++i) dsum += w[i];
  const double eps_abs = o.epsilon >= 1 ? o.epsilon : o.epsilon * dsum;
  auto cell_total = [&](index_t r) {
    double s = 0;
    for (std::int64_t p = A.indptr[r]; p < A.indptr[r + 1]; ++p) s += A.values[p] * w[A.index(p)];
    return s;
  };

  // The joint cell of every record: its categories in all margins together, numbered densely
  // (R compares svytable(~ all margin variables) between sweeps). Margins are combined one at a
  // time, renumbering after each so that the keys stay below n x (cells of one margin + 1).
  std::int64_t* cell = ws.get(layout.joint_cell);
  std::int64_t* key = ws.get(layout.joint_key);
  std::int64_t* order = ws.get(layout.joint_order);
  std::fill(cell, cell + n, std::int64_t{0});
  index_t n_cells = n > 0 ? 1 : 0;
  for (std::size_t m = 0; m + 1 < sys.margin_offsets.size(); ++m) {
    const index_t first = sys.margin_offsets[m], rows = sys.margin_offsets[m + 1] - first;
    const std::int64_t radix = rows + 1;  // the last digit: in none of the margin's rows
    for (index_t i = 0; i < n; ++i) key[i] = cell[i] * radix + rows;
    for (index_t r = 0; r < rows; ++r)
      for (std::int64_t p = A.indptr[first + r]; p < A.indptr[first + r + 1]; ++p)
        key[A.index(p)] = cell[A.index(p)] * radix + r;
    std::iota(order, order + n, std::int64_t{0});
    std::sort(order, order + n, [&](std::int64_t a, std::int64_t b) { return key[a] < key[b]; });
    std::int64_t next = -1;
    for (index_t q = 0; q < n; ++q) {
      if (q == 0 || key[order[q]] != key[order[q - 1]]) ++next;
      cell[order[q]] = next;
    }
    n_cells = next + 1;
  }
  double* previous = ws.get(layout.joint_previous);
  double* now = ws.get(layout.joint_now);
  auto joint_totals = [&](double* out) {  // records in ascending order: deterministic
    std::fill(out, out + n_cells, 0.0);
    for (index_t i = 0; i < n; ++i) out[cell[i]] += w[i];
  };
  joint_totals(previous);

  int sweep = 0;
  bool converged = false;
  while (sweep < o.max_sweeps) {
    ++sweep;
    for (std::size_t m = 0; m + 1 < sys.margin_offsets.size(); ++m)
      for (index_t r = sys.margin_offsets[m]; r < sys.margin_offsets[m + 1]; ++r) {  // cells are disjoint
        const double tot = cell_total(r), t = sys.targets[r];
        if (tot == 0) {
          if (t > 0)
            throw InvalidArgument("rake: cell '" + sys.names[r] + "' has a positive target but zero weight");
          continue;
        }
        const double f = t / tot;
        for (std::int64_t p = A.indptr[r]; p < A.indptr[r + 1]; ++p) w[A.index(p)] *= f;
      }
    joint_totals(now);
    double delta = 0;
    for (index_t c = 0; c < n_cells; ++c) delta = std::max(delta, std::fabs(now[c] - previous[c]));
    std::swap(previous, now);
    res.history.push_back({sweep, "rake", delta, {}});
    if (o.progress) o.progress(CalibrationProgress{"rake", sweep, o.max_sweeps, delta});
    if (delta < eps_abs) {
      converged = true;
      break;
    }
  }
  res.converged = converged;
  res.n_iterations = sweep;
  res.weights.assign(w, w + n);
  res.g.resize(static_cast<std::size_t>(n));
  for (index_t i = 0; i < n; ++i) res.g[i] = sys.design_weights[i] != 0 ? w[i] / sys.design_weights[i] : 0.0;
  res.diagnostics = diagnose(sys, res.weights);
  if (!converged) {
    res.diagnostics.warnings.push_back("Raking did not converge after " + std::to_string(sweep) + " iterations");
    ctx.warn(res.diagnostics.warnings.back());
  }
  res.memory = calib::memory_report(ctx, res.plan, scope.finish());
  return res;
}

}  // namespace otcal
