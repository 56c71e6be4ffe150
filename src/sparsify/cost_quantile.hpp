#pragma once
// The exact percentile of all n*m unscaled costs of resident clouds, for scale_cost = median
// (called from Sinkhorn's resolve()). Works for any backend: the clouds (O((n + m) d)) are
// downloaded to the host and the costs are swept there in row blocks of at most ~4 MiB, with two
// 65 536-bin histograms (1 MiB). That host scratch is not charged to the device budget.
#include "core/backend.hpp"
#include "sinkhorn/problem.hpp"

namespace otcal::detail {

template <class T>
double cost_percentile(Backend<T>& be, const ResidentClouds<T>& rc, const Shape& s, double q);

}  // namespace otcal::detail
