#pragma once
// Formulas of the row engine (row_engine.hpp): the value of each pair (i, j) of a granule.
//   CostFormula      c(x_i, y_j)                                  (statistics, cost blocks)
//   ExponentFormula  t_ij = beta_j - c(x_i, y_j) * c_scale         (LSE, log2 units), and max_j t_ij
//   PlanFormula      P_ij = exp((f_i + g_j - c_ij / s) / eps)      (apply, plan blocks; float64)
// Each entry is a pure function of (i, j): the same arithmetic, in the same order, whichever pass,
// tile or thread computes it.
#include <limits>

#include "core/backend.hpp"
#include "cpu/cost_granule.hpp"
#include "cpu/row_engine.hpp"
#include "otcal/detail/cost_math.hpp"
#include "otcal/detail/exp2.hpp"
#include "otcal/detail/lse_math.hpp"

namespace otcal::cpu {

inline double fma_t(double a, double b, double c) { return OTCAL_FMA(a, b, c); }
inline float fma_t(float a, float b, float c) { return OTCAL_FMAF(a, b, c); }

// Max that propagates NaN (a NaN entry must reach the output and the validity flags).
template <class T>
inline T nan_max(T v, T m) {
  return (v > m || v != v) ? v : m;
}

// No row-independent terms to share across a chunk.
struct NoColumns {};

template <CostKind K, class T>
struct CostFormula {
  using Value = T;
  using Columns = NoColumns;
  detail::Cloud<T> x, y;
  T p;

  void columns(index_t, index_t, Columns&) const {}
  NoSummary row(const Columns&, index_t i, index_t j0, index_t jn, T* out) const {
    cost_granule<K>(x, y, i, j0, jn, p, out);
    return {};
  }
};

template <CostKind K, class T>
struct ExponentFormula {
  using Value = T;
  // Column bias beta_j = h_j log2(e)/eps, once per granule for the whole row chunk.
  struct Columns {
    alignas(64) T beta[kReductionGranule];
  };
  detail::Cloud<T> x, y;
  T p;
  const T* h;    // column potential
  T h_scale;     // log2(e) / eps
  T c_scale;     // log2(e) / eps / s

  // The members are read into locals first, in every hot method: stores to a T buffer could
  // alias a T member, which would force a reload per element.
  void columns(index_t j0, index_t jn, Columns& c) const {
    const T* hj = h + j0;
    const T scale = h_scale;
#pragma omp simd
    for (index_t j = 0; j < jn; ++j) c.beta[j] = hj[j] * scale;
  }

  // t_j into out[0..jn); returns max_j t_j (NaN if any t_j is NaN). For d = 1..3 every
  // coordinate is fused with the finish, the bias and the max in one sweep over the granule
  // (the terms in registers); for larger d the first d-1 accumulate in out first. Either way the
  // terms add in the order k = 0..d-1, so the values are the same.
  T row(const Columns& c, index_t i, index_t j0, index_t jn, T* t) const {
    switch (x.d) {
      case 1: return row_with<1>(c, i, j0, jn, t);
      case 2: return row_with<2>(c, i, j0, jn, t);
      case 3: return row_with<3>(c, i, j0, jn, t);
      default: return row_with<0>(c, i, j0, jn, t);
    }
  }

 private:
  // Lanes of the running max: 128 bytes, i.e. four AVX2 (two AVX-512) registers, so that the
  // compare-and-blend chains of nan_max overlap instead of waiting on each other. The max does not
  // depend on the order it is taken in.
  static constexpr int kMaxLanes = 128 / static_cast<int>(sizeof(T));

  // D = d when 1 <= d <= 3 (fused), D = 0 for any d.
  template <int D>
  T row_with(const Columns& c, index_t i, index_t j0, index_t jn, T* t) const {
    const detail::Cloud<T> x = this->x, y = this->y;
    const T p = this->p, c_scale = this->c_scale;
    const T* beta = c.beta;
    const int d = D > 0 ? D : x.d;
    if constexpr (D == 0) {
      for (int k = 0; k + 1 < d; ++k) {
        const T xi = x.x[k * x.n + i];
        const T* yk = y.x + k * y.n + j0;
        if (k == 0) {
#pragma omp simd
          for (index_t j = 0; j < jn; ++j) t[j] = detail::cost_term<K>(xi, yk[j], p);
        } else {
#pragma omp simd
          for (index_t j = 0; j < jn; ++j) t[j] += detail::cost_term<K>(xi, yk[j], p);
        }
      }
    }
    // The fused coordinates 0 .. D-2 (D = 3 uses both, D = 2 the first).
    const T x0 = D > 1 ? x.x[i] : T(0), x1 = D > 2 ? x.x[x.n + i] : T(0);
    const T* y0 = y.x + j0;
    const T* y1 = y.x + y.n + j0;
    const T xl = x.x[(d - 1) * x.n + i];
    const T* yl = y.x + (d - 1) * y.n + j0;
    const T ni = x.norms ? x.norms[i] : T(0);
    const T* nj = y.norms ? y.norms + j0 : nullptr;
    auto value = [&](index_t j) {
      T head;  // the sum of the terms before the last, as the unfused loop leaves it in t
      if constexpr (D == 0) head = d > 1 ? t[j] : T(0);
      else if constexpr (D == 1) head = T(0);
      else if constexpr (D == 2) head = detail::cost_term<K>(x0, y0[j], p);
      else head = detail::cost_term<K>(x0, y0[j], p) + detail::cost_term<K>(x1, y1[j], p);
      const T acc = head + detail::cost_term<K>(xl, yl[j], p);
      return fma_t(-detail::cost_finish<K>(acc, p, ni, nj ? nj[j] : T(0)), c_scale, beta[j]);
    };
    constexpr int L = kMaxLanes;
    T lane[L];
    for (int l = 0; l < L; ++l) lane[l] = -std::numeric_limits<T>::infinity();
    index_t j = 0;
    for (; j + L <= jn; j += L) {
#pragma omp simd
      for (int l = 0; l < L; ++l) {
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
    // The lanes' max without a branch per lane (compare-and-jump mispredicts on random data and
    // cost as much as the sweep): halve them in vector steps down to 8, then max and a NaN flag.
    for (int w = L / 2; w >= 8; w /= 2) {
#pragma omp simd
      for (int l = 0; l < w; ++l) lane[l] = nan_max(lane[l + w], lane[l]);
    }
    T mx = lane[0];
    bool nan = false;
    for (int l = 0; l < 8; ++l) {
      mx = lane[l] > mx ? lane[l] : mx;
      nan |= lane[l] != lane[l];
    }
    return nan ? std::numeric_limits<T>::quiet_NaN() : mx;
  }
};

// The same float64 expression as the CUDA backend (detail::plan_entry), for apply and sparsify.
template <CostKind K, class T>
struct PlanFormula {
  using Value = double;
  using Columns = NoColumns;
  detail::Cloud<T> x, y;
  T p;
  const T* f;    // row potential
  const T* g;    // column potential
  double inv_scale, inv_eps;

  void columns(index_t, index_t, Columns&) const {}
  NoSummary row(const Columns&, index_t i, index_t j0, index_t jn, double* out) const {
    alignas(64) T cost[kReductionGranule];
    cost_granule<K>(x, y, i, j0, jn, p, cost);
    const T* g = this->g;  // locals: out may alias nothing then (see ExponentFormula)
    const double fi = static_cast<double>(f[i]), inv_scale = this->inv_scale, inv_eps = this->inv_eps;
    for (index_t j = 0; j < jn; ++j)
      out[j] = detail::plan_entry(fi, static_cast<double>(g[j0 + j]), static_cast<double>(cost[j]), inv_scale,
                                  inv_eps);
    return {};
  }
};

}  // namespace otcal::cpu
