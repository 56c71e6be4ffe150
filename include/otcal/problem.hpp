#pragma once
// A resident point-cloud problem: the clouds and weights uploaded once to the context's device, in
// the layout the kernels read (dimension-major), with the norms the cosine cost needs. Sinkhorn,
// apply, marginals, cost statistics and sparsify run on it any number of times, with any batch
// size, without uploading or checking the inputs again (docs/host-layer.md §11).
#include <cstdint>
#include <memory>
#include <vector>

#include "otcal/array.hpp"
#include "otcal/context.hpp"
#include "otcal/geometry.hpp"
#include "otcal/types.hpp"

namespace otcal {

// What later calls need from a Sinkhorn solve: the potentials and the resolved geometry they belong
// to. T_ij = exp((f_i + g_j - c_ij / scale) / epsilon). Potentials from another solver (OTT-JAX,
// moscot) can be filled in by hand.
struct Potentials {
  std::vector<double> f, g;       // lengths n and m (float32 values widened when precision is float32)
  double epsilon = 0;             // of the scaled cost
  double scale = 1;               // C = c / scale
  Cost cost{};                    // the cost they were solved with
  DType precision = DType::float64;
  double reg_ot_cost = 0;
  bool converged = false;
};

class Problem {
 public:
  // Uploads x, y (y empty: y = x), a and b (empty: uniform) in `precision` and checks them once.
  // Host views are copied; device views (Location::device, CUDA contexts only) are re-laid
  // dimension-major on the device. Two reads go through the host, once per upload: device weights
  // are read back (O(n + m)) to be validated and kept for reg_ot_cost, and sqeuclidean clouds
  // (O((n + m) d)) for the closed-form norm statistics. Throws InvalidArgument naming the bad
  // input, BudgetTooSmall when the resident copies do not fit the context's budget.
  static Problem upload(const Context& ctx, const PointCloud& geom, const ConstVector& a = {},
                        const ConstVector& b = {}, DType precision = DType::float64);

  // Replaces the weights (empty: uniform) without uploading the clouds again: the weights belong to
  // the linear problem, the clouds to the geometry (OTT-JAX's split), so one resident problem
  // serves solves with any weights. Validated like upload's; on error nothing changes. Not while
  // another operation runs on this problem. Apply, marginal and sparsify never read the weights.
  void set_weights(const ConstVector& a, const ConstVector& b);

  const Context& context() const;
  index_t n() const;
  index_t m() const;
  index_t d() const;
  DType precision() const;
  const GeometryOptions& geometry() const;
  const std::vector<double>& a() const;  // validated weights, float64, on the host
  const std::vector<double>& b() const;
  bool same_clouds() const;              // y was empty: y = x
  std::size_t resident_bytes() const;    // charged to the context's budget while the problem lives
  // What resident_bytes() will be for clouds of n and m points in d dimensions (same_clouds: y = x,
  // m = n) under `cost` in `precision` on `ctx`, known before the clouds exist: a reader checks its
  // inputs' headers against the budget with it before it reads them.
  static std::size_t resident_bytes_for(const Context& ctx, index_t n, index_t m, index_t d, bool same_clouds,
                                        const Cost& cost, DType precision);
  // The smallest memory budget with which upload() of such clouds plans on `ctx` now (its bytes in
  // use included): the minimum its BudgetTooSmall would name, before the clouds are read.
  static std::size_t minimum_budget_for(const Context& ctx, index_t n, index_t m, index_t d, bool same_clouds,
                                        const Cost& cost, DType precision);

  struct Impl;
  Impl& impl() const { return *impl_; }
  explicit Problem(std::shared_ptr<Impl> impl) : impl_(std::move(impl)) {}

 private:
  std::shared_ptr<Impl> impl_;
};

// Unscaled cost statistics over all n*m pairs, accumulated in float64 (one pass, kept by the problem).
struct CostStatistics {
  double mean = 0;
  double std = 0;
  double max_abs = 0;
};
CostStatistics cost_statistics(const Problem& problem);

// numpy's linear percentile (q in [0, 100]) of all n*m unscaled costs, computed exactly in bounded
// memory by histogram refinement on the IEEE bit patterns (docs/sparsify.md §7.1), in the problem's
// precision. Used by scale_cost = median (q = 50).
double exact_cost_quantile(const Problem& problem, double q);
// The same on a fresh upload of `geom`, with costs evaluated in `precision`.
double exact_cost_quantile(const Context& ctx, const PointCloud& geom, double q, DType precision = DType::float64);

}  // namespace otcal
