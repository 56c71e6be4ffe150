#pragma once
// Ground costs, written once for both backends. Points are stored dimension-major (SoA: the k-th
// coordinate of every point is contiguous), so a cost is accumulated one dimension at a time over
// a block of points (vectorises on the CPU, coalesces on the GPU), then finished per entry.
// Accumulation order over d is fixed (k = 0..d-1, no split): entry values are pure functions of
// (i, j), which every batch-size-invariance guarantee rests on.
#include <cmath>

#include "otcal/detail/hd.hpp"

namespace otcal {

enum class CostKind : int { sqeuclidean = 0, euclidean = 1, cosine = 2, pnorm = 3, sq_pnorm = 4 };

}  // namespace otcal

namespace otcal::detail {

inline constexpr double kCosineRidge = 1e-8;

// Per-dimension term of the accumulator.
template <CostKind K, class T>
OTCAL_HD OTCAL_INLINE T cost_term(T xi, T yj, T p) {
  if constexpr (K == CostKind::cosine) {
    (void)p;
    return xi * yj;
  } else if constexpr (K == CostKind::sqeuclidean || K == CostKind::euclidean) {
    (void)p;
    const T diff = xi - yj;
    return diff * diff;
  } else {
    return std::pow(std::fabs(xi - yj), p);
  }
}

// Finish the cost from the accumulated terms. `norm_i`, `norm_j` are Euclidean norms (cosine only).
template <CostKind K, class T>
OTCAL_HD OTCAL_INLINE T cost_finish(T acc, T p, T norm_i, T norm_j) {
  if constexpr (K == CostKind::sqeuclidean) {
    return acc;
  } else if constexpr (K == CostKind::euclidean) {
    return std::sqrt(acc);
  } else if constexpr (K == CostKind::cosine) {
    return T(1) - acc / (norm_i * norm_j + T(kCosineRidge));
  } else if constexpr (K == CostKind::pnorm) {
    return acc / p;
  } else {
    return T(0.5) * std::pow(acc, T(2) / p);
  }
  (void)p;
  (void)norm_i;
  (void)norm_j;
}

// Calls f(std::integral_constant-like tag) with the cost kind as a compile-time value.
template <CostKind K>
struct CostTag {
  static constexpr CostKind value = K;
};

template <class F>
decltype(auto) dispatch_cost(CostKind kind, F&& f) {
  switch (kind) {
    case CostKind::sqeuclidean: return f(CostTag<CostKind::sqeuclidean>{});
    case CostKind::euclidean: return f(CostTag<CostKind::euclidean>{});
    case CostKind::cosine: return f(CostTag<CostKind::cosine>{});
    case CostKind::pnorm: return f(CostTag<CostKind::pnorm>{});
    default: return f(CostTag<CostKind::sq_pnorm>{});
  }
}

}  // namespace otcal::detail
