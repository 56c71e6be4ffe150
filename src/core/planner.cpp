#include "otcal/planner.hpp"

#include <algorithm>

#include "otcal/errors.hpp"
#include "otcal/memory.hpp"

namespace otcal {

std::size_t BufferDecl::bytes(index_t rows) const {
  const std::size_t n = count(rows);
  return n == 0 ? 0 : align_up(n * element_size);
}

std::size_t WorkspaceDecl::bytes(index_t rows) const {
  std::size_t total = 0;
  for (const BufferDecl& b : buffers) total += b.bytes(rows);
  return total;
}

std::size_t WorkspaceDecl::bytes_per_row() const {
  std::size_t total = 0;
  for (const BufferDecl& b : buffers) total += b.element_size * b.count_per_row;
  return total;
}

std::size_t WorkspaceDecl::fixed_bytes() const { return bytes(0); }

std::size_t planner_headroom(std::size_t budget) { return budget / 20; }

namespace {

// Bytes that must fit under budget - headroom at `rows`.
std::size_t need_at(const WorkspaceDecl& d, index_t rows) { return d.resident_bytes + d.bytes(rows); }

bool fits(const WorkspaceDecl& d, index_t rows, std::size_t budget) {
  return need_at(d, rows) + planner_headroom(budget) <= budget;
}

[[noreturn]] void too_small(const WorkspaceDecl& d, std::size_t budget, index_t rows) {
  const std::size_t minimum = minimum_budget(d, rows);
  throw BudgetTooSmall(d.operation + " needs at least " + std::to_string(minimum) + " bytes (" +
                           format_bytes(minimum) + ": resident " + std::to_string(d.resident_bytes) +
                           " + workspace " + std::to_string(d.bytes(rows)) + " at " + std::to_string(rows) +
                           " tile rows + 5% headroom); budget is " + std::to_string(budget) + " bytes (" +
                           format_bytes(budget) + "). Raise --memory-budget" +
                           (rows > d.min_rows ? " or lower --batch-size" : ""),
                       minimum);
}

void list_buffers(const WorkspaceDecl& d, TilePlan& p) {
  p.buffers.clear();
  for (const BufferDecl& b : d.buffers) p.buffers.push_back({b.name, b.count(p.rows) * b.element_size});
  p.planned_peak = d.bytes(p.rows);
}

}  // namespace

std::size_t minimum_budget(const WorkspaceDecl& d, index_t rows) {
  // budget >= need + floor(budget / 20); the smallest such budget, found exactly.
  const std::size_t need = need_at(d, rows);
  std::size_t b = need + need / 19;
  while (b > need && need + planner_headroom(b - 1) <= b - 1) --b;
  while (need + planner_headroom(b) > b) ++b;
  return b;
}

TilePlan plan_tiles(index_t n_rows, const WorkspaceDecl& d, std::size_t budget) {
  const index_t align = std::max<index_t>(d.row_align, 1);
  const index_t min_rows = std::max<index_t>(d.min_rows, 1);
  if (!fits(d, min_rows, budget)) too_small(d, budget, min_rows);
  TilePlan p;
  p.headroom = planner_headroom(budget);
  p.resident = d.resident_bytes;
  // Largest fitting row count, capped at the rows there are (rounded up to the alignment).
  const index_t cap = std::max(min_rows, n_rows > 0 ? (n_rows + align - 1) / align * align : min_rows);
  index_t fit = min_rows;
  if (d.bytes_per_row() > 0) {
    index_t lo = min_rows, hi = cap;
    while (lo < hi) {  // largest rows in [lo, hi] that fit
      const index_t mid = lo + (hi - lo + 1) / 2;
      if (fits(d, mid, budget)) lo = mid;
      else hi = mid - 1;
    }
    fit = std::max(lo / align * align, min_rows);
  } else {
    fit = cap;
  }
  if (n_rows <= 0) {
    p.rows = min_rows;
    p.n_tiles = 0;
  } else {
    const index_t n_tiles = (n_rows + fit - 1) / fit;
    index_t rows = (n_rows + n_tiles - 1) / n_tiles;
    rows = (rows + align - 1) / align * align;
    p.rows = std::max(std::min(rows, fit), min_rows);
    p.n_tiles = (n_rows + p.rows - 1) / p.rows;
  }
  list_buffers(d, p);
  return p;
}

TilePlan plan_fixed_batch(index_t n_rows, const WorkspaceDecl& d, std::size_t budget, index_t batch) {
  if (batch <= 0)
    throw InvalidArgument("batch_size must be a positive number of rows, got " + std::to_string(batch));
  TilePlan p;
  p.headroom = planner_headroom(budget);
  p.resident = d.resident_bytes;
  p.rows = batch;
  if (n_rows > 0 && batch > n_rows) {
    p.rows = n_rows;
    p.clamped = true;
  }
  if (!fits(d, p.rows, budget)) too_small(d, budget, p.rows);
  p.n_tiles = n_rows > 0 ? (n_rows + p.rows - 1) / p.rows : 0;
  list_buffers(d, p);
  return p;
}

TilePlan plan_batch(index_t n_rows, const WorkspaceDecl& d, std::size_t budget, std::optional<index_t> batch) {
  return batch ? plan_fixed_batch(n_rows, d, budget, *batch) : plan_tiles(n_rows, d, budget);
}

}  // namespace otcal
