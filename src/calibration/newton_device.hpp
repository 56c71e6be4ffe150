#pragma once
// The exact calibrator's Newton step T Δ = b on the device (cuda/newton_device.cu), on the T that
// the CUDA passes build in the budgeted workspace: only b and Δ (ka each) cross the bus, where the
// host solve (newton_solve.hpp) downloads ka² doubles per step.
//
// Why not the host's dropping Cholesky: cuSOLVER's potrf has no pivot test, and T is singular
// whenever two categorical margins exist (one dependent row per extra margin). So the device step
// is potrf while T is positive definite by the host's own test (every Schur pivot L_jj² above
// max(1e-9·T_jj, 256·DBL_EPSILON·trace T), i.e. the host would drop nothing: then both are the
// plain Cholesky solution), and otherwise the host's fallback, pinv(T) b by a symmetric
// eigendecomposition (syevd) with eigenvalues ≤ 256·DBL_EPSILON·λmax discarded. For consistent
// targets pinv's minimum-norm Δ and the host's dropped-constraint Δ differ only in the null space of
// D^½Aᵀ, so u, g and the weights agree to rounding (newton_solve.hpp); for inconsistent targets the
// host takes this same pinv step. Hence no inconsistency test is needed on the device, and a run
// fails (or returns with force) exactly where the host's does.
//
// Once a step needs pinv the later steps go straight to it (dependencies between margins never go
// away; pinv(T) = T⁻¹ on a positive definite T), skipping a potrf that would fail and the rebuild
// of T it costs.
//
// Budget: cuSOLVER's device workspace (the larger of potrf's and syevd's, from their _bufferSize
// queries), the eigenvalues, the right-hand side, the projection Vᵀb, a diagonal and the info word
// are declared in the operation's WorkspaceDecl (declare_newton_device), so the planner refuses a
// small budget before anything is allocated and the solve allocates nothing. The eigenvectors
// overwrite T (rebuilt before every solve anyway). Outside the budget: the cuSOLVER handle's own
// small allocation (created once per operation, at declaration, since the sizes need it) and
// syevd's host workspace (host memory, usually none).
#include <cstddef>
#include <functional>
#include <memory>
#include <vector>

#include "otcal/memory.hpp"
#include "otcal/planner.hpp"
#include "otcal/types.hpp"

namespace otcal::detail {
class Workspace;
}

namespace otcal::calib {

struct NewtonDeviceIds {
  BufferId<unsigned char> work;  // cuSOLVER's device workspace
  BufferId<double> eigenvalues, rhs, projection, diagonal;  // ka each
  BufferId<int> info;
  std::shared_ptr<void> solver;       // the operation's cuSOLVER handle and parameters
  std::size_t host_work_bytes = 0;    // syevd's host workspace (host memory)
  index_t ka = 0;
};
// Creates the handle (on the current device) and declares the buffers above for a ka x ka T.
NewtonDeviceIds declare_newton_device(WorkspaceDecl& decl, index_t ka);

class DeviceNewtonSolve {
 public:
  DeviceNewtonSolve(StreamHandle stream, const detail::Workspace& ws, const NewtonDeviceIds& ids);
  // Δ (host, ka) for T Δ = b (host, ka). T: the device matrix just built (column-major lower
  // triangle read; overwritten). rebuild_T: builds T again in place before the pinv fallback.
  void solve(double* T, const double* b, double* delta, const std::function<void()>& rebuild_T);

 private:
  bool cholesky(double* T, const double* b, double* delta);  // false: T not positive definite
  void pseudo_inverse(double* T, const double* b, double* delta);
  StreamHandle stream_;
  std::shared_ptr<void> solver_;
  index_t ka_;
  unsigned char* work_;
  std::size_t work_bytes_;
  double *eigenvalues_, *rhs_, *projection_, *diagonal_;
  int* info_;
  std::vector<unsigned char> host_work_;
  bool singular_seen_ = false;  // a step needed pinv: later steps go straight to it
};

}  // namespace otcal::calib
