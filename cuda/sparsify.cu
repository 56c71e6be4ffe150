// CUDA implementation of the sparsify primitives (src/sparsify/sparsify_backend.hpp); the CPU one
// (src/cpu/sparsify_cpu.cpp) is the reference. The host loop (src/sparsify/sparsify.cpp) is the
// same for both: it reads row maxima, kept counts and histogram bins through the download
// primitives below. Design (spec/sparsify.md §2, §6, §7.2, §7.3):
//
//  * Block build: one thread per entry (r, j); the cost is accumulated over k = 0..d-1 with the
//    shared OTCAL_HD cost math, then T_ij = exp((f_i + g_j - c_ij * inv_scale) / eps) in float64,
//    stored in T, exactly the CPU formula (device exp may differ from glibc's in the last ulp).
//  * row_max: one CTA per row, max (exact, so bitwise equal given equal entries) and the kBlock*
//    flags by warp vote (__reduce_or_sync) and one atomicOr per warp.
//  * key_histogram: entries swept by a grid-stride loop; lanes holding the same bin are grouped
//    by __match_any_sync and one leader adds the group size to the uint64 counter (warp-aggregated
//    global atomics: 65 536 bins do not fit a per-CTA shared-memory copy). Integer counts, so the
//    result is independent of the order.
//  * threshold / percentile / min_row: count pass (one CTA per row, block reduction into int64
//    counts), then per piece cub::DeviceScan::ExclusiveSum of the counts gives each row's offset
//    in the staging buffer and one CTA per row writes its kept entries with a cub::BlockScan over
//    tiles of columns, so columns stay ascending.
//  * mass: per-row totals in float64 summed sequentially in column order (the CPU order), then
//    cub::DeviceSegmentedRadixSort::SortPairsDescending of (value, column) per row — stable, so
//    ties stay in ascending column order as in the CPU comparator — a per-row sequential float64
//    prefix walk to the cut, and a second segmented sort of the kept prefixes by column.
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
#include <cuda_runtime.h>

#include <cub/cub.cuh>

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <type_traits>
#include <vector>

#include "cuda_check.hpp"
#include "otcal/detail/cost_math.hpp"
#include "otcal/detail/lse_math.hpp"
#include "otcal/errors.hpp"
#include "sparsify/radix_select.hpp"
#include "sparsify/sparsify_backend.hpp"

namespace otcal::detail {
namespace cuda_sparsify {

constexpr int kThreads = 256;
constexpr unsigned kMaxGrid = 65535u * 16u;
constexpr std::int64_t kDefaultStagingEntries = std::int64_t{1} << 20;  // 12 MiB per buffer (int32 + double)
constexpr std::size_t kSortTempReserve = std::size_t{4} << 20;          // CUB temp bound in the model
constexpr std::size_t kScanTempReserve = std::size_t{1} << 20;

inline unsigned grid_for(std::int64_t items, int threads = kThreads) {
  const std::int64_t g = (items + threads - 1) / threads;
  return static_cast<unsigned>(std::clamp<std::int64_t>(g, 1, kMaxGrid));
}

// ---- block sources -------------------------------------------------------------------------------

template <CostKind K, class T>
__global__ void build_plan_kernel(Cloud<T> rows, Cloud<T> cols, T p, bool plan, double inv_scale, double inv_eps,
                                  const T* f, const T* g, index_t r0, const index_t* ids, index_t count, T* out) {
  const index_t m = cols.n;
  const std::int64_t total = static_cast<std::int64_t>(count) * m;
  for (std::int64_t e = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; e < total;
       e += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    const index_t r = e / m, j = e % m;
    const index_t i = ids ? ids[r] : r0 + r;
    T acc = T(0);
    for (int k = 0; k < rows.d; ++k) acc += cost_term<K>(rows.x[k * rows.n + i], cols.x[k * cols.n + j], p);
    if constexpr (K != CostKind::sqeuclidean)
      acc = cost_finish<K>(acc, p, rows.norms ? rows.norms[i] : T(0), cols.norms ? cols.norms[j] : T(0));
    if (!plan) {
      out[e] = acc;
      continue;
    }
    out[e] = static_cast<T>(
        plan_entry(static_cast<double>(f[i]), static_cast<double>(g[j]), static_cast<double>(acc), inv_scale, inv_eps));
  }
}

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
    dispatch_cost(cost_.kind, [&](auto tag) {
      build_plan_kernel<decltype(tag)::value, T><<<grid_for(static_cast<std::int64_t>(count) * cols_.n), kThreads, 0,
                                                   s_>>>(rows_, cols_, static_cast<T>(cost_.p), plan_, inv_scale_,
                                                         inv_eps_, f_, g_, r0, ids, count, out);
    });
    OTCAL_CUDA_CHECK_LAUNCH("build_plan_kernel");
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

// Rows of a caller's host matrix: converted to T on the host and copied (the ids of a sampled
// sweep live on the device, so the host keeps its own copy of them via upload_ids).
template <class T>
class CudaDenseSource final : public PlanBlockSource<T> {
 public:
  CudaDenseSource(cudaStream_t s, const ConstMatrix& h, const std::vector<index_t>* host_ids)
      : s_(s), h_(h), host_ids_(host_ids) {}
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
    staged_.resize(static_cast<std::size_t>(count * m));
    for (index_t r = 0; r < count; ++r) {
      const index_t i = hid ? hid[r] : r0 + r;
      T* row = staged_.data() + r * m;
      if (h_.dtype == DType::float32) {
        const float* src = static_cast<const float*>(h_.data) + i * m;
        for (index_t j = 0; j < m; ++j) row[j] = static_cast<T>(src[j]);
      } else {
        const double* src = static_cast<const double*>(h_.data) + i * m;
        for (index_t j = 0; j < m; ++j) row[j] = static_cast<T>(src[j]);
      }
    }
    OTCAL_CUDA_CHECK(cudaMemcpyAsync(out, staged_.data(), staged_.size() * sizeof(T), cudaMemcpyHostToDevice, s_));
    OTCAL_CUDA_CHECK(cudaStreamSynchronize(s_));  // staged_ is reused by the next call
  }
  void set_device_ids(const index_t* base) { host_base_ = base; }

 private:
  cudaStream_t s_;
  ConstMatrix h_;
  const std::vector<index_t>* host_ids_;
  const index_t* host_base_ = nullptr;
  std::vector<T> staged_;
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
    // NaN never wins a comparison, so a NaN row's max is fixed up by row_nan_kernel (CPU: NaN).
    const T bm = Reduce(tmp).Reduce(mx, [](T a, T b) { return b > a ? b : a; });
    if (threadIdx.x == 0) out_max[r] = bm;
    __syncthreads();  // tmp is reused by the next row
  }
}

// NaN rows: out_max = NaN (the CPU convention). Separate so the hot kernel stays simple.
template <class T>
__global__ void row_nan_kernel(const T* block, index_t rows, index_t m, T* out_max) {
  for (index_t r = static_cast<index_t>(blockIdx.x) * blockDim.x + threadIdx.x; r < rows;
       r += static_cast<index_t>(gridDim.x) * blockDim.x) {
    const T* row = block + r * m;
    for (index_t j = 0; j < m; ++j)
      if (row[j] != row[j]) {
        out_max[r] = std::numeric_limits<T>::quiet_NaN();
        break;
      }
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

template <class T>
__global__ void row_total_kernel(const T* block, index_t rows, index_t m, double* tot) {
  for (index_t r = static_cast<index_t>(blockIdx.x) * blockDim.x + threadIdx.x; r < rows;
       r += static_cast<index_t>(gridDim.x) * blockDim.x) {
    const T* row = block + r * m;
    double t = 0;
    for (index_t j = 0; j < m; ++j) t += static_cast<double>(row[j]);  // the CPU's order
    tot[r] = t;
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

// The cut of spec §4.4 on the descending sorted row (the CPU's mass_impl, same float64 sequence).
template <class T>
__global__ void mass_cut_kernel(const T* sorted, index_t rows, index_t m, const T* row_max, const double* tot,
                                double value, index_t max_k, std::int64_t* counts) {
  for (index_t r = static_cast<index_t>(blockIdx.x) * blockDim.x + threadIdx.x; r < rows;
       r += static_cast<index_t>(gridDim.x) * blockDim.x) {
    counts[r] = 0;
    if (!has_mass(row_max, r) || !(tot[r] > 0)) continue;
    const T* v = sorted + r * m;
    const index_t cap = min(max_k > 0 ? max_k : m, m);
    index_t k = 0;
    if (value >= 1) {
      while (k < cap && v[k] > T(0)) ++k;
    } else {
      const double target = value * tot[r];
      double cum = 0;
      while (k < cap && v[k] > T(0)) {
        cum += static_cast<double>(v[k]);
        ++k;
        if (!(cum < target)) break;
      }
    }
    counts[r] = k;
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
  std::unique_ptr<PlanBlockSource<T>> dense_source(const ConstMatrix& host) override {
    auto src = std::make_unique<CudaDenseSource<T>>(stream(), host, &host_ids_);
    dense_ = src.get();
    return src;
  }

  unsigned row_max(const T* block, index_t rows, index_t m, T* out_max) override {
    if (rows <= 0) return 0;
    ensure_scratch();
    OTCAL_CUDA_CHECK(cudaMemsetAsync(flags_.data(), 0, sizeof(unsigned), stream()));
    row_max_kernel<T><<<grid_for(rows, 1), kThreads, 0, stream()>>>(block, rows, m, out_max, flags_.data());
    OTCAL_CUDA_CHECK_LAUNCH("row_max_kernel");
    unsigned host_flags = 0;
    OTCAL_CUDA_CHECK(cudaMemcpyAsync(&host_flags, flags_.data(), sizeof host_flags, cudaMemcpyDeviceToHost, stream()));
    sync();
    if (host_flags & kBlockNaN) {
      row_nan_kernel<T><<<grid_for(rows), kThreads, 0, stream()>>>(block, rows, m, out_max);
      OTCAL_CUDA_CHECK_LAUNCH("row_nan_kernel");
    }
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
    stream_pieces(rows, m, offsets, idx32, idx64, values,
                  [&](index_t ra, index_t rb, const std::int64_t* off, void* sidx, double* sval) {
                    const index_t n = rb - ra;
                    if (wide_)
                      compact_kernel<T, std::int64_t><<<grid_for(n, 1), kThreads, 0, stream()>>>(
                          block + ra * m, n, m, row_max + ra, thr, off, static_cast<std::int64_t*>(sidx), sval);
                    else
                      compact_kernel<T, std::int32_t><<<grid_for(n, 1), kThreads, 0, stream()>>>(
                          block + ra * m, n, m, row_max + ra, thr, off, static_cast<std::int32_t*>(sidx), sval);
                    OTCAL_CUDA_CHECK_LAUNCH("compact_kernel");
                  });
  }

  void mass_select(const T* block, index_t rows, index_t m, const T* row_max, double value, index_t max_k,
                   void* order, bool wide, std::int64_t* counts) override {
    if (rows <= 0) return;
    if (wide) mass_impl(const_cast<T*>(block), rows, m, row_max, value, max_k, static_cast<std::int64_t*>(order), counts);
    else mass_impl(const_cast<T*>(block), rows, m, row_max, value, max_k, static_cast<std::int32_t*>(order), counts);
  }

  void gather_selected(const T*, index_t rows, index_t m, const void*, bool wide, const std::int64_t* counts,
                       const std::int64_t* offsets, std::int32_t* idx32, std::int64_t* idx64,
                       double* values) override {
    stream_pieces(rows, m, offsets, idx32, idx64, values,
                  [&](index_t ra, index_t rb, const std::int64_t* off, void* sidx, double* sval) {
                    const index_t n = rb - ra;
                    if (wide)
                      gather_kernel<T, std::int64_t><<<grid_for(n, 1), kThreads, 0, stream()>>>(
                          static_cast<const std::int64_t*>(sel_cols_) + ra * m, sel_vals_ + ra * m, n, m, counts + ra,
                          off, static_cast<std::int64_t*>(sidx), sval);
                    else
                      gather_kernel<T, std::int32_t><<<grid_for(n, 1), kThreads, 0, stream()>>>(
                          static_cast<const std::int32_t*>(sel_cols_) + ra * m, sel_vals_ + ra * m, n, m, counts + ra,
                          off, static_cast<std::int32_t*>(sidx), sval);
                    OTCAL_CUDA_CHECK_LAUNCH("gather_kernel");
                  });
  }

  // ---- device residency ----
  bool host_workspace() const override { return false; }
  void download_row_max(const T* dev, index_t rows, T* host) override { d2h(dev, host, rows * sizeof(T)); }
  void download_counts(const std::int64_t* dev, index_t rows, std::int64_t* host) override {
    d2h(dev, host, rows * sizeof(std::int64_t));
    counts_dev_ = dev;
    host_counts_.assign(host, host + rows);  // piece boundaries of the next compaction
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
    for (int k = 0; k < 2; ++k) append_pending((next_slot_ + k) % 2, idx32, idx64, values);
  }

  // Spec §7.3: two device staging buffers (values + indices) + scan temp + flags; pinned twins
  // are host memory with their own budget but are counted here as well (conservative). Mass:
  // the second sort buffers, per-row totals and segment bounds, CUB sort temp.
  std::size_t extra_fixed_bytes(index_t n, index_t m, bool mass) const override {
    const std::int64_t cap = capacity(n, m);
    planned_cap_ = cap;  // the staging allocated later is exactly what the model reserved
    const std::size_t idx = m >= (index_t{1} << 31) ? 8 : 4;
    std::size_t b = 2 * static_cast<std::size_t>(cap) * (sizeof(double) + idx) * 2;  // device + pinned
    b += kScanTempReserve + 8 * kDefaultAlignment + 16;
    if (mass) b += kSortTempReserve;
    return b;
  }
  std::size_t extra_bytes_per_row(index_t m, bool mass) const override {
    std::size_t b = sizeof(std::int64_t);  // device piece offsets
    if (mass) {
      const std::size_t idx = m >= (index_t{1} << 31) ? 8 : 4;
      b += static_cast<std::size_t>(m) * (sizeof(T) + idx) + sizeof(double) + 2 * sizeof(int);
    }
    return b;
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

  void ensure_scratch() {
    if (flags_.size() == 0) flags_ = Buffer<unsigned>(ctx_.workspace(), 1, ctx_.compute_stream());
  }

  void ensure_staging(index_t m) {
    if (cap_ > 0) return;
    // What the ByteModel reserved (extra_fixed_bytes runs when the batch is planned).
    cap_ = planned_cap_ > 0 ? planned_cap_ : capacity(rows_hint_, m);
    const std::size_t ib = idx_bytes();
    for (int s = 0; s < 2; ++s) {
      stage_idx_[s] = Buffer<unsigned char>(ctx_.workspace(), static_cast<std::size_t>(cap_) * ib, ctx_.compute_stream());
      stage_val_[s] = Buffer<double>(ctx_.workspace(), static_cast<std::size_t>(cap_), ctx_.compute_stream());
      pinned_[s] = Buffer<unsigned char>(ctx_.pinned_host(), static_cast<std::size_t>(cap_) * (ib + sizeof(double)));
    }
  }
  std::size_t idx_bytes() const { return wide_ ? 8 : 4; }

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
  // fill(ra, rb, device offsets, staging idx, staging values) writes the piece on the compute
  // stream.
  template <class Fill>
  void stream_pieces(index_t rows, index_t m, const std::int64_t* offsets, std::int32_t* idx32, std::int64_t* idx64,
                     double* values, Fill&& fill) {
    if (rows <= 0) return;
    wide_ = idx32 == nullptr;
    rows_hint_ = std::max<index_t>(rows_hint_, rows);
    ensure_staging(m);
    if (static_cast<index_t>(host_counts_.size()) < rows || counts_dev_ == nullptr)
      throw DeviceError("internal: CUDA compaction without the block's downloaded counts");
    if (piece_off_.size() < static_cast<std::size_t>(rows))
      piece_off_ = Buffer<std::int64_t>(ctx_.workspace(), static_cast<std::size_t>(rows), ctx_.compute_stream());
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
        fill(ra, rb, piece_off_.data(), stage_idx_[s].data(), stage_val_[s].data());
        OTCAL_CUDA_CHECK(cudaEventRecord(compacted_[s], stream()));
        OTCAL_CUDA_CHECK(cudaStreamWaitEvent(copy_stream(), compacted_[s], 0));
        const std::size_t ib = idx_bytes();
        OTCAL_CUDA_CHECK(cudaMemcpyAsync(pinned_[s].data(), stage_idx_[s].data(), static_cast<std::size_t>(nnz) * ib,
                                         cudaMemcpyDeviceToHost, copy_stream()));
        OTCAL_CUDA_CHECK(cudaMemcpyAsync(pinned_[s].data() + static_cast<std::size_t>(cap_) * ib, stage_val_[s].data(),
                                         static_cast<std::size_t>(nnz) * sizeof(double), cudaMemcpyDeviceToHost,
                                         copy_stream()));
        OTCAL_CUDA_CHECK(cudaEventRecord(copied_[s], copy_stream()));
        pending_[s] = Pending{true, offsets[ra], nnz};
      }
      ra = rb;
    }
  }

  // piece_off_[r] = exclusive prefix sum of counts over the piece (cub::DeviceScan).
  void scan_offsets(const std::int64_t* counts, index_t n) {
    std::size_t bytes = 0;
    OTCAL_CUDA_CHECK(cub::DeviceScan::ExclusiveSum(nullptr, bytes, counts, piece_off_.data(), static_cast<int>(n),
                                                   stream()));
    if (scan_temp_.size() < bytes)
      scan_temp_ = Buffer<unsigned char>(ctx_.workspace(), std::max<std::size_t>(bytes, 1), ctx_.compute_stream());
    OTCAL_CUDA_CHECK(cub::DeviceScan::ExclusiveSum(scan_temp_.data(), bytes, counts, piece_off_.data(),
                                                   static_cast<int>(n), stream()));
  }

  template <class I>
  void mass_impl(T* block, index_t rows, index_t m, const T* row_max, double value, index_t max_k, I* order,
                 std::int64_t* counts) {
    MemoryResource& ws = ctx_.workspace();
    const auto items = static_cast<std::size_t>(rows) * static_cast<std::size_t>(m);
    if (keys_alt_.size() < items) {
      keys_alt_ = Buffer<T>();
      cols_alt_ = Buffer<unsigned char>();
      keys_alt_ = Buffer<T>(ws, items, ctx_.compute_stream());
      cols_alt_ = Buffer<unsigned char>(ws, items * sizeof(I), ctx_.compute_stream());
    }
    if (tot_.size() < static_cast<std::size_t>(rows)) {
      tot_ = Buffer<double>(ws, static_cast<std::size_t>(rows), ctx_.compute_stream());
      seg_begin_ = Buffer<int>(ws, static_cast<std::size_t>(rows), ctx_.compute_stream());
      seg_end_ = Buffer<int>(ws, static_cast<std::size_t>(rows), ctx_.compute_stream());
    }
    // Totals first: the sort below reorders the block in place.
    row_total_kernel<T><<<grid_for(rows), kThreads, 0, stream()>>>(block, rows, m, tot_.data());
    OTCAL_CUDA_CHECK_LAUNCH("row_total_kernel");
    iota_kernel<I><<<grid_for(static_cast<std::int64_t>(items)), kThreads, 0, stream()>>>(order, rows, m);
    OTCAL_CUDA_CHECK_LAUNCH("iota_kernel");
    I* cols_alt = reinterpret_cast<I*>(cols_alt_.data());
    // CUB counts items in int: sort groups of whole rows of fewer than 2^31 entries.
    const index_t group = std::max<index_t>(1, static_cast<index_t>(INT_MAX) / std::max<index_t>(m, 1));
    const T* sorted_vals = nullptr;
    const I* sorted_cols = nullptr;
    for (index_t g0 = 0; g0 < rows; g0 += group) {
      const index_t gn = std::min(group, rows - g0);
      const std::size_t base = static_cast<std::size_t>(g0) * static_cast<std::size_t>(m);
      const int n_items = static_cast<int>(static_cast<std::size_t>(gn) * static_cast<std::size_t>(m));
      // Pass 1: every row by value, descending; stable, so ties keep ascending columns.
      segments_kernel<<<grid_for(gn), kThreads, 0, stream()>>>(gn, m, nullptr, seg_begin_.data(), seg_end_.data());
      OTCAL_CUDA_CHECK_LAUNCH("segments_kernel");
      cub::DoubleBuffer<T> keys(block + base, keys_alt_.data() + base);
      cub::DoubleBuffer<I> vals(order + base, cols_alt + base);
      sort_call(true, keys, vals, n_items, static_cast<int>(gn), 0, 8 * static_cast<int>(sizeof(T)));
      mass_cut_kernel<T><<<grid_for(gn), kThreads, 0, stream()>>>(keys.Current(), gn, m, row_max + g0, tot_.data() + g0,
                                                                  value, max_k, counts + g0);
      OTCAL_CUDA_CHECK_LAUNCH("mass_cut_kernel");
      // Pass 2: the kept prefix of each row by column, ascending (the CSR order).
      segments_kernel<<<grid_for(gn), kThreads, 0, stream()>>>(gn, m, counts + g0, seg_begin_.data(), seg_end_.data());
      OTCAL_CUDA_CHECK_LAUNCH("segments_kernel");
      cub::DoubleBuffer<I> cols2(vals.Current(), vals.Alternate());
      cub::DoubleBuffer<T> vals2(keys.Current(), keys.Alternate());
      sort_call(false, cols2, vals2, n_items, static_cast<int>(gn), 0, 8 * static_cast<int>(sizeof(I)));
      // Every group flips the same way (same pass count), so one base pointer serves all groups.
      sorted_cols = cols2.Current() - base;
      sorted_vals = vals2.Current() - base;
    }
    sel_cols_ = sorted_cols;
    sel_vals_ = sorted_vals;
  }

  template <class K, class V>
  void sort_call(bool descending, cub::DoubleBuffer<K>& keys, cub::DoubleBuffer<V>& vals, int n_items, int n_segments,
                 int begin_bit, int end_bit) {
    std::size_t bytes = 0;
    auto run = [&](void* temp) {
      if (descending)
        return cub::DeviceSegmentedRadixSort::SortPairsDescending(temp, bytes, keys, vals, n_items, n_segments,
                                                                  seg_begin_.data(), seg_end_.data(), begin_bit,
                                                                  end_bit, stream());
      return cub::DeviceSegmentedRadixSort::SortPairs(temp, bytes, keys, vals, n_items, n_segments, seg_begin_.data(),
                                                      seg_end_.data(), begin_bit, end_bit, stream());
    };
    OTCAL_CUDA_CHECK(run(nullptr));
    if (sort_temp_.size() < bytes)
      sort_temp_ = Buffer<unsigned char>(ctx_.workspace(), std::max<std::size_t>(bytes, 1), ctx_.compute_stream());
    OTCAL_CUDA_CHECK(run(sort_temp_.data()));
  }

  struct Pending {
    bool active = false;
    std::int64_t offset = 0;  // absolute position in the output arrays
    std::int64_t nnz = 0;
  };

  Context ctx_;
  std::int64_t cap_request_ = 0;
  std::int64_t cap_ = 0;
  mutable std::int64_t planned_cap_ = 0;
  index_t rows_hint_ = 0;
  bool wide_ = false;
  cudaEvent_t compacted_[2]{}, copied_[2]{};
  Buffer<unsigned char> stage_idx_[2], pinned_[2];
  Buffer<double> stage_val_[2];
  Pending pending_[2];
  int next_slot_ = 0;
  Buffer<unsigned> flags_;
  Buffer<std::int64_t> piece_off_;
  Buffer<unsigned char> scan_temp_, sort_temp_, cols_alt_;
  Buffer<T> keys_alt_;
  Buffer<double> tot_;
  Buffer<int> seg_begin_, seg_end_;
  const std::int64_t* counts_dev_ = nullptr;
  std::vector<std::int64_t> host_counts_;
  std::vector<index_t> host_ids_;
  CudaDenseSource<T>* dense_ = nullptr;
  const void* sel_cols_ = nullptr;
  const T* sel_vals_ = nullptr;
};

}  // namespace cuda_sparsify

template <class T>
std::unique_ptr<SparsifyBackend<T>> make_cuda_sparsify_backend(const Context& ctx, std::int64_t staging_entries) {
  return std::make_unique<cuda_sparsify::CudaSparsifyBackend<T>>(ctx, staging_entries);
}

template std::unique_ptr<SparsifyBackend<float>> make_cuda_sparsify_backend<float>(const Context&, std::int64_t);
template std::unique_ptr<SparsifyBackend<double>> make_cuda_sparsify_backend<double>(const Context&, std::int64_t);

}  // namespace otcal::detail
