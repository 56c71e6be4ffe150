#pragma once
// The primitives the sparsify host loop (src/sparsify/sparsify.cpp) is written against. They act
// on one dense block of plan rows held in the budgeted workspace; the CPU implementation lives in
// src/cpu/sparsify_cpu.cpp. Kept apart from core/backend.hpp on purpose: the sparsifier only needs
// "build rows", "row maxima", "key histogram" and "select", never apply/push/pull.
#include <cstdint>
#include <cstring>
#include <memory>
#include <optional>

#include "core/block_backend.hpp"
#include "core/workspace.hpp"
#include "otcal/array.hpp"
#include "otcal/context.hpp"
#include "otcal/planner.hpp"

namespace otcal::detail {

template <class T>
class SparsifyBackend : public BlockBackend<T> {
 public:
  // Element-wise selection (threshold, percentile, min_row): keep block[r, j] iff it is >= thr in
  // float64 and != 0, for rows with row_max > 0. counts[r] = entries kept.
  virtual void count_at_least(const T* block, index_t rows, index_t m, const T* row_max, double thr,
                              std::int64_t* counts) = 0;
  // Writes the kept entries of row r at offsets[r] .. (host output arrays; columns ascending).
  virtual void compact_at_least(const T* block, index_t rows, index_t m, const T* row_max, double thr,
                                const std::int64_t* offsets, std::int32_t* indices32, std::int64_t* indices64,
                                double* values) = 0;

  // Mass mode (docs/sparsify.md §4.4): per row the smallest descending prefix reaching value * row sum, capped
  // by max_k (0 = none). `order` is workspace [rows, m] of column ids (int32, or int64 when
  // wide); on return its first counts[r] entries of row r are the kept columns, ascending.
  virtual void mass_select(const T* block, index_t rows, index_t m, const T* row_max, double value,
                           index_t max_k, void* order, bool wide, std::int64_t* counts) = 0;
  virtual void gather_selected(const T* block, index_t rows, index_t m, const void* order, bool wide,
                               const std::int64_t* counts, const std::int64_t* offsets, std::int32_t* indices32,
                               std::int64_t* indices64, double* values) = 0;

  // ---- device residency (the host loop is written once for host and device workspaces) ----
  // True when ctx.workspace() is host memory: the loop then reads row maxima, counts and
  // histogram bins in place and the download primitives below are no-ops (host == dev).
  virtual bool host_workspace() const { return true; }
  // Small device->host reads of the values the host loop needs (plain copies when host != dev).
  virtual void download_row_max(const T* dev, index_t rows, T* host) { copy_if_distinct(dev, host, rows); }
  virtual void download_counts(const std::int64_t* dev, index_t rows, std::int64_t* host) {
    copy_if_distinct(dev, host, rows);
  }
  virtual void download_bins(const std::uint64_t* dev, std::size_t count, std::uint64_t* host) {
    copy_if_distinct(dev, host, static_cast<index_t>(count));
  }
  // Host -> workspace copy of row ids (the sampled percentile's sample).
  virtual void upload_ids(const index_t* host, index_t count, index_t* dev) { copy_if_distinct(host, dev, count); }
  // Zeroes histogram counters in the workspace (the host loop only memsets host arrays).
  virtual void zero_bins(std::uint64_t* dev, std::size_t count) { std::memset(dev, 0, count * sizeof(std::uint64_t)); }
  // compact_at_least / gather_selected may still be in flight when they return (a device backend
  // streams pieces through pinned buffers); this completes every pending write into the given
  // output arrays (the same arrays, possibly reallocated, with the same absolute offsets).
  virtual void flush_output(std::int32_t* /*indices32*/, std::int64_t* /*indices64*/, double* /*values*/) {}
  // The backend's own workspace (a device backend: staging, sort and scan scratch; none on the CPU)
  // is declared into the operation's list before planning, and bound to the allocation after it.
  virtual void declare_workspace(WorkspaceDecl& /*decl*/, index_t /*n*/, index_t /*m*/, bool /*mass*/) {}
  virtual void bind_workspace(const Workspace& /*ws*/, const WorkspaceDecl& /*decl*/, index_t /*rows*/) {}

 protected:
  template <class V>
  static void copy_if_distinct(const V* src, V* dst, index_t count) {
    if (src != dst && count > 0) std::memcpy(dst, src, static_cast<std::size_t>(count) * sizeof(V));
  }
};

template <class T>
std::unique_ptr<SparsifyBackend<T>> make_cpu_sparsify_backend();  // host memory, any context

// The sparsify backend of the context's device.
template <class T>
std::unique_ptr<SparsifyBackend<T>> make_sparsify_backend(const Context& ctx, std::int64_t staging_entries = 0);

// cuda/sparsify.cu (CUDA builds only). `staging_entries` is the streaming capacity cap (>= m;
// 0 = default), see docs/sparsify.md §7.2.
template <class T>
std::unique_ptr<SparsifyBackend<T>> make_cuda_sparsify_backend(const Context& ctx, std::int64_t staging_entries);

}  // namespace otcal::detail
