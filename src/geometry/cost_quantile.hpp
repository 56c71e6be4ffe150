#pragma once
// The exact percentile of all n*m unscaled costs of resident clouds, for scale_cost = median
// (called from Sinkhorn's resolve()). The costs are swept on the host in row blocks of
// cost_percentile_block_rows() rows with two 65 536-bin histograms (1 MiB).
//   CPU backend (`host_workspace` given): the resident clouds are used in place and the scratch,
//     cost_percentile_scratch_bytes(), comes from the budgeted workspace.
//   CUDA backend (`host_workspace` null): the clouds (O((n + m) d)) are downloaded and the scratch
//     is host memory, outside the device budget.
#include "core/backend.hpp"
#include "sinkhorn/problem.hpp"

namespace otcal::detail {

// Rows per block: about 1 MiB of costs, at least one row.
index_t cost_percentile_block_rows(const Shape& s, std::size_t value_size);
std::size_t cost_percentile_scratch_bytes(const Shape& s, std::size_t value_size);

template <class T>
double cost_percentile(Backend<T>& be, const ResidentClouds<T>& rc, const Shape& s, double q,
                       MemoryResource* host_workspace);

}  // namespace otcal::detail
