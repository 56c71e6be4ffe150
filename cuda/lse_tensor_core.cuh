#pragma once
// The float32 sqeuclidean row LSE with its inner products on the tensor cores (d >= 8), the
// FlashAttention-style twin of the row engine's LSE (row_engine.cuh + LseReduction), same
// semantics (docs/sinkhorn.md §4, §10): out_i = ln sum_j exp(h_j/eps - |x_i - y_j|^2/(eps*s)).
//
// Bias form. With the centre c = y_0 (the first column point), x' = x - c, y' = y - c and
// kappa = log2e/(eps*s), the base-2 exponent is
//   t_ij = b_j + a_i . y'_j + r_i,  b_j = h_j log2e/eps - kappa |y'_j|^2,
//   a_i = 2 kappa x'_i,  r_i = -kappa |x'_i|^2.
// Centring keeps |a_i . y'_j| of the size of the distances, not of the coordinates. a_i . y'_j is a
// 16 x 32 tile per warp of mma.sync m16n8k8 TF32 products at 3xTF32 accuracy (tf32_split.hpp:
// hi*hi + hi*lo + lo*hi, float32 accumulate, about float32 accuracy); b_j is float32 from a
// float64 sum; r_i is float64 and is added once per part, never per entry.
//
// Reduction, per row, as LseReduction::fold: per 32-column chunk (the engine's kChunk) the max of
// t - r_i in float32 (NaN wins), the float32 sum of exp2(t - max) (ex2.approx.ftz), merged into a
// float64 (max, sum) with lse_merge; an all -inf chunk adds nothing, a NaN chunk merges a NaN term.
// Columns are cut by the caller's ColumnParts (lse_parts(m) in cuda_backend.cu); each part starts
// from the empty state and ends as (max + r_i, sum), so that the parts, merged in part order by
// lse_merge, give ln2 (max + r_i + log2 sum). Fused (one block walks every part) and split (one
// part per block along grid.y, partials in the tile state, merged by lse_merge_parts_kernel) do
// the same operations in the same order: the same bits, whatever the path or tile_rows.
//
// Layout. A block is 4 warps and 64 rows (16 per warp). Shared memory holds the block's a_i (hi,
// lo) for the whole of d, padded with zeros to a multiple of 8, and one chunk of 32 columns y'_j
// (hi, lo) with its b_j. Rows are stored [row][k] and columns [col][k] with a stride = 4 mod 8
// words, so the fragment loads below hit 32 distinct banks. Padding columns (j >= m) are -inf;
// rows beyond the tile are computed from zeros and not written.
#include <cuda_runtime.h>

#include <cmath>
#include <limits>

#include "core/backend.hpp"
#include "otcal/detail/lse_math.hpp"
#include "otcal/detail/tf32_split.hpp"
#include "row_engine.cuh"
#include "row_reductions.cuh"

namespace otcal::detail::cuda_engine {

constexpr int kTcWarps = 4;
constexpr int kTcThreads = 32 * kTcWarps;
constexpr int kTcRowsPerWarp = 16;  // the m of m16n8k8
constexpr int kTcRows = kTcWarps * kTcRowsPerWarp;
constexpr int kTcColTiles = kChunk / 8;  // n8 tiles per chunk
constexpr int kTcMinDim = 8;
constexpr int kTcMaxDim = 256;  // 197 KB of shared memory at 256; larger d keeps the row engine

// Words per stored row of k values: d padded to 8, plus 4, so that stride = 4 (mod 8).
__host__ __device__ inline int tc_stride(int d_padded) { return d_padded + 4; }
__host__ __device__ inline int tc_pad_dim(int d) { return (d + 7) / 8 * 8; }

// Dynamic shared memory: a hi/lo [kTcRows][stride], y' hi/lo [kChunk][stride], b [kChunk],
// c [d_padded], and the rows' r in float64 [kTcRows].
inline std::size_t tc_shared_bytes(int d) {
  const int dp = tc_pad_dim(d), st = tc_stride(dp);
  return sizeof(double) * kTcRows + sizeof(float) * (2 * (kTcRows + kChunk) * st + kChunk + dp);
}

// D = A * B + D, one m16n8k8 TF32 tile, float32 accumulate.
__device__ __forceinline__ void mma_tf32(float (&d)[4], const unsigned (&a)[4], unsigned b0, unsigned b1) {
  asm("mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// 2^x for x <= 0 (or -inf -> 0, NaN -> NaN): the MUFU approximation, flushing subnormal results.
__device__ __forceinline__ float tc_exp2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}

__device__ __forceinline__ float nan_max(float a, float b) { return (b > a || b != b) ? b : a; }

struct TcLseParams {
  Cloud<float> rows, cols;
  const float* h = nullptr;
  float two_kappa = 0;       // 2 log2e / (eps s), in float32
  double kappa = 0;          // log2e / (eps s)
  double h_scale = 0;        // log2e / eps
  index_t first = 0;         // slot r is row first + r
  index_t count = 0;         // rows of the launch
  ColumnParts parts;
  bool split = false;        // one part per block along grid.y, partials to `state`
  float* out = nullptr;      // fused
  double* state = nullptr;   // split: [part][state_stride] (max, sum)
  index_t state_stride = 0;
};

// static: each translation unit that launches it holds its own copy (a header kernel).
static __global__ void __launch_bounds__(kTcThreads) lse_tensor_core_kernel(TcLseParams p) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 800
  __trap();  // mma .tf32 needs sm_80; the launcher never launches it there
#else
  extern __shared__ double tc_shared[];
  const int d = p.rows.d, dp = tc_pad_dim(d), st = tc_stride(dp);
  double* r_sh = tc_shared;                                          // [kTcRows]
  float* a_hi = reinterpret_cast<float*>(tc_shared + kTcRows);       // [kTcRows][st]
  float* a_lo = a_hi + kTcRows * st;
  float* y_hi = a_lo + kTcRows * st;                                 // [kChunk][st]
  float* y_lo = y_hi + kChunk * st;
  float* b_sh = y_lo + kChunk * st;                                  // [kChunk]
  float* c_sh = b_sh + kChunk;                                       // [dp]

  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  const index_t n = p.rows.n, m = p.cols.n;
  const index_t r0 = static_cast<index_t>(blockIdx.x) * kTcRows;  // first slot of the block

  // The centre and the block's rows: a = 2 kappa (x - c) split into TF32 hi/lo, r = -kappa |x - c|^2.
  for (int k = tid; k < dp; k += kTcThreads) c_sh[k] = (k < d && m > 0) ? p.cols.x[static_cast<index_t>(k) * m] : 0.0f;
  __syncthreads();
  for (int idx = tid; idx < kTcRows * dp; idx += kTcThreads) {
    const int k = idx / kTcRows, rr = idx % kTcRows;  // consecutive threads: consecutive rows (coalesced)
    const index_t r = r0 + rr;
    float v = 0.0f;
    if (k < d && r < p.count) v = p.two_kappa * (p.rows.x[static_cast<index_t>(k) * n + p.first + r] - c_sh[k]);
    const Tf32Pair s = tf32_split(v);
    a_hi[rr * st + k] = s.hi;
    a_lo[rr * st + k] = s.lo;
  }
  if (tid < kTcRows) {
    const index_t r = r0 + tid;
    double sq = 0.0;
    if (r < p.count)
      for (int k = 0; k < d; ++k) {
        const double v = static_cast<double>(p.rows.x[static_cast<index_t>(k) * n + p.first + r] - c_sh[k]);
        sq += v * v;
      }
    r_sh[tid] = -p.kappa * sq;
  }
  __syncthreads();  // r_sh is read at the end of a part even when there is no chunk (m = 0)

  // Fragment coordinates (PTX ISA, "Matrix Fragments for mma.m16n8k8", section 9.7.14.5.7, .tf32):
  //   A (row-major 16 x 8): a0 (g, q), a1 (g + 8, q), a2 (g, q + 4), a3 (g + 8, q + 4)
  //   B (col-major 8 x 8):  b0 (k = q, n = g), b1 (k = q + 4, n = g)
  //   C/D (16 x 8, f32):    c0, c1 (g, 2q + {0, 1}), c2, c3 (g + 8, 2q + {0, 1})
  // with g = lane / 4 (groupID) and q = lane % 4 (threadID_in_group).
  const int g = lane / 4, q = lane % 4;
  const int row_lo = warp * kTcRowsPerWarp + g;  // block rows of c0/c1 and c2/c3
  const float* a_hi_w = a_hi + row_lo * st;
  const float* a_lo_w = a_lo + row_lo * st;

  // The column loader: warp w stages columns 8w..8w+7 of the chunk, lane = 8 kq + jl holds
  // column 8w + jl and coordinates k = kq, kq + 4, ...; the 4 partial |y'|^2 of a column are
  // summed across lanes by a fixed butterfly (the same bits in every lane).
  const int load_col = warp * 8 + (lane % 8), load_kq = lane / 8;

  LseState total[2] = {lse_empty(), lse_empty()};
  const index_t part_begin = p.split ? blockIdx.y : 0;
  const index_t part_end = p.split ? part_begin + 1 : p.parts.parts;
  for (index_t part = part_begin; part < part_end; ++part) {
    LseState st_part[2] = {lse_empty(), lse_empty()};
    const index_t c_begin = part * p.parts.chunks_per_part;
    const index_t c_end = min(p.parts.chunks, c_begin + p.parts.chunks_per_part);
    for (index_t c = c_begin; c < c_end; ++c) {
      const index_t j0 = c * kChunk;
      const int jn = static_cast<int>(min(static_cast<index_t>(kChunk), m - j0));
      __syncthreads();  // the previous chunk is consumed (and, the first time, the rows are staged)
      {
        const index_t j = j0 + load_col;
        const bool live = load_col < jn;
        double sq = 0.0;
        for (int k = load_kq; k < dp; k += 4) {
          float v = 0.0f;
          if (live && k < d) v = p.cols.x[static_cast<index_t>(k) * m + j] - c_sh[k];
          const double vd = static_cast<double>(v);
          sq += vd * vd;
          const Tf32Pair s = tf32_split(v);
          y_hi[load_col * st + k] = s.hi;
          y_lo[load_col * st + k] = s.lo;
        }
        sq += __shfl_xor_sync(0xffffffffu, sq, 8);
        sq += __shfl_xor_sync(0xffffffffu, sq, 16);
        if (load_kq == 0)
          b_sh[load_col] = live ? static_cast<float>((p.h != nullptr ? static_cast<double>(p.h[j]) * p.h_scale : 0.0) -
                                                     p.kappa * sq)
                                : -std::numeric_limits<float>::infinity();
      }
      __syncthreads();

      float acc[kTcColTiles][4];
#pragma unroll
      for (int nt = 0; nt < kTcColTiles; ++nt)
#pragma unroll
        for (int e = 0; e < 4; ++e) acc[nt][e] = 0.0f;
      for (int k0 = 0; k0 < dp; k0 += 8) {
        const unsigned ah[4] = {__float_as_uint(a_hi_w[k0 + q]), __float_as_uint(a_hi_w[8 * st + k0 + q]),
                                __float_as_uint(a_hi_w[k0 + q + 4]), __float_as_uint(a_hi_w[8 * st + k0 + q + 4])};
        const unsigned al[4] = {__float_as_uint(a_lo_w[k0 + q]), __float_as_uint(a_lo_w[8 * st + k0 + q]),
                                __float_as_uint(a_lo_w[k0 + q + 4]), __float_as_uint(a_lo_w[8 * st + k0 + q + 4])};
#pragma unroll
        for (int nt = 0; nt < kTcColTiles; ++nt) {
          const int col = (8 * nt + g) * st + k0 + q;
          const unsigned bh0 = __float_as_uint(y_hi[col]), bh1 = __float_as_uint(y_hi[col + 4]);
          const unsigned bl0 = __float_as_uint(y_lo[col]), bl1 = __float_as_uint(y_lo[col + 4]);
          // The small products first: they are added into an accumulator of their own size.
          mma_tf32(acc[nt], al, bh0, bh1);
          mma_tf32(acc[nt], ah, bl0, bl1);
          mma_tf32(acc[nt], ah, bh0, bh1);
        }
      }

      // Epilogue: rows g (half 0: c0, c1) and g + 8 (half 1: c2, c3) of the warp's tile; each
      // row's 32 values sit in the 4 lanes of its quad, 8 per lane.
#pragma unroll
      for (int half = 0; half < 2; ++half) {
        float v[2 * kTcColTiles];
        float mx = -std::numeric_limits<float>::infinity();
#pragma unroll
        for (int nt = 0; nt < kTcColTiles; ++nt)
#pragma unroll
          for (int e = 0; e < 2; ++e) {
            const int jj = 8 * nt + 2 * q + e;
            // Padding columns are -inf whatever their product (a NaN row times a zero column); a
            // select, not a branch around the load (b_sh holds -inf there anyway).
            const float sum = acc[nt][2 * half + e] + b_sh[jj];
            const float t = jj < jn ? sum : -std::numeric_limits<float>::infinity();
            v[2 * nt + e] = t;
            mx = nan_max(mx, t);
          }
        mx = nan_max(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
        mx = nan_max(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
        float s = 0.0f;
#pragma unroll
        for (int e = 0; e < 2 * kTcColTiles; ++e) s += tc_exp2(v[e] - mx);
        s += __shfl_xor_sync(0xffffffffu, s, 1);
        s += __shfl_xor_sync(0xffffffffu, s, 2);
        if (!(mx > -std::numeric_limits<float>::infinity())) {  // an all -inf chunk adds nothing
          if (mx != mx) lse_merge(st_part[half], static_cast<double>(mx), 1.0);  // NaN: absorbing
        } else {
          lse_merge(st_part[half], static_cast<double>(mx), static_cast<double>(s));
        }
      }
    }

    // End of the part: (max + r, sum), to the row's total (fused) or to the tile state (split).
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      const int rr = row_lo + 8 * half;
      const index_t r = r0 + rr;
      const double shifted = st_part[half].max + r_sh[rr];
      if (p.split) {
        if (q == 0 && r < p.count) {
          double* slot = p.state + 2 * (part * p.state_stride + r);
          slot[0] = shifted;
          slot[1] = st_part[half].sum;
        }
      } else {
        lse_merge(total[half], shifted, st_part[half].sum);
      }
    }
  }
  if (!p.split) {
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      const index_t r = r0 + row_lo + 8 * half;
      if (q == 0 && r < p.count) p.out[p.first + r] = static_cast<float>(lse_natural(total[half]));
    }
  }
#endif
}

// The tensor-core row LSE for a (float32). `parts` is the caller's cut of the columns
// (lse_parts(m)); `split` chooses the path as launch_row_lse does (split needs a.state, 2 *
// tile_rows * parts doubles). Returns false, launching nothing, where the kernel does not apply:
// not sqeuclidean, d < 8, d > kTcMaxDim (shared memory) or a device before sm_80 (no TF32 mma);
// the caller then uses the row engine.
// Launch errors are left to the caller's check (cudaGetLastError), as for the engine.
inline bool launch_lse_tensor_core(const RowLseArgs<float>& a, const ColumnParts& parts, bool split,
                                   cudaStream_t stream) {
  if (a.cost.kind != CostKind::sqeuclidean || a.rows.d < kTcMinDim || a.rows.d > kTcMaxDim || a.rows.d != a.cols.d)
    return false;
  int device = 0, major = 0;
  if (cudaGetDevice(&device) != cudaSuccess ||
      cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device) != cudaSuccess || major < 8) {
    (void)cudaGetLastError();
    return false;
  }
  const index_t n = a.rows.n;
  if (n == 0) return true;
  const std::size_t shared = tc_shared_bytes(a.rows.d);
  if (shared > 48 * 1024 &&
      cudaFuncSetAttribute(lse_tensor_core_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                           static_cast<int>(shared)) != cudaSuccess) {
    (void)cudaGetLastError();
    return false;  // a device without that much shared memory per block: the row engine
  }
  TcLseParams p;
  p.rows = a.rows;
  p.cols = a.cols;
  p.h = a.col_potential;
  p.kappa = kLog2e / a.eps * a.inv_scale;
  p.two_kappa = static_cast<float>(2.0 * p.kappa);
  p.h_scale = kLog2e / a.eps;
  p.parts = parts;
  p.out = a.out;
  if (!split) {
    p.first = 0;
    p.count = n;
    const unsigned blocks = static_cast<unsigned>((n + kTcRows - 1) / kTcRows);
    lse_tensor_core_kernel<<<blocks, kTcThreads, shared, stream>>>(p);
    return true;
  }
  const index_t tile = a.tile_rows > 0 ? a.tile_rows : 1;
  p.split = true;
  p.state = a.state;
  p.state_stride = tile;
  for (index_t t0 = 0; t0 < n; t0 += tile) {
    p.first = t0;
    p.count = tile < n - t0 ? tile : n - t0;
    const dim3 grid(static_cast<unsigned>((p.count + kTcRows - 1) / kTcRows), static_cast<unsigned>(parts.parts));
    lse_tensor_core_kernel<<<grid, kTcThreads, shared, stream>>>(p);
    lse_merge_parts_kernel<float><<<row_blocks(p.count), kRowsPerBlock, 0, stream>>>(a.state, tile, parts.parts, t0,
                                                                                     p.count, a.out);
  }
  return true;
}

}  // namespace otcal::detail::cuda_engine
