#include "geometry/resolve.hpp"

#include <cmath>
#include <sstream>

#include "core/collective.hpp"
#include "otcal/errors.hpp"

namespace otcal::detail {

namespace {

constexpr double kDefaultEpsilonScale = 0.05;

std::string num(double v) {
  std::ostringstream os;
  os.precision(6);
  os << v;
  return os.str();
}

bool needs_moment_pass(const GeometryOptions& g, const EpsilonSpec& e) {
  const bool sq = g.cost.kind == CostKind::sqeuclidean;
  const bool eps_needs_std = !e.epsilon ? e.relative != RelativeEpsilon::mean : e.relative == RelativeEpsilon::std;
  const bool eps_needs_mean = e.relative == RelativeEpsilon::mean;
  const bool scale_needs_pass =
      (g.scale.kind == ScaleCost::Kind::mean && !sq) || g.scale.kind == ScaleCost::Kind::max_cost;
  return scale_needs_pass || eps_needs_std || (eps_needs_mean && !sq);
}

}  // namespace

StatsNeeds stats_needs(Problem::Impl& p, const EpsilonSpec& eps) {
  std::lock_guard<std::mutex> lock(p.cache_mutex);
  StatsNeeds n;
  n.moments = needs_moment_pass(p.geometry, eps) && !p.moments;
  n.median = p.geometry.scale.kind == ScaleCost::Kind::median && !p.median;
  return n;
}

template <class T>
StatsScratch<T> declare_stats_scratch(WorkspaceDecl& decl, const Problem::Impl& p, StatsNeeds needs) {
  StatsScratch<T> s;
  s.partials = decl.add<double>("cost_moment_partials", needs.moments ? 3 * static_cast<std::size_t>(p.shape.n) : 0);
  s.percentile = declare_percentile_scratch<T>(decl, p.shape, needs.median && p.ctx.kind() == DeviceKind::cpu);
  return s;
}

template <class T>
CostMoments cost_moments(Problem::Impl& p, const Workspace& ws, const StatsScratch<T>& scratch, index_t tile_rows) {
  {
    std::lock_guard<std::mutex> lock(p.cache_mutex);
    if (p.moments) return *p.moments;
  }
  // Each rank sweeps the rows it owns. The CPU backend leaves one (sum, sum of squares, max) per
  // row in the host workspace and sums them in row order: folding every rank's rows through the
  // rank chain continues that sum, so the moments are the one-process bits. A device rank folds
  // its own total (deterministic, the same on every rank).
  const ResidentClouds<T>& rc = p.resident<T>().clouds;
  double* const partials = ws.get(scratch.partials);
  CostMoments m = p.backend<T>().cost_moments(rc.cx_own, rc.cy, rc.cost, tile_rows, partials);
  Communicator& comm = p.ctx.communicator();
  if (comm.size() > 1) {
    const bool per_row = p.ctx.kind() == DeviceKind::cpu;
    std::vector<double> running{0.0, 0.0};
    ordered_fold(comm, running, [&](std::vector<double>& acc) {
      if (!per_row) {
        acc[0] += m.sum;
        acc[1] += m.sum_sq;
        return;
      }
      for (index_t i = 0; i < rc.cx_own.n; ++i) {
        acc[0] += partials[3 * i];
        acc[1] += partials[3 * i + 1];
      }
    });
    m.sum = running[0];
    m.sum_sq = running[1];
    m.max_abs = comm.all_max(m.max_abs);
  }
  std::lock_guard<std::mutex> lock(p.cache_mutex);
  p.moments = m;
  return m;
}

template <class T>
ResolvedGeometry resolve(Problem::Impl& p, const EpsilonSpec& e, StatsNeeds needs, const Workspace& ws,
                         const StatsScratch<T>& scratch, index_t tile_rows) {
  const Shape& s = p.shape;
  const Cost& cost = p.geometry.cost;
  const ScaleCost& sc = p.geometry.scale;
  const bool sq = cost.kind == CostKind::sqeuclidean;
  const double nm = static_cast<double>(s.n) * static_cast<double>(s.m);
  const NormStats& ns = p.norms;

  const bool pass = needs_moment_pass(p.geometry, e);
  CostMoments mom;
  if (pass) mom = needs.moments ? cost_moments<T>(p, ws, scratch, tile_rows) : *p.moments;
  const double closed_mean = sq ? ns.mean_sq_x + ns.mean_sq_y - 2 * ns.dot_means : 0;
  const double mean_c = sq && !pass ? closed_mean : mom.sum / nm;

  ResolvedGeometry r;
  switch (sc.kind) {
    case ScaleCost::Kind::value: r.scale = sc.value; break;
    case ScaleCost::Kind::mean: r.scale = sq ? closed_mean : mom.sum / nm; break;
    case ScaleCost::Kind::max_cost: r.scale = mom.max_abs; break;
    case ScaleCost::Kind::max_norm:
      if (!sq)
        throw InvalidArgument("scale_cost max_norm needs a cost with a norm (sqeuclidean), not " + cost.name() +
                              "; use mean or max_cost");
      r.scale = std::max(ns.max_sq_x, ns.max_sq_y);
      break;
    case ScaleCost::Kind::max_bound:
      if (!sq)
        throw InvalidArgument("scale_cost max_bound is defined for sqeuclidean only, not " + cost.name() +
                              "; use mean or max_cost");
      r.scale = ns.max_sq_x + ns.max_sq_y + 2 * std::sqrt(ns.max_sq_x * ns.max_sq_y);
      break;
    case ScaleCost::Kind::median: {  // exact numpy median of all n*m unscaled costs (docs/sparsify.md §7.1)
      if (needs.median) {
        const bool host = p.ctx.kind() == DeviceKind::cpu;
        const double med = cost_percentile<T>(p.ctx.communicator(), p.backend<T>(), p.resident<T>().clouds, s, 50.0,
                                              host ? ws.get(scratch.percentile.block) : nullptr,
                                              host ? ws.get(scratch.percentile.bins) : nullptr);
        std::lock_guard<std::mutex> lock(p.cache_mutex);
        p.median = med;
      }
      r.scale = *p.median;
      break;
    }
  }
  if (!(r.scale > 0) || !std::isfinite(r.scale))
    throw InvalidArgument("scale_cost " + sc.name() + " resolved to " + num(r.scale) +
                          " (are all points identical?); pass a positive number instead");

  const double mean_C = mean_c / r.scale;
  const double std_C = std::sqrt(std::max(0.0, mom.sum_sq / nm / (r.scale * r.scale) - mean_C * mean_C));
  if (!e.epsilon && e.relative == RelativeEpsilon::none) r.epsilon = kDefaultEpsilonScale * std_C;
  else if (e.relative == RelativeEpsilon::mean) r.epsilon = e.epsilon.value_or(kDefaultEpsilonScale) * mean_C;
  else if (e.relative == RelativeEpsilon::std) r.epsilon = e.epsilon.value_or(kDefaultEpsilonScale) * std_C;
  else r.epsilon = *e.epsilon;
  if (!(r.epsilon > 0) || !std::isfinite(r.epsilon))
    throw InvalidArgument("epsilon resolved to " + num(r.epsilon) +
                          " (the scaled cost has no spread); pass an absolute --epsilon > 0");
  return r;
}

#define OTCAL_INSTANTIATE(T)                                                                                    \
  template StatsScratch<T> declare_stats_scratch<T>(WorkspaceDecl&, const Problem::Impl&, StatsNeeds);          \
  template CostMoments cost_moments<T>(Problem::Impl&, const Workspace&, const StatsScratch<T>&, index_t);       \
  template ResolvedGeometry resolve<T>(Problem::Impl&, const EpsilonSpec&, StatsNeeds, const Workspace&,        \
                                       const StatsScratch<T>&, index_t);
OTCAL_INSTANTIATE(float)
OTCAL_INSTANTIATE(double)
#undef OTCAL_INSTANTIATE

}  // namespace otcal::detail
