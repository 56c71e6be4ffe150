#pragma once
// The calibration backend seam: the host loops (Newton in exact.cpp, the epoch loop in
// gradient.cpp) are written once against these per-record passes; the CPU implementation lives
// next to each loop, the CUDA one in cuda/calibration.cu. The CUDA entry points are declared in
// every build; a build without CUDA links cuda/no_cuda.cpp's stand-ins, which throw.
//
// On CUDA the constraint CSR A (k x n) and its transpose Aᵀ are uploaded once into the budgeted
// device workspace (the builder itself runs on the host, O(nnz) counting sort, and the result is
// uploaded once); every per-record array (d, u, g, F', σ², θ, Adam moments, gates) lives on the
// device. Only k-sized vectors (S, η, c, the Newton step's b and Δ) and scalars cross the bus: the
// ka x ka Newton matrix is built and solved on the device (newton_device.hpp).
//
// Every device buffer is declared into the operation's WorkspaceDecl (declare_cuda_*) before it
// is planned, and the passes take the allocated detail::Workspace: they allocate nothing.
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "calibration/newton_device.hpp"
#include "core/workspace.hpp"
#include "otcal/calibration.hpp"
#include "otcal/detail/calib_math.hpp"
#include "otcal/detail/philox.hpp"
#include "otcal/errors.hpp"

namespace otcal::calib {

// A rows x cols CSR in an operation's workspace: int64 offsets, the index array of the width
// CsrMatrix::wide_indices would pick (the other declared empty), float64 values.
struct CsrIds {
  BufferId<std::int64_t> indptr;
  BufferId<std::int32_t> indices32;
  BufferId<std::int64_t> indices64;
  BufferId<double> values;
  index_t rows = 0, cols = 0;
  bool wide = false;
};
inline CsrIds declare_csr(WorkspaceDecl& d, const std::string& name, index_t rows, index_t cols, std::int64_t nnz) {
  CsrIds c;
  c.rows = rows;
  c.cols = cols;
  c.wide = cols >= (index_t{1} << 31);
  const auto z = static_cast<std::size_t>(nnz);
  c.indptr = d.add<std::int64_t>(name + ".indptr", static_cast<std::size_t>(rows) + 1);
  c.indices32 = d.add<std::int32_t>(name + ".indices32", c.wide ? 0 : z);
  c.indices64 = d.add<std::int64_t>(name + ".indices64", c.wide ? z : 0);
  c.values = d.add<double>(name + ".values", z);
  return c;
}

// The CUDA S = A w in the CPU's granule order (cuda/calibration.cu): per row, where its granule
// partials start (k + 1), each partial's first entry of A (one per non-empty (row, granule) pair,
// plus the end: granule_slot_count(A) + 1) and the partials themselves.
struct GranuleSlotIds {
  BufferId<std::int64_t> row_offsets, entry_begin;
  BufferId<double> partials;
};

// A constraint row takes part in the Newton system when some record has a non-zero coefficient
// in it (docs/calibration.md §4.3); the others are dropped (or refused when their target is not 0).
inline bool row_is_active(const CsrMatrix& A, index_t r) { return A.indptr[r + 1] > A.indptr[r]; }

// §3.2: theta_i = log(max(w0_i + u_i * noise_level, 1e-12)), u_i from Philox(seed, i, init noise).
// Written once for both backends (the CUDA path computes it on the host and uploads it). Returns
// how many weights were floored. `first_record`: the global index of w0[0] (a rank's slice, §8),
// so that every record draws the u it draws in one process.
inline index_t initial_log_weights(const std::vector<double>& w0, std::uint64_t seed, double noise_level,
                                   double* theta, index_t first_record = 0) {
  index_t floored = 0;
  for (std::size_t i = 0; i < w0.size(); ++i) {
    const auto record = static_cast<std::uint64_t>(first_record) + static_cast<std::uint64_t>(i);
    const double u = detail::philox_uniform(seed, record, detail::RandomPurpose::init_noise, 0);
    const double w = w0[i] + u * noise_level;
    floored += !(w >= 1e-12);
    theta[i] = std::log(std::max(w, 1e-12));
  }
  return floored;
}

// Per-record passes of the exact calibrator's Newton iteration. η is length k (all rows; dropped
// rows stay 0); S is length k; T is ka x ka over the active rows, row-major, on the host (CPU) or
// left on the device (CUDA: newton_matrix(nullptr), then newton_solve).
class ExactPasses {
 public:
  virtual ~ExactPasses() = default;
  virtual void scale_design(double factor) = 0;     // d *= factor (prescaling)
  virtual bool recompute(const double* eta) = 0;    // u = Aᵀη/σ², g = F(u), F'(u); false if non-finite
  virtual void estimate_design(double* S) = 0;      // S = A d
  virtual void estimate_weights(double* S) = 0;     // S = A (d ∘ g)
  virtual void newton_matrix(double* T) = 0;        // T = A_act diag(d F'/σ²) A_actᵀ
  virtual void keep_best() = 0;                     // best_g = g
  virtual void restore_best() = 0;                  // g = best_g
  virtual void download_g(double* g) = 0;           // n values to the host
  // Δ (ka) for T Δ = b (ka) on the T just built and kept by the passes (CUDA: cuSOLVER on the
  // device, newton_device.hpp); the CPU passes hand T to the host solve instead.
  virtual void newton_solve(const double* b, double* delta) {
    (void)b;
    (void)delta;
    throw InvalidArgument("calibration: these passes keep the Newton matrix on the host; solve it there");
  }
};

// The per-record arrays of the exact Newton iteration, declared alike on both backends: d, u, g,
// F', v and the best g (n each), σ² when given, and the ka x ka Newton matrix T.
struct ExactRecordIds {
  BufferId<double> d, u, g, dF, v, best_g, sigma2, T;
};
inline ExactRecordIds declare_exact_records(WorkspaceDecl& decl, index_t n_records, index_t ka, bool has_sigma2) {
  const auto n = static_cast<std::size_t>(n_records), kas = static_cast<std::size_t>(ka);
  ExactRecordIds ids;
  ids.d = decl.add<double>("d", n);
  ids.u = decl.add<double>("u", n);
  ids.g = decl.add<double>("g", n);
  ids.dF = decl.add<double>("dF", n);
  ids.v = decl.add<double>("v", n);
  ids.best_g = decl.add<double>("best_g", n);
  ids.sigma2 = decl.add<double>("sigma2", has_sigma2 ? n : 0);
  ids.T = decl.add<double>("T", kas * kas);
  return ids;
}

// Device workspace of the CUDA exact passes: both CSRs, 6 per-record float64 arrays (d, u, g, F',
// v, best g) and σ² when given, T (ka²), S and η (k), the active-row maps, the non-finite flag and
// the device Newton solve's buffers (cuSOLVER workspace, ka-vectors). T never goes to the host.
struct CudaExactIds : ExactRecordIds {
  CsrIds A, At;
  BufferId<double> S, eta;
  BufferId<index_t> active_rows, active_of;
  BufferId<unsigned> flag;
  GranuleSlotIds slots;
  NewtonDeviceIds newton;
};
CudaExactIds declare_cuda_exact_workspace(WorkspaceDecl& decl, const CsrMatrix& A, index_t ka, bool has_sigma2);
// `sigma2` is empty (all 1) or n values; `design` n values. Uploads everything once into `ws`.
std::unique_ptr<ExactPasses> make_cuda_exact_passes(const Context& ctx, const detail::Workspace& ws,
                                                    const CudaExactIds& ids, const CsrMatrix& A, const CsrMatrix& At,
                                                    const std::vector<index_t>& active_rows,
                                                    const std::vector<double>& design,
                                                    const std::vector<double>& sigma2,
                                                    const detail::DistanceMath& dist);

// The gradient calibrator's epochs on the device. The host supplies the loss: given S (length k,
// downloaded once per evaluation) it returns L and fills c = ∂L/∂S (length k, uploaded). Results
// do not depend on the batch size on the device at all: w' is computed from θ for all n records
// once per evaluation (an n-vector), so no batch buffer exists.
struct GradientDeviceRun {
  std::vector<double> weights;
  std::vector<HistoryRow> history;
  double loss = 0;
  int n_iterations = 0;
  index_t floored = 0;
};
using LossFunction = std::function<double(const double* S, double* c)>;
// The per-record state of the gradient calibrator, declared alike on both backends: θ, Adam m and
// v and the gradient (n each), and with L0 the gates' log α, their Adam moments and gradient.
struct GradientStateIds {
  BufferId<double> theta, m, v, grad, alpha, m_alpha, v_alpha, grad_alpha;
};
inline GradientStateIds declare_gradient_state(WorkspaceDecl& decl, index_t n_records, bool l0) {
  const auto n = static_cast<std::size_t>(n_records);
  const std::size_t nl0 = l0 ? n : 0;
  GradientStateIds ids;
  ids.theta = decl.add<double>("theta", n);
  ids.m = decl.add<double>("adam_m", n);
  ids.v = decl.add<double>("adam_v", n);
  ids.grad = decl.add<double>("grad_theta", n);
  ids.alpha = decl.add<double>("log_alpha", nl0);
  ids.m_alpha = decl.add<double>("adam_m_alpha", nl0);
  ids.v_alpha = decl.add<double>("adam_v_alpha", nl0);
  ids.grad_alpha = decl.add<double>("grad_log_alpha", nl0);
  return ids;
}

// Device workspace of the gradient epochs: both CSRs, θ, Adam m and v, the gradient and the
// epoch's w' (n each; four more for the L0 gates), S and c (k), the SpMV's granule slots. No
// per-row (batch) buffer.
struct CudaGradientIds : GradientStateIds {
  CsrIds A, At;
  BufferId<double> S, c;
  GranuleSlotIds slots;
  BufferId<double> w_prime;  // the epoch's w'_i (n)
};
CudaGradientIds declare_cuda_gradient_workspace(WorkspaceDecl& decl, const CsrMatrix& A, bool l0);
// `logged(S)` turns S into the history row's estimates (quirk 4). `floored_warning` is called
// before the epochs when initial weights were floored (to keep the CPU's warning order). A
// non-null `initial_estimate` receives A w0 (quirk 4's frozen estimates) before the first epoch.
GradientDeviceRun run_gradient_cuda(const Context& ctx, const detail::Workspace& ws, const CudaGradientIds& ids,
                                    const CsrMatrix& A, const CsrMatrix& At, const std::vector<double>& w0,
                                    const GradientOptions& o, const LossFunction& loss,
                                    const std::function<std::vector<double>(const std::vector<double>&)>& logged,
                                    const std::function<void(index_t)>& floored_warning,
                                    std::vector<double>* initial_estimate);

}  // namespace otcal::calib
