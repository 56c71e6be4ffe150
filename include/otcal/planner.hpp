#pragma once
// Budget -> tile sizes (docs/host-layer.md §3). An operation declares its workspace once, as a list
// of buffers whose sizes are affine in the tile rows; the planner sizes the tile from that list and
// the allocator (src/core/workspace.hpp) walks the same list, so the plan and the allocations
// cannot drift. In the manner of FAISS's temp-memory tiling, but honouring the budget it is given.
#include <cstddef>
#include <optional>
#include <string>
#include <vector>

#include "otcal/types.hpp"

namespace otcal {

// One declared buffer: element_size * (fixed_count + count_per_row * rows) bytes, charged to the
// budget rounded up to the 256-byte allocation granule.
struct BufferDecl {
  std::string name;
  std::size_t element_size = 1;
  std::size_t fixed_count = 0;
  std::size_t count_per_row = 0;

  std::size_t count(index_t rows) const { return fixed_count + count_per_row * static_cast<std::size_t>(rows); }
  std::size_t bytes(index_t rows) const;  // aligned; 0 for an empty buffer
};

// Typed index of a declared buffer, for Workspace::get.
template <class T>
struct BufferId {
  std::size_t index = 0;
};

// The workspace of one operation: its buffers, all live at once, on top of `resident_bytes` that
// are already charged to the same budget (the resident problem the operation runs on).
struct WorkspaceDecl {
  std::string operation;               // named in BudgetTooSmall messages
  std::vector<BufferDecl> buffers;
  std::size_t resident_bytes = 0;
  index_t min_rows = 1;
  index_t row_align = 1;

  template <class T>
  BufferId<T> add(std::string name, std::size_t fixed_count, std::size_t count_per_row = 0) {
    buffers.push_back({std::move(name), sizeof(T), fixed_count, count_per_row});
    return {buffers.size() - 1};
  }
  // Bytes the buffers take at `rows` tile rows (the planned peak of the operation's workspace).
  std::size_t bytes(index_t rows) const;
  std::size_t bytes_per_row() const;   // unaligned sum, for messages
  std::size_t fixed_bytes() const;     // bytes(0)
};

// One declared buffer at the planned tile rows.
struct PlannedBuffer {
  std::string name;
  std::size_t bytes = 0;  // requested (element size x count); charged rounded up to 256
};

struct TilePlan {
  index_t rows = 0;     // tile rows (the batch size)
  index_t n_tiles = 0;
  std::vector<PlannedBuffer> buffers;  // the operation's declared buffers at `rows`
  std::size_t planned_peak = 0;  // workspace bytes at `rows`: WorkspaceDecl::bytes(rows)
  std::size_t resident = 0;      // bytes already live when planned (not part of planned_peak)
  std::size_t headroom = 0;
  bool clamped = false;  // an explicit batch larger than the rows was clamped
};

// What an operation reports about its memory: measured against planned, under the budget.
struct MemoryReport {
  std::size_t budget_bytes = 0;
  std::size_t peak_bytes = 0;          // statistics adaptor, workspace + outputs charged to the budget
  std::size_t planned_peak_bytes = 0;  // the declared workspace's bytes at the planned tile rows
};

// 5 % of the budget is held back for fragmentation.
std::size_t planner_headroom(std::size_t budget);

// The smallest budget with which `decl` plans at `rows` tile rows.
std::size_t minimum_budget(const WorkspaceDecl& decl, index_t rows);

// Most rows that fit (binary search on the exact aligned sizes), then fewest tiles, evened out.
// Throws BudgetTooSmall naming the minimum budget, before anything is allocated.
TilePlan plan_tiles(index_t n_rows, const WorkspaceDecl& decl, std::size_t budget);

// An explicit batch size checked against the same declaration: never shrunk silently. A batch
// larger than n_rows is clamped (and says so in the plan).
TilePlan plan_fixed_batch(index_t n_rows, const WorkspaceDecl& decl, std::size_t budget, index_t batch);

// Either of the above, as `batch` is given or not.
TilePlan plan_batch(index_t n_rows, const WorkspaceDecl& decl, std::size_t budget, std::optional<index_t> batch);

}  // namespace otcal
