// CUDA passes of the calibrators (src/calibration/calib_backend.hpp); the CPU passes in
// src/calibration/{exact,gradient}.cpp are the reference. Design:
//
//  * Residency: A (k x n CSR) and Aᵀ (n x k CSR, the host counting sort) are uploaded once into
//    the operation's workspace (budgeted device memory) with every per-record array. Every device
//    buffer is declared up front (declare_cuda_*_workspace) so the planner refuses a small budget
//    before anything is allocated; the passes take the allocated workspace and allocate nothing.
//    No CUB or cuSPARSE call is made here, so there is no temp storage to size. Per Newton step
//    or epoch only k-sized vectors (η, S, c) and, for Newton, the ka x ka matrix cross the bus.
//  * S = A w: one warp per constraint row, lanes stride the row, a fixed shuffle tree reduces
//    the 32 partials: deterministic (same result every run), not bitwise the CPU's granule order.
//    The weight of a record is a functor, so the gradient calibrator's dropped-out, gated w'_i is
//    recomputed from θ inside the SpMV (no batch buffer: results cannot depend on batch size).
//  * Aᵀc and u = Aᵀη: one thread per record, the record's entries in ascending constraint order
//    with __dmul_rn/__dadd_rn (no FMA contraction): the CPU transpose_apply's exact arithmetic.
//  * T = A diag(v) Aᵀ over the active rows: one warp per active row a; records of row a in
//    ascending order, lanes split the record's (distinct) columns b, __syncwarp between records:
//    the CPU's accumulation order per entry, so T is deterministic and symmetric. O(Σ nnz_i²).
//  * The Newton solve (Cholesky dropping dependent constraints, src/calibration/newton_solve.hpp)
//    runs on the HOST (one ka² download per Newton step; it reads the lower triangle only);
//    g, F', u and the finite check run on the device with the shared OTCAL_HD element math.
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
struct DropoutWeight {  // w'_i of the gradient calibrator: dropout, then the training gate
  const double* theta;
  const double* log_alpha;  // null in the dense stage
  std::uint64_t seed;
  double rate, temperature;
  std::uint32_t epoch, gate_step;
  __device__ __forceinline__ double operator()(std::int64_t i) const {
    double w = detail::dropout_weight(seed, rate, i, theta[i], epoch);
    if (log_alpha) w *= detail::training_gate(seed, temperature, i, log_alpha[i], gate_step).z;
    return w;
  }
};

// S_r = Σ_p A_rp w(i_p), one warp per row, fixed lane partition and shuffle tree.
template <class W>
__global__ void spmv_rows_kernel(DevCsr A, W weight, double* S) {
  const std::int64_t lane = threadIdx.x & 31;
  const std::int64_t warps = static_cast<std::int64_t>(gridDim.x) * kWarpsPerBlock;
  for (std::int64_t r = (static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) / 32; r < A.rows;
       r += warps) {
    double s = 0;
    for (std::int64_t p = A.indptr[r] + lane; p < A.indptr[r + 1]; p += 32)
      s = __dadd_rn(s, __dmul_rn(A.values[p], weight(A.index(p))));
    for (int off = 16; off > 0; off >>= 1) s = __dadd_rn(s, __shfl_down_sync(0xffffffffu, s, off));
    if (lane == 0) S[r] = s;
  }
}

template <class W>
void spmv(cudaStream_t s, const DevCsr& A, const W& weight, double* S) {
  if (A.rows == 0) return;
  spmv_rows_kernel<<<grid_for(A.rows, kWarpsPerBlock), kThreads, 0, s>>>(A, weight, S);
  OTCAL_CUDA_CHECK_LAUNCH("spmv_rows_kernel");
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

__global__ void newton_matrix_kernel(DevCsr A, DevCsr At, const index_t* active_rows, const index_t* active_of,
                                     const double* v, double* T, index_t ka) {
  const std::int64_t lane = threadIdx.x & 31;
  const std::int64_t warps = static_cast<std::int64_t>(gridDim.x) * kWarpsPerBlock;
  for (std::int64_t a = (static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) / 32; a < ka; a += warps) {
    double* Trow = T + a * ka;
    const index_t r = active_rows[a];
    for (std::int64_t p = A.indptr[r]; p < A.indptr[r + 1]; ++p) {
      const std::int64_t i = A.index(p);
      const double wi = __dmul_rn(A.values[p], v[i]);
      if (wi == 0) continue;  // uniform across the warp
      for (std::int64_t q = At.indptr[i] + lane; q < At.indptr[i + 1]; q += 32) {
        const index_t b = active_of[At.index(q)];
        if (b >= 0) Trow[b] = __dadd_rn(Trow[b], __dmul_rn(wi, At.values[q]));
      }
      __syncwarp();  // the next record may add to the same entries from other lanes
    }
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
        flag_(ws.get(ids.flag)) {
    if (ws.count(ids.T) != static_cast<std::size_t>(ka_) * static_cast<std::size_t>(ka_) ||
        (!sigma2.empty() && ws.count(ids.sigma2) != sigma2.size()))
      throw InvalidArgument("calibration: the exact passes do not match the workspace they were declared with");
    std::vector<index_t> active_of(static_cast<std::size_t>(k_), -1);
    for (index_t a = 0; a < ka_; ++a) active_of[static_cast<std::size_t>(active_rows[a])] = a;
    upload(s_, design.data(), d_, static_cast<std::size_t>(n_));
    upload(s_, sigma2.data(), sigma2_, sigma2.size());
    upload(s_, active_rows.data(), active_rows_, active_rows.size());
    upload(s_, active_of.data(), active_of_, active_of.size());
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
    spmv(s_, A_, ArrayWeight{d_}, S_);
    download(s_, S_, S, static_cast<std::size_t>(k_));
  }
  void estimate_weights(double* S) override {
    spmv(s_, A_, ProductWeight{d_, g_}, S_);
    download(s_, S_, S, static_cast<std::size_t>(k_));
  }
  void newton_matrix(double* T) override {
    if (ka_ == 0) return;
    if (n_ > 0) {
      newton_weight_kernel<<<grid_for(n_), kThreads, 0, s_>>>(d_, dF_, sigma2_, v_, n_);
      OTCAL_CUDA_CHECK_LAUNCH("newton_weight_kernel");
    }
    const std::size_t t_count = static_cast<std::size_t>(ka_) * static_cast<std::size_t>(ka_);
    zero(s_, T_, t_count);
    newton_matrix_kernel<<<grid_for(ka_, kWarpsPerBlock), kThreads, 0, s_>>>(A_, At_, active_rows_, active_of_, v_, T_,
                                                                            ka_);
    OTCAL_CUDA_CHECK_LAUNCH("newton_matrix_kernel");
    download(s_, T_, T, t_count);
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
  double *d_, *u_, *g_, *dF_, *v_, *best_g_, *sigma2_, *T_, *S_, *eta_;
  index_t *active_rows_, *active_of_;
  unsigned* flag_;
};

// ---- gradient calibrator kernels ---------------------------------------------------------------
struct GradientKernelArgs {
  DevCsr At;
  const double* c;
  const double* theta;
  const double* log_alpha;  // null: dense stage
  double* grad_theta;
  double* grad_alpha;
  std::uint64_t seed;
  double rate, temperature, lambda;
  std::uint32_t epoch, gate_step;
};

// The CPU pass 2, per record.
__global__ void gradient_kernel(GradientKernelArgs a) {
  for (std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < a.At.rows;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    const double ac = transpose_dot(a.At, a.c, i);
    const double we = detail::dropout_weight(a.seed, a.rate, i, a.theta[i], a.epoch);
    if (!a.log_alpha) {
      a.grad_theta[i] = we * ac;
    } else {
      const double la = a.log_alpha[i];
      const detail::HardConcreteGate gt = detail::training_gate(a.seed, a.temperature, i, la, a.gate_step);
      a.grad_theta[i] = we * gt.z * ac;
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
    spmv(s, dA, ArrayWeight{theta}, S_dev);
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
    spmv(s, dA, DropoutWeight{theta, log_alpha, o.seed, o.dropout_rate, o.temperature, epoch, gate_step}, S_dev);
    download(s, S_dev, S.data(), kk);
    const double loss = loss_fn(S.data(), c.data());
    upload(s, c.data(), c_dev, kk);
    if (n > 0) {
      GradientKernelArgs a{dAt,   c_dev,          theta,         log_alpha, grad,  grad_alpha,
                           o.seed, o.dropout_rate, o.temperature, lambda,    epoch, gate_step};
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
