// CPU backend: OpenMP over tiles of rows; within a tile, chunks of rows stream the other cloud in
// granules of kReductionGranule points that stay in L1 (the FlashAttention loop, on a CPU).
// Every row's reduction runs granule by granule in a fixed order, so results are bitwise
// independent of the tile size and of the thread count.
#include <algorithm>
#include <cmath>
#include <limits>

#include "core/backend.hpp"
#include "cpu/cost_granule.hpp"
#include "cpu/deterministic.hpp"
#include "otcal/detail/cost_math.hpp"
#include "otcal/detail/exp2.hpp"
#include "otcal/detail/lse_math.hpp"

namespace otcal::detail {
namespace {

constexpr index_t R = kReductionGranule;
constexpr index_t kRowChunk = 8;  // rows sharing one granule of the other cloud while it is in L1
constexpr int kLanes = 8;         // fixed-shape accumulation lanes (vectorisable, deterministic)
// Below this many cost entries a parallel region costs more than it saves.
constexpr index_t kParallelWork = index_t{1} << 16;

inline double fma_t(double a, double b, double c) { return OTCAL_FMA(a, b, c); }
inline float fma_t(float a, float b, float c) { return OTCAL_FMAF(a, b, c); }

// Max that propagates NaN (a NaN entry must reach the output and the validity flags).
template <class T>
inline T nan_max(T v, T m) {
  return (v > m || v != v) ? v : m;
}

// t_j = beta_j - c(x_i, y_j) * c_scale for one granule, into t[0..jn); returns max_j t_j (NaN if
// any t_j is NaN). The first d-1 coordinates accumulate in t, the last is fused with the finish,
// the bias and the max: two sweeps over the granule for d = 2..3 instead of five.
template <CostKind K, class T>
inline T granule_exponents(const Cloud<T>& rows, const Cloud<T>& cols, index_t i, index_t j0, index_t jn, T p,
                           const T* beta, T c_scale, T* t) {
  const int d = rows.d;
  for (int k = 0; k + 1 < d; ++k) {
    const T xi = rows.x[k * rows.n + i];
    const T* yk = cols.x + k * cols.n + j0;
    if (k == 0) {
#pragma omp simd
      for (index_t j = 0; j < jn; ++j) t[j] = cost_term<K>(xi, yk[j], p);
    } else {
#pragma omp simd
      for (index_t j = 0; j < jn; ++j) t[j] += cost_term<K>(xi, yk[j], p);
    }
  }
  const T xl = rows.x[(d - 1) * rows.n + i];
  const T* yl = cols.x + (d - 1) * cols.n + j0;
  const T ni = rows.norms ? rows.norms[i] : T(0);
  const T* nj = cols.norms ? cols.norms + j0 : nullptr;
  auto value = [&](index_t j) {
    const T acc = (d > 1 ? t[j] : T(0)) + cost_term<K>(xl, yl[j], p);
    return fma_t(-cost_finish<K>(acc, p, ni, nj ? nj[j] : T(0)), c_scale, beta[j]);
  };
  T lane[kLanes];
  for (int l = 0; l < kLanes; ++l) lane[l] = -std::numeric_limits<T>::infinity();
  index_t j = 0;
  for (; j + kLanes <= jn; j += kLanes) {
#pragma omp simd
    for (int l = 0; l < kLanes; ++l) {
      const T v = value(j + l);
      t[j + l] = v;
      lane[l] = nan_max(v, lane[l]);
    }
  }
  for (int l = 0; j + l < jn; ++l) {
    const T v = value(j + l);
    t[j + l] = v;
    lane[l] = nan_max(v, lane[l]);
  }
  T mx = lane[0];
  for (int l = 1; l < kLanes; ++l) mx = nan_max(lane[l], mx);
  return mx;
}

// sum_j 2^(t_j - mx) over one granule, in fixed lanes (deterministic, vectorised).
template <class T>
inline T granule_exp2_sum(const T* t, index_t jn, T mx) {
  T lane[kLanes] = {};
  index_t j = 0;
  for (; j + kLanes <= jn; j += kLanes) {
#pragma omp simd
    for (int l = 0; l < kLanes; ++l) lane[l] += exp2_nonpositive(T(t[j + l] - mx));
  }
  for (int l = 0; j + l < jn; ++l) lane[l] += exp2_nonpositive(T(t[j + l] - mx));
  T s = T(0);
  for (int l = 0; l < kLanes; ++l) s += lane[l];
  return s;
}

template <class T>
class CpuBackend final : public Backend<T> {
 public:

  void upload_cloud(const ConstMatrix& h, T* dst) override {
    const index_t n = h.rows, d = h.cols;
#pragma omp parallel for schedule(static)
    for (index_t i = 0; i < n; ++i)
      for (index_t k = 0; k < d; ++k) dst[k * n + i] = static_cast<T>(h.at(i, k));
  }
  void upload(const double* host, T* dst, index_t count) override {
    for (index_t i = 0; i < count; ++i) dst[i] = static_cast<T>(host[i]);
  }
  void download(const T* src, double* host, index_t count) override {
    for (index_t i = 0; i < count; ++i) host[i] = static_cast<double>(src[i]);
  }
  void point_norms(const T* x, index_t n, int d, T* out) override {
#pragma omp parallel for schedule(static)
    for (index_t i = 0; i < n; ++i) {
      T s = 0;
      for (int k = 0; k < d; ++k) s += x[k * n + i] * x[k * n + i];
      out[i] = std::sqrt(s);
    }
  }
  void log_weights(const T* w, T* out, index_t n) override {
    for (index_t i = 0; i < n; ++i) out[i] = w[i] > T(0) ? std::log(w[i]) : -std::numeric_limits<T>::infinity();
  }

  index_t lse_partials_per_row(index_t) const override { return 1; }
  void row_lse(const RowLseArgs<T>& a) override {
    dispatch_cost(a.cost.kind, [&](auto tag) { row_lse_impl<decltype(tag)::value>(a); });
  }
  void row_apply(const RowApplyArgs<T>& a) override {
    dispatch_cost(a.cost.kind, [&](auto tag) { row_apply_impl<decltype(tag)::value>(a); });
  }
  CostMoments cost_moments(const Cloud<T>& rows, const Cloud<T>& cols, const CostParams& cost, index_t tile_rows,
                           double* partials) override {
    return dispatch_cost(cost.kind,
                         [&](auto tag) { return moments_impl<decltype(tag)::value>(rows, cols, cost, tile_rows, partials); });
  }

  void potential_update(const T* lse, const T* log_w, double eps_t, double tau, T* out, index_t n) override {
    const T e = static_cast<T>(eps_t), t = static_cast<T>(tau);
#pragma omp parallel for schedule(static) if (n > kParallelWork)
    for (index_t i = 0; i < n; ++i) out[i] = detail::potential_update(lse[i], log_w[i], e, t);
  }
  double marginal_error(const T* pot, const T* lse, const T* w, double eps, double rho, double p, index_t n) override {
    return cpu::granular_sum(n, [&](index_t i) {
      const double diff = std::fabs(marginal_from_lse(pot[i], lse[i], eps) - marginal_target(w[i], pot[i], rho));
      return p == 1.0 ? diff : std::pow(diff, p);
    });
  }
  double transported_mass(const T* pot, const T* lse, double eps, index_t n) override {
    return cpu::granular_sum(n, [&](index_t i) { return marginal_from_lse(pot[i], lse[i], eps); });
  }
  unsigned potential_flags(const T* pot, const T* w, index_t n) override {
    return cpu::parallel_or(n, [&](index_t i) { return detail::potential_flags(pot[i], w[i]); });
  }
  unsigned value_flags(const T* v, index_t n) override {
    return cpu::parallel_or(n, [&](index_t i) { return detail::value_flags(v[i]); });
  }

 private:
  template <CostKind K>
  void row_lse_impl(const RowLseArgs<T>& a) {
    const index_t n = a.rows.n, m = a.cols.n;
    const T p = static_cast<T>(a.cost.p);
    const T h_scale = static_cast<T>(kLog2e / a.eps);
    const T c_scale = static_cast<T>(kLog2e / a.eps * a.inv_scale);
    const index_t tile = std::max<index_t>(a.tile_rows, 1);
    for (index_t t0 = 0; t0 < n; t0 += tile) {
      const index_t t1 = std::min(n, t0 + tile);
#pragma omp parallel for schedule(static) if ((t1 - t0) * m * a.rows.d > kParallelWork)
      for (index_t c0 = t0; c0 < t1; c0 += kRowChunk) {
        const index_t c1 = std::min(t1, c0 + kRowChunk);
        // Row states live in the budgeted tile workspace (2 doubles per tile row).
        LseState* state = reinterpret_cast<LseState*>(a.state) + (c0 - t0);
        for (index_t r = 0; r < c1 - c0; ++r) state[r] = lse_empty();
        alignas(64) T beta[R];
        alignas(64) T buf[R];
        for (index_t j0 = 0; j0 < m; j0 += R) {
          const index_t jn = std::min(R, m - j0);
          // Column bias h_j log2(e)/eps, computed once per granule for the whole row chunk.
          const T* h = a.col_potential + j0;
#pragma omp simd
          for (index_t j = 0; j < jn; ++j) beta[j] = h[j] * h_scale;
          for (index_t i = c0; i < c1; ++i) {
            const T mx = granule_exponents<K>(a.rows, a.cols, i, j0, jn, p, beta, c_scale, buf);
            if (!(mx > -std::numeric_limits<T>::infinity())) {
              if (mx != mx) state[i - c0] = {mx, 1.0};  // NaN: let it reach the output and the flags
              continue;
            }
            lse_merge(state[i - c0], static_cast<double>(mx), static_cast<double>(granule_exp2_sum(buf, jn, mx)));
          }
        }
        for (index_t i = c0; i < c1; ++i) a.out[i] = static_cast<T>(lse_natural(state[i - c0]));
      }
    }
  }

  template <CostKind K>
  void row_apply_impl(const RowApplyArgs<T>& a) {
    const index_t n = a.rows.n, m = a.cols.n, k = a.k;
    const T p = static_cast<T>(a.cost.p);
    const double inv_eps = 1.0 / a.eps;
    const index_t tile = std::max<index_t>(a.tile_rows, 1);
    for (index_t t0 = 0; t0 < n; t0 += tile) {
      const index_t t1 = std::min(n, t0 + tile);
#pragma omp parallel for schedule(static) if ((t1 - t0) * m * k > kParallelWork)
      for (index_t i = t0; i < t1; ++i) {
        double* acc = a.acc + (i - t0) * k;
        for (index_t c = 0; c < k; ++c) acc[c] = 0;
        const double fi = static_cast<double>(a.row_potential[i]);
        if (fi == -HUGE_VAL) {
          for (index_t c = 0; c < k; ++c) a.out[i * k + c] = T(0);
          continue;
        }
        alignas(64) T buf[R];
        for (index_t j0 = 0; j0 < m; j0 += R) {
          const index_t jn = std::min(R, m - j0);
          cpu::cost_granule<K>(a.rows, a.cols, i, j0, jn, p, buf);
          for (index_t j = 0; j < jn; ++j) {
            const double pij = plan_entry(fi, static_cast<double>(a.col_potential[j0 + j]),
                                          static_cast<double>(buf[j]), a.inv_scale, inv_eps);
            if (pij == 0.0) continue;
            const T* vj = a.v + (j0 + j) * k;
            for (index_t c = 0; c < k; ++c) acc[c] += pij * static_cast<double>(vj[c]);
          }
        }
        for (index_t c = 0; c < k; ++c) a.out[i * k + c] = static_cast<T>(acc[c]);
      }
    }
  }

  template <CostKind K>
  CostMoments moments_impl(const Cloud<T>& rows, const Cloud<T>& cols, const CostParams& cost, index_t tile_rows,
                           double* partials) {
    const index_t n = rows.n, m = cols.n;
    const T p = static_cast<T>(cost.p);
    const index_t tile = std::max<index_t>(tile_rows, 1);
    for (index_t t0 = 0; t0 < n; t0 += tile) {
      const index_t t1 = std::min(n, t0 + tile);
#pragma omp parallel for schedule(static) if ((t1 - t0) * m > kParallelWork)
      for (index_t i = t0; i < t1; ++i) {
        alignas(64) T buf[R];
        double s = 0, s2 = 0, mx = 0;
        for (index_t j0 = 0; j0 < m; j0 += R) {
          const index_t jn = std::min(R, m - j0);
          cpu::cost_granule<K>(rows, cols, i, j0, jn, p, buf);
          double gs = 0, gs2 = 0;
          for (index_t j = 0; j < jn; ++j) {
            const double c = static_cast<double>(buf[j]);
            gs += c;
            gs2 += c * c;
            mx = std::max(mx, std::fabs(c));
          }
          s += gs;
          s2 += gs2;
        }
        partials[3 * i] = s;
        partials[3 * i + 1] = s2;
        partials[3 * i + 2] = mx;
      }
    }
    CostMoments out;
    for (index_t i = 0; i < n; ++i) {
      out.sum += partials[3 * i];
      out.sum_sq += partials[3 * i + 1];
      out.max_abs = std::max(out.max_abs, partials[3 * i + 2]);
    }
    return out;
  }

};

}  // namespace

template <class T>
std::unique_ptr<Backend<T>> make_cpu_backend(const Context&) {
  return std::make_unique<CpuBackend<T>>();
}

template std::unique_ptr<Backend<float>> make_cpu_backend<float>(const Context&);
template std::unique_ptr<Backend<double>> make_cpu_backend<double>(const Context&);

}  // namespace otcal::detail
