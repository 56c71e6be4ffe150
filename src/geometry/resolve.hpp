#pragma once
// scale_cost and epsilon resolution (docs/sinkhorn.md §1-§2), once per solve: closed forms for
// sqeuclidean from the norm statistics taken at upload, else one cost-statistics pass over all n*m
// costs (moments, or the exact median), whose results the problem keeps for later solves.
#include "core/workspace.hpp"
#include "geometry/cost_quantile.hpp"
#include "geometry/problem_impl.hpp"
#include "otcal/geometry.hpp"

namespace otcal::detail {

// Which passes a resolution still needs on this problem (none when cached or in closed form).
struct StatsNeeds {
  bool moments = false;
  bool median = false;
};
StatsNeeds stats_needs(Problem::Impl& p, const EpsilonSpec& eps);

// The pass scratch, declared into the calling operation's workspace.
template <class T>
struct StatsScratch {
  BufferId<double> partials;         // 3 per row of x (moments)
  PercentileScratch<T> percentile;   // CPU backend, median only
};
template <class T>
StatsScratch<T> declare_stats_scratch(WorkspaceDecl& decl, const Problem::Impl& p, StatsNeeds needs);

// Runs the needed passes with the scratch of `ws`, then resolves the scale and epsilon. Throws
// InvalidArgument when either is not a finite positive number.
template <class T>
ResolvedGeometry resolve(Problem::Impl& p, const EpsilonSpec& eps, StatsNeeds needs, const Workspace& ws,
                         const StatsScratch<T>& scratch, index_t tile_rows);

// The cost-statistics pass alone: moments of all n*m unscaled costs (cached on the problem).
template <class T>
CostMoments cost_moments(Problem::Impl& p, const Workspace& ws, const StatsScratch<T>& scratch, index_t tile_rows);

}  // namespace otcal::detail
