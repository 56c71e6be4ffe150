#pragma once
// The exact percentile of all n*m unscaled costs of resident clouds (scale_cost = median and
// exact_cost_quantile). The costs are swept on the host in row blocks of
// cost_percentile_block_rows() rows with two 65 536-bin histograms (1 MiB).
//   CPU backend: the resident clouds are used in place and the scratch (block + bins) is given
//     from the operation's declared workspace.
//   CUDA backend: the clouds (O((n + m) d)) are downloaded and the scratch is host memory, outside
//     the device budget (`block` and `bins` null).
#include <cstdint>

#include "core/backend.hpp"
#include "geometry/clouds.hpp"

namespace otcal::detail {

// Rows per block: about 1 MiB of costs, at least one row.
index_t cost_percentile_block_rows(const Shape& s, std::size_t value_size);

// Declares the host scratch of cost_percentile in `decl` (block and bins).
template <class T>
struct PercentileScratch {
  BufferId<T> block;
  BufferId<std::uint64_t> bins;
};
template <class T>
PercentileScratch<T> declare_percentile_scratch(WorkspaceDecl& decl, const Shape& s, bool host_backend);

// Distributed: each rank sweeps the rows it owns and the histograms are all-summed per pass.
template <class T>
double cost_percentile(Communicator& comm, Backend<T>& be, const ResidentClouds<T>& rc, const Shape& s, double q,
                       T* block, std::uint64_t* bins);

}  // namespace otcal::detail
