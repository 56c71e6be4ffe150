#pragma once
// The primitive interface that every algorithm's host loop is written against, once. The CPU
// backend (src/cpu, OpenMP) and the CUDA backend (cuda/, fused kernels) implement it; they differ
// only where the hardware does. All pointers refer to the backend's memory (device memory on
// CUDA) and were allocated by the host loop from the context's budgeted workspace.
#include <memory>
#include <vector>

#include "otcal/array.hpp"
#include "otcal/context.hpp"
#include "otcal/detail/cost_math.hpp"

namespace otcal::detail {

// A resident point cloud, dimension-major: coordinate k of point i at x[k * n + i].
template <class T>
struct Cloud {
  const T* x = nullptr;
  const T* norms = nullptr;  // Euclidean norms of the points (cosine cost only)
  index_t n = 0;
  int d = 0;
};

struct CostParams {
  CostKind kind = CostKind::sqeuclidean;
  double p = 2.0;
};

// out_i = LSE_j((h_j - C_ij) / eps) over j in cols, for every i in rows; C = c / scale.
template <class T>
struct RowLseArgs {
  Cloud<T> rows, cols;
  CostParams cost;
  double inv_scale = 1;
  double eps = 1;
  const T* col_potential = nullptr;  // h, length cols.n; -inf allowed
  T* out = nullptr;                  // length rows.n
  double* state = nullptr;           // workspace: 2 * tile_rows * lse_partials_per_row(cols.n)
  index_t tile_rows = 1;             // rows per tile (the batch size)
};

// out[i, :] = sum_j exp((f_i + h_j - C_ij) / eps) v[j, :]; rows with f_i = -inf give 0.
template <class T>
struct RowApplyArgs {
  Cloud<T> rows, cols;
  CostParams cost;
  double inv_scale = 1;
  double eps = 1;
  const T* row_potential = nullptr;  // length rows.n
  const T* col_potential = nullptr;  // length cols.n
  const T* v = nullptr;              // [cols.n, k] row-major
  index_t k = 1;
  T* out = nullptr;                  // [rows.n, k] row-major
  double* acc = nullptr;             // workspace [tile_rows, k]
  index_t tile_rows = 1;
};

// A sum handed back as partials in order, whose left fold from 0 is the sum: one per
// kReductionGranule indices on the CPU (so a rank's partials over a granule-aligned shard are the
// single-process ones, and folding every rank's in rank order gives the single-process sum bit
// for bit), the device reduction's result on CUDA.
using Partials = std::vector<double>;
inline double fold(const Partials& partials) {
  double total = 0;
  for (double p : partials) total += p;
  return total;
}

// Unscaled cost statistics over all pairs, accumulated in float64.
struct CostMoments {
  double sum = 0;
  double sum_sq = 0;
  double max_abs = 0;
};

template <class T>
class Backend {
 public:
  virtual ~Backend() = default;

  // Host matrix [n, d] (either dtype) -> resident dimension-major copy (d * n values).
  virtual void upload_cloud(const ConstMatrix& host, T* dst) = 0;
  virtual void upload(const double* host, T* dst, index_t count) = 0;
  virtual void download(const T* src, double* host, index_t count) = 0;
  virtual void point_norms(const T* x, index_t n, int d, T* out) = 0;
  // log of each weight; log 0 = -inf.
  virtual void log_weights(const T* w, T* out, index_t n) = 0;

  // Running (max, sum) pairs a tile row needs: 1 when a row is reduced by one worker, more when
  // the CUDA backend splits the other cloud across thread blocks to fill the device.
  virtual index_t lse_partials_per_row(index_t cols_n) const = 0;
  virtual void row_lse(const RowLseArgs<T>& args) = 0;
  virtual void row_apply(const RowApplyArgs<T>& args) = 0;
  // `row_partials` is workspace of 3 * rows.n doubles.
  virtual CostMoments cost_moments(const Cloud<T>& rows, const Cloud<T>& cols, const CostParams& cost,
                                   index_t tile_rows, double* row_partials) = 0;

  // out_i = tau * (eps_t log w_i - fin(eps_t lse_i))
  virtual void potential_update(const T* lse, const T* log_w, double eps_t, double tau, T* out, index_t n) = 0;
  // Momentum's over-relaxed update (weight w, docs/sinkhorn.md §8):
  //   pot_i = (1 - w) * fin(pot_i) + w * tau * (eps_t log w_i - fin(eps_t lse_i))
  virtual void relaxed_update(const T* lse, const T* log_w, double eps_t, double tau, double weight, T* pot,
                              index_t n) = 0;
  // Anderson's history of f (docs/sinkhorn.md §8); clean(v) is v with -inf read as 0 (OTT's
  // nan_to_num(neginf=0)). Before an iteration: residual_i = clean(f_i). After it:
  // residual_i = clean(f_i) - residual_i and mapped_i = f_i.
  virtual void anderson_record_input(const T* f, T* residual, index_t n) = 0;
  virtual void anderson_record_output(const T* f, T* residual, T* mapped, index_t n) = 0;
  // sum_i u_i v_i, accumulated in float64 (partials as for marginal_error).
  virtual Partials dot(const T* u, const T* v, index_t n) = 0;
  // out_i = sum_k weights[k] * cols[k][i], summed in the order of k; a non-finite sum is -inf.
  virtual void anderson_combine(const std::vector<const T*>& cols, const std::vector<double>& weights, T* out,
                                index_t n) = 0;
  // sum_i |exp(pot_i/eps + lse_i) - target_i|^p, target_i = w_i (rho = inf) or w_i exp(-pot_i/rho).
  virtual Partials marginal_error(const T* pot, const T* lse, const T* w, double eps, double rho, double p,
                                  index_t n) = 0;
  // sum_i exp(pot_i/eps + lse_i): the transported mass.
  virtual Partials transported_mass(const T* pot, const T* lse, double eps, index_t n) = 0;
  // OR of detail::ValidityFlag over the arrays, by a device reduction to one word.
  virtual unsigned potential_flags(const T* pot, const T* w, index_t n) = 0;
  virtual unsigned value_flags(const T* v, index_t n) = 0;
};

// The backend of the context's device, one per dtype, owned by the context and made on first use.
// Throws DeviceError for CUDA in a build without it.
template <class T>
Backend<T>& backend(const Context& ctx);

// The factories behind backend(): src/cpu, and cuda/ (or the no_cuda.cpp stand-in that throws).
template <class T>
std::unique_ptr<Backend<T>> make_cpu_backend(const Context& ctx);
template <class T>
std::unique_ptr<Backend<T>> make_cuda_backend(const Context& ctx);

// Counts one cloud upload on the context (Context::cloud_uploads).
void count_cloud_upload(const Context& ctx);

// Runs the calling thread's OpenMP regions with `threads` threads (0: unchanged) until destroyed,
// then restores the previous count: the context's setting, never the process-wide one.
class ThreadScope {
 public:
  explicit ThreadScope(int threads);
  ~ThreadScope();
  ThreadScope(const ThreadScope&) = delete;
  ThreadScope& operator=(const ThreadScope&) = delete;

 private:
  int previous_ = 0;
};

}  // namespace otcal::detail
