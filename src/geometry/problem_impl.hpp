#pragma once
// The inside of otcal::Problem: the resident buffers (one Workspace walked from the declared
// resident layout), the validated host weights, and the cost statistics once computed.
#include <memory>
#include <mutex>
#include <optional>
#include <vector>

#include "core/backend.hpp"
#include "core/workspace.hpp"
#include "geometry/clouds.hpp"
#include "otcal/problem.hpp"

namespace otcal {

namespace detail {
template <class T>
struct Resident {
  Workspace buffers;  // the declared resident layout
  ResidentClouds<T> clouds;
  T* a = nullptr;     // weights in T, length n
  T* b = nullptr;     // length m
};
}  // namespace detail

struct Problem::Impl {
  Context ctx;
  detail::Shape shape;
  GeometryOptions geometry;
  DType precision = DType::float64;
  bool same = false;
  detail::RowShards shards;  // the rows this rank owns (all of them in one process)
  std::vector<double> a, b;
  double sum_a = 0, sum_b = 0;
  detail::NormStats norms;  // sqeuclidean closed forms (computed at upload for that cost only)
  std::size_t resident_bytes = 0;  // of the declared resident layout
  bool uploaded = false;
  std::unique_ptr<detail::Resident<float>> r32;
  std::unique_ptr<detail::Resident<double>> r64;

  // Results of one-off passes over all n*m costs, kept for later solves on the same problem.
  std::mutex cache_mutex;
  std::optional<detail::CostMoments> moments;
  std::optional<double> median;

  explicit Impl(Context c) : ctx(std::move(c)) {}

  // Bytes charged to the budget while an operation on this problem runs, besides its workspace:
  // everything live in the context, plus the resident copies when they are still to be uploaded
  // (a one-call overload plans the whole call before it uploads anything).
  std::size_t budget_in_use() const { return ctx.limiter().allocated_bytes() + (uploaded ? 0 : resident_bytes); }

  template <class T>
  detail::Resident<T>& resident() {
    if constexpr (std::is_same_v<T, float>) return *r32;
    else return *r64;
  }
  template <class T>
  detail::Backend<T>& backend() const {
    return detail::backend<T>(ctx);
  }
};

namespace detail {
// Problem::upload in two steps, so that a one-call overload can plan its operation (and raise
// BudgetTooSmall naming the minimum of the whole call) between them: checks and the host weights,
// then the upload itself.
std::shared_ptr<Problem::Impl> prepare_problem(const Context& ctx, const PointCloud& geom, const ConstVector& a,
                                               const ConstVector& b, DType precision);
Problem upload_prepared(std::shared_ptr<Problem::Impl> p, const PointCloud& geom);
// The upload step on its own, for an operation that planned first (`p` not yet uploaded).
void upload_now(Problem::Impl& p, const PointCloud& geom);

// Potentials must belong to the problem they are used on: lengths, cost, precision, and a resolved
// epsilon and scale. InvalidArgument names the mismatch.
void check_potentials(const Problem::Impl& p, const Potentials& potentials);
}  // namespace detail

}  // namespace otcal
