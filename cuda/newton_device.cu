// The exact calibrator's Newton solve on the device with cuSOLVER (src/calibration/newton_device.hpp
// says which step is taken and why it is the host's). 64-bit cusolverDn API: Xpotrf/Xpotrs while T
// is positive definite by the host's pivot test, Xsyevd for the pseudo-inverse otherwise. The two
// small kernels of the pinv step (Vᵀb scaled by 1/λ, then V y) reduce in a fixed order, so a run
// is deterministic (cuSOLVER is put in its deterministic mode too).
#include <cuda_runtime.h>
#include <cusolverDn.h>

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "calibration/newton_device.hpp"
#include "core/workspace.hpp"
#include "cuda_check.hpp"
#include "otcal/errors.hpp"

namespace otcal::calib {

namespace {

void check_cusolver(cusolverStatus_t status, const char* call, const char* file, int line) {
  if (status != CUSOLVER_STATUS_SUCCESS)
    throw DeviceError("cuSOLVER error " + std::to_string(static_cast<int>(status)) + " in `" + call + "` at " + file +
                      ":" + std::to_string(line));
}
#define OTCAL_CUSOLVER_CHECK(call) check_cusolver((call), #call, __FILE__, __LINE__)

// The handle and its 64-bit API parameters, one per operation (shared by the declaration, which
// needs it for the workspace sizes, and the solve).
struct Solver {
  cusolverDnHandle_t dn = nullptr;
  cusolverDnParams_t params = nullptr;
  Solver() {
    OTCAL_CUSOLVER_CHECK(cusolverDnCreate(&dn));
    try {
      OTCAL_CUSOLVER_CHECK(cusolverDnCreateParams(&params));
      OTCAL_CUSOLVER_CHECK(cusolverDnSetDeterministicMode(dn, CUSOLVER_DETERMINISTIC_RESULTS));
    } catch (...) {
      release();
      throw;
    }
  }
  Solver(const Solver&) = delete;
  Solver& operator=(const Solver&) = delete;
  ~Solver() { release(); }
  void release() noexcept {
    if (params) cusolverDnDestroyParams(params);
    if (dn) cusolverDnDestroy(dn);
    params = nullptr;
    dn = nullptr;
  }
};

Solver& solver_of(const std::shared_ptr<void>& p) { return *static_cast<Solver*>(p.get()); }

constexpr int kThreads = 256;
constexpr unsigned kMaxGrid = 65535u * 16u;
unsigned grid_for(std::int64_t items, int per_block = kThreads) {
  const std::int64_t g = (items + per_block - 1) / per_block;
  return static_cast<unsigned>(std::clamp<std::int64_t>(g, 1, kMaxGrid));
}

__global__ void diagonal_kernel(const double* T, double* diag, index_t n) {
  for (std::int64_t j = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; j < n;
       j += static_cast<std::int64_t>(gridDim.x) * blockDim.x)
    diag[j] = T[j * (n + 1)];
}

// y_j = (v_jᵀ b) / λ_j for λ_j > 256·DBL_EPSILON·max|λ| (the host pinv's cut-off), else 0. One warp
// per eigenvector (a column of V, contiguous), fixed lane partition and shuffle tree.
__global__ void project_kernel(const double* V, const double* lambda, const double* b, double* y, index_t n) {
  const std::int64_t lane = threadIdx.x & 31;
  const std::int64_t warps = static_cast<std::int64_t>(gridDim.x) * (blockDim.x / 32);
  const double lmax = fmax(fabs(lambda[0]), fabs(lambda[n - 1]));  // syevd sorts ascending
  const double tol = 256 * DBL_EPSILON * lmax;
  for (std::int64_t j = (static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) / 32; j < n; j += warps) {
    const double* v = V + j * n;
    double s = 0;
    for (std::int64_t i = lane; i < n; i += 32) s = __dadd_rn(s, __dmul_rn(v[i], b[i]));
    for (int off = 16; off > 0; off >>= 1) s = __dadd_rn(s, __shfl_down_sync(0xffffffffu, s, off));
    if (lane == 0) y[j] = lambda[j] > tol ? s / lambda[j] : 0.0;
  }
}

// Δ_i = Σ_j V_ij y_j, one thread per row (a warp reads consecutive rows of each column), j ascending.
__global__ void expand_kernel(const double* V, const double* y, double* delta, index_t n) {
  for (std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    double s = 0;
    for (std::int64_t j = 0; j < n; ++j)
      if (y[j] != 0) s = __dadd_rn(s, __dmul_rn(V[i + j * n], y[j]));
    delta[i] = s;
  }
}

}  // namespace

NewtonDeviceIds declare_newton_device(WorkspaceDecl& decl, index_t ka) {
  NewtonDeviceIds ids;
  ids.ka = ka;
  std::size_t device_bytes = 0;
  if (ka > 0) {
    auto solver = std::make_shared<Solver>();
    const std::int64_t n = ka;
    std::size_t potrf_device = 0, potrf_host = 0, syevd_device = 0, syevd_host = 0;
    OTCAL_CUSOLVER_CHECK(cusolverDnXpotrf_bufferSize(solver->dn, solver->params, CUBLAS_FILL_MODE_LOWER, n,
                                                     CUDA_R_64F, nullptr, n, CUDA_R_64F, &potrf_device, &potrf_host));
    OTCAL_CUSOLVER_CHECK(cusolverDnXsyevd_bufferSize(solver->dn, solver->params, CUSOLVER_EIG_MODE_VECTOR,
                                                     CUBLAS_FILL_MODE_LOWER, n, CUDA_R_64F, nullptr, n, CUDA_R_64F,
                                                     nullptr, CUDA_R_64F, &syevd_device, &syevd_host));
    device_bytes = std::max(potrf_device, syevd_device);  // one buffer: the two never run at once
    ids.host_work_bytes = std::max(potrf_host, syevd_host);
    ids.solver = std::move(solver);
  }
  const auto kas = static_cast<std::size_t>(ka);
  ids.work = decl.add<unsigned char>("newton.cusolver_work", device_bytes);
  ids.eigenvalues = decl.add<double>("newton.eigenvalues", kas);
  ids.rhs = decl.add<double>("newton.rhs", kas);
  ids.projection = decl.add<double>("newton.projection", kas);
  ids.diagonal = decl.add<double>("newton.diagonal", kas);
  ids.info = decl.add<int>("newton.info", ka > 0 ? 1 : 0);
  return ids;
}

DeviceNewtonSolve::DeviceNewtonSolve(StreamHandle stream, const detail::Workspace& ws, const NewtonDeviceIds& ids)
    : stream_(stream), solver_(ids.solver), ka_(ids.ka), work_(ws.get(ids.work)), work_bytes_(ws.count(ids.work)),
      eigenvalues_(ws.get(ids.eigenvalues)), rhs_(ws.get(ids.rhs)), projection_(ws.get(ids.projection)),
      diagonal_(ws.get(ids.diagonal)), info_(ws.get(ids.info)), host_work_(ids.host_work_bytes) {
  if (ws.count(ids.rhs) != static_cast<std::size_t>(ka_) || (ka_ > 0 && !solver_))
    throw InvalidArgument("calibration: the device Newton solve does not match the workspace it was declared with");
  if (solver_) OTCAL_CUSOLVER_CHECK(cusolverDnSetStream(solver_of(solver_).dn, static_cast<cudaStream_t>(stream_)));
}

void DeviceNewtonSolve::solve(double* T, const double* b, double* delta, const std::function<void()>& rebuild_T) {
  if (ka_ == 0) return;
  if (!singular_seen_) {
    if (cholesky(T, b, delta)) return;
    singular_seen_ = true;
    rebuild_T();  // potrf overwrote T
  }
  pseudo_inverse(T, b, delta);
}

// potrf, then the host's pivot test on L's diagonal (newton_solve.hpp: a Schur pivot L_jj² at most
// max(1e-9·T_jj, 256·DBL_EPSILON·Σ|T_jj|) is a dependent constraint); only when it drops nothing
// is the Cholesky solution the host's, and potrs gives it.
bool DeviceNewtonSolve::cholesky(double* T, const double* b, double* delta) {
  cudaStream_t s = static_cast<cudaStream_t>(stream_);
  Solver& sv = solver_of(solver_);
  const std::int64_t n = ka_;
  const auto nn = static_cast<std::size_t>(ka_);
  std::vector<double> diag0(nn), pivot(nn);
  diagonal_kernel<<<grid_for(n), kThreads, 0, s>>>(T, diagonal_, ka_);
  OTCAL_CUDA_CHECK_LAUNCH("diagonal_kernel");
  OTCAL_CUDA_CHECK(cudaMemcpyAsync(diag0.data(), diagonal_, nn * sizeof(double), cudaMemcpyDeviceToHost, s));
  OTCAL_CUSOLVER_CHECK(cusolverDnXpotrf(sv.dn, sv.params, CUBLAS_FILL_MODE_LOWER, n, CUDA_R_64F, T, n, CUDA_R_64F,
                                        work_, work_bytes_, host_work_.data(), host_work_.size(), info_));
  int info = 0;
  OTCAL_CUDA_CHECK(cudaMemcpyAsync(&info, info_, sizeof(int), cudaMemcpyDeviceToHost, s));
  OTCAL_CUDA_CHECK(cudaStreamSynchronize(s));
  if (info < 0) throw DeviceError("calibration: cusolverDnXpotrf rejected argument " + std::to_string(-info));
  if (info > 0) return false;  // a non-positive (or NaN) pivot: singular T
  diagonal_kernel<<<grid_for(n), kThreads, 0, s>>>(T, diagonal_, ka_);
  OTCAL_CUDA_CHECK_LAUNCH("diagonal_kernel");
  OTCAL_CUDA_CHECK(cudaMemcpyAsync(pivot.data(), diagonal_, nn * sizeof(double), cudaMemcpyDeviceToHost, s));
  OTCAL_CUDA_CHECK(cudaStreamSynchronize(s));
  double trace = 0;
  for (double d : diag0) trace += std::fabs(d);
  const double absolute = 256 * DBL_EPSILON * trace;
  for (std::size_t j = 0; j < nn; ++j) {
    const double p = pivot[j] * pivot[j];
    if (!(p > std::max(1e-9 * diag0[j], absolute))) return false;  // the host would drop it (or NaN)
  }
  OTCAL_CUDA_CHECK(cudaMemcpyAsync(rhs_, b, nn * sizeof(double), cudaMemcpyHostToDevice, s));
  OTCAL_CUSOLVER_CHECK(cusolverDnXpotrs(sv.dn, sv.params, CUBLAS_FILL_MODE_LOWER, n, 1, CUDA_R_64F, T, n, CUDA_R_64F,
                                        rhs_, n, info_));
  OTCAL_CUDA_CHECK(cudaMemcpyAsync(delta, rhs_, nn * sizeof(double), cudaMemcpyDeviceToHost, s));
  OTCAL_CUDA_CHECK(cudaMemcpyAsync(&info, info_, sizeof(int), cudaMemcpyDeviceToHost, s));
  OTCAL_CUDA_CHECK(cudaStreamSynchronize(s));
  if (info != 0) throw DeviceError("calibration: cusolverDnXpotrs rejected argument " + std::to_string(-info));
  return true;
}

// pinv(T) b = V diag(1/λ over the kept λ) Vᵀ b: the host fallback's formula (exact.cpp, pinv_solve).
void DeviceNewtonSolve::pseudo_inverse(double* T, const double* b, double* delta) {
  cudaStream_t s = static_cast<cudaStream_t>(stream_);
  Solver& sv = solver_of(solver_);
  const std::int64_t n = ka_;
  const auto nn = static_cast<std::size_t>(ka_);
  OTCAL_CUDA_CHECK(cudaMemcpyAsync(rhs_, b, nn * sizeof(double), cudaMemcpyHostToDevice, s));
  OTCAL_CUSOLVER_CHECK(cusolverDnXsyevd(sv.dn, sv.params, CUSOLVER_EIG_MODE_VECTOR, CUBLAS_FILL_MODE_LOWER, n,
                                        CUDA_R_64F, T, n, CUDA_R_64F, eigenvalues_, CUDA_R_64F, work_, work_bytes_,
                                        host_work_.data(), host_work_.size(), info_));
  int info = 0;
  OTCAL_CUDA_CHECK(cudaMemcpyAsync(&info, info_, sizeof(int), cudaMemcpyDeviceToHost, s));
  OTCAL_CUDA_CHECK(cudaStreamSynchronize(s));
  if (info != 0) throw NumericalError("calibration: eigendecomposition of the Newton matrix failed");
  project_kernel<<<grid_for(n, kThreads / 32), kThreads, 0, s>>>(T, eigenvalues_, rhs_, projection_, ka_);
  OTCAL_CUDA_CHECK_LAUNCH("project_kernel");
  expand_kernel<<<grid_for(n), kThreads, 0, s>>>(T, projection_, rhs_, ka_);
  OTCAL_CUDA_CHECK_LAUNCH("expand_kernel");
  OTCAL_CUDA_CHECK(cudaMemcpyAsync(delta, rhs_, nn * sizeof(double), cudaMemcpyDeviceToHost, s));
  OTCAL_CUDA_CHECK(cudaStreamSynchronize(s));
}

}  // namespace otcal::calib
