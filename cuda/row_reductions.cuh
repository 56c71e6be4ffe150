#pragma once
// Reductions of the CUDA row engine (row_engine.cuh). Each folds one chunk of formula values into
// its row state, in ascending column order; the arithmetic and its order are those of the former
// hand-written kernels (docs/sinkhorn.md §10, docs/sparsify.md §2).
#include <cmath>
#include <limits>

#include "otcal/detail/exp2.hpp"
#include "otcal/detail/lse_math.hpp"
#include "row_engine.cuh"

namespace otcal::detail::cuda_engine {

struct NoState {};

// Online base-2 log-sum-exp of t_ij (formula LseExponent). Per chunk: max of t in T (NaN wins, so
// it reaches the flags), sum of exp2(t - max) in T, merged into a float64 (max, sum) state with
// lse_merge. Each part starts from the empty state; the fused path merges the parts in part order,
// the split path writes them to `state` for lse_merge_parts_kernel, which merges them in the same
// order, so both paths give the same bits.
// The two float64 states (the row's and the part's) live in shared memory, one slot per thread:
// held in registers across the chunk loop, ptxas spilled them to local memory in the float32
// pnorm, sq_pnorm and cosine kernels (scripts/cuda_resource_check.py). They are read and written
// once per chunk, by the same lse_merge calls in the same order, so the bits are those of the
// register version.
template <class T>
struct LseReduction {
  T* out;                // out[i] = ln sum_j exp(...) (fused path)
  double* state;         // [part][state_stride] (max, sum) pairs (split path)
  index_t state_stride;  // tile capacity in rows
  static constexpr bool kColumnParts = true;
  using Row = LseState*;   // this thread's slot of the block's row states
  using Part = LseState*;  // this thread's slot of the block's part states
  __device__ Row begin_row(const RowCtx<T>&) const {
    __shared__ LseState rows[kRowsPerBlock];
    rows[threadIdx.x] = lse_empty();
    return &rows[threadIdx.x];
  }
  template <class Terms>
  __device__ Part begin_part(const RowCtx<T>&, const Terms&) const {
    __shared__ LseState parts[kRowsPerBlock];
    parts[threadIdx.x] = lse_empty();
    return &parts[threadIdx.x];
  }
  template <class Terms, class Formula>
  __device__ __forceinline__ void fold(Part& st, const RowCtx<T>& row, const Terms& terms, const Formula& formula,
                                       index_t, int jn, T (&acc)[kChunk], const ChunkShared<T>& sh) const {
    if (!row.active) return;
    T mx = -std::numeric_limits<T>::infinity();
#pragma unroll
    for (int jj = 0; jj < kChunk; ++jj) {
      // Padding lanes of the last chunk are -inf whatever their cost: a padding cost need not be
      // finite (cosine: an infinite row norm times the padding norm 0 is NaN), and a NaN there
      // would now poison a row that the CPU reduces to a finite value.
      acc[jj] = jj < jn ? formula.value(terms, row, acc[jj], jj, sh) : -std::numeric_limits<T>::infinity();
      mx = (acc[jj] > mx || acc[jj] != acc[jj]) ? acc[jj] : mx;  // NaN wins: it must reach the flags
    }
    if (!(mx > -std::numeric_limits<T>::infinity())) {  // an all -inf chunk adds nothing
      // NaN: merged as a NaN term, absorbing through every later chunk and part merge
      // (lse_math.hpp), so it reaches the output whichever chunk or part held it.
      if (mx != mx) lse_merge(*st, static_cast<double>(mx), 1.0);
      return;
    }
    T s = T(0);
#pragma unroll
    for (int jj = 0; jj < kChunk; ++jj) s += exp2_nonpositive(T(acc[jj] - mx));
    lse_merge(*st, static_cast<double>(mx), static_cast<double>(s));
  }
  __device__ void end_part(Row& total, const Part& st, const RowCtx<T>& row, index_t part, bool split) const {
    if (split) {
      if (row.active) {
        double* slot = state + 2 * (part * state_stride + row.r);
        slot[0] = st->max;
        slot[1] = st->sum;
      }
    } else {
      lse_merge(*total, st->max, st->sum);
    }
  }
  __device__ void end_row(const Row& total, const RowCtx<T>& row, bool split) const {
    if (!split && row.active) out[row.i] = static_cast<T>(lse_natural(*total));
  }
};

// Merges the split path's partials in part order: the same lse_merge sequence as the fused path.
template <class T>
__global__ void lse_merge_parts_kernel(const double* state, index_t state_stride, index_t parts, index_t row0,
                                       index_t row_count, T* out) {
  const index_t r = static_cast<index_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (r >= row_count) return;
  LseState total = lse_empty();
  for (index_t part = 0; part < parts; ++part) {
    const double* slot = state + 2 * (part * state_stride + r);
    lse_merge(total, slot[0], slot[1]);
  }
  out[row0 + r] = static_cast<T>(lse_natural(total));
}

// out[i, :] = sum_j P_ij V[j, :] (formula PlanEntry), k columns of V, float64 accumulators in the
// tile workspace acc[r, :]. Per chunk and column c: a chunk sum in ascending j, then added to the
// row's accumulator. Rows with f = -inf carry no mass and give 0.
template <class T>
struct ApplyReduction {
  const T* v;  // [m, k] row-major
  index_t k;
  T* out;       // [n, k]
  double* acc;  // [tile rows, k]
  static constexpr bool kColumnParts = false;
  using Row = NoState;
  struct Part {
    double* acc_row;
    bool live;
  };
  __device__ Row begin_row(const RowCtx<T>&) const { return {}; }
  template <class Terms>
  __device__ Part begin_part(const RowCtx<T>& row, const Terms& terms) const {
    Part p{acc + row.r * k, row.active && terms.fi != -HUGE_VAL};
    if (row.active)
      for (index_t c = 0; c < k; ++c) p.acc_row[c] = 0.0;
    return p;
  }
  template <class Terms, class Formula>
  __device__ __forceinline__ void fold(Part& st, const RowCtx<T>& row, const Terms& terms, const Formula& formula,
                                       index_t j0, int jn, T (&cost)[kChunk], const ChunkShared<T>& sh) const {
    if (!st.live) return;
    double pij[kChunk];
#pragma unroll
    for (int jj = 0; jj < kChunk; ++jj) pij[jj] = jj < jn ? formula.value(terms, row, cost[jj], jj, sh) : 0.0;
    for (index_t c = 0; c < k; ++c) {
      double s = 0.0;
#pragma unroll
      for (int jj = 0; jj < kChunk; ++jj)
        if (pij[jj] != 0.0) s += pij[jj] * static_cast<double>(v[(j0 + jj) * k + c]);  // 0 * inf never formed
      st.acc_row[c] += s;
    }
  }
  __device__ void end_part(Row&, const Part& st, const RowCtx<T>& row, index_t, bool) const {
    if (row.active)
      for (index_t c = 0; c < k; ++c) out[row.i * k + c] = st.live ? static_cast<T>(st.acc_row[c]) : T(0);
  }
  __device__ void end_row(const Row&, const RowCtx<T>&, bool) const {}
};

// Emits every value of the row into a dense row-major block out[r, j] (formula CostFormula or
// PlanEntry, stored as T). A thread owns a row, so writing its values directly would scatter each
// warp store over 32 rows; the chunk is transposed through shared memory instead and each warp
// stores whole row segments (coalesced). Every thread calls fold (it synchronises the block).
// The chunk's costs go to the tile first and each value replaces its cost there, a few at a time:
// the 32 float64 entry formulas unrolled at once (32 results live until the tile writes) made
// ptxas spill 104 bytes in the float32 sqeuclidean plan kernel. Same formula, same bits.
template <class T>
struct EmitReduction {
  T* out;        // [count, m]
  index_t m;     // row length
  index_t count; // rows of the launch: slots at or beyond it are padding
  static constexpr bool kColumnParts = true;
  using Row = NoState;
  using Part = NoState;
  __device__ Row begin_row(const RowCtx<T>&) const { return {}; }
  template <class Terms>
  __device__ Part begin_part(const RowCtx<T>&, const Terms&) const {
    return {};
  }
  template <class Terms, class Formula>
  __device__ __forceinline__ void fold(Part&, const RowCtx<T>& row, const Terms& terms, const Formula& formula,
                                       index_t j0, int jn, T (&cost)[kChunk], const ChunkShared<T>& sh) const {
    __shared__ T tile[kRowsPerBlock][kChunk + 1];  // +1: the per-thread row writes hit distinct banks
    if (row.active) {
      T* mine = tile[threadIdx.x];
#pragma unroll
      for (int jj = 0; jj < kChunk; ++jj) mine[jj] = cost[jj];
      // Every slot, padding included (as before; never stored): a fixed trip count, no remainder loop.
#pragma unroll 8
      for (int jj = 0; jj < kChunk; ++jj) mine[jj] = static_cast<T>(formula.value(terms, row, mine[jj], jj, sh));
    }
    __syncthreads();
    const int lane = threadIdx.x % kChunk, warp = threadIdx.x / kChunk;
    const index_t block_r0 = row.r - threadIdx.x;  // slot of the block's first row
    for (int rr = warp; rr < kRowsPerBlock; rr += kRowsPerBlock / kChunk) {
      const index_t r = block_r0 + rr;
      if (r < count && lane < jn) out[r * m + j0 + lane] = tile[rr][lane];
    }
    __syncthreads();  // the tile is rewritten by the next chunk
  }
  __device__ void end_part(Row&, const Part&, const RowCtx<T>&, index_t, bool) const {}
  __device__ void end_row(const Row&, const RowCtx<T>&, bool) const {}
};

}  // namespace otcal::detail::cuda_engine
