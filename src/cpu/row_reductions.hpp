#pragma once
// Reductions of the row engine (row_engine.hpp): how one row's granule values become its result.
//   LseReduction      ln sum_j 2^(t_j), online in base 2 (the Sinkhorn LSE)
//   WeightedSum       sum_j P_ij v[j, :] in float64 (apply_transport, marginals)
//   MomentsReduction  sum c, sum c^2, max |c| in float64 (cost statistics)
//   EmitRow           the values themselves, into a dense row (plan / cost blocks)
// Each folds granules in the order the engine gives them and sums within a granule in a fixed
// order, so a row's result does not depend on tiles or threads.
#include <algorithm>
#include <cmath>
#include <limits>

#include "cpu/row_engine.hpp"
#include "otcal/detail/exp2.hpp"
#include "otcal/detail/lse_math.hpp"

namespace otcal::cpu {

// Accumulation lanes of the exp2 sum: one 64-byte block (16 floats, 8 doubles), i.e. one AVX-512
// register or two AVX2 ones (two independent add chains). Fixed by the type, not by the build's
// vector width, so a sum is the same on every x86 build (and its order never depends on tiles or
// threads).
template <class T>
inline constexpr int kSumLanes = 64 / static_cast<int>(sizeof(T));

// sum_j 2^(t_j - mx) over one granule, in fixed lanes (deterministic; vector code because
// exp2_nonpositive is branch-free and always inlined: check with objdump after touching either).
// Kept out of line: inlined into the engine's loop, GCC 12 schedules this sum worse (callgrind,
// n = m = 1000, float32: +7.9 % instructions per Sinkhorn iteration inlined, +1.2 % out of line);
// one call per granule of 256 values costs nothing measurable.
template <class T>
[[gnu::noinline]] T granule_exp2_sum(const T* t, index_t jn, T mx) {
  constexpr int L = kSumLanes<T>;
  alignas(64) T lane[L] = {};
  index_t j = 0;
  for (; j + L <= jn; j += L) {
#pragma omp simd
    for (int l = 0; l < L; ++l) lane[l] += detail::exp2_nonpositive(T(t[j + l] - mx));
  }
  for (int l = 0; j + l < jn; ++l) lane[l] += detail::exp2_nonpositive(T(t[j + l] - mx));
  T s = T(0);
  for (int l = 0; l < L; ++l) s += lane[l];
  return s;
}

// Consumes ExponentFormula: exponents t (log2 units) and their granule max.
template <class T>
struct LseReduction {
  using Row = detail::LseState*;  // the row's state lives in the budgeted tile workspace
  detail::LseState* state;        // 2 doubles per tile row
  T* out;

  bool begin(Row& s, index_t, index_t slot) const {
    s = state + slot;
    *s = detail::lse_empty();
    return true;
  }
  void fold(Row& s, index_t, index_t, index_t jn, const T* t, T mx) const {
    if (!(mx > -std::numeric_limits<T>::infinity())) {
      // NaN: merged as a NaN term (absorbing, lse_math.hpp) so it reaches the output whatever
      // granule held it; an all -inf granule adds nothing.
      if (mx != mx) detail::lse_merge(*s, static_cast<double>(mx), 1.0);
      return;
    }
    detail::lse_merge(*s, static_cast<double>(mx), static_cast<double>(granule_exp2_sum(t, jn, mx)));
  }
  void end(Row& s, index_t i, index_t) const { out[i] = static_cast<T>(detail::lse_natural(*s)); }
};

// Consumes PlanFormula: out[i, :] = sum_j P_ij v[j, :], skipping zero entries.
template <class T>
struct WeightedSum {
  static constexpr bool kMaySkip = true;  // rows at f_i = -inf are written as zeros in begin()
  using Row = double*;       // k accumulators in the tile workspace
  double* acc;               // [tile_rows, k]
  const T* f;                // row potential: a row at -inf has no mass
  const T* v;                // [m, k]
  index_t k;
  T* out;                    // [n, k]

  bool begin(Row& a, index_t i, index_t slot) const {
    a = acc + slot * k;
    for (index_t c = 0; c < k; ++c) a[c] = 0;
    if (static_cast<double>(f[i]) == -HUGE_VAL) {
      for (index_t c = 0; c < k; ++c) out[i * k + c] = T(0);
      return false;
    }
    return true;
  }
  void fold(Row& a, index_t, index_t j0, index_t jn, const double* pij, NoSummary) const {
    for (index_t j = 0; j < jn; ++j) {
      if (pij[j] == 0.0) continue;
      const T* vj = v + (j0 + j) * k;
      for (index_t c = 0; c < k; ++c) a[c] += pij[j] * static_cast<double>(vj[c]);
    }
  }
  void end(Row& a, index_t i, index_t) const {
    for (index_t c = 0; c < k; ++c) out[i * k + c] = static_cast<T>(a[c]);
  }
};

// Consumes CostFormula: per row (sum, sum of squares, max |c|) into partials[3 i ..].
template <class T>
struct MomentsReduction {
  struct Row {
    double sum, sum_sq, max_abs;
  };
  double* partials;

  bool begin(Row& r, index_t, index_t) const {
    r = {0, 0, 0};
    return true;
  }
  void fold(Row& r, index_t, index_t, index_t jn, const T* cost, NoSummary) const {
    double gs = 0, gs2 = 0;  // per granule, then merged: the fixed order of every CPU sum
    for (index_t j = 0; j < jn; ++j) {
      const double c = static_cast<double>(cost[j]);
      gs += c;
      gs2 += c * c;
      r.max_abs = std::max(r.max_abs, std::fabs(c));
    }
    r.sum += gs;
    r.sum_sq += gs2;
  }
  void end(Row& r, index_t i, index_t) const {
    partials[3 * i] = r.sum;
    partials[3 * i + 1] = r.sum_sq;
    partials[3 * i + 2] = r.max_abs;
  }
};

// Writes each value, converted to T, at its column of the slot's row of a dense [rows, m] block.
template <class T>
struct EmitRow {
  using Row = T*;
  T* block;
  index_t m;

  bool begin(Row& row, index_t, index_t slot) const {
    row = block + slot * m;
    return true;
  }
  template <class V>
  void fold(Row& row, index_t, index_t j0, index_t jn, const V* values, NoSummary) const {
    for (index_t j = 0; j < jn; ++j) row[j0 + j] = static_cast<T>(values[j]);
  }
  void end(Row&, index_t, index_t) const {}
};

}  // namespace otcal::cpu
