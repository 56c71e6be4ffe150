#pragma once
// Costs of one row against a granule of columns, written once for every CPU pass (LSE, apply,
// cost statistics, plan blocks): accumulated over d in the fixed order k = 0..d-1, so an entry is
// a pure function of (i, j) whichever pass or batch computes it.
#include "core/backend.hpp"
#include "otcal/detail/cost_math.hpp"

namespace otcal::cpu {

template <CostKind K, class T>
inline void cost_granule(const detail::Cloud<T>& rows, const detail::Cloud<T>& cols, index_t i, index_t j0,
                         index_t jn, T p, T* acc) {
  for (index_t j = 0; j < jn; ++j) acc[j] = T(0);
  for (int k = 0; k < rows.d; ++k) {
    const T xi = rows.x[k * rows.n + i];
    const T* yk = cols.x + k * cols.n + j0;
#pragma omp simd
    for (index_t j = 0; j < jn; ++j) acc[j] += detail::cost_term<K>(xi, yk[j], p);
  }
  if constexpr (K != CostKind::sqeuclidean) {
    const T ni = rows.norms ? rows.norms[i] : T(0);
    for (index_t j = 0; j < jn; ++j)
      acc[j] = detail::cost_finish<K>(acc[j], p, ni, cols.norms ? cols.norms[j0 + j] : T(0));
  }
}

}  // namespace otcal::cpu
