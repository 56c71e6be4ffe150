#pragma once
// The one row-reduction loop of the CUDA backend (KeOps-style formula / reduction split; the CPU
// twin is src/cpu/row_engine.hpp). Design (docs/sinkhorn.md §10):
//
//  * One thread owns one row; a block owns kRowsPerBlock rows (slot r of a tile is row i).
//  * The other cloud streams through shared memory in chunks of kChunk points, kSlab coordinates
//    at a time (dimension-major input makes every slab load coalesced), so shared memory is a
//    fixed 16*32 values whatever d is and nothing of size n*m or tile*m exists. The kChunk cost
//    accumulators of a row live in registers; the d-sum runs k = 0..d-1 (cost_math.hpp).
//  * The columns are cut into `parts` fixed ranges of whole chunks (a function of m only). One
//    block walks every part itself, in part order, or (split) each part goes to its own block
//    along grid.y and the reduction leaves a per-part partial for a later merge.
//
// A *formula* turns the accumulated cost terms of pair (i, j) into the value the reduction wants
// (row_formulas.cuh); a *reduction* folds a chunk of those values into row i's result
// (row_reductions.cuh). The reduction calls the formula itself, inside its own loop over the
// chunk, so a value can be fused with the reduction step that consumes it (the LSE max) exactly
// as a hand-written kernel would.
//
// Reduction interface (all __device__):
//   using Row, Part;                      running state of the row, of one part of its columns
//   static constexpr bool kColumnParts    false: the columns are always one part (no split)
//   Row  begin_row(const RowCtx&) / Part begin_part(const RowCtx&, const Terms&)
//   void fold(Part&, const RowCtx&, const Terms&, const Formula&, j0, jn, acc, sh)
//        called by EVERY thread of the block for every chunk (inactive ones too), so a
//        reduction may synchronise the block (the dense-row emit does)
//   void end_part(Row&, Part&, const RowCtx&, part, split) / void end_row(Row&, const RowCtx&, split)
// Formula interface: using Terms; Terms terms(const RowCtx&); Value value(Terms, ctx, acc, jj, sh).
#include <cuda_runtime.h>

#include <algorithm>
#include <limits>

#include "core/backend.hpp"
#include "otcal/detail/cost_math.hpp"

namespace otcal::detail::cuda_engine {

constexpr int kRowsPerBlock = 128;         // threads per block, one row each
constexpr int kChunk = 32;                 // points of the other cloud per shared-memory chunk
constexpr int kSlab = 16;                  // coordinates per shared-memory slab
constexpr index_t kMaxGridX = (index_t{1} << 31) - 1;
constexpr index_t kMaxGridY = 65535;

// The fixed cut of the other cloud into parts of whole chunks.
struct ColumnParts {
  index_t chunks = 0;
  index_t chunks_per_part = 1;
  index_t parts = 1;  // parts actually used
};

// Every chunk in one part: the un-split loop of apply and cost moments.
inline ColumnParts one_part(index_t m) {
  ColumnParts g;
  g.chunks = (m + kChunk - 1) / kChunk;
  g.chunks_per_part = std::max<index_t>(1, g.chunks);
  g.parts = 1;
  return g;
}

// At most max_parts parts of whole chunks; depends on m and max_parts only.
inline ColumnParts parts_of(index_t m, index_t max_parts) {
  ColumnParts g;
  g.chunks = (m + kChunk - 1) / kChunk;
  g.chunks_per_part = std::max<index_t>(1, (g.chunks + max_parts - 1) / max_parts);
  g.parts = std::max<index_t>(1, (g.chunks + g.chunks_per_part - 1) / g.chunks_per_part);
  return g;
}

inline unsigned row_blocks(index_t rows) {
  return static_cast<unsigned>(std::clamp<index_t>((rows + kRowsPerBlock - 1) / kRowsPerBlock, 1, kMaxGridX));
}

template <class T>
struct ChunkShared {
  T y[kSlab][kChunk];
  T h[kChunk];     // the per-column value of the chunk (a potential), 0 when none, -inf on padding
  T norm[kChunk];  // the other side's norms (cosine)
};

// What the engine walks: rows [0, count) of a tile against the columns cut by `parts`.
template <class T>
struct RowLoop {
  Cloud<T> rows, cols;
  const T* col_values = nullptr;  // staged into ChunkShared::h; nullptr stages 0
  T p = T(2);                     // the cost exponent (pnorm kinds)
  index_t first = 0;              // slot r is row first + r ...
  const index_t* ids = nullptr;   // ... or ids[r] when given
  index_t count = 0;
  ColumnParts parts;
  bool split = false;  // one part per block along grid.y
};

// What every formula and reduction knows of the thread's row.
template <class T>
struct RowCtx {
  index_t r;    // slot in the tile (workspace row)
  index_t i;    // row of the cloud
  bool active;  // r < count
  T ni;         // norm of row i (cosine), 0 otherwise
  T p;
};

// Accumulates the cost terms of row i against chunk [j0, j0 + jn) into acc, and stages the
// chunk's column values and norms in shared memory. Every thread of the block must call it (it
// synchronises); inactive threads only help load.
template <CostKind K, class T>
__device__ __forceinline__ void stage_chunk_costs(const RowLoop<T>& a, const RowCtx<T>& row, index_t j0, int jn,
                                                  ChunkShared<T>& sh, T (&acc)[kChunk]) {
#pragma unroll
  for (int jj = 0; jj < kChunk; ++jj) acc[jj] = T(0);
  const int d = a.cols.d;
  for (int k0 = 0; k0 < d; k0 += kSlab) {
    const int kd = min(kSlab, d - k0);
    __syncthreads();  // the previous slab / chunk is consumed
    for (int idx = threadIdx.x; idx < kSlab * kChunk; idx += blockDim.x) {
      const int kk = idx / kChunk, jj = idx % kChunk;
      sh.y[kk][jj] = (kk < kd && jj < jn) ? a.cols.x[static_cast<index_t>(k0 + kk) * a.cols.n + j0 + jj] : T(0);
    }
    if (k0 == 0) {
      for (int jj = threadIdx.x; jj < kChunk; jj += blockDim.x) {
        sh.h[jj] = jj < jn ? (a.col_values != nullptr ? a.col_values[j0 + jj] : T(0))
                           : -std::numeric_limits<T>::infinity();
        sh.norm[jj] = (jj < jn && a.cols.norms != nullptr) ? a.cols.norms[j0 + jj] : T(0);
      }
    }
    __syncthreads();
    if (row.active) {
      for (int kk = 0; kk < kd; ++kk) {
        const T xk = a.rows.x[static_cast<index_t>(k0 + kk) * a.rows.n + row.i];
#pragma unroll
        for (int jj = 0; jj < kChunk; ++jj) acc[jj] += cost_term<K>(xk, sh.y[kk][jj], row.p);
      }
    }
  }
}

// The engine: one launch reduces `count` rows (grid.x) over all parts, or one part per block
// along grid.y when split.
template <CostKind K, class T, class Formula, class Reduction>
__global__ void __launch_bounds__(kRowsPerBlock) row_engine_kernel(RowLoop<T> a, Formula formula, Reduction red) {
  __shared__ ChunkShared<T> sh;
  RowCtx<T> row;
  row.r = static_cast<index_t>(blockIdx.x) * kRowsPerBlock + threadIdx.x;
  row.active = row.r < a.count;
  row.i = a.ids != nullptr ? (row.active ? a.ids[row.r] : 0) : a.first + row.r;
  row.ni = (row.active && a.rows.norms != nullptr) ? a.rows.norms[row.i] : T(0);
  row.p = a.p;
  const typename Formula::Terms terms = formula.terms(row);
  typename Reduction::Row total = red.begin_row(row);
  const index_t m = a.cols.n;
  T acc[kChunk];
  const auto walk = [&](index_t c_begin, index_t c_end, typename Reduction::Part& st) {
    for (index_t c = c_begin; c < c_end; ++c) {
      const index_t j0 = c * kChunk;
      const int jn = static_cast<int>(min(static_cast<index_t>(kChunk), m - j0));
      stage_chunk_costs<K>(a, row, j0, jn, sh, acc);
      red.fold(st, row, terms, formula, j0, jn, acc, sh);
    }
  };
  if constexpr (Reduction::kColumnParts) {
    const index_t part_begin = a.split ? blockIdx.y : 0;
    const index_t part_end = a.split ? part_begin + 1 : a.parts.parts;
    for (index_t part = part_begin; part < part_end; ++part) {
      typename Reduction::Part st = red.begin_part(row, terms);
      const index_t c_begin = part * a.parts.chunks_per_part;
      walk(c_begin, min(a.parts.chunks, c_begin + a.parts.chunks_per_part), st);
      red.end_part(total, st, row, part, a.split);
    }
  } else {
    // Every column in one sweep; the part loop's bookkeeping would only cost registers here.
    typename Reduction::Part st = red.begin_part(row, terms);
    walk(0, a.parts.chunks, st);
    red.end_part(total, st, row, 0, false);
  }
  red.end_row(total, row, a.split);
}

// Launches the engine over a.count rows; grid.y = parts when split.
template <CostKind K, class T, class Formula, class Reduction>
void launch_rows(const RowLoop<T>& a, const Formula& formula, const Reduction& red, cudaStream_t stream) {
  const dim3 grid(row_blocks(a.count), a.split ? static_cast<unsigned>(a.parts.parts) : 1u);
  row_engine_kernel<K, T, Formula, Reduction><<<grid, kRowsPerBlock, 0, stream>>>(a, formula, red);
}

}  // namespace otcal::detail::cuda_engine
