#pragma once
// Online log-domain Sinkhorn between point clouds, with OTT-JAX semantics (docs/sinkhorn.md).
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "otcal/array.hpp"
#include "otcal/context.hpp"
#include "otcal/geometry.hpp"
#include "otcal/planner.hpp"
#include "otcal/problem.hpp"

namespace otcal {

enum class OnDivergence { error, return_result };

struct SinkhornProgress {
  index_t iteration;   // iterations done so far
  double error;        // last computed marginal error (+inf before the first, below min_iterations)
  double iterations_per_second;
};

struct SinkhornOptions {
  std::optional<double> epsilon;      // absolute target, or the factor when relative_epsilon is set
  RelativeEpsilon relative_epsilon = RelativeEpsilon::none;
  double epsilon_init = 1.0;          // scheduler: eps_t = max(init * decay^t, 1) * eps
  double epsilon_decay = 1.0;
  double tau_a = 1.0, tau_b = 1.0;    // (0, 1]; < 1 is unbalanced
  double threshold = 1e-3;
  double norm_error = 1.0;
  index_t inner_iterations = 10;
  index_t min_iterations = 0;
  index_t max_iterations = 2000;
  bool parallel_dual_updates = false;
  OnDivergence on_divergence = OnDivergence::error;
  std::optional<index_t> batch_size;  // unset: planned from the memory budget
  // Unset: the problem's precision (float64 for the convenience overload that uploads).
  std::optional<DType> precision;
  // Called after every block of inner_iterations (also below min_iterations, where no error is
  // computed): the place to report progress or to stop the solve by throwing.
  std::function<void(const SinkhornProgress&)> progress;
};

// A solve: the potentials (what apply, marginal and sparsify need; the base class) and the run
// report.
struct SinkhornResult : Potentials {
  // One entry per block of inner_iterations actually run (n_iters / inner_iterations entries, not
  // max_iterations / inner_iterations: the history is bounded by what was computed); +inf = not
  // computed (a block before min_iterations).
  std::vector<double> errors;
  bool diverged = false;
  index_t n_iters = 0;
  double threshold = 0;
  index_t inner_iterations = 0;
  double tau_a = 1, tau_b = 1;
  index_t n = 0, m = 0, d = 0;
  index_t batch_size = 0;        // tile rows used
  TilePlan plan{};
  MemoryReport memory{};
  std::string device;
  int ranks = 1;                 // processes the solve was sharded over (docs/distributed.md)
  double communication_s = 0;    // in collectives, waiting for other ranks included
  double elapsed_s = 0;
  std::vector<std::string> warnings;

  const Potentials& potentials() const { return *this; }
};

// Solves on a resident problem. Throws InvalidArgument on bad options, NumericalError on
// divergence (unless on_divergence = return_result). Non-convergence is a warning.
SinkhornResult sinkhorn(const Problem& problem, const SinkhornOptions& options = {});

// Resolve the scale s and target epsilon only (one cost-statistics pass at most, kept by the problem).
ResolvedGeometry resolve_geometry(const Problem& problem, const SinkhornOptions& options);

// P v from the potentials, online: axis = 1 maps V [m, k] -> [n, k] (P V, moscot "pull");
// axis = 0 maps V [n, k] -> [m, k] (P^T V, moscot "push"). Row-major, signed values allowed.
// `plan`, when given, receives the workspace plan the call used.
std::vector<double> apply_transport(const Problem& problem, const Potentials& potentials, const ConstMatrix& v,
                                    int axis, std::optional<index_t> batch_size = {}, TilePlan* plan = nullptr);

// marginal(axis = 1) = P 1 (length n); marginal(axis = 0) = P^T 1 (length m).
std::vector<double> marginal(const Problem& problem, const Potentials& potentials, int axis,
                             std::optional<index_t> batch_size = {}, TilePlan* plan = nullptr);

// Convenience overloads for one call: upload a problem (in options.precision, or the potentials'
// precision), run, release it.
SinkhornResult sinkhorn(const Context& ctx, const PointCloud& geom, const ConstVector& a, const ConstVector& b,
                        const SinkhornOptions& options = {});
ResolvedGeometry resolve_geometry(const Context& ctx, const PointCloud& geom, const SinkhornOptions& options);
std::vector<double> apply_transport(const Context& ctx, const PointCloud& geom, const Potentials& potentials,
                                    const ConstMatrix& v, int axis, std::optional<index_t> batch_size = {});
std::vector<double> marginal(const Context& ctx, const PointCloud& geom, const Potentials& potentials, int axis,
                             std::optional<index_t> batch_size = {});

}  // namespace otcal
