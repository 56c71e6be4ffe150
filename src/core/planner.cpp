#include "otcal/planner.hpp"

#include <algorithm>

#include "otcal/errors.hpp"
#include "otcal/memory.hpp"

namespace otcal {

std::size_t planner_headroom(std::size_t budget) { return budget / 20; }

namespace {

std::size_t minimum_budget(const ByteModel& m) {
  // budget >= fixed + min_rows*per_row + budget/20  <=>  budget >= (fixed + rows*per_row) * 20/19
  const std::size_t need = m.fixed_bytes + static_cast<std::size_t>(m.min_rows) * m.bytes_per_row;
  return need + (need + 18) / 19;
}

[[noreturn]] void too_small(const ByteModel& m, std::size_t budget, index_t rows) {
  const std::size_t minimum = [&] {
    ByteModel mm = m;
    mm.min_rows = rows;
    return minimum_budget(mm);
  }();
  throw BudgetTooSmall(m.operation + " needs at least " + std::to_string(minimum) + " bytes (" +
                           format_bytes(minimum) + ": fixed " + std::to_string(m.fixed_bytes) + " + " +
                           std::to_string(m.bytes_per_row) + " per row x " + std::to_string(rows) +
                           " rows + 5% headroom); budget is " + std::to_string(budget) + " bytes (" +
                           format_bytes(budget) + "). Raise --memory-budget" +
                           (rows > m.min_rows ? " or lower --batch-size" : ""),
                       minimum);
}

}  // namespace

TilePlan plan_tiles(index_t n_rows, const ByteModel& m, std::size_t budget) {
  const std::size_t headroom = planner_headroom(budget);
  const std::size_t per_row = std::max<std::size_t>(m.bytes_per_row, 1);
  const std::size_t min_need = m.fixed_bytes + headroom + static_cast<std::size_t>(m.min_rows) * m.bytes_per_row;
  if (budget < min_need) too_small(m, budget, m.min_rows);
  const std::size_t avail = budget - m.fixed_bytes - headroom;
  index_t fit = static_cast<index_t>(std::min<std::size_t>(avail / per_row, static_cast<std::size_t>(INT64_MAX / 2)));
  const index_t align = std::max<index_t>(m.row_align, 1);
  fit = std::max(fit / align * align, m.min_rows);
  TilePlan p;
  p.headroom = headroom;
  if (n_rows <= 0) {
    p.rows = m.min_rows;
    p.n_tiles = 0;
  } else {
    index_t n_tiles = (n_rows + fit - 1) / fit;
    index_t rows = (n_rows + n_tiles - 1) / n_tiles;
    rows = (rows + align - 1) / align * align;
    if (rows > fit) rows = fit;
    p.rows = rows;
    p.n_tiles = (n_rows + rows - 1) / rows;
  }
  p.planned_peak = m.fixed_bytes + static_cast<std::size_t>(p.rows) * m.bytes_per_row;
  return p;
}

TilePlan plan_fixed_batch(index_t n_rows, const ByteModel& m, std::size_t budget, index_t batch) {
  if (batch <= 0)
    throw InvalidArgument("batch_size must be a positive number of rows, got " + std::to_string(batch));
  TilePlan p;
  p.headroom = planner_headroom(budget);
  p.rows = batch;
  if (n_rows > 0 && batch > n_rows) {
    p.rows = n_rows;
    p.clamped = true;
  }
  const std::size_t need = m.fixed_bytes + p.headroom + static_cast<std::size_t>(p.rows) * m.bytes_per_row;
  if (budget < need) too_small(m, budget, p.rows);
  p.n_tiles = n_rows > 0 ? (n_rows + p.rows - 1) / p.rows : 0;
  p.planned_peak = m.fixed_bytes + static_cast<std::size_t>(p.rows) * m.bytes_per_row;
  return p;
}

TilePlan plan_batch(index_t n_rows, const ByteModel& m, std::size_t budget, std::optional<index_t> batch) {
  return batch ? plan_fixed_batch(n_rows, m, budget, *batch) : plan_tiles(n_rows, m, budget);
}

}  // namespace otcal
