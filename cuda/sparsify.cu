// CUDA implementation of the sparsify primitives (src/sparsify/sparsify_backend.hpp); the CPU one
// (src/cpu/sparsify_cpu.cpp) is the reference. The host loop (src/sparsify/sparsify.cpp) is the
// same for both: it reads row maxima, kept counts and histogram bins through the download
// primitives below. Design (docs/sparsify.md §2, §6, §7.2, §7.3):
//
//  * Block build: the row engine (row_engine.cuh) with the emit reduction: one thread per row,
//    the columns staged through shared memory one chunk per block (grid.y), the cost accumulated
//    over k = 0..d-1 with the shared OTCAL_HD cost math, then T_ij = exp((f_i + g_j - c_ij *
//    inv_scale) / eps) in float64, stored in T, exactly the CPU formula (device exp may differ
//    from glibc's in the last ulp). The chunk is transposed through shared memory so the stores
//    of the dense block stay coalesced.
//  * Dense source (a caller's host matrix): chunks of whole rows written by the CPU backend's own
//    row copy into two pinned buffers in turn and uploaded on the copy stream while the host fills
//    the next; events order the uploads after the compute stream's readers of the block and the
//    compute stream after the last upload (CudaDenseSource).
//  * row_max: one CTA per row, max (exact, so bitwise equal given equal entries) and the kBlock*
//    flags by warp vote (__reduce_or_sync) and one atomicOr per warp; a NaN row's max is NaN by a
//    block vote (__syncthreads_or) in the same pass.
//  * key_histogram: entries swept by a grid-stride loop; lanes holding the same bin are grouped
//    by __match_any_sync and one leader adds the group size to the uint64 counter (warp-aggregated
//    global atomics: 65 536 bins do not fit a per-CTA shared-memory copy). Integer counts, so the
//    result is independent of the order.
//  * threshold / percentile / min_row: count pass (one CTA per row, block reduction into int64
//    counts), then per piece cub::DeviceScan::ExclusiveSum of the counts gives each row's offset
//    in the staging buffer and one CTA per row writes its kept entries with a cub::BlockScan over
//    tiles of columns, so columns stay ascending.
//  * mass: per-row totals in float64 summed sequentially in column order (the CPU order: a lane
//    per row, the rows of a warp loaded as coalesced 32 x 32 tiles through shared memory), then
//    cub::DeviceSegmentedRadixSort::SortPairsDescending of (value, column) per row — stable, so
//    ties stay in ascending column order as in the CPU comparator — a per-row sequential float64
//    prefix walk to the cut (a warp per row over coalesced 32-entry segments, the values added in
//    order by shuffle broadcast), and a second segmented sort of the kept prefixes by column.
//  * Streaming (§7.2, the FAISS paged-copy pattern): two device staging buffers and two pinned
//    host buffers of `cap` entries. Piece p goes to slot p % 2: the compute stream waits for the
//    copy that last read staging[slot] (event copied[slot]); compaction runs on the compute
//    stream and records compacted[slot]; the copy stream waits for it and copies staging → pinned
//    and records copied[slot]; the host appends pinned[slot] into the output only after
//    synchronising copied[slot], and always before the next copy into that pinned buffer is
//    issued. The append of a piece is deferred to the next piece (or flush_output), so the copy
//    of block k overlaps the build and count of block k + 1. A block with more entries than `cap`
//    leaves as several pieces of whole rows (cap >= m). Device residency: the [bs, m] block, the
//    per-row scalars and 2 * cap staging entries, whatever nnz is.
//  * Workspace (docs/host-layer.md §11): every device buffer above, CUB's scratch included (its
//    size queried for the largest block before planning), is an entry of the operation's
//    WorkspaceDecl, declared by declare_workspace and bound by bind_workspace; the pinned twins
//    are taken once per operation from the pinned budget. Nothing is allocated inside the loop.
#include <cuda_runtime.h>

#include <cub/cub.cuh>

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <type_traits>
#include <vector>

#include "cuda_check.hpp"
#include "otcal/detail/cost_math.hpp"
#include "otcal/detail/lse_math.hpp"
#include "otcal/errors.hpp"
#include "row_engine.cuh"
#include "row_formulas.cuh"
#include "row_reductions.cuh"
#include "core/radix_select.hpp"
#include "sparsify/sparsify_backend.hpp"

namespace otcal::detail {
namespace cuda_sparsify {

constexpr int kThreads = 256;
constexpr unsigned kMaxGrid = 65535u * 16u;
constexpr std::int64_t kDefaultStagingEntries = std::int64_t{1} << 20;  // 12 MiB per buffer (int32 + double)

inline unsigned grid_for(std::int64_t items, int threads = kThreads) {
  const std::int64_t g = (items + threads - 1) / threads;
  return static_cast<unsigned>(std::clamp<std::int64_t>(g, 1, kMaxGrid));
}

// ---- block sources -------------------------------------------------------------------------------

template <class T>
class CudaCloudSource final : public PlanBlockSource<T> {
 public:
  CudaCloudSource(cudaStream_t s, const Cloud<T>& rows, const Cloud<T>& cols, const CostParams& cost, bool plan,
                  double inv_scale, double eps, const T* f, const T* g)
      : s_(s), rows_(rows), cols_(cols), cost_(cost), plan_(plan), inv_scale_(inv_scale), inv_eps_(1.0 / eps),
        f_(f), g_(g) {}
  index_t rows() const override { return rows_.n; }
  index_t cols() const override { return cols_.n; }
  void build(index_t r0, index_t count, const index_t* ids, T* out) override {
    if (count <= 0) return;
    dispatch_cost(cost_.kind, [&](auto tag) { launch_build<decltype(tag)::value>(r0, count, ids, out); });
    OTCAL_CUDA_CHECK_LAUNCH("row_engine_kernel (plan block)");
  }

  // Public (not private) because extended launch helpers must be callable from dispatch lambdas.
  // Rows [r0, r0 + count) (or ids) against every column, one chunk of columns per block along
  // grid.y so that a few rows still fill the device.
  template <CostKind K>
  void launch_build(index_t r0, index_t count, const index_t* ids, T* out) {
    using namespace cuda_engine;
    RowLoop<T> L{};
    L.rows = rows_;
    L.cols = cols_;
    L.col_values = plan_ ? g_ : nullptr;
    L.p = static_cast<T>(cost_.p);
    L.first = r0;
    L.ids = ids;
    L.count = count;
    L.parts = parts_of(cols_.n, kMaxGridY);
    L.split = true;  // parts are independent: nothing to merge
    const EmitReduction<T> emit{out, cols_.n, count};
    if (plan_)
      launch_rows<K>(L, PlanEntry<K, T>{f_, inv_scale_, inv_eps_}, emit, s_);
    else
      launch_rows<K>(L, CostFormula<K, T>{}, emit, s_);
  }

 private:
  cudaStream_t s_;
  Cloud<T> rows_, cols_;
  CostParams cost_;
  bool plan_;
  double inv_scale_, inv_eps_;
  const T* f_;
  const T* g_;
};

// Rows of a caller's host matrix (docs/sparsify.md §7.2). The host side is the CPU backend's own
// dense source (OpenMP over rows), so the block holds exactly the CPU's values; it writes chunks of
// whole rows into two pinned buffers in turn, and each chunk is copied to the block on the copy
// stream while the host fills the next. The host waits only for the copy that last read the
// pinned buffer it is about to refill; the compute stream is never synchronised here: the copies
// wait for its earlier readers of the block (event block_free) and it waits for the last copy
// (copies are in order on the copy stream, so the last event covers them all). The ids of a
// sampled sweep live on the device, so the host keeps its own copy of them via upload_ids.
template <class T>
class CudaDenseSource final : public PlanBlockSource<T> {
 public:
  // `chunk_rows` rows of m entries per pinned buffer; the buffers are taken from the pinned budget
  // by the backend (dense_source), which checks it first.
  CudaDenseSource(cudaStream_t compute, cudaStream_t copy, const ConstMatrix& h,
                  const std::vector<index_t>* host_ids, index_t chunk_rows, Buffer<T> pinned0, Buffer<T> pinned1)
      : compute_(compute), copy_(copy), h_(h), host_ids_(host_ids), chunk_rows_(std::max<index_t>(chunk_rows, 1)),
        host_rows_(make_cpu_sparsify_backend<T>()->dense_source(h)) {
    pinned_[0] = std::move(pinned0);
    pinned_[1] = std::move(pinned1);
    OTCAL_CUDA_CHECK(cudaEventCreateWithFlags(&block_free_, cudaEventDisableTiming));
    for (cudaEvent_t& e : copied_) OTCAL_CUDA_CHECK(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
  }
  ~CudaDenseSource() override {
    // A copy may still read a pinned buffer when an operation unwinds.
    for (cudaEvent_t e : copied_) (void)cudaEventSynchronize(e);
    (void)cudaEventDestroy(block_free_);
    for (cudaEvent_t e : copied_) (void)cudaEventDestroy(e);
    (void)cudaGetLastError();
  }
  CudaDenseSource(const CudaDenseSource&) = delete;
  CudaDenseSource& operator=(const CudaDenseSource&) = delete;

  index_t rows() const override { return h_.rows; }
  index_t cols() const override { return h_.cols; }
  void build(index_t r0, index_t count, const index_t* ids, T* out) override {
    if (count <= 0) return;
    const index_t m = h_.cols;
    // `ids` is a device pointer into the uploaded sample; its host twin has the same offsets.
    const index_t* hid = nullptr;
    if (ids != nullptr) {
      if (host_ids_ == nullptr || host_ids_->empty() || host_base_ == nullptr)
        throw DeviceError("internal: dense CUDA source swept by row ids that were not uploaded through upload_ids");
      hid = host_ids_->data() + (ids - host_base_);
    }
    OTCAL_CUDA_CHECK(cudaEventRecord(block_free_, compute_));
    OTCAL_CUDA_CHECK(cudaStreamWaitEvent(copy_, block_free_, 0));
    int s = next_;
    for (index_t a = 0; a < count; a += chunk_rows_) {
      const index_t rows = std::min(chunk_rows_, count - a);
      OTCAL_CUDA_CHECK(cudaEventSynchronize(copied_[s]));  // pinned[s] is free once its last copy is done
      host_rows_->build(r0 + a, rows, hid != nullptr ? hid + a : nullptr, pinned_[s].data());
      OTCAL_CUDA_CHECK(cudaMemcpyAsync(out + a * m, pinned_[s].data(),
                                       static_cast<std::size_t>(rows * m) * sizeof(T), cudaMemcpyHostToDevice, copy_));
      OTCAL_CUDA_CHECK(cudaEventRecord(copied_[s], copy_));
      s = 1 - s;
    }
    next_ = s;
    OTCAL_CUDA_CHECK(cudaStreamWaitEvent(compute_, copied_[1 - s], 0));
  }
  void set_device_ids(const index_t* base) { host_base_ = base; }

 private:
  cudaStream_t compute_, copy_;
  ConstMatrix h_;
  const std::vector<index_t>* host_ids_;
  const index_t* host_base_ = nullptr;
  index_t chunk_rows_;
  std::unique_ptr<PlanBlockSource<T>> host_rows_;  // the CPU's conversion, into pinned memory
  Buffer<T> pinned_[2];
  cudaEvent_t block_free_{}, copied_[2]{};
  int next_ = 0;
};

// ---- per-row reductions ------------------------------------------------------------------------

template <class T>
__device__ __forceinline__ bool has_mass(const T* row_max, index_t r) {
  return row_max == nullptr || row_max[r] > T(0);
}

template <class T>
__global__ void __launch_bounds__(kThreads) row_max_kernel(const T* block, index_t rows, index_t m, T* out_max,
                                                          unsigned* flags) {
  using Reduce = cub::BlockReduce<T, kThreads>;
  __shared__ typename Reduce::TempStorage tmp;
  for (index_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const T* row = block + r * m;
    T mx = -std::numeric_limits<T>::infinity();
    unsigned f = 0;
    for (index_t j = threadIdx.x; j < m; j += blockDim.x) {
      const T v = row[j];
      if (v != v) f |= kBlockNaN;
      else if (v == std::numeric_limits<T>::infinity()) f |= kBlockPosInf;
      else if (v < T(0)) f |= kBlockNegative;
      mx = v > mx ? v : mx;
    }
    // Flags: warp vote, one atomic per warp that saw a bad value.
    const unsigned wf = __reduce_or_sync(0xffffffffu, f);
    if ((threadIdx.x & 31) == 0 && wf != 0) atomicOr(flags, wf);
    // NaN never wins a comparison, so a NaN row's max is NaN by the row's own vote (the CPU's
    // convention), in this pass: no second walk of the row.
    const bool nan_row = __syncthreads_or(f & kBlockNaN) != 0;
    const T bm = Reduce(tmp).Reduce(mx, [](T a, T b) { return b > a ? b : a; });
    if (threadIdx.x == 0) out_max[r] = nan_row ? std::numeric_limits<T>::quiet_NaN() : bm;
    __syncthreads();  // tmp is reused by the next row
  }
}

template <class T>
__global__ void key_histogram_kernel(const T* block, index_t rows, index_t m, const T* row_max, int shift,
                                     int n_prefixes, std::uint64_t p0, std::uint64_t p1, unsigned long long* bins) {
  using K = KeyOf<T>;
  const std::int64_t total = static_cast<std::int64_t>(rows) * m;
  const int lane = threadIdx.x & 31;
  const std::int64_t stride = static_cast<std::int64_t>(gridDim.x) * blockDim.x;
  const int pshift = shift + kHistogramBits;
  const K mask = static_cast<K>(kHistogramBins - 1);
  // Warp-uniform trip count: every lane of a warp runs the same iterations (for __match_any_sync).
  for (std::int64_t e0 = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + (threadIdx.x & ~31); e0 < total;
       e0 += stride) {
    const std::int64_t e = e0 + lane;
    unsigned long long slot = ~0ull;
    if (e < total && has_mass(row_max, static_cast<index_t>(e / m))) {
      const K key = float_key(block[e]);
      const unsigned long long bin = static_cast<unsigned long long>((key >> shift) & mask);
      if (n_prefixes == 0) {
        slot = bin;
      } else {
        const std::uint64_t pre = static_cast<std::uint64_t>(key) >> pshift;
        if (pre == p0) slot = bin;
        else if (n_prefixes > 1 && pre == p1) slot = kHistogramBins + bin;
      }
    }
    const unsigned peers = __match_any_sync(0xffffffffu, slot);
    if (slot != ~0ull && lane == __ffs(peers) - 1) atomicAdd(bins + slot, static_cast<unsigned long long>(__popc(peers)));
  }
}

template <class T>
__device__ __forceinline__ bool kept(T x, double thr) {
  const double v = static_cast<double>(x);
  return v >= thr && v != 0.0;
}

template <class T>
__global__ void __launch_bounds__(kThreads) count_kernel(const T* block, index_t rows, index_t m, const T* row_max,
                                                        double thr, std::int64_t* counts) {
  using Reduce = cub::BlockReduce<long long, kThreads>;
  __shared__ typename Reduce::TempStorage tmp;
  for (index_t r = blockIdx.x; r < rows; r += gridDim.x) {
    long long c = 0;
    if (has_mass(row_max, r)) {
      const T* row = block + r * m;
      for (index_t j = threadIdx.x; j < m; j += blockDim.x) c += kept(row[j], thr) ? 1 : 0;
    }
    const long long total = Reduce(tmp).Sum(c);
    if (threadIdx.x == 0) counts[r] = total;
    __syncthreads();
  }
}

// Rows [0, rows) of the piece (block pointer already offset): writes the kept entries of row r at
// off[r] .. in ascending column order (BlockScan over tiles of columns).
template <class T, class I>
__global__ void __launch_bounds__(kThreads) compact_kernel(const T* block, index_t rows, index_t m, const T* row_max,
                                                          double thr, const std::int64_t* off, I* out_idx,
                                                          double* out_val) {
  using Scan = cub::BlockScan<int, kThreads>;
  __shared__ typename Scan::TempStorage tmp;
  for (index_t r = blockIdx.x; r < rows; r += gridDim.x) {
    if (!has_mass(row_max, r)) continue;  // uniform over the CTA
    const T* row = block + r * m;
    std::int64_t base = off[r];
    for (index_t j0 = 0; j0 < m; j0 += kThreads) {
      const index_t j = j0 + threadIdx.x;
      const T x = j < m ? row[j] : T(0);
      const int keep = (j < m && kept(x, thr)) ? 1 : 0;
      int pos = 0, tile_total = 0;
      Scan(tmp).ExclusiveSum(keep, pos, tile_total);
      if (keep) {
        out_idx[base + pos] = static_cast<I>(j);
        out_val[base + pos] = static_cast<double>(x);
      }
      base += tile_total;
      __syncthreads();  // tmp is reused by the next tile
    }
  }
}

// ---- mass ----------------------------------------------------------------------------------------

// Row totals in float64, each summed sequentially in column order: the CPU's order, so the same
// bits. The sum is one dependent chain per row whatever the layout, so the lanes are spent on rows
// and the loads are made coalesced by a transpose: a warp owns kTotalRows = 32 rows, loads a
// 32 x 32 tile of them one row segment per load (consecutive columns across the lanes) into shared
// memory, and each lane then folds its own row's 32 values in order. (A warp per row would fold
// with one lane, or all 32 redundantly: 32 times the instructions for the same chain.)
constexpr int kTotalRows = 32;
constexpr int kTotalWarps = 4;  // 4 warps x 32 x 33 doubles = 33 KiB of shared memory
template <class T>
__global__ void __launch_bounds__(kTotalWarps * 32) row_total_kernel(const T* block, index_t rows, index_t m,
                                                                    double* tot) {
  __shared__ T tiles[kTotalWarps][kTotalRows][32 + 1];  // +1: the column reads hit distinct banks
  const int lane = threadIdx.x & 31;
  T(&tile)[kTotalRows][32 + 1] = tiles[threadIdx.x >> 5];
  const index_t stride = static_cast<index_t>(gridDim.x) * kTotalWarps * kTotalRows;
  for (index_t r0 = (static_cast<index_t>(blockIdx.x) * kTotalWarps + (threadIdx.x >> 5)) * kTotalRows; r0 < rows;
       r0 += stride) {
    const int nr = static_cast<int>(min(static_cast<index_t>(kTotalRows), rows - r0));
    const T* first = block + r0 * m;
    double t = 0;
    for (index_t j0 = 0; j0 < m; j0 += 32) {
      const int jn = static_cast<int>(min(index_t{32}, m - j0));
      if (lane < jn) {
#pragma unroll 8
        for (int rr = 0; rr < nr; ++rr) tile[rr][lane] = first[rr * m + j0 + lane];
      }
      __syncwarp();
      if (lane < nr)
        for (int jj = 0; jj < jn; ++jj) t += static_cast<double>(tile[lane][jj]);  // the CPU's order
      __syncwarp();  // the tile is rewritten by the next segment
    }
    if (lane < nr) tot[r0 + lane] = t;
  }
}

template <class I>
__global__ void iota_kernel(I* ord, index_t rows, index_t m) {
  const std::int64_t total = static_cast<std::int64_t>(rows) * m;
  for (std::int64_t e = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; e < total;
       e += static_cast<std::int64_t>(gridDim.x) * blockDim.x)
    ord[e] = static_cast<I>(e % m);
}

__global__ void segments_kernel(index_t rows, index_t m, const std::int64_t* lengths, int* begin, int* end) {
  for (index_t r = static_cast<index_t>(blockIdx.x) * blockDim.x + threadIdx.x; r < rows;
       r += static_cast<index_t>(gridDim.x) * blockDim.x) {
    begin[r] = static_cast<int>(r * m);
    end[r] = static_cast<int>(r * m + (lengths ? lengths[r] : m));
  }
}

// The cut of docs/sparsify.md §4.4 on the descending sorted row (the CPU's mass_impl, same float64
// sequence). A warp per row: the lanes load a 32-entry segment of the sorted row (coalesced); the
// positive entries are a prefix of it (descending), counted by one ballot; the running sum is the
// CPU's sequential one, each value broadcast by a shuffle, and every lane computes the same sums,
// so the branches stay uniform. The walk stops at the segment that holds the cut: the kept prefix
// of a plan-like row is short.
constexpr int kCutWarps = kThreads / 32;
template <class T>
__global__ void __launch_bounds__(kThreads) mass_cut_kernel(const T* sorted, index_t rows, index_t m,
                                                           const T* row_max, const double* tot, double value,
                                                           index_t max_k, std::int64_t* counts) {
  const int lane = threadIdx.x & 31;
  const index_t stride = static_cast<index_t>(gridDim.x) * kCutWarps;
  for (index_t r = static_cast<index_t>(blockIdx.x) * kCutWarps + (threadIdx.x >> 5); r < rows; r += stride) {
    index_t k = 0;  // the same on every lane
    if (has_mass(row_max, r) && tot[r] > 0) {
      const T* v = sorted + r * m;
      const index_t cap = min(max_k > 0 ? max_k : m, m);
      const double target = value * tot[r];
      double cum = 0;
      for (index_t k0 = 0; k0 < cap; k0 += 32) {
        const int kn = static_cast<int>(min(index_t{32}, cap - k0));
        const T x = lane < kn ? v[k0 + lane] : T(0);
        const int npos = __popc(__ballot_sync(0xffffffffu, x > T(0)));
        int q = npos;
        bool done = npos < kn;  // a non-positive entry (or the cap) ends the walk
        if (value < 1) {        // else target = +inf: every positive entry up to the cap
          for (q = 0; q < npos;) {
            cum += static_cast<double>(__shfl_sync(0xffffffffu, x, q));
            ++q;
            if (!(cum < target)) {  // the crossing entry is kept
              done = true;
              break;
            }
          }
        }
        k = k0 + q;
        if (done) break;
      }
    }
    if (lane == 0) counts[r] = k;
  }
}

template <class T, class I>
__global__ void gather_kernel(const I* cols, const T* vals, index_t rows, index_t m, const std::int64_t* counts,
                              const std::int64_t* off, I* out_idx, double* out_val) {
  for (index_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const std::int64_t k = counts[r], o = off[r];
    for (std::int64_t q = threadIdx.x; q < k; q += blockDim.x) {
      out_idx[o + q] = cols[r * m + q];
      out_val[o + q] = static_cast<double>(vals[r * m + q]);
    }
  }
}

// ---- the backend ---------------------------------------------------------------------------------

// Where the backend's buffers sit in the operation's WorkspaceDecl. Mass-only and index-width
// variants are declared with zero counts when unused (nothing is allocated for them), so every id
// is valid whatever the mode.
template <class T>
struct DeviceLayout {
  BufferId<unsigned> flags;
  BufferId<std::int32_t> stage_idx32[2];
  BufferId<std::int64_t> stage_idx64[2];
  BufferId<double> stage_val[2];
  BufferId<std::int64_t> piece_off;
  BufferId<unsigned char> scan_temp;
  BufferId<T> keys_alt;
  BufferId<std::int32_t> cols_alt32;
  BufferId<std::int64_t> cols_alt64;
  BufferId<double> tot;
  BufferId<int> seg_begin, seg_end;
  BufferId<unsigned char> sort_temp;
};

// CUB counts items in int for the segmented sort: mass sorts groups of whole rows below 2^31.
inline index_t sort_group_rows(index_t m) {
  return std::max<index_t>(1, static_cast<index_t>(INT_MAX) / std::max<index_t>(m, 1));
}

template <class T>
class CudaSparsifyBackend final : public SparsifyBackend<T> {
 public:
  CudaSparsifyBackend(const Context& ctx, std::int64_t staging_entries) : ctx_(ctx), cap_request_(staging_entries) {
    if (ctx.kind() != DeviceKind::cuda)
      throw DeviceError("the CUDA sparsify backend needs a CUDA context (Context::cuda), got " + ctx.device_name());
    if (staging_entries < 0)
      throw InvalidArgument("staging_entries must be >= 0 (0 = default), found " + std::to_string(staging_entries));
    OTCAL_CUDA_CHECK(cudaSetDevice(ctx.device_id()));
    for (int s = 0; s < 2; ++s) {
      OTCAL_CUDA_CHECK(cudaEventCreateWithFlags(&compacted_[s], cudaEventDisableTiming));
      OTCAL_CUDA_CHECK(cudaEventCreateWithFlags(&copied_[s], cudaEventDisableTiming));
    }
  }
  ~CudaSparsifyBackend() override {
    // The pinned slots (members) may still be the target of a copy when an operation unwinds.
    (void)cudaStreamSynchronize(stream());
    (void)cudaStreamSynchronize(copy_stream());
    for (int s = 0; s < 2; ++s) {
      (void)cudaEventDestroy(compacted_[s]);
      (void)cudaEventDestroy(copied_[s]);
    }
    (void)cudaGetLastError();
  }
  CudaSparsifyBackend(const CudaSparsifyBackend&) = delete;
  CudaSparsifyBackend& operator=(const CudaSparsifyBackend&) = delete;

  std::unique_ptr<PlanBlockSource<T>> cloud_plan_source(const Cloud<T>& rows, const Cloud<T>& cols,
                                                        const CostParams& cost, double inv_scale, double eps,
                                                        const T* f, const T* g) override {
    return std::make_unique<CudaCloudSource<T>>(stream(), rows, cols, cost, true, inv_scale, eps, f, g);
  }
  std::unique_ptr<PlanBlockSource<T>> cloud_cost_source(const Cloud<T>& rows, const Cloud<T>& cols,
                                                        const CostParams& cost) override {
    return std::make_unique<CudaCloudSource<T>>(stream(), rows, cols, cost, false, 1.0, 1.0, nullptr, nullptr);
  }
  // Called after bind_workspace: the two pinned buffers of the dense source are taken here, from
  // the pinned budget next to the output's (checked first), before anything runs.
  std::unique_ptr<PlanBlockSource<T>> dense_source(const ConstMatrix& host) override {
    require_bound("dense_source");
    const index_t m = std::max<index_t>(host.cols, 1);
    const index_t chunk_rows = std::clamp<index_t>(static_cast<index_t>(cap_ / m), 1, std::max<index_t>(host.rows, 1));
    const auto entries = static_cast<std::size_t>(chunk_rows) * static_cast<std::size_t>(m);
    check_pinned(2 * align_up(entries * sizeof(T)), "the two pinned buffers of the dense plan's rows (2 x " +
                                                        std::to_string(entries) + " entries)");
    Buffer<T> p0(ctx_.pinned_host(), entries, ctx_.copy_stream());
    Buffer<T> p1(ctx_.pinned_host(), entries, ctx_.copy_stream());
    auto src = std::make_unique<CudaDenseSource<T>>(stream(), copy_stream(), host, &host_ids_, chunk_rows,
                                                    std::move(p0), std::move(p1));
    dense_ = src.get();
    return src;
  }

  unsigned row_max(const T* block, index_t rows, index_t m, T* out_max) override {
    if (rows <= 0) return 0;
    require_bound("row_max");
    OTCAL_CUDA_CHECK(cudaMemsetAsync(flags_, 0, sizeof(unsigned), stream()));
    row_max_kernel<T><<<grid_for(rows, 1), kThreads, 0, stream()>>>(block, rows, m, out_max, flags_);
    OTCAL_CUDA_CHECK_LAUNCH("row_max_kernel");
    unsigned host_flags = 0;
    OTCAL_CUDA_CHECK(cudaMemcpyAsync(&host_flags, flags_, sizeof host_flags, cudaMemcpyDeviceToHost, stream()));
    sync();
    return host_flags;
  }

  void key_histogram(const T* block, index_t rows, index_t m, const T* row_max, const KeyHistogramQuery& q,
                     std::uint64_t* bins) override {
    if (rows <= 0) return;
    key_histogram_kernel<T><<<grid_for(static_cast<std::int64_t>(rows) * m), kThreads, 0, stream()>>>(
        block, rows, m, row_max, q.shift, q.n_prefixes, q.prefix[0], q.prefix[1],
        reinterpret_cast<unsigned long long*>(bins));
    OTCAL_CUDA_CHECK_LAUNCH("key_histogram_kernel");
  }

  void count_at_least(const T* block, index_t rows, index_t m, const T* row_max, double thr,
                      std::int64_t* counts) override {
    if (rows <= 0) return;
    count_kernel<T><<<grid_for(rows, 1), kThreads, 0, stream()>>>(block, rows, m, row_max, thr, counts);
    OTCAL_CUDA_CHECK_LAUNCH("count_kernel");
  }

  void compact_at_least(const T* block, index_t rows, index_t m, const T* row_max, double thr,
                        const std::int64_t* offsets, std::int32_t* idx32, std::int64_t* idx64,
                        double* values) override {
    stream_pieces(rows, offsets, idx32, idx64, values,
                  [&](index_t ra, index_t rb, const std::int64_t* off, int s, double* sval) {
                    const index_t n = rb - ra;
                    if (wide_)
                      compact_kernel<T, std::int64_t><<<grid_for(n, 1), kThreads, 0, stream()>>>(
                          block + ra * m, n, m, row_max + ra, thr, off, stage_idx64_[s], sval);
                    else
                      compact_kernel<T, std::int32_t><<<grid_for(n, 1), kThreads, 0, stream()>>>(
                          block + ra * m, n, m, row_max + ra, thr, off, stage_idx32_[s], sval);
                    OTCAL_CUDA_CHECK_LAUNCH("compact_kernel");
                  });
  }

  void mass_select(const T* block, index_t rows, index_t m, const T* row_max, double value, index_t max_k,
                   void* order, bool wide, std::int64_t* counts) override {
    if (rows <= 0) return;
    require_bound("mass_select");
    if (!mass_) throw DeviceError("internal: mass_select on a CUDA sparsify workspace declared without mass mode");
    check_width(wide);
    // The selection is consumed by the gather of this block only (docs/sparsify.md §2).
    if (wide) mass_impl(const_cast<T*>(block), rows, m, row_max, value, max_k, static_cast<std::int64_t*>(order),
                        cols_alt64_, counts);
    else mass_impl(const_cast<T*>(block), rows, m, row_max, value, max_k, static_cast<std::int32_t*>(order),
                   cols_alt32_, counts);
  }

  void gather_selected(const T*, index_t rows, index_t m, const void*, bool wide, const std::int64_t* counts,
                       const std::int64_t* offsets, std::int32_t* idx32, std::int64_t* idx64,
                       double* values) override {
    if (rows <= 0) return;
    if (sel_cols_ == nullptr || sel_rows_ < rows)
      throw DeviceError("internal: CUDA gather_selected without the block's mass_select");
    check_width(wide);
    stream_pieces(rows, offsets, idx32, idx64, values,
                  [&](index_t ra, index_t rb, const std::int64_t* off, int s, double* sval) {
                    const index_t n = rb - ra;
                    if (wide)
                      gather_kernel<T, std::int64_t><<<grid_for(n, 1), kThreads, 0, stream()>>>(
                          static_cast<const std::int64_t*>(sel_cols_) + ra * m, sel_vals_ + ra * m, n, m, counts + ra,
                          off, stage_idx64_[s], sval);
                    else
                      gather_kernel<T, std::int32_t><<<grid_for(n, 1), kThreads, 0, stream()>>>(
                          static_cast<const std::int32_t*>(sel_cols_) + ra * m, sel_vals_ + ra * m, n, m, counts + ra,
                          off, stage_idx32_[s], sval);
                    OTCAL_CUDA_CHECK_LAUNCH("gather_kernel");
                  });
    sel_cols_ = nullptr;
    sel_vals_ = nullptr;
    sel_rows_ = 0;
  }

  // ---- device residency ----
  bool host_workspace() const override { return false; }
  void download_row_max(const T* dev, index_t rows, T* host) override { d2h(dev, host, rows * sizeof(T)); }
  void download_counts(const std::int64_t* dev, index_t rows, std::int64_t* host) override {
    d2h(dev, host, rows * sizeof(std::int64_t));
    counts_dev_ = dev;
    host_counts_.assign(host, host + rows);  // piece boundaries of this block's compaction
  }
  void download_bins(const std::uint64_t* dev, std::size_t count, std::uint64_t* host) override {
    d2h(dev, host, count * sizeof(std::uint64_t));
  }
  void zero_bins(std::uint64_t* dev, std::size_t count) override {
    OTCAL_CUDA_CHECK(cudaMemsetAsync(dev, 0, count * sizeof(std::uint64_t), stream()));
  }
  void upload_ids(const index_t* host, index_t count, index_t* dev) override {
    if (count <= 0) return;
    OTCAL_CUDA_CHECK(cudaMemcpyAsync(dev, host, count * sizeof(index_t), cudaMemcpyHostToDevice, stream()));
    sync();
    host_ids_.assign(host, host + count);
    if (dense_) dense_->set_device_ids(dev);
  }
  void flush_output(std::int32_t* idx32, std::int64_t* idx64, double* values) override {
    // next_slot_ holds the older pending piece.
    for (int k = 0; k < 2; ++k) append_pending((next_slot_ + k) % 2, idx32, idx64, values);
  }

  // docs/sparsify.md §7.2, §7.3: every device buffer the backend touches is an entry of the
  // operation's list, sized for the largest block (per-row counts scale with the tile rows) and
  // CUB's scratch queried here for the largest call a block can make, so an overrun is a
  // BudgetTooSmall at plan time and never an OutOfBudget inside the loop. The pinned twins of the
  // staging buffers come from the context's separate pinned budget, checked here as well.
  void declare_workspace(WorkspaceDecl& decl, index_t n, index_t m, bool mass) override {
    if (m <= 0) throw InvalidArgument("the plan has no columns: sparsify needs m >= 1");
    wide_ = m >= (index_t{1} << 31);
    mass_ = mass;
    cap_ = capacity(n, m);
    const auto cap = static_cast<std::size_t>(cap_);
    const auto M = static_cast<std::size_t>(m);
    const index_t max_rows = std::max<index_t>(n, 1);  // a block (hence a piece) never exceeds n rows
    check_pinned_budget(decl.operation);
    DeviceLayout<T>& L = layout_;
    L.flags = decl.template add<unsigned>("cuda.block_flags", 1);
    for (int s = 0; s < 2; ++s) {
      const std::string slot = std::to_string(s);
      L.stage_idx32[s] = decl.template add<std::int32_t>("cuda.staging_idx32." + slot, wide_ ? 0 : cap);
      L.stage_idx64[s] = decl.template add<std::int64_t>("cuda.staging_idx64." + slot, wide_ ? cap : 0);
      L.stage_val[s] = decl.template add<double>("cuda.staging_values." + slot, cap);
    }
    L.piece_off = decl.template add<std::int64_t>("cuda.piece_offsets", 0, 1);
    scan_temp_bytes_ = scan_temp_bytes(max_rows);
    L.scan_temp = decl.template add<unsigned char>("cuda.scan_temp", scan_temp_bytes_);
    const std::size_t per_row_mass = mass ? 1 : 0;
    L.keys_alt = decl.template add<T>("cuda.sort_keys_alt", 0, mass ? M : 0);
    L.cols_alt32 = decl.template add<std::int32_t>("cuda.sort_cols_alt32", 0, mass && !wide_ ? M : 0);
    L.cols_alt64 = decl.template add<std::int64_t>("cuda.sort_cols_alt64", 0, mass && wide_ ? M : 0);
    L.tot = decl.template add<double>("cuda.row_totals", 0, per_row_mass);
    L.seg_begin = decl.template add<int>("cuda.segment_begin", 0, per_row_mass);
    L.seg_end = decl.template add<int>("cuda.segment_end", 0, per_row_mass);
    sort_temp_bytes_ = mass ? sort_temp_bytes(std::min(max_rows, sort_group_rows(m)), m) : 0;
    L.sort_temp = decl.template add<unsigned char>("cuda.sort_temp", sort_temp_bytes_);
    flags_index_ = L.flags.index;
    declared_ = true;
    bound_rows_ = 0;
  }

  void bind_workspace(const Workspace& ws, const WorkspaceDecl& decl, index_t rows) override {
    if (!declared_ || flags_index_ >= decl.buffers.size() || decl.buffers[flags_index_].name != "cuda.block_flags")
      throw DeviceError("internal: CUDA sparsify workspace bound to a list it did not declare into");
    const DeviceLayout<T>& L = layout_;
    flags_ = ws.get(L.flags);
    for (int s = 0; s < 2; ++s) {
      stage_idx32_[s] = ws.get(L.stage_idx32[s]);
      stage_idx64_[s] = ws.get(L.stage_idx64[s]);
      stage_val_[s] = ws.get(L.stage_val[s]);
    }
    piece_off_ = ws.get(L.piece_off);
    scan_temp_ = ws.get(L.scan_temp);
    keys_alt_ = ws.get(L.keys_alt);
    cols_alt32_ = ws.get(L.cols_alt32);
    cols_alt64_ = ws.get(L.cols_alt64);
    tot_ = ws.get(L.tot);
    seg_begin_ = ws.get(L.seg_begin);
    seg_end_ = ws.get(L.seg_end);
    sort_temp_ = ws.get(L.sort_temp);
    bound_rows_ = std::max<index_t>(rows, 1);
    // Once per operation: the loop itself allocates nothing.
    // Named with the copy stream, their last user (RMM's rule); the pinned resource itself is not
    // stream-ordered, and every read of a slot waits for its copy event first.
    for (int s = 0; s < 2; ++s)
      pinned_[s] = Buffer<unsigned char>(ctx_.pinned_host(), pinned_slot_bytes(), ctx_.copy_stream());
    for (Pending& p : pending_) p = Pending{};
    next_slot_ = 0;
    counts_dev_ = nullptr;
    host_counts_.clear();
    sel_cols_ = nullptr;
    sel_vals_ = nullptr;
    sel_rows_ = 0;
  }

 private:
  cudaStream_t stream() const { return static_cast<cudaStream_t>(ctx_.compute_stream()); }
  cudaStream_t copy_stream() const { return static_cast<cudaStream_t>(ctx_.copy_stream()); }
  void sync() { OTCAL_CUDA_CHECK(cudaStreamSynchronize(stream())); }
  void d2h(const void* dev, void* host, std::size_t bytes) {
    if (bytes == 0) return;
    OTCAL_CUDA_CHECK(cudaMemcpyAsync(host, dev, bytes, cudaMemcpyDeviceToHost, stream()));
    sync();
  }

  void require_bound(const char* what) const {
    if (bound_rows_ == 0)
      throw DeviceError(std::string("internal: CUDA sparsify ") + what +
                        " before declare_workspace / bind_workspace");
  }
  void require_rows(index_t rows, const char* what) const {
    require_bound(what);
    if (rows > bound_rows_)
      throw DeviceError(std::string("internal: CUDA sparsify ") + what + " on " + std::to_string(rows) +
                        " rows, but the workspace was planned for " + std::to_string(bound_rows_));
  }
  void check_width(bool wide) const {
    if (wide != wide_)
      throw DeviceError("internal: CUDA sparsify index width differs from the one its workspace was declared for");
  }

  // docs/sparsify.md §7.2.
  std::int64_t capacity(index_t n, index_t m) const {
    if (cap_request_ > 0) {
      if (cap_request_ < m)
        throw InvalidArgument("staging_entries = " + std::to_string(cap_request_) +
                              " is below the number of columns m = " + std::to_string(m) +
                              ": a staging buffer must hold at least one whole row; use >= m or 0 for the default");
      return cap_request_;
    }
    const std::int64_t all = static_cast<std::int64_t>(std::max<index_t>(n, 1)) * m;
    return std::max<std::int64_t>(m, std::min(all, kDefaultStagingEntries));
  }
  std::size_t idx_bytes() const { return wide_ ? 8 : 4; }
  std::size_t pinned_slot_bytes() const { return static_cast<std::size_t>(cap_) * (idx_bytes() + sizeof(double)); }

  // The pinned budget is its own LimitingAdaptor (docs/host-layer.md §2.3, §4): checked at plan
  // time like the device budget, so a too-large staging_entries fails before anything runs.
  void check_pinned_budget(const std::string& operation) {
    operation_ = operation.empty() ? std::string("sparsify") : operation;
    check_pinned(2 * align_up(pinned_slot_bytes()),
                 "the two pinned staging buffers (2 x " + std::to_string(cap_) + " entries)");
  }
  void check_pinned(std::size_t need, const std::string& what) const {
    const auto* lim = dynamic_cast<const LimitingAdaptor*>(&ctx_.pinned_host());
    if (lim == nullptr) return;
    const std::size_t live = lim->allocated_bytes();
    if (live + need > lim->limit())
      throw BudgetTooSmall(operation_ + ": " + what + " need " + format_bytes(need) + " but the pinned budget is " +
                               format_bytes(lim->limit()) + " with " + format_bytes(live) +
                               " in use; raise ContextOptions::pinned_budget or lower staging_entries",
                           live + need);
  }

  // CUB scratch, queried (d_temp_storage = nullptr) for the largest call: the scan of a piece of
  // up to `rows` counts, and the two segmented sorts of a group of `rows` whole rows.
  std::size_t scan_temp_bytes(index_t rows) const {
    std::size_t bytes = 0;
    OTCAL_CUDA_CHECK(cub::DeviceScan::ExclusiveSum(nullptr, bytes, static_cast<const std::int64_t*>(nullptr),
                                                   static_cast<std::int64_t*>(nullptr), static_cast<std::int64_t>(rows),
                                                   stream()));
    return std::max<std::size_t>(bytes, 1);
  }
  template <class I>
  std::size_t sort_temp_bytes_for(index_t rows, index_t m) const {
    const int n_items = static_cast<int>(static_cast<std::size_t>(rows) * static_cast<std::size_t>(m));
    const int n_segments = static_cast<int>(rows);
    cub::DoubleBuffer<T> keys(nullptr, nullptr);
    cub::DoubleBuffer<I> cols(nullptr, nullptr);
    std::size_t by_value = 0, by_column = 0;
    OTCAL_CUDA_CHECK(sort_pairs(true, nullptr, by_value, keys, cols, n_items, n_segments, nullptr, nullptr,
                                8 * static_cast<int>(sizeof(T))));
    OTCAL_CUDA_CHECK(sort_pairs(false, nullptr, by_column, cols, keys, n_items, n_segments, nullptr, nullptr,
                                8 * static_cast<int>(sizeof(I))));
    return std::max<std::size_t>({by_value, by_column, 1});
  }
  std::size_t sort_temp_bytes(index_t rows, index_t m) const {
    return wide_ ? sort_temp_bytes_for<std::int64_t>(rows, m) : sort_temp_bytes_for<std::int32_t>(rows, m);
  }
  template <class K, class V>
  cudaError_t sort_pairs(bool descending, void* temp, std::size_t& bytes, cub::DoubleBuffer<K>& keys,
                         cub::DoubleBuffer<V>& vals, int n_items, int n_segments, const int* begin, const int* end,
                         int end_bit) const {
    if (descending)
      return cub::DeviceSegmentedRadixSort::SortPairsDescending(temp, bytes, keys, vals, n_items, n_segments, begin,
                                                                end, 0, end_bit, stream());
    return cub::DeviceSegmentedRadixSort::SortPairs(temp, bytes, keys, vals, n_items, n_segments, begin, end, 0,
                                                    end_bit, stream());
  }
  // Runs a CUB call in the declared scratch; a size above the plan is a bug, not a budget event.
  template <class Call>
  void run_in_scratch(void* temp, std::size_t declared, const char* what, Call&& call) {
    std::size_t bytes = 0;
    OTCAL_CUDA_CHECK(call(nullptr, bytes));
    if (bytes > declared)
      throw DeviceError(std::string("internal: ") + what + " needs " + std::to_string(bytes) +
                        " bytes of CUB scratch but " + std::to_string(declared) + " were declared");
    bytes = declared;
    OTCAL_CUDA_CHECK(call(temp, bytes));
  }

  // Completes the host append of slot s (waits for its copy), if one is pending.
  void append_pending(int s, std::int32_t* idx32, std::int64_t* idx64, double* values) {
    Pending& p = pending_[s];
    if (!p.active) return;
    OTCAL_CUDA_CHECK(cudaEventSynchronize(copied_[s]));  // the host reads only after the copy event
    const unsigned char* src = pinned_[s].data();
    const std::size_t ib = idx_bytes();
    const auto nnz = static_cast<std::size_t>(p.nnz);
    if (wide_) std::memcpy(idx64 + p.offset, src, nnz * ib);
    else std::memcpy(idx32 + p.offset, src, nnz * ib);
    std::memcpy(values + p.offset, src + static_cast<std::size_t>(cap_) * ib, nnz * sizeof(double));
    p.active = false;  // pinned[s] may now be overwritten by the next copy
  }

  // Cuts rows [0, rows) into pieces of whole rows of at most cap entries and streams each one:
  // fill(ra, rb, device offsets, slot, staging values) writes the piece into staging slot `slot`
  // on the compute stream. Consumes the counts of download_counts (one block, one emit).
  template <class Fill>
  void stream_pieces(index_t rows, const std::int64_t* offsets, std::int32_t* idx32, std::int64_t* idx64,
                     double* values, Fill&& fill) {
    if (rows <= 0) return;
    require_rows(rows, "compaction");
    check_width(idx32 == nullptr);
    if (static_cast<index_t>(host_counts_.size()) < rows || counts_dev_ == nullptr)
      throw DeviceError("internal: CUDA compaction without the block's downloaded counts");
    index_t ra = 0;
    while (ra < rows) {
      // Whole rows while they fit (a row holds <= m <= cap entries).
      std::int64_t nnz = 0;
      index_t rb = ra;
      while (rb < rows && nnz + host_counts_[static_cast<std::size_t>(rb)] <= cap_)
        nnz += host_counts_[static_cast<std::size_t>(rb++)];
      if (rb == ra)
        throw DeviceError("internal: row " + std::to_string(ra) + " keeps more entries than the staging capacity " +
                          std::to_string(cap_));
      const int s = next_slot_;
      next_slot_ = 1 - next_slot_;
      // The previous contents of pinned[s] reach the output before the next copy into it.
      append_pending(s, idx32, idx64, values);
      if (nnz > 0) {
        // Staging[s] is free once the copy that last read it has completed.
        OTCAL_CUDA_CHECK(cudaStreamWaitEvent(stream(), copied_[s], 0));
        scan_offsets(counts_dev_ + ra, rb - ra);
        fill(ra, rb, static_cast<const std::int64_t*>(piece_off_), s, stage_val_[s]);
        OTCAL_CUDA_CHECK(cudaEventRecord(compacted_[s], stream()));
        OTCAL_CUDA_CHECK(cudaStreamWaitEvent(copy_stream(), compacted_[s], 0));
        const std::size_t ib = idx_bytes();
        const void* stage_idx = wide_ ? static_cast<const void*>(stage_idx64_[s]) : stage_idx32_[s];
        OTCAL_CUDA_CHECK(cudaMemcpyAsync(pinned_[s].data(), stage_idx, static_cast<std::size_t>(nnz) * ib,
                                         cudaMemcpyDeviceToHost, copy_stream()));
        OTCAL_CUDA_CHECK(cudaMemcpyAsync(pinned_[s].data() + static_cast<std::size_t>(cap_) * ib, stage_val_[s],
                                         static_cast<std::size_t>(nnz) * sizeof(double), cudaMemcpyDeviceToHost,
                                         copy_stream()));
        OTCAL_CUDA_CHECK(cudaEventRecord(copied_[s], copy_stream()));
        pending_[s] = Pending{true, offsets[ra], nnz};
      }
      ra = rb;
    }
    counts_dev_ = nullptr;
    host_counts_.clear();
  }

  // piece_off_[r] = exclusive prefix sum of counts over the piece (cub::DeviceScan).
  void scan_offsets(const std::int64_t* counts, index_t n) {
    run_in_scratch(scan_temp_, scan_temp_bytes_, "the piece offset scan", [&](void* temp, std::size_t& bytes) {
      return cub::DeviceScan::ExclusiveSum(temp, bytes, counts, piece_off_, static_cast<std::int64_t>(n), stream());
    });
  }

  template <class I>
  void mass_impl(T* block, index_t rows, index_t m, const T* row_max, double value, index_t max_k, I* order,
                 I* cols_alt, std::int64_t* counts) {
    require_rows(rows, "mass_select");
    const auto items = static_cast<std::size_t>(rows) * static_cast<std::size_t>(m);
    // Totals first: the sort below reorders the block in place.
    row_total_kernel<T><<<grid_for(rows, kTotalWarps * kTotalRows), kTotalWarps * 32, 0, stream()>>>(block, rows,
                                                                                                     m, tot_);
    OTCAL_CUDA_CHECK_LAUNCH("row_total_kernel");
    iota_kernel<I><<<grid_for(static_cast<std::int64_t>(items)), kThreads, 0, stream()>>>(order, rows, m);
    OTCAL_CUDA_CHECK_LAUNCH("iota_kernel");
    const index_t group = sort_group_rows(m);
    const T* sorted_vals = nullptr;
    const I* sorted_cols = nullptr;
    for (index_t g0 = 0; g0 < rows; g0 += group) {
      const index_t gn = std::min(group, rows - g0);
      const std::size_t base = static_cast<std::size_t>(g0) * static_cast<std::size_t>(m);
      const int n_items = static_cast<int>(static_cast<std::size_t>(gn) * static_cast<std::size_t>(m));
      const int n_segments = static_cast<int>(gn);
      // Pass 1: every row by value, descending; stable, so ties keep ascending columns.
      segments_kernel<<<grid_for(gn), kThreads, 0, stream()>>>(gn, m, nullptr, seg_begin_, seg_end_);
      OTCAL_CUDA_CHECK_LAUNCH("segments_kernel");
      cub::DoubleBuffer<T> keys(block + base, keys_alt_ + base);
      cub::DoubleBuffer<I> vals(order + base, cols_alt + base);
      run_in_scratch(sort_temp_, sort_temp_bytes_, "the mass sort by value", [&](void* temp, std::size_t& bytes) {
        return sort_pairs(true, temp, bytes, keys, vals, n_items, n_segments, seg_begin_, seg_end_,
                          8 * static_cast<int>(sizeof(T)));
      });
      mass_cut_kernel<T><<<grid_for(gn, kCutWarps), kThreads, 0, stream()>>>(keys.Current(), gn, m, row_max + g0,
                                                                             tot_ + g0, value, max_k, counts + g0);
      OTCAL_CUDA_CHECK_LAUNCH("mass_cut_kernel");
      // Pass 2: the kept prefix of each row by column, ascending (the CSR order).
      segments_kernel<<<grid_for(gn), kThreads, 0, stream()>>>(gn, m, counts + g0, seg_begin_, seg_end_);
      OTCAL_CUDA_CHECK_LAUNCH("segments_kernel");
      cub::DoubleBuffer<I> cols2(vals.Current(), vals.Alternate());
      cub::DoubleBuffer<T> vals2(keys.Current(), keys.Alternate());
      run_in_scratch(sort_temp_, sort_temp_bytes_, "the mass sort by column", [&](void* temp, std::size_t& bytes) {
        return sort_pairs(false, temp, bytes, cols2, vals2, n_items, n_segments, seg_begin_, seg_end_,
                          8 * static_cast<int>(sizeof(I)));
      });
      // Every group flips the same way (same pass count), so one base pointer serves all groups.
      sorted_cols = cols2.Current() - base;
      sorted_vals = vals2.Current() - base;
    }
    sel_cols_ = sorted_cols;
    sel_vals_ = sorted_vals;
    sel_rows_ = rows;
  }

  struct Pending {
    bool active = false;
    std::int64_t offset = 0;  // absolute position in the output arrays
    std::int64_t nnz = 0;
  };

  Context ctx_;  // owning: the backend lives for one operation, outside the context
  std::int64_t cap_request_ = 0;
  std::string operation_ = "sparsify";  // the operation named in budget messages
  // Fixed by declare_workspace.
  DeviceLayout<T> layout_;
  bool declared_ = false;
  std::size_t flags_index_ = 0;
  bool wide_ = false;
  bool mass_ = false;
  std::int64_t cap_ = 0;
  std::size_t scan_temp_bytes_ = 0, sort_temp_bytes_ = 0;
  // Fixed by bind_workspace (the operation's Workspace owns the device memory).
  index_t bound_rows_ = 0;
  unsigned* flags_ = nullptr;
  std::int32_t* stage_idx32_[2]{};
  std::int64_t* stage_idx64_[2]{};
  double* stage_val_[2]{};
  std::int64_t* piece_off_ = nullptr;
  void* scan_temp_ = nullptr;
  T* keys_alt_ = nullptr;
  std::int32_t* cols_alt32_ = nullptr;
  std::int64_t* cols_alt64_ = nullptr;
  double* tot_ = nullptr;
  int* seg_begin_ = nullptr;
  int* seg_end_ = nullptr;
  void* sort_temp_ = nullptr;
  Buffer<unsigned char> pinned_[2];
  // Streaming pipeline.
  cudaEvent_t compacted_[2]{}, copied_[2]{};
  Pending pending_[2];
  int next_slot_ = 0;
  // Block-to-block hand-over inside one operation (download_counts -> emit, mass_select -> gather).
  const std::int64_t* counts_dev_ = nullptr;
  std::vector<std::int64_t> host_counts_;
  const void* sel_cols_ = nullptr;
  const T* sel_vals_ = nullptr;
  index_t sel_rows_ = 0;
  // Sampled sweeps of a dense source.
  std::vector<index_t> host_ids_;
  CudaDenseSource<T>* dense_ = nullptr;
};

}  // namespace cuda_sparsify

template <class T>
std::unique_ptr<SparsifyBackend<T>> make_cuda_sparsify_backend(const Context& ctx, std::int64_t staging_entries) {
  return std::make_unique<cuda_sparsify::CudaSparsifyBackend<T>>(ctx, staging_entries);
}

template std::unique_ptr<SparsifyBackend<float>> make_cuda_sparsify_backend<float>(const Context&, std::int64_t);
template std::unique_ptr<SparsifyBackend<double>> make_cuda_sparsify_backend<double>(const Context&, std::int64_t);

}  // namespace otcal::detail
