#pragma once
// The fast row LSE for the squared Euclidean cost, d = 1..8 (docs/sinkhorn.md §10; the element
// math, its exactness argument and its CPU emulation are include/otcal/detail/lse_fast_math.hpp
// and tests/test_lse_fast_math.cpp). Everything else keeps the row engine (row_engine.cuh).
//
//  * A thread owns kLseFastRows rows, strided by the block size (the row loads coalesce); a block
//    owns kLseFastThreads * kLseFastRows rows.
//  * Per chunk of kChunk columns the block stages each column once, centred on y_0, as D
//    coordinates and its bias b_j, packed into 16-byte vectors (float4, double2): a thread reads
//    one broadcast vector load per column and uses it for all its rows.
//  * Per entry: D FMAs (t' = b_j + a_i.v), one subtract of the row's reference, one exp2, one add.
//    No per-entry max: a chunk whose sum leaves the accepted range takes the cold path for that
//    row (recompute, max, merge).
//  * The columns are cut into the same parts as the engine (lse_parts(m)); each part starts from
//    the empty state, its partial (r_i + ref, sum) is merged in part order in float64, by the row's
//    thread (fused) or by lse_merge_parts_kernel (split), so both paths and every tile size give
//    the same bits.
#include <cuda_runtime.h>

#include <algorithm>
#include <limits>

#include "core/backend.hpp"
#include "otcal/detail/lse_fast_math.hpp"
#include "otcal/detail/lse_math.hpp"
#include "row_engine.cuh"

namespace otcal::detail::cuda_lse_fast {

using cuda_engine::ColumnParts;
using cuda_engine::kChunk;

constexpr int kLseFastThreads = 128;
constexpr int kLseFastRows = 4;  // rows per thread
constexpr int kLseFastBlockRows = kLseFastThreads * kLseFastRows;

// 16-byte vectors of T: one shared load (LDS.128) each.
template <class T>
struct Vec16;
template <>
struct Vec16<float> {
  using type = float4;
  static constexpr int kLanes = 4;
};
template <>
struct Vec16<double> {
  using type = double2;
  static constexpr int kLanes = 2;
};

// A staged column: v_0..v_{D-1}, b, then zero padding to whole vectors.
template <int D, class T>
struct StagedColumn {
  static constexpr int kLanes = Vec16<T>::kLanes;
  static constexpr int kVecs = (D + 1 + kLanes - 1) / kLanes;
  union {
    typename Vec16<T>::type vec[kVecs];
    T val[kVecs * kLanes];
  };
};

template <class T>
struct LseFastArgs {
  Cloud<T> rows, cols;
  const T* col_values = nullptr;  // h_j; nullptr stages 0
  LseFastScales scales{};
  index_t first = 0;  // slot r is row first + r
  index_t count = 0;
  ColumnParts parts;
  bool split = false;     // one part per block along grid.y, partials to `state`
  T* out = nullptr;       // fused path
  double* state = nullptr;
  index_t state_stride = 0;
};

// The chunk's column values (register copy of one staged column).
template <int D, class T>
__device__ __forceinline__ void load_column(const StagedColumn<D, T>& col, T (&v)[D + 1]) {
  StagedColumn<D, T> c;
#pragma unroll
  for (int w = 0; w < StagedColumn<D, T>::kVecs; ++w) c.vec[w] = col.vec[w];
#pragma unroll
  for (int k = 0; k <= D; ++k) v[k] = c.val[k];
}

// The cold path of one row and chunk: the chunk's exponents again, their max, the sum of
// exp2(t' - max), merged into the row's state (lse_fast_math.hpp).
template <int D, class T>
__device__ __forceinline__ void cold_chunk(LseFastState<T>& st, const T* a, const StagedColumn<D, T>* sh) {
  T mx = -std::numeric_limits<T>::infinity();
#pragma unroll 1
  for (int jj = 0; jj < kChunk; ++jj) {
    T v[D + 1];
    load_column(sh[jj], v);
    mx = lse_fast_max(mx, lse_fast_exponent<D>(v[D], a, v));
  }
  T s = T(0);
  if (mx > -std::numeric_limits<T>::infinity()) {
#pragma unroll 1
    for (int jj = 0; jj < kChunk; ++jj) {
      T v[D + 1];
      load_column(sh[jj], v);
      s += lse_fast_exp2(T(lse_fast_exponent<D>(v[D], a, v) - mx));
    }
  }
  lse_fast_merge(st, mx, s);
}

template <int D, class T>
__global__ void __launch_bounds__(kLseFastThreads) lse_fast_kernel(LseFastArgs<T> a) {
  __shared__ StagedColumn<D, T> sh[kChunk];
  constexpr int R = kLseFastRows;
  const index_t m = a.cols.n;
  // The centre c = y_0, the same for every block, tile and path.
  T centre[D];
#pragma unroll
  for (int k = 0; k < D; ++k) centre[k] = a.cols.x[static_cast<index_t>(k) * m];

  const index_t slot0 = static_cast<index_t>(blockIdx.x) * kLseFastBlockRows + threadIdx.x;
  T slope[R][D];
  double row_const[R];
#pragma unroll
  for (int q = 0; q < R; ++q) {
    const index_t r = slot0 + q * kLseFastThreads;
    T u[D];
#pragma unroll
    for (int k = 0; k < D; ++k)
      u[k] = r < a.count ? T(a.rows.x[static_cast<index_t>(k) * a.rows.n + a.first + r] - centre[k]) : T(0);
    row_const[q] = lse_fast_row(u, D, a.scales, slope[q]);
  }

  // The rows' float64 totals across parts live in shared memory, one slot per row, touched once
  // per part: in registers they would hold 8 registers per row through the hot loop.
  __shared__ LseState total[R][kLseFastThreads];
#pragma unroll
  for (int q = 0; q < R; ++q) total[q][threadIdx.x] = lse_empty();
  const index_t part_begin = a.split ? blockIdx.y : 0;
  const index_t part_end = a.split ? part_begin + 1 : a.parts.parts;
  for (index_t part = part_begin; part < part_end; ++part) {
    LseFastState<T> st[R];
#pragma unroll
    for (int q = 0; q < R; ++q) st[q] = lse_fast_empty<T>();
    const index_t c_begin = part * a.parts.chunks_per_part;
    const index_t c_end = min(a.parts.chunks, c_begin + a.parts.chunks_per_part);
    for (index_t ch = c_begin; ch < c_end; ++ch) {
      const index_t j0 = ch * kChunk;
      __syncthreads();  // the previous chunk is consumed
      if (threadIdx.x < kChunk) {
        const index_t j = j0 + threadIdx.x;
        StagedColumn<D, T> col;
#pragma unroll
        for (int k = 0; k < StagedColumn<D, T>::kVecs * StagedColumn<D, T>::kLanes; ++k) col.val[k] = T(0);
        if (j < m) {
#pragma unroll
          for (int k = 0; k < D; ++k) col.val[k] = T(a.cols.x[static_cast<index_t>(k) * m + j] - centre[k]);
          const T h = a.col_values != nullptr ? a.col_values[j] : T(0);
          col.val[D] = lse_fast_bias(h, col.val, D, a.scales);
        } else {
          col.val[D] = -std::numeric_limits<T>::infinity();  // padding contributes nothing
        }
#pragma unroll
        for (int w = 0; w < StagedColumn<D, T>::kVecs; ++w) sh[threadIdx.x].vec[w] = col.vec[w];
      }
      __syncthreads();
      // The hot loop: per column one vector load, per entry D FMAs, a subtract, exp2 and an add.
      T s[R];
#pragma unroll
      for (int q = 0; q < R; ++q) s[q] = T(0);
#pragma unroll
      for (int jj = 0; jj < kChunk; ++jj) {
        T v[D + 1];
        load_column(sh[jj], v);
#pragma unroll
        for (int q = 0; q < R; ++q)
          s[q] += lse_fast_exp2(T(lse_fast_exponent<D>(v[D], slope[q], v) - st[q].ref));
      }
#pragma unroll
      for (int q = 0; q < R; ++q)
        if (!lse_fast_accept(st[q], s[q])) cold_chunk<D>(st[q], slope[q], sh);
    }
#pragma unroll
    for (int q = 0; q < R; ++q) {
      const index_t r = slot0 + q * kLseFastThreads;
      const LseState p = lse_fast_partial(st[q], row_const[q]);
      if (a.split) {
        if (r < a.count) {
          double* slot = a.state + 2 * (part * a.state_stride + r);
          slot[0] = p.max;
          slot[1] = p.sum;
        }
      } else {
        lse_merge(total[q][threadIdx.x], p.max, p.sum);
      }
    }
  }
  if (!a.split) {
#pragma unroll
    for (int q = 0; q < R; ++q) {
      const index_t r = slot0 + q * kLseFastThreads;
      if (r < a.count) a.out[a.first + r] = static_cast<T>(lse_natural(total[q][threadIdx.x]));
    }
  }
}

inline unsigned lse_fast_row_blocks(index_t rows) {
  return static_cast<unsigned>(
      std::clamp<index_t>((rows + kLseFastBlockRows - 1) / kLseFastBlockRows, 1, cuda_engine::kMaxGridX));
}

// Launches the kernel for a.cols.d (1..kLseFastMaxD) over a.count rows; grid.y = parts when split.
template <class T>
void launch_lse_fast(const LseFastArgs<T>& a, cudaStream_t stream) {
  const dim3 grid(lse_fast_row_blocks(a.count), a.split ? static_cast<unsigned>(a.parts.parts) : 1u);
  switch (a.cols.d) {
    case 1: lse_fast_kernel<1, T><<<grid, kLseFastThreads, 0, stream>>>(a); break;
    case 2: lse_fast_kernel<2, T><<<grid, kLseFastThreads, 0, stream>>>(a); break;
    case 3: lse_fast_kernel<3, T><<<grid, kLseFastThreads, 0, stream>>>(a); break;
    case 4: lse_fast_kernel<4, T><<<grid, kLseFastThreads, 0, stream>>>(a); break;
    case 5: lse_fast_kernel<5, T><<<grid, kLseFastThreads, 0, stream>>>(a); break;
    case 6: lse_fast_kernel<6, T><<<grid, kLseFastThreads, 0, stream>>>(a); break;
    case 7: lse_fast_kernel<7, T><<<grid, kLseFastThreads, 0, stream>>>(a); break;
    default: lse_fast_kernel<8, T><<<grid, kLseFastThreads, 0, stream>>>(a); break;
  }
}

}  // namespace otcal::detail::cuda_lse_fast
