#pragma once
// Online log-domain Sinkhorn between point clouds, with OTT-JAX semantics (docs/sinkhorn.md).
#include <cstdint>
#include <functional>
#include <limits>
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

// Over-relaxation of the potential updates, OTT-JAX's Momentum (docs/sinkhorn.md §8): each new
// potential is (1 - w) * old + w * update. The weight w is `value` throughout when start = 0;
// with start > 0 it is `value` before iteration `start` and, from there on, Lehmann et al.'s
// adaptive weight 2 / (1 + sqrt(1 - r^(1/inner_iterations))), r = min(e1 / e2, 0.99) the ratio of
// the errors of the two blocks that ended last before `start`, provided e1 < error_threshold.
// OTT's own inner_iterations field is always the solver's, so it is not repeated here.
struct Momentum {
  index_t start = 0;
  double error_threshold = std::numeric_limits<double>::infinity();
  double value = 1.0;  // in (0, 2); 1 with start = 0 is plain Sinkhorn
  bool enabled() const { return start > 0 || value != 1.0; }
};

// Anderson acceleration of f, OTT-JAX's AndersonAcceleration (docs/sinkhorn.md §8): every
// refresh_every iterations past the first `memory`, f is replaced by the combination of the last
// `memory` updates whose weights solve the ridge-regularised least-squares problem on their
// residuals. Keeps 2 * memory * n values of history in the solve's workspace.
struct AndersonAcceleration {
  index_t memory = 2;
  index_t refresh_every = 1;
  double ridge_identity = 1e-2;
};

// The starting potentials (docs/sinkhorn.md §7). zeros: OTT's DefaultInitializer. gaussian:
// OTT's GaussianInitializer, the closed-form Brenier potential between the Gaussians fitted to
// the weighted clouds (sqeuclidean cost only), for f; g starts at 0. Both are -inf at zero weights.
enum class Initializer { zeros, gaussian };
const char* initializer_name(Initializer init);

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
  Momentum momentum;                              // default: none (weight 1)
  std::optional<AndersonAcceleration> anderson;   // set: Anderson on (momentum is then ignored, as in OTT)
  Initializer initializer = Initializer::zeros;
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
  // The acceleration and initializer in effect (momentum is the default one under Anderson).
  Momentum momentum;
  std::optional<AndersonAcceleration> anderson;
  Initializer initializer = Initializer::zeros;
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

// The potentials a solve with these options starts from (options.initializer), with the resolved
// scale and epsilon: what iteration 0 sees.
Potentials initial_potentials(const Problem& problem, const SinkhornOptions& options = {});

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
