#pragma once
// The one row-reduction loop of the CPU backend (KeOps-style): a *formula* gives the value of
// every pair (i, j) of a granule of columns, a *reduction* folds those values into row i's
// result. The loop is owned here, once, for the LSE, apply, cost statistics and plan blocks:
//
//   tiles of rows (the batch size)  ->  OpenMP over chunks of rows  ->  granules of
//   kReductionGranule columns in ascending order  ->  rows of the chunk  ->  formula, reduction.
//
// A chunk's rows share one granule of the other cloud while it sits in L1 (the FlashAttention
// loop, on a CPU). Every row is folded granule by granule in the same fixed order, by one thread,
// so results are bitwise independent of the tile size, the chunking and the thread count. The
// thread count is the caller's (ThreadScope); nothing here changes it.
//
// Formula (see row_formulas.hpp):
//   using Value;                        type of one value (the granule buffer's element)
//   struct Columns;                     row-independent terms of a granule, per chunk of rows
//   void columns(j0, jn, Columns&)      fills them once per granule and chunk
//   Summary row(const Columns&, i, j0, jn, Value* out)
//                                       values of row i against columns j0 .. j0+jn into out;
//                                       Summary is whatever it found on the way (the LSE's max)
//                                       or NoSummary
// Reduction (see row_reductions.hpp):
//   using Row;                          running state of one row
//   bool begin(Row&, i, slot)           slot = position of row i in its tile (workspace row);
//                                       false: the row is already final, skip it
//   void fold(Row&, i, j0, jn, const Value*, Summary)
//   void end(Row&, i, slot)             writes the row's result
// Both are inlined through the templates, so a formula and its reduction may be fused (the LSE
// formula returns the granule max its reduction needs, saving a sweep).
#include <algorithm>

#include "otcal/types.hpp"

namespace otcal::cpu {

// Below this many (row, column, coordinate) steps a parallel region costs more than it saves.
inline constexpr index_t kParallelWork = index_t{1} << 16;

// A formula with nothing to report besides its values.
struct NoSummary {};

// Which rows to reduce against how many columns, and how they are tiled.
struct RowLoop {
  index_t rows = 0;                 // slots 0 .. rows-1
  index_t cols = 0;                 // columns j of every row
  index_t tile_rows = 1;            // rows per tile (the batch size)
  index_t work_per_entry = 1;       // steps per (i, j), for the parallel-or-not decision
  bool always_parallel = false;     // plan blocks: a parallel region whatever the size
  const index_t* ids = nullptr;     // slot -> row index i (nullptr: i = first + slot)
  index_t first = 0;

  index_t row(index_t slot) const { return ids ? ids[slot] : first + slot; }
};

// A reduction may declare `static constexpr bool kMaySkip = true` when begin() can finish a row
// on its own (apply: a row at -inf); the others pay no per-row check.
template <class Reduction>
constexpr bool may_skip() {
  if constexpr (requires { Reduction::kMaySkip; }) return Reduction::kMaySkip;
  else return false;
}

// The loop, with the row-id indirection decided at compile time.
template <index_t kChunkRows, bool kIds, class Formula, class Reduction>
void reduce_rows_with(const RowLoop& loop, const Formula& formula, const Reduction& reduction) {
  constexpr index_t R = kReductionGranule;
  constexpr bool kSkip = may_skip<Reduction>();
  const index_t n = loop.rows, m = loop.cols;
  const index_t tile = std::max<index_t>(loop.tile_rows, 1);
  const index_t* const ids = loop.ids;
  const index_t first = loop.first;
  auto row_of = [&](index_t slot) {
    if constexpr (kIds) return ids[slot];
    else return first + slot;
  };
  for (index_t t0 = 0; t0 < n; t0 += tile) {
    const index_t t1 = std::min(n, t0 + tile);
    const bool parallel = loop.always_parallel || (t1 - t0) * m * loop.work_per_entry > kParallelWork;
#pragma omp parallel for schedule(static) if (parallel)
    for (index_t c0 = t0; c0 < t1; c0 += kChunkRows) {
      const index_t count = std::min(kChunkRows, t1 - c0);
      typename Reduction::Row state[kChunkRows]{};  // zeroed: silences maybe-uninitialized
      bool live[kChunkRows]{};
      for (index_t r = 0; r < count; ++r) live[r] = reduction.begin(state[r], row_of(c0 + r), c0 + r - t0);
      typename Formula::Columns columns;
      alignas(64) typename Formula::Value values[R];
      for (index_t j0 = 0; j0 < m; j0 += R) {
        const index_t jn = std::min(R, m - j0);
        formula.columns(j0, jn, columns);
        for (index_t r = 0; r < count; ++r) {
          if constexpr (kSkip)
            if (!live[r]) continue;
          const index_t i = row_of(c0 + r);
          const auto summary = formula.row(columns, i, j0, jn, values);
          reduction.fold(state[r], i, j0, jn, values, summary);
        }
      }
      for (index_t r = 0; r < count; ++r)
        if (!kSkip || live[r]) reduction.end(state[r], row_of(c0 + r), c0 + r - t0);
    }
  }
}

// Runs `reduction` of `formula` over every row of `loop`; kChunkRows rows share each granule.
template <index_t kChunkRows, class Formula, class Reduction>
void reduce_rows(const RowLoop& loop, const Formula& formula, const Reduction& reduction) {
  if (loop.ids) reduce_rows_with<kChunkRows, true>(loop, formula, reduction);
  else reduce_rows_with<kChunkRows, false>(loop, formula, reduction);
}

}  // namespace otcal::cpu
