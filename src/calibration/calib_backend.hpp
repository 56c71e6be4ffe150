#pragma once
// The calibration backend seam: the host loops (Newton in exact.cpp, the epoch loop in
// gradient.cpp) are written once against these per-record passes; the CPU implementation lives
// next to each loop, the CUDA one in cuda/calibration.cu (CUDA builds only, OTCAL_WITH_CUDA).
//
// On CUDA the constraint CSR A (k x n) and its transpose Aᵀ are uploaded once into the budgeted
// device workspace (the builder itself runs on the host, O(nnz) counting sort, and the result is
// uploaded once); every per-record array (d, u, g, F', σ², θ, Adam moments, gates) lives on the
// device. Only k-sized vectors (S, η, c), the ka x ka Newton matrix and scalars cross the bus.
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "otcal/calibration.hpp"
#include "otcal/detail/calib_math.hpp"
#include "otcal/detail/philox.hpp"

namespace otcal::calib {

// §3.2: theta_i = log(max(w0_i + u_i * noise_level, 1e-12)), u_i from Philox(seed, i, init noise).
// Written once for both backends (the CUDA path computes it on the host and uploads it). Returns
// how many weights were floored.
inline index_t initial_log_weights(const std::vector<double>& w0, std::uint64_t seed, double noise_level,
                                   double* theta) {
  index_t floored = 0;
  for (std::size_t i = 0; i < w0.size(); ++i) {
    const double u = detail::philox_uniform(seed, static_cast<std::uint64_t>(i), detail::RandomPurpose::init_noise, 0);
    const double w = w0[i] + u * noise_level;
    floored += !(w >= 1e-12);
    theta[i] = std::log(std::max(w, 1e-12));
  }
  return floored;
}

// Per-record passes of the exact calibrator's Newton iteration. η is length k (all rows; dropped
// rows stay 0); S is length k; T is ka x ka over the active rows, row-major, on the host.
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
};

#ifdef OTCAL_WITH_CUDA
// Device workspace of the CUDA exact passes: both CSRs, 7 per-record float64 arrays (d, u, g, F',
// v, best g, σ²), T (ka²) and the k-sized vectors. The host keeps one ka² copy of T for Eigen.
std::size_t cuda_exact_device_bytes(const CsrMatrix& A, index_t ka);
// `sigma2` is empty (all 1) or n values; `design` n values. Uploads everything once.
std::unique_ptr<ExactPasses> make_cuda_exact_passes(const Context& ctx, const CsrMatrix& A, const CsrMatrix& At,
                                                    const std::vector<index_t>& active_rows,
                                                    const std::vector<double>& design,
                                                    const std::vector<double>& sigma2,
                                                    const detail::DistanceMath& dist);

// The gradient calibrator's epochs on the device. The host supplies the loss: given S (length k,
// downloaded once per evaluation) it returns L and fills c = ∂L/∂S (length k, uploaded). Results
// do not depend on the batch size on the device at all: w' is recomputed from θ inside the SpMV
// and the gradient kernels, so no batch buffer exists.
struct GradientDeviceRun {
  std::vector<double> weights;
  std::vector<HistoryRow> history;
  double loss = 0;
  int n_iterations = 0;
  index_t floored = 0;
};
using LossFunction = std::function<double(const double* S, double* c)>;
std::size_t cuda_gradient_device_bytes(const CsrMatrix& A, bool l0);
// `logged(S)` turns S into the history row's estimates (quirk 4). `floored_warning` is called
// before the epochs when initial weights were floored (to keep the CPU's warning order).
GradientDeviceRun run_gradient_cuda(const Context& ctx, const CsrMatrix& A, const CsrMatrix& At,
                                    const std::vector<double>& w0, const GradientOptions& o,
                                    const LossFunction& loss,
                                    const std::function<std::vector<double>(const std::vector<double>&)>& logged,
                                    const std::function<void(index_t)>& floored_warning);
// S = A w for a host w (the quirk-4 initial estimate) on the device.
void cuda_estimate(const Context& ctx, const CsrMatrix& A, const std::vector<double>& w, double* S);
#endif

}  // namespace otcal::calib
