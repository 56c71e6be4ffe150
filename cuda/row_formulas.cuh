#pragma once
// Formulas of the CUDA row engine (row_engine.cuh): the value of pair (i, j) from the
// accumulated cost terms `acc` of that pair and the chunk staged in shared memory. Every value is
// the same OTCAL_HD expression the hand-written kernels used, so entries stay pure functions of
// (i, j) (docs/sinkhorn.md §10, docs/sparsify.md §2).
#include <cmath>

#include "otcal/detail/cost_math.hpp"
#include "otcal/detail/exp2.hpp"
#include "otcal/detail/lse_math.hpp"
#include "row_engine.cuh"

namespace otcal::detail::cuda_engine {

// Row-independent formulas need no per-row terms.
struct NoTerms {};

// c_ij (dense cost rows).
template <CostKind K, class T>
struct CostFormula {
  using Terms = NoTerms;
  using Value = T;
  __device__ Terms terms(const RowCtx<T>&) const { return {}; }
  __device__ __forceinline__ T value(const Terms&, const RowCtx<T>& row, T acc, int jj,
                                     const ChunkShared<T>& sh) const {
    return cost_finish<K>(acc, row.p, row.ni, sh.norm[jj]);
  }
};

// Base-2 LSE exponent t_ij = h_j*log2e/eps - c_ij*log2e/(eps*s), in T (docs/sinkhorn.md §4).
// Padding lanes carry h = -inf (and the LSE reduction masks them to -inf as well, since their cost
// need not be finite).
// One explicit FMA, fma(-c, c_scale, h * h_scale): the CPU's ExponentFormula expression
// (src/cpu/row_formulas.hpp), so the exponent has the CPU's bits on FMA hosts. The LSE is a
// tolerance result anyway (MUFU exp2 vs the CPU polynomial, chunks of 32 vs granules of 256), and
// this is the hot loop, so the FMA stays (the rest of the code is built with -fmad=false).
template <CostKind K, class T>
struct LseExponent {
  T h_scale, c_scale;
  using Terms = NoTerms;
  using Value = T;
  __device__ Terms terms(const RowCtx<T>&) const { return {}; }
  __device__ __forceinline__ T value(const Terms&, const RowCtx<T>& row, T acc, int jj,
                                     const ChunkShared<T>& sh) const {
    const T beta = sh.h[jj] * h_scale;
    const T c = cost_finish<K>(acc, row.p, row.ni, sh.norm[jj]);
    if constexpr (sizeof(T) == sizeof(float)) return OTCAL_FMAF(-c, c_scale, beta);
    else return OTCAL_FMA(-c, c_scale, beta);
  }
};

// Plan entry P_ij = exp((f_i + g_j - c_ij/s)/eps) in float64 (plan_entry, docs/sinkhorn.md §6);
// g_j is the chunk's staged column value.
template <CostKind K, class T>
struct PlanEntry {
  const T* f;  // row potential
  double inv_scale, inv_eps;
  struct Terms {
    double fi;  // f_i in float64; 0 on inactive threads
  };
  using Value = double;
  __device__ Terms terms(const RowCtx<T>& row) const { return {row.active ? static_cast<double>(f[row.i]) : 0.0}; }
  __device__ __forceinline__ double value(const Terms& t, const RowCtx<T>& row, T acc, int jj,
                                          const ChunkShared<T>& sh) const {
    const double c = static_cast<double>(cost_finish<K>(acc, row.p, row.ni, sh.norm[jj]));
    return plan_entry(t.fi, static_cast<double>(sh.h[jj]), c, inv_scale, inv_eps);
  }
};

}  // namespace otcal::detail::cuda_engine
