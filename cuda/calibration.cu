// CUDA passes of the calibrators (src/calibration/calib_backend.hpp); the CPU passes in
// src/calibration/{exact,gradient}.cpp are the reference. Design:
//
//  * Residency: A (k x n CSR) and Aᵀ (n x k CSR, the host counting sort) are uploaded once into
//    the operation's workspace (budgeted device memory) with every per-record array. Every device
//    buffer is declared up front (declare_cuda_*_workspace) so the planner refuses a small budget
//    before anything is allocated; the passes take the allocated workspace and allocate nothing.
//    No CUB or cuSPARSE call is made here, so there is no temp storage to size. Per Newton step
//    or epoch only k-sized vectors (η, S, c) and, for Newton, the ka x ka matrix cross the bus.
//  * S = A w in the CPU's order (RowAccumulator, kernels.hpp), bitwise: one thread per (row,
//    granule of kReductionGranule records) sums its entries in ascending record order into a
//    declared partials buffer (granule_slot_count(A) values, one per non-empty pair: millions of
//    threads at 10^6-10^7 records), then one thread per row folds its partials in granule order
//    from 0. Same products, same sums, same order as the CPU: the same S for every run and batch.
//  * The gradient calibrator's dropped-out, gated w'_i is computed once per epoch into a declared
//    n-vector by a per-record kernel and read by the SpMV and the gradient kernel (no batch
//    buffer: results cannot depend on batch size; the same values as the CPU's w'_i formula).
//  * Aᵀc and u = Aᵀη: one thread per record, the record's entries in ascending constraint order
//    with __dmul_rn/__dadd_rn (no FMA contraction): the CPU transpose_apply's exact arithmetic.
//  * T = A diag(v) Aᵀ over the active rows: one warp per (active row a, block of T's columns
//    b >= a), so ~ka x blocks/2 warps have work and a long row is split across blocks. Each entry
//    adds its records in ascending order, term (A_ai v_i) A_bi, skipping A_ai v_i = 0: the CPU's
//    accumulate_newton_matrix expression, so the upper triangle is bitwise the CPU's; it is then
//    mirrored (T exactly symmetric). The block's sums live in shared memory; the lanes load 32
//    records' (i, A_ai v_i, slice bounds) at once, so the walk over the row has no dependent load
//    per record. O(Σ nnz_i² / 2).
//  * The Newton solve runs on the device too (cuda/newton_device.cu, cuSOLVER on T in place; only
//    b and Δ cross the bus); g, F', u and the finite check run on the device with the shared
//    OTCAL_HD element math.
//  * Gradient epochs: SpMV(w'), download S (k), host L(S) and c (the CPU code), upload c,
//    gradient kernel (per record), Adam kernel(s). θ is initialised on the host (Philox, the CPU
//    code) and uploaded once; the final weights come back once.
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <memory>
#include <vector>

#include "calibration/calib_backend.hpp"
#include "calibration/kernels.hpp"
#include "cuda_check.hpp"
#include "otcal/detail/calib_math.hpp"
#include "otcal/errors.hpp"

namespace otcal::calib {

namespace {

constexpr int kThreads = 256;
constexpr int kWarpsPerBlock = kThreads / 32;
constexpr unsigned kMaxGrid = 65535u * 16u;

unsigned grid_for(std::int64_t items, int per_block = kThreads) {
  const std::int64_t g = (items + per_block - 1) / per_block;
  return static_cast<unsigned>(std::clamp<std::int64_t>(g, 1, kMaxGrid));
}

struct DevCsr {
  const std::int64_t* indptr = nullptr;
  const std::int32_t* idx32 = nullptr;
  const std::int64_t* idx64 = nullptr;
  const double* values = nullptr;
  index_t rows = 0, cols = 0;
  __device__ __forceinline__ std::int64_t index(std::int64_t p) const { return idx64 ? idx64[p] : idx32[p]; }
};

template <class T>
void upload(cudaStream_t s, const T* host, T* dst, std::size_t count) {
  if (count > 0) OTCAL_CUDA_CHECK(cudaMemcpyAsync(dst, host, count * sizeof(T), cudaMemcpyHostToDevice, s));
}
template <class T>
void download(cudaStream_t s, const T* src, T* host, std::size_t count) {
  if (count > 0) OTCAL_CUDA_CHECK(cudaMemcpyAsync(host, src, count * sizeof(T), cudaMemcpyDeviceToHost, s));
  OTCAL_CUDA_CHECK(cudaStreamSynchronize(s));
}
void zero(cudaStream_t s, double* p, std::size_t count) {
  if (count > 0) OTCAL_CUDA_CHECK(cudaMemsetAsync(p, 0, count * sizeof(double), s));
}

// Uploads M into its declared workspace buffers (calib::declare_csr) and returns the kernels' view.
DevCsr upload_csr(cudaStream_t s, const detail::Workspace& ws, const CsrIds& ids, const CsrMatrix& M) {
  const std::size_t nnz = static_cast<std::size_t>(M.nnz());
  if (ids.rows != M.rows || ids.cols != M.cols || ids.wide != M.wide_indices() || ws.count(ids.values) != nnz)
    throw InvalidArgument("calibration: a CSR does not match the shape its workspace was declared with");
  DevCsr v;
  v.indptr = ws.get(ids.indptr);
  v.idx32 = M.wide_indices() ? nullptr : ws.get(ids.indices32);
  v.idx64 = M.wide_indices() ? ws.get(ids.indices64) : nullptr;
  v.values = ws.get(ids.values);
  v.rows = M.rows;
  v.cols = M.cols;
  upload(s, M.indptr.data(), ws.get(ids.indptr), M.indptr.size());
  if (M.wide_indices())
    upload(s, M.indices64.data(), ws.get(ids.indices64), nnz);
  else
    upload(s, M.indices32.data(), ws.get(ids.indices32), nnz);
  upload(s, M.values.data(), ws.get(ids.values), nnz);
  return v;
}

// ---- weights of a record seen by the SpMV ------------------------------------------------------
struct ArrayWeight {
  const double* w;
  __device__ __forceinline__ double operator()(std::int64_t i) const { return w[i]; }
};
struct ProductWeight {  // d_i g_i, the CPU's v = d * g
  const double* a;
  const double* b;
  __device__ __forceinline__ double operator()(std::int64_t i) const { return __dmul_rn(a[i], b[i]); }
};

// The device side of GranuleSlotIds.
struct DevSlots {
  const std::int64_t* row_offsets = nullptr;  // k + 1
  const std::int64_t* entry_begin = nullptr;  // count + 1
  double* partials = nullptr;                 // count
  std::int64_t count = 0;
};

// Per row, its (row, granule) pairs in granule order, each with its first entry of A; entries of
// one pair are consecutive in A's row, so pair j holds [entry_begin[j], entry_begin[j + 1]). Fills
// the declared buffers (through the host vectors, which the caller keeps until the upload is done).
DevSlots upload_slots(cudaStream_t s, const detail::Workspace& ws, const GranuleSlotIds& ids, const CsrMatrix& A,
                      std::vector<std::int64_t>& row_offsets, std::vector<std::int64_t>& entry_begin) {
  row_offsets.assign(static_cast<std::size_t>(A.rows) + 1, 0);
  entry_begin.clear();
  for (index_t r = 0; r < A.rows; ++r) {
    std::int64_t last = -1;
    for (std::int64_t p = A.indptr[r]; p < A.indptr[r + 1]; ++p) {
      const std::int64_t g = A.index(p) / kReductionGranule;
      if (g != last) entry_begin.push_back(p);
      last = g;
    }
    row_offsets[static_cast<std::size_t>(r) + 1] = static_cast<std::int64_t>(entry_begin.size());
  }
  entry_begin.push_back(A.nnz());
  const std::size_t count = entry_begin.size() - 1;
  if (ws.count(ids.partials) != count || ws.count(ids.entry_begin) != count + 1 ||
      ws.count(ids.row_offsets) != row_offsets.size())
    throw InvalidArgument("calibration: the granule slots do not match the workspace they were declared with");
  DevSlots d;
  d.row_offsets = ws.get(ids.row_offsets);
  d.entry_begin = ws.get(ids.entry_begin);
  d.partials = ws.get(ids.partials);
  d.count = static_cast<std::int64_t>(count);
  upload(s, row_offsets.data(), ws.get(ids.row_offsets), row_offsets.size());
  upload(s, entry_begin.data(), ws.get(ids.entry_begin), entry_begin.size());
  return d;
}

GranuleSlotIds declare_slots(WorkspaceDecl& decl, const CsrMatrix& A) {
  const auto count = static_cast<std::size_t>(granule_slot_count(A));
  GranuleSlotIds ids;
  ids.row_offsets = decl.add<std::int64_t>("S.slot_offsets", static_cast<std::size_t>(A.rows) + 1);
  ids.entry_begin = decl.add<std::int64_t>("S.slot_entries", count + 1);
  ids.partials = decl.add<double>("S.granule_partials", count);
  return ids;
}

// One thread per (row, granule) pair: the RowAccumulator's partial, 0 + A_rp w_i + ... in
// ascending record order, each product and sum rounded alone (its `part += A.values[p] * w[i]`).
template <class W>
__global__ void granule_partials_kernel(DevCsr A, DevSlots sl, W weight) {
  for (std::int64_t j = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; j < sl.count;
       j += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    double part = 0;
    const std::int64_t end = sl.entry_begin[j + 1];
    for (std::int64_t p = sl.entry_begin[j]; p < end; ++p)
      part = __dadd_rn(part, __dmul_rn(A.values[p], weight(A.index(p))));
    sl.partials[j] = part;
  }
}

// One thread per row: S_r = 0 + partial_0 + partial_1 + ... in granule order, the CPU's fold
// (RowAccumulator's `s += part` per completed granule and `sum + partial` at the end; the empty
// granules it adds are +0, which changes no sum). An empty row is 0.
__global__ void fold_partials_kernel(DevSlots sl, double* S, index_t rows) {
  for (std::int64_t r = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; r < rows;
       r += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    double s = 0;
    const std::int64_t end = sl.row_offsets[r + 1];
    for (std::int64_t j = sl.row_offsets[r]; j < end; ++j) s = __dadd_rn(s, sl.partials[j]);
    S[r] = s;
  }
}

template <class W>
void spmv(cudaStream_t s, const DevCsr& A, const DevSlots& sl, const W& weight, double* S) {
  if (A.rows == 0) return;
  if (sl.count > 0) {
    granule_partials_kernel<<<grid_for(sl.count), kThreads, 0, s>>>(A, sl, weight);
    OTCAL_CUDA_CHECK_LAUNCH("granule_partials_kernel");
  }
  fold_partials_kernel<<<grid_for(A.rows), kThreads, 0, s>>>(sl, S, A.rows);
  OTCAL_CUDA_CHECK_LAUNCH("fold_partials_kernel");
}

// (Aᵀc)_i with the CPU's arithmetic (ascending entries, no contraction).
__device__ __forceinline__ double transpose_dot(const DevCsr& At, const double* c, std::int64_t i) {
  double s = 0;
  for (std::int64_t q = At.indptr[i]; q < At.indptr[i + 1]; ++q) s = __dadd_rn(s, __dmul_rn(At.values[q], c[At.index(q)]));
  return s;
}

// ---- exact calibrator kernels ------------------------------------------------------------------
__global__ void exact_recompute_kernel(DevCsr At, const double* eta, const double* sigma2, detail::DistanceMath dist,
                                       double* u, double* g, double* dF, unsigned* nonfinite) {
  bool bad = false;
  for (std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < At.rows;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    const double t = transpose_dot(At, eta, i);
    const double ui = sigma2 ? __ddiv_rn(t, sigma2[i]) : t / 1.0;
    const double gi = dist.F(ui), di = dist.dF(ui);
    u[i] = ui;
    g[i] = gi;
    dF[i] = di;
    bad = bad || !isfinite(gi) || !isfinite(di);
  }
  if (__any_sync(0xffffffffu, bad) && (threadIdx.x & 31) == 0) atomicOr(nonfinite, 1u);
}

__global__ void newton_weight_kernel(const double* d, const double* dF, const double* sigma2, double* v, index_t n) {
  for (std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    const double p = __dmul_rn(d[i], dF[i]);
    v[i] = sigma2 ? __ddiv_rn(p, sigma2[i]) : p / 1.0;
  }
}

// Column blocks of T per Newton-matrix pass: enough that about kNewtonWarps warps have work (each
// (row a, block c >= a's block) is one warp; ~ka x blocks / 2 of them), at most one column each.
// More blocks split a long row further but make every block re-read the row's records and the
// start of their Aᵀ slices, so the target is about one device's resident warps (132 SMs x 64).
// A block is at most kNewtonBlockColumns wide: the warp sums its piece of T's row in shared memory
// (8 warps x 6 KiB per thread block), a few cycles per read-modify-write instead of a trip to L2.
constexpr std::int64_t kNewtonWarps = 8192;
constexpr index_t kNewtonBlockColumns = 768;
struct NewtonBlocks {
  index_t width = 1, count = 0;
};
NewtonBlocks newton_blocks(index_t ka) {
  NewtonBlocks nb;
  if (ka <= 0) return nb;
  const std::int64_t want = std::clamp<std::int64_t>((2 * kNewtonWarps + ka - 1) / ka, 1, ka);
  nb.width = std::min<index_t>(static_cast<index_t>((ka + want - 1) / want), kNewtonBlockColumns);
  nb.count = (ka + nb.width - 1) / nb.width;
  return nb;
}

// T[a][b] for b in [max(a, c w), (c + 1) w), one warp per (a, c). Per entry the CPU's sum: records
// of row a ascending, 0 += (A_ai v_i) A_bi, skipped when A_ai v_i == 0, each entry owned by one
// lane per record (a slice holds each row once) and __syncwarp between records; the block's sums
// live in shared memory and are stored once, so every entry of the upper triangle is written.
// Every 32 records the lanes load one record's A entry, v_i and Aᵀ slice bounds each, so the walk
// has no chain of dependent loads per record. Within a slice (rows ascending, and active_of
// ascending over active rows) the block is the rows [row(blo), row(bhi - 1)]; at most k - row(blo)
// entries hold such rows, so the warp reads the slice 32 entries at a time from there (the CPU's
// search start) and leaves once it has passed the block.
__global__ void __launch_bounds__(kThreads)
    newton_matrix_kernel(DevCsr A, DevCsr At, const index_t* active_rows, const index_t* active_of, const double* v,
                         double* T, index_t ka, NewtonBlocks nb) {
  __shared__ double sums[kWarpsPerBlock][kNewtonBlockColumns];
  double* acc = sums[threadIdx.x / 32];
  const int lane = static_cast<int>(threadIdx.x & 31);
  const std::int64_t warps = static_cast<std::int64_t>(gridDim.x) * kWarpsPerBlock;
  const std::int64_t groups = static_cast<std::int64_t>(ka) * nb.count;
  for (std::int64_t w = (static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) / 32; w < groups;
       w += warps) {
    const index_t a = static_cast<index_t>(w / nb.count), c = static_cast<index_t>(w % nb.count);
    if ((c + 1) * static_cast<std::int64_t>(nb.width) <= a) continue;  // the block lies left of a: nothing
    const index_t blo = std::max<index_t>(a, c * nb.width), bhi = std::min<index_t>(ka, (c + 1) * nb.width);
    const std::int64_t rlo = active_rows[blo], rhi = active_rows[bhi - 1];
    for (index_t b = lane; b < bhi - blo; b += 32) acc[b] = 0;
    __syncwarp();
    const index_t r = active_rows[a];
    const std::int64_t end = A.indptr[r + 1];
    for (std::int64_t p0 = A.indptr[r]; p0 < end; p0 += 32) {
      const std::int64_t p = p0 + lane;
      double wl = 0;
      std::int64_t ql = 0, qe = 0;
      if (p < end) {
        const std::int64_t i = A.index(p);
        wl = __dmul_rn(A.values[p], v[i]);
        qe = At.indptr[i + 1];
        ql = std::max<std::int64_t>(At.indptr[i], qe - (At.cols - rlo));
      }
      const int records = static_cast<int>(std::min<std::int64_t>(32, end - p0));
      for (int j = 0; j < records; ++j) {
        const double wi = __shfl_sync(0xffffffffu, wl, j);
        const std::int64_t q0 = __shfl_sync(0xffffffffu, ql, j), q1 = __shfl_sync(0xffffffffu, qe, j);
        if (wi == 0) continue;  // uniform across the warp
        for (std::int64_t base = q0; base < q1; base += 32) {
          const std::int64_t q = base + lane;
          const std::int64_t row = q < q1 ? At.index(q) : std::numeric_limits<std::int64_t>::max();
          if (row >= rlo && row <= rhi) {
            const index_t b = active_of[row];
            if (b >= 0) acc[b - blo] = __dadd_rn(acc[b - blo], __dmul_rn(wi, At.values[q]));
          }
          if (__any_sync(0xffffffffu, row > rhi)) break;  // the rest of the slice is past the block
        }
        __syncwarp();  // the next record may add to the same entries from other lanes
      }
    }
    double* Trow = T + a * ka;
    for (index_t b = lane; b < bhi - blo; b += 32) Trow[blo + b] = acc[b];
    __syncwarp();  // the next group clears acc
  }
}

// T[b][a] = T[a][b] for b > a: the lower triangle mirrors the computed upper one.
__global__ void mirror_upper_kernel(double* T, index_t ka) {
  const std::int64_t total = static_cast<std::int64_t>(ka) * ka;
  for (std::int64_t e = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; e < total;
       e += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    const std::int64_t row = e / ka, col = e % ka;
    if (col < row) T[e] = T[col * ka + row];
  }
}

__global__ void scale_kernel(double* x, double f, index_t n) {
  for (std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x)
    x[i] *= f;
}

class CudaExactPasses final : public ExactPasses {
 public:
  CudaExactPasses(const Context& ctx, const detail::Workspace& ws, const CudaExactIds& ids, const CsrMatrix& A,
                  const CsrMatrix& At, const std::vector<index_t>& active_rows, const std::vector<double>& design,
                  const std::vector<double>& sigma2, const detail::DistanceMath& dist)
      : s_(static_cast<cudaStream_t>(ctx.compute_stream())), n_(A.cols), k_(A.rows),
        ka_(static_cast<index_t>(active_rows.size())), dist_(dist), A_(upload_csr(s_, ws, ids.A, A)),
        At_(upload_csr(s_, ws, ids.At, At)), d_(ws.get(ids.d)), u_(ws.get(ids.u)), g_(ws.get(ids.g)),
        dF_(ws.get(ids.dF)), v_(ws.get(ids.v)), best_g_(ws.get(ids.best_g)),
        sigma2_(sigma2.empty() ? nullptr : ws.get(ids.sigma2)), T_(ws.get(ids.T)), S_(ws.get(ids.S)),
        eta_(ws.get(ids.eta)), active_rows_(ws.get(ids.active_rows)), active_of_(ws.get(ids.active_of)),
        flag_(ws.get(ids.flag)), newton_(ctx.compute_stream(), ws, ids.newton) {
    if (ws.count(ids.T) != static_cast<std::size_t>(ka_) * static_cast<std::size_t>(ka_) ||
        (!sigma2.empty() && ws.count(ids.sigma2) != sigma2.size()))
      throw InvalidArgument("calibration: the exact passes do not match the workspace they were declared with");
    std::vector<index_t> active_of(static_cast<std::size_t>(k_), -1);
    for (index_t a = 0; a < ka_; ++a) active_of[static_cast<std::size_t>(active_rows[a])] = a;
    upload(s_, design.data(), d_, static_cast<std::size_t>(n_));
    upload(s_, sigma2.data(), sigma2_, sigma2.size());
    upload(s_, active_rows.data(), active_rows_, active_rows.size());
    upload(s_, active_of.data(), active_of_, active_of.size());
    std::vector<std::int64_t> slot_rows, slot_entries;
    slots_ = upload_slots(s_, ws, ids.slots, A, slot_rows, slot_entries);
    OTCAL_CUDA_CHECK(cudaStreamSynchronize(s_));  // the host vectors above are pageable temporaries
  }

  void scale_design(double f) override {
    if (n_ == 0) return;
    scale_kernel<<<grid_for(n_), kThreads, 0, s_>>>(d_, f, n_);
    OTCAL_CUDA_CHECK_LAUNCH("scale_kernel");
  }
  bool recompute(const double* eta) override {
    upload(s_, eta, eta_, static_cast<std::size_t>(k_));
    OTCAL_CUDA_CHECK(cudaMemsetAsync(flag_, 0, sizeof(unsigned), s_));
    if (n_ > 0) {
      exact_recompute_kernel<<<grid_for(n_), kThreads, 0, s_>>>(At_, eta_, sigma2_, dist_, u_, g_, dF_, flag_);
      OTCAL_CUDA_CHECK_LAUNCH("exact_recompute_kernel");
    }
    unsigned bad = 0;
    download(s_, flag_, &bad, 1);
    return bad == 0;
  }
  void estimate_design(double* S) override {
    spmv(s_, A_, slots_, ArrayWeight{d_}, S_);
    download(s_, S_, S, static_cast<std::size_t>(k_));
  }
  void estimate_weights(double* S) override {
    spmv(s_, A_, slots_, ProductWeight{d_, g_}, S_);
    download(s_, S_, S, static_cast<std::size_t>(k_));
  }
  void newton_matrix(double* T) override {
    if (ka_ == 0) return;
    if (n_ > 0) {
      newton_weight_kernel<<<grid_for(n_), kThreads, 0, s_>>>(d_, dF_, sigma2_, v_, n_);
      OTCAL_CUDA_CHECK_LAUNCH("newton_weight_kernel");
    }
    const std::size_t t_count = static_cast<std::size_t>(ka_) * static_cast<std::size_t>(ka_);
    const NewtonBlocks nb = newton_blocks(ka_);
    newton_matrix_kernel<<<grid_for(static_cast<std::int64_t>(ka_) * nb.count, kWarpsPerBlock), kThreads, 0, s_>>>(
        A_, At_, active_rows_, active_of_, v_, T_, ka_, nb);
    OTCAL_CUDA_CHECK_LAUNCH("newton_matrix_kernel");
    mirror_upper_kernel<<<grid_for(static_cast<std::int64_t>(t_count)), kThreads, 0, s_>>>(T_, ka_);
    OTCAL_CUDA_CHECK_LAUNCH("mirror_upper_kernel");
    if (T) download(s_, T_, T, t_count);  // null: T stays on the device for newton_solve
  }
  void newton_solve(const double* b, double* delta) override {
    newton_.solve(T_, b, delta, [this] { newton_matrix(nullptr); });
  }
  void keep_best() override { copy(best_g_, g_); }
  void restore_best() override { copy(g_, best_g_); }
  void download_g(double* g) override { download(s_, g_, g, static_cast<std::size_t>(n_)); }

 private:
  void copy(double* dst, const double* src) {
    if (n_ > 0)
      OTCAL_CUDA_CHECK(cudaMemcpyAsync(dst, src, static_cast<std::size_t>(n_) * sizeof(double),
                                       cudaMemcpyDeviceToDevice, s_));
  }
  cudaStream_t s_;
  index_t n_, k_, ka_;
  detail::DistanceMath dist_;
  DevCsr A_, At_;
  DevSlots slots_;
  double *d_, *u_, *g_, *dF_, *v_, *best_g_, *sigma2_, *T_, *S_, *eta_;
  index_t *active_rows_, *active_of_;
  unsigned* flag_;
  DeviceNewtonSolve newton_;
};

// ---- gradient calibrator kernels ---------------------------------------------------------------
// w'_i of the epoch for every record, the CPU pass 1's formula: the dropout weight, then (L0
// stage, log_alpha not null) times the training gate's z. Read by the SpMV and the gradient kernel.
__global__ void dropout_weights_kernel(const double* theta, const double* log_alpha, std::uint64_t seed, double rate,
                                       double temperature, std::uint32_t epoch, std::uint32_t gate_step,
                                       double* w_prime, index_t n) {
  for (std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    double w = detail::dropout_weight(seed, rate, i, theta[i], epoch);
    if (log_alpha) w *= detail::training_gate(seed, temperature, i, log_alpha[i], gate_step).z;
    w_prime[i] = w;
  }
}

struct GradientKernelArgs {
  DevCsr At;
  const double* c;
  const double* theta;
  const double* w_prime;    // the epoch's w'_i (dense stage: the dropout weight itself)
  const double* log_alpha;  // null: dense stage
  double* grad_theta;
  double* grad_alpha;
  std::uint64_t seed;
  double rate, temperature, lambda;
  std::uint32_t epoch, gate_step;
};

// The CPU pass 2, per record. Dense stage: w' is the dropout weight, read. L0 stage: the gate's
// dz and the bare dropout weight are needed too, so both are drawn again here, once per record
// (w' = we z, the same product as grad_theta's we * z * ac, so grad_theta reads it).
__global__ void gradient_kernel(GradientKernelArgs a) {
  for (std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < a.At.rows;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    const double ac = transpose_dot(a.At, a.c, i);
    if (!a.log_alpha) {
      a.grad_theta[i] = __dmul_rn(a.w_prime[i], ac);
    } else {
      const double we = detail::dropout_weight(a.seed, a.rate, i, a.theta[i], a.epoch);
      const double la = a.log_alpha[i];
      const detail::HardConcreteGate gt = detail::training_gate(a.seed, a.temperature, i, la, a.gate_step);
      a.grad_theta[i] = __dmul_rn(a.w_prime[i], ac);
      if (fabs(la) > detail::kLogAlphaClamp) {
        a.grad_alpha[i] = 0;
      } else {
        const double p = detail::penalty_prob(la, a.temperature);
        a.grad_alpha[i] = we * ac * gt.dz + a.lambda * p * (1 - p);
      }
    }
  }
}

__global__ void adam_kernel(double* x, double* m, double* v, const double* grad, double lr, double bc1, double bc2,
                            index_t n) {
  for (std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x)
    detail::adam_element(x[i], m[i], v[i], grad[i], lr, bc1, bc2);
}

struct DeviceAdam {  // the CPU Adam's step counter and bias corrections, the update on the device
  double lr;
  int step = 0;
  void apply(cudaStream_t s, double* x, double* m, double* v, const double* grad, index_t n) {
    ++step;
    const double bc1 = 1 - std::pow(0.9, step), bc2 = 1 - std::pow(0.999, step);
    if (n == 0) return;
    adam_kernel<<<grid_for(n), kThreads, 0, s>>>(x, m, v, grad, lr, bc1, bc2, n);
    OTCAL_CUDA_CHECK_LAUNCH("adam_kernel");
  }
};

}  // namespace

CudaExactIds declare_cuda_exact_workspace(WorkspaceDecl& decl, const CsrMatrix& A, index_t ka, bool has_sigma2) {
  const auto k = static_cast<std::size_t>(A.rows);
  const auto kas = static_cast<std::size_t>(ka);
  CudaExactIds ids;
  ids.A = declare_csr(decl, "A", A.rows, A.cols, A.nnz());
  ids.At = declare_csr(decl, "At", A.cols, A.rows, A.nnz());
  static_cast<ExactRecordIds&>(ids) = declare_exact_records(decl, A.cols, ka, has_sigma2);
  ids.S = decl.add<double>("S", k);
  ids.eta = decl.add<double>("eta", k);
  ids.active_rows = decl.add<index_t>("active_rows", kas);
  ids.active_of = decl.add<index_t>("active_of", k);
  ids.flag = decl.add<unsigned>("nonfinite_flag", 1);
  ids.slots = declare_slots(decl, A);
  ids.newton = declare_newton_device(decl, ka);
  return ids;
}

std::unique_ptr<ExactPasses> make_cuda_exact_passes(const Context& ctx, const detail::Workspace& ws,
                                                    const CudaExactIds& ids, const CsrMatrix& A, const CsrMatrix& At,
                                                    const std::vector<index_t>& active_rows,
                                                    const std::vector<double>& design,
                                                    const std::vector<double>& sigma2,
                                                    const detail::DistanceMath& dist) {
  return std::make_unique<CudaExactPasses>(ctx, ws, ids, A, At, active_rows, design, sigma2, dist);
}

CudaGradientIds declare_cuda_gradient_workspace(WorkspaceDecl& decl, const CsrMatrix& A, bool l0) {
  const auto k = static_cast<std::size_t>(A.rows);
  CudaGradientIds ids;
  ids.A = declare_csr(decl, "A", A.rows, A.cols, A.nnz());
  ids.At = declare_csr(decl, "At", A.cols, A.rows, A.nnz());
  static_cast<GradientStateIds&>(ids) = declare_gradient_state(decl, A.cols, l0);
  ids.S = decl.add<double>("S", k);
  ids.c = decl.add<double>("c", k);
  ids.slots = declare_slots(decl, A);
  ids.w_prime = decl.add<double>("w_prime", static_cast<std::size_t>(A.cols));
  return ids;
}

GradientDeviceRun run_gradient_cuda(const Context& ctx, const detail::Workspace& ws, const CudaGradientIds& ids,
                                    const CsrMatrix& A, const CsrMatrix& At, const std::vector<double>& w0,
                                    const GradientOptions& o, const LossFunction& loss_fn,
                                    const std::function<std::vector<double>(const std::vector<double>&)>& logged,
                                    const std::function<void(index_t)>& floored_warning,
                                    std::vector<double>* initial_estimate) {
  cudaStream_t s = static_cast<cudaStream_t>(ctx.compute_stream());
  const index_t n = A.cols, k = A.rows;
  const std::size_t nn = static_cast<std::size_t>(n), kk = static_cast<std::size_t>(k);
  GradientDeviceRun out;
  out.loss = std::numeric_limits<double>::quiet_NaN();
  const DevCsr dA = upload_csr(s, ws, ids.A, A), dAt = upload_csr(s, ws, ids.At, At);
  std::vector<std::int64_t> slot_rows, slot_entries;  // kept until the stream has read them (below)
  const DevSlots slots = upload_slots(s, ws, ids.slots, A, slot_rows, slot_entries);
  double* w_prime = ws.get(ids.w_prime);
  double* theta = ws.get(ids.theta);
  double* m = ws.get(ids.m);
  double* v = ws.get(ids.v);
  double* grad = ws.get(ids.grad);
  double* S_dev = ws.get(ids.S);
  double* c_dev = ws.get(ids.c);
  std::vector<double> host(nn);
  if (initial_estimate) {  // quirk 4: S0 = A w0, with θ's buffer holding w0 until θ is set below
    initial_estimate->assign(kk, 0.0);
    upload(s, w0.data(), theta, nn);
    spmv(s, dA, slots, ArrayWeight{theta}, S_dev);
    download(s, S_dev, initial_estimate->data(), kk);
  }
  // θ on the host exactly as the CPU (Philox noise, floor), uploaded once.
  const index_t floored = initial_log_weights(w0, o.seed, o.noise_level, host.data());
  if (floored > 0) floored_warning(floored);
  out.floored = floored;
  upload(s, host.data(), theta, nn);
  zero(s, m, nn);
  zero(s, v, nn);
  std::vector<double> S(kk), c(kk);
  const double lambda = o.l0_lambda / (o.l0_penalty_per_record ? static_cast<double>(std::max<index_t>(n, 1)) : 1.0);
  // One loss-and-gradient evaluation; returns L(S), S on the host.
  auto evaluate = [&](const double* log_alpha, std::uint32_t epoch, std::uint32_t gate_step, double* grad_alpha) {
    if (n > 0) {
      dropout_weights_kernel<<<grid_for(n), kThreads, 0, s>>>(theta, log_alpha, o.seed, o.dropout_rate, o.temperature,
                                                             epoch, gate_step, w_prime, n);
      OTCAL_CUDA_CHECK_LAUNCH("dropout_weights_kernel");
    }
    spmv(s, dA, slots, ArrayWeight{w_prime}, S_dev);
    download(s, S_dev, S.data(), kk);
    const double loss = loss_fn(S.data(), c.data());
    upload(s, c.data(), c_dev, kk);
    if (n > 0) {
      GradientKernelArgs a{dAt,    c_dev,          theta,         w_prime, log_alpha, grad,     grad_alpha,
                           o.seed, o.dropout_rate, o.temperature, lambda,  epoch,     gate_step};
      gradient_kernel<<<grid_for(n), kThreads, 0, s>>>(a);
      OTCAL_CUDA_CHECK_LAUNCH("gradient_kernel");
    }
    return loss;
  };

  const int E = o.epochs;
  const int stride = E > 10 ? std::max(1, E / 10) : 1;
  // Quirk 1 (docs/calibration.md §3.8): the last dropout draw, taken before the final step, is
  // handed back only when dropout is on; at rate 0 microcalibrate's draw is θ itself, post-step.
  const bool last_draw = o.final_weights_last_dropout_draw && o.dropout_rate > 0;
  DeviceAdam adam{o.learning_rate};
  out.weights.assign(nn, 0.0);
  for (int e = 0; e < E; ++e) {
    const double loss = evaluate(nullptr, static_cast<std::uint32_t>(e), 0, nullptr);
    if (e % stride == 0 || e == E - 1) out.history.push_back({e, "dense", loss, logged(S)});
    if (e == E - 1 && last_draw) {
      download(s, theta, host.data(), nn);
      for (index_t i = 0; i < n; ++i)
        out.weights[i] = detail::dropout_weight(o.seed, o.dropout_rate, i, host[i], static_cast<std::uint32_t>(e));
    }
    adam.apply(s, theta, m, v, grad, n);
    out.loss = loss;
  }
  if (!(E > 0 && last_draw)) {
    download(s, theta, host.data(), nn);
    for (index_t i = 0; i < n; ++i) out.weights[i] = std::exp(host[i]);
  }
  out.n_iterations = E;

  if (o.regularize_with_l0) {
    double* alpha = ws.get(ids.alpha);
    double* ma = ws.get(ids.m_alpha);
    double* va = ws.get(ids.v_alpha);
    double* ga = ws.get(ids.grad_alpha);
    const double la0 = std::log(o.init_mean / (1 - o.init_mean));
    for (index_t i = 0; i < n; ++i) host[i] = std::log(std::max(o.l0_init_dense_result ? out.weights[i] : w0[i], 1e-12));
    upload(s, host.data(), theta, nn);
    std::vector<double> la(nn, la0);
    upload(s, la.data(), alpha, nn);
    zero(s, m, nn);
    zero(s, v, nn);
    zero(s, ma, nn);
    zero(s, va, nn);
    DeviceAdam adam_t{o.sparse_learning_rate}, adam_a{o.sparse_learning_rate};
    const int steps = 2 * E;
    const int l0_stride = std::max(1, stride / 2);
    for (int st = 0; st < steps; ++st) {
      const double loss = evaluate(alpha, static_cast<std::uint32_t>(E + st), static_cast<std::uint32_t>(st), ga);
      if (st % l0_stride == 0 || st == steps - 1) out.history.push_back({st, "l0", loss, logged(S)});
      adam_t.apply(s, theta, m, v, grad, n);
      adam_a.apply(s, alpha, ma, va, ga, n);
      out.loss = loss;
    }
    download(s, theta, host.data(), nn);
    download(s, alpha, la.data(), nn);
    for (index_t i = 0; i < n; ++i)
      out.weights[i] = std::exp(host[i]) * detail::eval_gate(la[i], o.temperature, o.legacy_eval_gate);
    out.n_iterations += steps;
  }
  OTCAL_CUDA_CHECK(cudaStreamSynchronize(s));
  return out;
}

}  // namespace otcal::calib
