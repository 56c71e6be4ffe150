// CUDA backend of the Sinkhorn primitives (src/core/backend.hpp). The CPU backend
// (src/cpu/cpu_backend.cpp) is the reference; the element math is the same OTCAL_HD code from
// include/otcal/detail/. Design (docs/sinkhorn.md §10):
//
//  * row_lse and row_apply are the one row engine of cuda/row_engine.cuh: one thread per row, the
//    other cloud staged through shared memory in chunks, parameterised by a formula
//    (row_formulas.cuh) and a reduction (row_reductions.cuh). cost_moments keeps its own kernel
//    of the same shape (it needed more registers on the engine, see below).
//  * row_lse: per chunk the row takes the max of t = h_j*log2e/eps - c_ij*log2e/(eps*s) in T,
//    sums exp2(t - max) in T, and merges (max, sum) into a float64 running state (lse_merge:
//    rescales only the smaller side, never forms (-inf)-(-inf)). The columns are cut into
//    `parts` fixed ranges of whole chunks (a function of m only). Each part is reduced from the
//    empty state and the parts are merged in part order. When there are enough rows to fill the
//    device, one block walks every part itself; otherwise the parts go to different blocks
//    (grid.y), write (max, sum) partials into the tile state, and a second kernel merges them in
//    part order. Both paths perform the same operations in the same order, so the result is
//    bitwise independent of the path and of tile_rows (batch-size invariance on CUDA too).
//    The squared Euclidean cost has two kernels of its own, with the same parts, paths and state:
//    d <= 8 cuda/lse_fast.cuh (bias form, several rows per thread, no per-entry max), and in
//    float32 for 8 < d <= 256 cuda/lse_tensor_core.cuh (the inner products on the tensor cores,
//    3xTF32). Fused or split is lse_split's choice: fused once the blocks fill the device for
//    several waves or when the split path would need more than kMaxSplitTiles tiles.
//  * Scalar results (errors, mass, moments, flags) are reduced by fixed-shape grids (block
//    count depends only on n) into per-block partials written straight into a small mapped pinned
//    host buffer; the host merges them in block order after one stream synchronisation. Nothing
//    else synchronises the device.
//  * Memory (docs/host-layer.md §11): the backend is made once per context and dtype and never
//    allocates from the budget. Device scratch is the caller's declared workspace (RowLseArgs::
//    state, RowApplyArgs::acc, the cost_moments partials); the only memory of its own is the
//    small mapped pinned buffer of the scalar reductions, allocated once at construction outside
//    both the device and the pinned budgets.
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <type_traits>
#include <vector>

#include "core/backend.hpp"
#include "core/cuda_runtime.hpp"
#include "cuda_check.hpp"
#include "otcal/detail/cost_math.hpp"
#include "otcal/detail/exp2.hpp"
#include "otcal/detail/lse_math.hpp"
#include "lse_fast.cuh"
#include "lse_tensor_core.cuh"
#include "otcal/detail/lse_fast_math.hpp"
#include "row_engine.cuh"
#include "row_formulas.cuh"
#include "row_reductions.cuh"

namespace otcal::detail {
namespace cuda_impl {

using cuda_engine::ColumnParts;
using cuda_engine::kChunk;
using cuda_engine::kMaxGridX;
using cuda_engine::kRowsPerBlock;

constexpr index_t kMinChunksPerPart = 64;  // a part is >= 2048 columns, so a partial is worth its state
constexpr index_t kMaxParts = 64;
constexpr index_t kFusedWaves = 16;     // fused row LSE from 16 blocks per SM (about 2 full waves)
constexpr index_t kMaxSplitTiles = 8;   // more tiles than this: fused (no per-tile launches)
constexpr int kReduceThreads = 256;
constexpr int kReduceBlocksMax = 256;  // fixed-shape scalar reductions: partials merged on the host
constexpr int kElementThreads = 256;

// How many LSE partials a row may need (what lse_partials_per_row reports); monotone in m.
inline index_t lse_max_parts(index_t m) {
  const index_t chunks = (m + kChunk - 1) / kChunk;
  return std::clamp<index_t>((chunks + kMinChunksPerPart - 1) / kMinChunksPerPart, 1, kMaxParts);
}

// The fixed cut of the other cloud for row_lse; depends on m only.
inline ColumnParts lse_parts(index_t m) { return cuda_engine::parts_of(m, lse_max_parts(m)); }

inline unsigned grid_for(index_t n, int threads, index_t cap = 65535) {
  return static_cast<unsigned>(std::clamp<index_t>((n + threads - 1) / threads, 1, cap));
}

// ---- cost moments: kept on its own kernel --------------------------------------------------------
// On the row engine this pass needed more registers (float64 sqeuclidean/euclidean 94 -> 118) and
// spilled for float32 pnorm, so it keeps the hand-written loop (the engine's shared layout).
using cuda_engine::ChunkShared;
using cuda_engine::kSlab;

// Accumulates the cost terms of row i against chunk [j0, j0 + jn) into acc, and stages the
// chunk's potential and norms in shared memory. Every thread of the block must call it (it
// synchronises); inactive threads only help load.
template <CostKind K, class T>
__device__ __forceinline__ void moments_chunk_costs(const Cloud<T>& rows, const Cloud<T>& cols, const T* h, index_t i,
                                            bool active, index_t j0, int jn, T p, ChunkShared<T>& sh,
                                            T (&acc)[kChunk]) {
#pragma unroll
  for (int jj = 0; jj < kChunk; ++jj) acc[jj] = T(0);
  const int d = cols.d;
  for (int k0 = 0; k0 < d; k0 += kSlab) {
    const int kd = min(kSlab, d - k0);
    __syncthreads();  // the previous slab / chunk is consumed
    for (int idx = threadIdx.x; idx < kSlab * kChunk; idx += blockDim.x) {
      const int kk = idx / kChunk, jj = idx % kChunk;
      sh.y[kk][jj] = (kk < kd && jj < jn) ? cols.x[static_cast<index_t>(k0 + kk) * cols.n + j0 + jj] : T(0);
    }
    if (k0 == 0) {
      for (int jj = threadIdx.x; jj < kChunk; jj += blockDim.x) {
        sh.h[jj] = jj < jn ? (h != nullptr ? h[j0 + jj] : T(0)) : -std::numeric_limits<T>::infinity();
        sh.norm[jj] = (jj < jn && cols.norms != nullptr) ? cols.norms[j0 + jj] : T(0);
      }
    }
    __syncthreads();
    if (active) {
      for (int kk = 0; kk < kd; ++kk) {
        const T xk = rows.x[static_cast<index_t>(k0 + kk) * rows.n + i];
#pragma unroll
        for (int jj = 0; jj < kChunk; ++jj) acc[jj] += cost_term<K>(xk, sh.y[kk][jj], p);
      }
    }
  }
}

template <CostKind K, class T>
__global__ void __launch_bounds__(kRowsPerBlock) cost_moments_kernel(Cloud<T> rows, Cloud<T> cols, T p,
                                                                     double* partials) {
  __shared__ ChunkShared<T> sh;
  const index_t i = static_cast<index_t>(blockIdx.x) * kRowsPerBlock + threadIdx.x;
  const bool active = i < rows.n;
  const T ni = (active && rows.norms != nullptr) ? rows.norms[i] : T(0);
  const index_t chunks = (cols.n + kChunk - 1) / kChunk;
  double s = 0, s2 = 0, mx = 0;
  T cost[kChunk];
  for (index_t ch = 0; ch < chunks; ++ch) {
    const index_t j0 = ch * kChunk;
    const int jn = static_cast<int>(min(static_cast<index_t>(kChunk), cols.n - j0));
    moments_chunk_costs<K>(rows, cols, static_cast<const T*>(nullptr), i, active, j0, jn, p, sh, cost);
    if (!active) continue;
    double gs = 0, gs2 = 0;
#pragma unroll
    for (int jj = 0; jj < kChunk; ++jj) {
      if (jj < jn) {
        const double c = static_cast<double>(cost_finish<K>(cost[jj], p, ni, sh.norm[jj]));
        gs += c;
        gs2 += c * c;
        mx = fmax(mx, fabs(c));
      }
    }
    s += gs;
    s2 += gs2;
  }
  if (active) {
    partials[3 * i] = s;
    partials[3 * i + 1] = s2;
    partials[3 * i + 2] = mx;
  }
}

// ---- fixed-shape reductions into per-block partials (host merges them in block order) ----------

template <int W>
struct Partial {
  double v[W];
};

// Each block reduces indices b*B + t + stride*q; W values per index combined by `Op`.
template <int W, class Term, class Op>
__global__ void __launch_bounds__(kReduceThreads) reduce_kernel(index_t n, Term term, Op op, double* block_out) {
  __shared__ double sh[W][kReduceThreads];
  Partial<W> acc = op.identity();
  const index_t stride = static_cast<index_t>(gridDim.x) * kReduceThreads;
  for (index_t i = static_cast<index_t>(blockIdx.x) * kReduceThreads + threadIdx.x; i < n; i += stride)
    acc = op(acc, term(i));
  for (int w = 0; w < W; ++w) sh[w][threadIdx.x] = acc.v[w];
  __syncthreads();
  for (int half = kReduceThreads / 2; half > 0; half /= 2) {
    if (threadIdx.x < half) {
      Partial<W> a, b;
      for (int w = 0; w < W; ++w) {
        a.v[w] = sh[w][threadIdx.x];
        b.v[w] = sh[w][threadIdx.x + half];
      }
      a = op(a, b);
      for (int w = 0; w < W; ++w) sh[w][threadIdx.x] = a.v[w];
    }
    __syncthreads();
  }
  if (threadIdx.x == 0)
    for (int w = 0; w < W; ++w) block_out[W * blockIdx.x + w] = sh[w][0];
}

struct SumOp {
  __device__ Partial<1> identity() const { return {{0.0}}; }
  __device__ Partial<1> operator()(Partial<1> a, Partial<1> b) const { return {{a.v[0] + b.v[0]}}; }
};

struct MomentsOp {
  __device__ Partial<3> identity() const { return {{0.0, 0.0, 0.0}}; }
  __device__ Partial<3> operator()(Partial<3> a, Partial<3> b) const {
    return {{a.v[0] + b.v[0], a.v[1] + b.v[1], fmax(a.v[2], b.v[2])}};
  }
};

template <class T>
struct MarginalErrorTerm {
  const T* pot;
  const T* lse;
  const T* w;
  double eps, rho, p;
  __device__ Partial<1> operator()(index_t i) const {
    const double diff = fabs(marginal_from_lse(pot[i], lse[i], eps) - marginal_target(w[i], pot[i], rho));
    return {{p == 1.0 ? diff : ::pow(diff, p)}};
  }
};

template <class T>
struct MassTerm {
  const T* pot;
  const T* lse;
  double eps;
  __device__ Partial<1> operator()(index_t i) const { return {{marginal_from_lse(pot[i], lse[i], eps)}}; }
};

struct MomentsTerm {
  const double* partials;
  __device__ Partial<3> operator()(index_t i) const {
    return {{partials[3 * i], partials[3 * i + 1], partials[3 * i + 2]}};
  }
};

// Validity flags: OR per thread, a warp vote (__reduce_or_sync), one shared atomicOr per warp,
// one word per block.
template <class Flags>
__global__ void __launch_bounds__(kReduceThreads) flags_kernel(index_t n, Flags flags, unsigned* block_out) {
  __shared__ unsigned word;
  if (threadIdx.x == 0) word = 0u;
  __syncthreads();
  unsigned mine = 0u;
  const index_t stride = static_cast<index_t>(gridDim.x) * kReduceThreads;
  for (index_t i = static_cast<index_t>(blockIdx.x) * kReduceThreads + threadIdx.x; i < n; i += stride)
    mine |= flags(i);
  const unsigned warp = __reduce_or_sync(0xffffffffu, mine);
  if ((threadIdx.x & 31u) == 0 && warp != 0u) atomicOr(&word, warp);
  __syncthreads();
  if (threadIdx.x == 0) block_out[blockIdx.x] = word;
}

template <class T>
struct PotentialFlags {
  const T* pot;
  const T* w;
  __device__ unsigned operator()(index_t i) const { return detail::potential_flags(pot[i], w[i]); }
};

template <class T>
struct ValueFlags {
  const T* v;
  __device__ unsigned operator()(index_t i) const { return detail::value_flags(v[i]); }
};

// ---- element-wise kernels ----------------------------------------------------------------------

template <class F>
__global__ void for_each_kernel(index_t n, F f) {
  const index_t stride = static_cast<index_t>(gridDim.x) * blockDim.x;
  for (index_t i = static_cast<index_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) f(i);
}

template <class T>
struct PotentialUpdateOp {
  const T* lse;
  const T* log_w;
  T eps_t, tau;
  T* out;
  __device__ void operator()(index_t i) const { out[i] = detail::potential_update(lse[i], log_w[i], eps_t, tau); }
};

// Momentum's over-relaxed update (Backend::relaxed_update).
template <class T>
struct RelaxedUpdateOp {
  const T* lse;
  const T* log_w;
  T eps_t, tau, weight, keep;
  T* pot;
  __device__ void operator()(index_t i) const {
    pot[i] = keep * detail::fin(pot[i]) + weight * detail::potential_update(lse[i], log_w[i], eps_t, tau);
  }
};

template <class T>
__device__ T neg_inf_as_zero(T v) {
  return v == -std::numeric_limits<T>::infinity() ? T(0) : v;
}

// Anderson's history (Backend::anderson_record_input / _output).
template <class T>
struct AndersonInputOp {
  const T* f;
  T* residual;
  __device__ void operator()(index_t i) const { residual[i] = neg_inf_as_zero(f[i]); }
};

template <class T>
struct AndersonOutputOp {
  const T* f;
  T* residual;
  T* mapped;
  __device__ void operator()(index_t i) const {
    residual[i] = neg_inf_as_zero(f[i]) - residual[i];
    mapped[i] = f[i];
  }
};

// One column of Anderson's combination, added in column order; the last pass maps a non-finite
// sum to -inf.
template <class T>
struct AccumulateColumnOp {
  const T* col;
  T weight;
  bool first, last;
  T* out;
  __device__ void operator()(index_t i) const {
    const T acc = (first ? T(0) : out[i]) + weight * col[i];
    out[i] = !last || isfinite(acc) ? acc : -std::numeric_limits<T>::infinity();
  }
};

template <class T>
struct DotTerm {
  const T* u;
  const T* v;
  __device__ Partial<1> operator()(index_t i) const {
    return {{static_cast<double>(u[i]) * static_cast<double>(v[i])}};
  }
};

template <class T>
struct FillOp {
  T value;
  T* out;
  __device__ void operator()(index_t i) const { out[i] = value; }
};

template <class T>
struct LogWeightsOp {
  const T* w;
  T* out;
  __device__ void operator()(index_t i) const {
    out[i] = w[i] > T(0) ? ::log(w[i]) : -std::numeric_limits<T>::infinity();
  }
};

template <class T>
struct PointNormsOp {
  const T* x;
  index_t n;
  int d;
  T* out;
  __device__ void operator()(index_t i) const {
    T s = 0;
    for (int k = 0; k < d; ++k) s += x[k * n + i] * x[k * n + i];
    out[i] = ::sqrt(s);
  }
};

// Row-major device matrix (either dtype) -> dimension-major T.
template <class S, class T>
struct TransposeOp {
  const S* src;
  index_t n, d;
  T* dst;
  __device__ void operator()(index_t e) const {
    const index_t k = e / n, i = e % n;  // e walks dst contiguously
    dst[e] = static_cast<T>(src[i * d + k]);
  }
};

// ---- the backend -------------------------------------------------------------------------------

template <class T>
class CudaBackend final : public Backend<T> {
 public:
  explicit CudaBackend(const Context& ctx) : ctx_(ctx) {
    if (ctx.kind() != DeviceKind::cuda)
      throw DeviceError("the CUDA backend needs a CUDA context (Context::cuda), got " + ctx.device_name());
    OTCAL_CUDA_CHECK(cudaSetDevice(ctx.device_id()));
    OTCAL_CUDA_CHECK(cudaDeviceGetAttribute(&sm_count_, cudaDevAttrMultiProcessorCount, ctx.device_id()));
    // Per-block partials of the scalar reductions, written by kernels through the mapping: host
    // memory, so the device budget is untouched and no copy kernel is needed.
    OTCAL_CUDA_CHECK(cudaHostAlloc(&scratch_host_, kScratchBytes, cudaHostAllocMapped | cudaHostAllocPortable));
    OTCAL_CUDA_CHECK(cudaHostGetDevicePointer(&scratch_dev_, scratch_host_, 0));
  }
  ~CudaBackend() override {
    (void)cudaStreamSynchronize(stream());
    (void)cudaFreeHost(scratch_host_);
    (void)cudaGetLastError();
  }
  CudaBackend(const CudaBackend&) = delete;
  CudaBackend& operator=(const CudaBackend&) = delete;

  void upload_cloud(const ConstMatrix& h, T* dst) override {
    const index_t n = h.rows, d = h.cols;
    if (n * d == 0) return;
    if (h.location == Location::device) {
      // Already resident: transpose (and convert) on the device, no temporary.
      check_device_view(h);
      // Without a user stream the caller's producer is most likely the legacy default stream,
      // which our non-blocking compute stream does not wait for by itself (with one, the
      // operation's scope already ordered us after it, docs/host-layer.md §1).
      if (ctx_.user_stream() == nullptr) cuda_stream_wait(ctx_.compute_stream(), cudaStreamLegacy);
      if (h.dtype == DType::float32)
        launch_for_each(n * d, TransposeOp<float, T>{static_cast<const float*>(h.data), n, d, dst}, "transpose_cloud");
      else
        launch_for_each(n * d, TransposeOp<double, T>{static_cast<const double*>(h.data), n, d, dst}, "transpose_cloud");
      return;
    }
    // Host: convert and transpose on the host (cheap next to a solve), one copy, no device temporary.
    std::vector<T> staged(static_cast<std::size_t>(n * d));
    for (index_t i = 0; i < n; ++i)
      for (index_t k = 0; k < d; ++k) staged[static_cast<std::size_t>(k * n + i)] = static_cast<T>(h.at(i, k));
    copy_to_device_sync(staged.data(), dst, n * d);
  }
  void upload(const double* host, T* dst, index_t count) override {
    if (count <= 0) return;
    if constexpr (std::is_same_v<T, double>) {
      copy_to_device_sync(host, dst, count);
    } else {
      std::vector<T> staged(host, host + count);
      copy_to_device_sync(staged.data(), dst, count);
    }
  }
  void download(const T* src, double* host, index_t count) override {
    if (count <= 0) return;
    if constexpr (std::is_same_v<T, double>) {
      OTCAL_CUDA_CHECK(cudaMemcpyAsync(host, src, count * sizeof(T), cudaMemcpyDeviceToHost, stream()));
      sync();
    } else {
      std::vector<T> staged(static_cast<std::size_t>(count));
      OTCAL_CUDA_CHECK(cudaMemcpyAsync(staged.data(), src, count * sizeof(T), cudaMemcpyDeviceToHost, stream()));
      sync();
      for (index_t i = 0; i < count; ++i) host[i] = static_cast<double>(staged[static_cast<std::size_t>(i)]);
    }
  }
  void point_norms(const T* x, index_t n, int d, T* out) override {
    if (n > 0) launch_for_each(n, PointNormsOp<T>{x, n, d, out}, "point_norms");
  }
  void log_weights(const T* w, T* out, index_t n) override {
    if (n > 0) launch_for_each(n, LogWeightsOp<T>{w, out}, "log_weights");
  }

  index_t lse_partials_per_row(index_t cols_n) const override { return lse_max_parts(cols_n); }

  void row_lse(const RowLseArgs<T>& a) override {
    dispatch_cost(a.cost.kind, [&](auto tag) { launch_row_lse<decltype(tag)::value>(a); });
  }
  void row_apply(const RowApplyArgs<T>& a) override {
    dispatch_cost(a.cost.kind, [&](auto tag) { launch_row_apply<decltype(tag)::value>(a); });
  }
  CostMoments cost_moments(const Cloud<T>& rows, const Cloud<T>& cols, const CostParams& cost, index_t,
                           double* partials) override {
    // tile_rows does not matter here: the partials workspace already holds every row.
    CostMoments out;
    if (rows.n == 0) return out;
    dispatch_cost(cost.kind, [&](auto tag) {
      cost_moments_kernel<decltype(tag)::value, T><<<grid_for(rows.n, kRowsPerBlock, kMaxGridX), kRowsPerBlock,
                                                     0, stream()>>>(rows, cols, static_cast<T>(cost.p), partials);
    });
    OTCAL_CUDA_CHECK_LAUNCH("cost_moments_kernel");
    const Partial<3> r = reduce<3>(rows.n, MomentsTerm{partials}, MomentsOp{});
    out.sum = r.v[0];
    out.sum_sq = r.v[1];
    out.max_abs = r.v[2];
    return out;
  }

  void potential_update(const T* lse, const T* log_w, double eps_t, double tau, T* out, index_t n) override {
    if (n > 0)
      launch_for_each(n, PotentialUpdateOp<T>{lse, log_w, static_cast<T>(eps_t), static_cast<T>(tau), out},
                      "potential_update");
  }
  void relaxed_update(const T* lse, const T* log_w, double eps_t, double tau, double weight, T* pot,
                      index_t n) override {
    if (n > 0)
      launch_for_each(n,
                      RelaxedUpdateOp<T>{lse, log_w, static_cast<T>(eps_t), static_cast<T>(tau), static_cast<T>(weight),
                                         static_cast<T>(1.0 - weight), pot},
                      "relaxed_update");
  }
  void anderson_record_input(const T* f, T* residual, index_t n) override {
    if (n > 0) launch_for_each(n, AndersonInputOp<T>{f, residual}, "anderson_record_input");
  }
  void anderson_record_output(const T* f, T* residual, T* mapped, index_t n) override {
    if (n > 0) launch_for_each(n, AndersonOutputOp<T>{f, residual, mapped}, "anderson_record_output");
  }
  Partials dot(const T* u, const T* v, index_t n) override {
    if (n == 0) return {};
    return {reduce<1>(n, DotTerm<T>{u, v}, SumOp{}).v[0]};
  }
  void anderson_combine(const std::vector<const T*>& cols, const std::vector<double>& weights, T* out,
                        index_t n) override {
    if (n == 0) return;
    for (std::size_t k = 0; k < cols.size(); ++k)
      launch_for_each(n,
                      AccumulateColumnOp<T>{cols[k], static_cast<T>(weights[k]), k == 0, k + 1 == cols.size(), out},
                      "anderson_combine");
  }
  Partials marginal_error(const T* pot, const T* lse, const T* w, double eps, double rho, double p,
                          index_t n) override {
    if (n == 0) return {};
    return {reduce<1>(n, MarginalErrorTerm<T>{pot, lse, w, eps, rho, p}, SumOp{}).v[0]};
  }
  Partials transported_mass(const T* pot, const T* lse, double eps, index_t n) override {
    if (n == 0) return {};
    return {reduce<1>(n, MassTerm<T>{pot, lse, eps}, SumOp{}).v[0]};
  }
  unsigned potential_flags(const T* pot, const T* w, index_t n) override {
    return reduce_flags(n, PotentialFlags<T>{pot, w});
  }
  unsigned value_flags(const T* v, index_t n) override { return reduce_flags(n, ValueFlags<T>{v}); }

  // Fused (one launch; each block walks every part of its rows) or split (one part per block along
  // grid.y, then the in-order merge: two launches per tile). Both give the same bits, so this is
  // only speed: fused once its blocks fill the device for several waves (a partial last wave of
  // long blocks idles SMs), or when the split path would need many small tiles (2 launches each).
  bool lse_split(index_t n, index_t rows_per_block, index_t parts, index_t tile_rows) const {
    if (parts == 1) return false;
    const index_t blocks = (n + rows_per_block - 1) / rows_per_block;
    const index_t tiles = (n + std::max<index_t>(tile_rows, 1) - 1) / std::max<index_t>(tile_rows, 1);
    return blocks < kFusedWaves * static_cast<index_t>(sm_count_) && tiles <= kMaxSplitTiles;
  }
  static InvalidArgument missing_lse_state() {
    return InvalidArgument("row_lse: the CUDA backend needs the tile state workspace (2 * tile_rows * "
                           "lse_partials_per_row(m) doubles); declare it in the operation's workspace");
  }

  // Public (not private) because extended launch helpers must be callable from dispatch lambdas.
  // Each pass is the row engine (row_engine.cuh) with a formula and a reduction.
  template <CostKind K>
  void launch_row_lse(const RowLseArgs<T>& a) {
    const index_t n = a.rows.n;
    if (n == 0) return;
    if constexpr (K == CostKind::sqeuclidean) {
      if (a.cols.d >= 1 && a.cols.d <= kLseFastMaxD) return launch_row_lse_fast(a);
      if constexpr (std::is_same_v<T, float>) {
        // d > 8: the inner products on the tensor cores (3xTF32), when the device has them.
        const ColumnParts parts = lse_parts(a.cols.n);
        const bool split = lse_split(n, cuda_engine::kTcRows, parts.parts, a.tile_rows);
        if (split && a.state == nullptr) throw missing_lse_state();
        if (cuda_engine::launch_lse_tensor_core(a, parts, split, stream())) {
          OTCAL_CUDA_CHECK_LAUNCH("lse_tensor_core_kernel");
          return;
        }
      }
    }
    cuda_engine::RowLoop<T> L{};
    L.rows = a.rows;
    L.cols = a.cols;
    L.col_values = a.col_potential;
    L.p = static_cast<T>(a.cost.p);
    L.parts = lse_parts(a.cols.n);
    const cuda_engine::LseExponent<K, T> formula{static_cast<T>(kLog2e / a.eps),
                                                 static_cast<T>(kLog2e / a.eps * a.inv_scale)};
    cuda_engine::LseReduction<T> red{a.out, a.state, 0};
    if (!lse_split(n, kRowsPerBlock, L.parts.parts, a.tile_rows)) {
      L.split = false;
      L.first = 0;
      L.count = n;
      cuda_engine::launch_rows<K>(L, formula, red, stream());
      OTCAL_CUDA_CHECK_LAUNCH("row_engine_kernel (lse)");
      return;
    }
    if (a.state == nullptr) throw missing_lse_state();
    const index_t tile = std::max<index_t>(a.tile_rows, 1);
    L.split = true;
    red.state_stride = tile;
    for (index_t t0 = 0; t0 < n; t0 += tile) {
      L.first = t0;
      L.count = std::min(tile, n - t0);
      cuda_engine::launch_rows<K>(L, formula, red, stream());
      OTCAL_CUDA_CHECK_LAUNCH("row_engine_kernel (lse, split)");
      cuda_engine::lse_merge_parts_kernel<T>
          <<<grid_for(L.count, kRowsPerBlock, kMaxGridX), kRowsPerBlock, 0, stream()>>>(a.state, tile, L.parts.parts,
                                                                                       t0, L.count, a.out);
      OTCAL_CUDA_CHECK_LAUNCH("lse_merge_parts_kernel");
    }
  }

  // The fast squared-Euclidean kernel (cuda/lse_fast.cuh), d = 1..8: the same parts, paths and
  // state layout as the engine, so lse_merge_parts_kernel merges its split partials. Fused when
  // its blocks (kLseFastBlockRows rows each) give every SM two, as for the engine.
  void launch_row_lse_fast(const RowLseArgs<T>& a) {
    const index_t n = a.rows.n;
    cuda_lse_fast::LseFastArgs<T> L{};
    L.rows = a.rows;
    L.cols = a.cols;
    L.col_values = a.col_potential;
    L.scales = lse_fast_scales(a.eps, a.inv_scale);
    L.parts = lse_parts(a.cols.n);
    L.out = a.out;
    if (a.cols.n == 0) {  // no columns: every row is -inf (the engine's empty state)
      launch_for_each(n, FillOp<T>{-std::numeric_limits<T>::infinity(), a.out}, "row_lse (no columns)");
      return;
    }
    if (!lse_split(n, cuda_lse_fast::kLseFastBlockRows, L.parts.parts, a.tile_rows)) {
      L.first = 0;
      L.count = n;
      cuda_lse_fast::launch_lse_fast(L, stream());
      OTCAL_CUDA_CHECK_LAUNCH("lse_fast_kernel");
      return;
    }
    if (a.state == nullptr) throw missing_lse_state();
    const index_t tile = std::max<index_t>(a.tile_rows, 1);
    L.split = true;
    L.state = a.state;
    L.state_stride = tile;
    for (index_t t0 = 0; t0 < n; t0 += tile) {
      L.first = t0;
      L.count = std::min(tile, n - t0);
      cuda_lse_fast::launch_lse_fast(L, stream());
      OTCAL_CUDA_CHECK_LAUNCH("lse_fast_kernel (split)");
      cuda_engine::lse_merge_parts_kernel<T>
          <<<grid_for(L.count, kRowsPerBlock, kMaxGridX), kRowsPerBlock, 0, stream()>>>(a.state, tile, L.parts.parts,
                                                                                       t0, L.count, a.out);
      OTCAL_CUDA_CHECK_LAUNCH("lse_merge_parts_kernel");
    }
  }

  template <CostKind K>
  void launch_row_apply(const RowApplyArgs<T>& a) {
    const index_t n = a.rows.n;
    if (n == 0 || a.k <= 0) return;
    cuda_engine::RowLoop<T> L{};
    L.rows = a.rows;
    L.cols = a.cols;
    L.col_values = a.col_potential;
    L.p = static_cast<T>(a.cost.p);
    L.parts = cuda_engine::one_part(a.cols.n);
    const cuda_engine::PlanEntry<K, T> formula{a.row_potential, a.inv_scale, 1.0 / a.eps};
    const cuda_engine::ApplyReduction<T> red{a.v, a.k, a.out, a.acc};
    const index_t tile = std::max<index_t>(a.tile_rows, 1);
    for (index_t t0 = 0; t0 < n; t0 += tile) {
      L.first = t0;
      L.count = std::min(tile, n - t0);
      cuda_engine::launch_rows<K>(L, formula, red, stream());
      OTCAL_CUDA_CHECK_LAUNCH("row_engine_kernel (apply)");
    }
  }

 private:
  static constexpr std::size_t kScratchBytes = sizeof(double) * 3 * kReduceBlocksMax;

  cudaStream_t stream() const { return static_cast<cudaStream_t>(ctx_.compute_stream()); }
  void sync() { OTCAL_CUDA_CHECK(cudaStreamSynchronize(stream())); }

  // A device view must be memory this context's device can read: device (or managed) memory of
  // that device, or mapped pinned host memory. Plain host memory would fault in the kernel.
  void check_device_view(const ConstMatrix& h) const {
    if (h.data == nullptr) throw InvalidArgument("a device cloud view has a null data pointer");
    cudaPointerAttributes attr{};
    if (cudaPointerGetAttributes(&attr, h.data) != cudaSuccess) {
      (void)cudaGetLastError();
      attr.type = cudaMemoryTypeUnregistered;
    }
    switch (attr.type) {
      case cudaMemoryTypeDevice:
        if (attr.device != ctx_.device_id())
          throw InvalidArgument("a device cloud lives on CUDA device " + std::to_string(attr.device) +
                                " but the context runs on device " + std::to_string(ctx_.device_id()) +
                                ": pass an array of the context's device, or a host array");
        return;
      case cudaMemoryTypeManaged: return;
      case cudaMemoryTypeHost:
        if (attr.devicePointer == h.data) return;  // mapped, same address on the device
        [[fallthrough]];
      default:
        throw InvalidArgument("a cloud marked Location::device points to host memory the device cannot read: "
                              "pass it as a host view (Location::host) or copy it to the device first");
    }
  }

  void copy_to_device_sync(const T* host, T* dst, index_t count) {
    OTCAL_CUDA_CHECK(cudaMemcpyAsync(dst, host, count * sizeof(T), cudaMemcpyHostToDevice, stream()));
    sync();  // the host staging may be pageable and short-lived
  }

  template <class F>
  void launch_for_each(index_t n, F f, const char* name) {
    for_each_kernel<<<grid_for(n, kElementThreads, 4 * 1024), kElementThreads, 0, stream()>>>(n, f);
    OTCAL_CUDA_CHECK_LAUNCH(name);
  }

  // Fixed-shape reduction: block count depends on n only; block partials merged here in order.
  template <int W, class Term, class Op>
  Partial<W> reduce(index_t n, Term term, Op op) {
    Partial<W> out{};
    if (n <= 0) return out;
    const unsigned blocks = grid_for(n, kReduceThreads, kReduceBlocksMax);
    double* dev = static_cast<double*>(scratch_dev_);
    reduce_kernel<W><<<blocks, kReduceThreads, 0, stream()>>>(n, term, op, dev);
    OTCAL_CUDA_CHECK_LAUNCH("reduce_kernel");
    sync();
    const double* host = static_cast<const double*>(scratch_host_);
    for (unsigned b = 0; b < blocks; ++b) {
      for (int w = 0; w < W; ++w) {
        const double v = host[W * b + w];
        if constexpr (W == 3) {
          out.v[w] = w == 2 ? std::max(out.v[w], v) : out.v[w] + v;
        } else {
          out.v[w] += v;
        }
      }
    }
    return out;
  }

  template <class Flags>
  unsigned reduce_flags(index_t n, Flags flags) {
    if (n <= 0) return 0u;
    const unsigned blocks = grid_for(n, kReduceThreads, kReduceBlocksMax);
    flags_kernel<<<blocks, kReduceThreads, 0, stream()>>>(n, flags, static_cast<unsigned*>(scratch_dev_));
    OTCAL_CUDA_CHECK_LAUNCH("flags_kernel");
    sync();
    unsigned out = 0u;
    const unsigned* host = static_cast<const unsigned*>(scratch_host_);
    for (unsigned b = 0; b < blocks; ++b) out |= host[b];
    return out;
  }

  Context ctx_;
  int sm_count_ = 0;
  void* scratch_host_ = nullptr;
  void* scratch_dev_ = nullptr;
};

}  // namespace cuda_impl

template <class T>
std::unique_ptr<Backend<T>> make_cuda_backend(const Context& ctx) {
  return std::make_unique<cuda_impl::CudaBackend<T>>(ctx);
}

template std::unique_ptr<Backend<float>> make_cuda_backend<float>(const Context&);
template std::unique_ptr<Backend<double>> make_cuda_backend<double>(const Context&);

}  // namespace otcal::detail
