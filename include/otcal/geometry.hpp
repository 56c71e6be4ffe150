#pragma once
// Point-cloud geometry: two clouds, a ground cost and how to scale it (docs/sinkhorn.md §1).
#include <optional>
#include <string>

#include "otcal/array.hpp"
#include "otcal/detail/cost_math.hpp"

namespace otcal {

struct Cost {
  CostKind kind = CostKind::sqeuclidean;
  double p = 2.0;  // pnorm / sq_pnorm exponent, >= 1

  // "sqeuclidean", "euclidean", "cosine", "pnorm:P", "sq_pnorm:P" (moscot's "sq_euclidean",
  // "pnorm_P" and "sq_pnorm_P" spellings are accepted too).
  static Cost parse(const std::string& text);
  std::string name() const;
  bool translation_invariant() const { return kind != CostKind::cosine; }
};

struct ScaleCost {
  enum class Kind { value, mean, max_cost, max_norm, max_bound, median };
  Kind kind = Kind::value;
  double value = 1.0;

  static ScaleCost parse(const std::string& text);  // a number, mean, max_cost, max_norm, max_bound, median
  std::string name() const;
};

struct GeometryOptions {
  Cost cost{};
  ScaleCost scale{};
};

// How epsilon is given: an absolute value, or a factor of the scaled cost's mean or std (OTT's
// relative_epsilon). Unset epsilon with `none` means 0.05 * std of the scaled cost.
enum class RelativeEpsilon { none, mean, std };
struct EpsilonSpec {
  std::optional<double> epsilon;
  RelativeEpsilon relative = RelativeEpsilon::none;
};

// The scale s (C = c / s) and the target epsilon of the scaled cost, resolved once per solve.
struct ResolvedGeometry {
  double scale = 1;
  double epsilon = 0;
};

// x [n, d] and y [m, d], same dtype, host or device views. y empty means y = x.
struct PointCloud {
  ConstMatrix x;
  ConstMatrix y;
  GeometryOptions options{};

  const ConstMatrix& y_or_x() const { return y.empty() ? x : y; }
};

}  // namespace otcal
