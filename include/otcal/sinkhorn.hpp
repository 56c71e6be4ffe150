#pragma once
// Online log-domain Sinkhorn between point clouds, with OTT-JAX semantics (spec/sinkhorn.md).
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "otcal/array.hpp"
#include "otcal/context.hpp"
#include "otcal/geometry.hpp"
#include "otcal/planner.hpp"

namespace otcal {

enum class RelativeEpsilon { none, mean, std };
enum class OnDivergence { error, return_result };

struct SinkhornProgress {
  index_t iteration;   // iterations done so far
  double error;        // last computed marginal error
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
  DType precision = DType::float64;
  std::function<void(const SinkhornProgress&)> progress;  // called at every error evaluation
};

struct MemoryReport {
  std::size_t budget_bytes = 0;
  std::size_t peak_bytes = 0;          // statistics adaptor, workspace + outputs charged to the budget
  std::size_t planned_peak_bytes = 0;  // the byte model's prediction at the chosen tile size
};

struct SinkhornResult {
  std::vector<double> f, g;      // potentials (float32 values widened when precision is float32)
  std::vector<double> errors;    // one slot per block of inner_iterations; -1 = not run, +inf = not computed
  bool converged = false;
  bool diverged = false;
  index_t n_iters = 0;
  double reg_ot_cost = 0;
  double epsilon = 0;            // resolved target epsilon (of the scaled cost)
  double scale = 1;              // resolved scale s: C = c / s
  double threshold = 0;
  index_t inner_iterations = 0;
  double tau_a = 1, tau_b = 1;
  index_t n = 0, m = 0, d = 0;
  Cost cost{};
  DType precision = DType::float64;
  index_t batch_size = 0;        // tile rows used
  TilePlan plan{};
  MemoryReport memory{};
  std::string device;
  double elapsed_s = 0;
  std::vector<std::string> warnings;
};

// a, b: weights (empty = uniform). Throws InvalidArgument on bad input, NumericalError on
// divergence (unless on_divergence = return_result). Non-convergence is a warning.
SinkhornResult sinkhorn(const Context& ctx, const PointCloud& geom, const ConstVector& a, const ConstVector& b,
                        const SinkhornOptions& options = {});

// Resolve the scale s and target epsilon only (one cost-statistics pass at most).
struct ResolvedGeometry {
  double scale = 1;
  double epsilon = 0;
};
ResolvedGeometry resolve_geometry(const Context& ctx, const PointCloud& geom, const SinkhornOptions& options);

// P v from the potentials, online: axis = 1 maps V [m, k] -> [n, k] (P V, moscot "pull");
// axis = 0 maps V [n, k] -> [m, k] (P^T V, moscot "push"). Row-major, signed values allowed.
std::vector<double> apply_transport(const Context& ctx, const PointCloud& geom, const SinkhornResult& result,
                                    const ConstMatrix& v, int axis, std::optional<index_t> batch_size = {});

// marginal(axis = 1) = P 1 (length n); marginal(axis = 0) = P^T 1 (length m).
std::vector<double> marginal(const Context& ctx, const PointCloud& geom, const SinkhornResult& result, int axis,
                             std::optional<index_t> batch_size = {});

}  // namespace otcal
