#pragma once
// Reductions whose result does not depend on the thread count: partials per fixed granule of
// kReductionGranule indices, each summed in index order, then merged in granule order.
#include <algorithm>
#include <vector>

#include "otcal/types.hpp"

namespace otcal::cpu {

// The partial sums themselves, in granule order (their left fold from 0 is granular_sum).
template <class F>
std::vector<double> granular_partials(index_t n, F&& term) {
  const index_t R = kReductionGranule;
  const index_t n_gran = (n + R - 1) / R;
  std::vector<double> partial(static_cast<std::size_t>(n_gran), 0.0);
#pragma omp parallel for schedule(static) if (n > (index_t{1} << 16))
  for (index_t gi = 0; gi < n_gran; ++gi) {
    double s = 0;
    const index_t end = std::min(n, (gi + 1) * R);
    for (index_t i = gi * R; i < end; ++i) s += term(i);
    partial[static_cast<std::size_t>(gi)] = s;
  }
  return partial;
}

template <class F>
double granular_sum(index_t n, F&& term) {
  double total = 0;
  for (double p : granular_partials(n, term)) total += p;
  return total;
}

template <class F>
unsigned parallel_or(index_t n, F&& flags) {
  unsigned out = 0;
#pragma omp parallel for schedule(static) reduction(| : out) if (n > (index_t{1} << 16))
  for (index_t i = 0; i < n; ++i) out |= flags(i);
  return out;
}

}  // namespace otcal::cpu
