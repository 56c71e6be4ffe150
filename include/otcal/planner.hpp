#pragma once
// Budget -> tile sizes (host-layer.md §3). One pure function shared by every operation, in the
// manner of FAISS's temp-memory tiling but honouring the budget it is given.
#include <cstddef>
#include <optional>
#include <string>

#include "otcal/types.hpp"

namespace otcal {

// What an operation needs: bytes independent of the tile, bytes per tile row, and row granularity.
struct ByteModel {
  std::string operation;       // named in BudgetTooSmall messages
  std::size_t fixed_bytes = 0;   // resident inputs, outputs, staging
  std::size_t bytes_per_row = 0; // per tile row, double buffers included
  index_t min_rows = 1;
  index_t row_align = 1;
};

struct TilePlan {
  index_t rows = 0;     // tile rows (the batch size)
  index_t n_tiles = 0;
  std::size_t planned_peak = 0;  // fixed_bytes + rows * bytes_per_row
  std::size_t headroom = 0;
  bool clamped = false;  // an explicit batch larger than the rows was clamped
};

// 5 % of the budget is held back for fragmentation.
std::size_t planner_headroom(std::size_t budget);

// Fewest tiles that fit, then evened out. Throws BudgetTooSmall naming the minimum budget.
TilePlan plan_tiles(index_t n_rows, const ByteModel& model, std::size_t budget);

// An explicit batch size checked against the same model: never shrunk silently. A batch larger
// than n_rows is clamped (and says so in the plan).
TilePlan plan_fixed_batch(index_t n_rows, const ByteModel& model, std::size_t budget, index_t batch);

// Either of the above, as `batch` is given or not.
TilePlan plan_batch(index_t n_rows, const ByteModel& model, std::size_t budget, std::optional<index_t> batch);

}  // namespace otcal
