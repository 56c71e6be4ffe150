#pragma once
// Element math of the fast squared-Euclidean row LSE (cuda/lse_fast.cuh, docs/sinkhorn.md §10),
// shared with its CPU emulation (tests/test_lse_fast_math.cpp).
//
// Bias form. The cost is translation invariant, so both clouds are centred on c = y_0 (the first
// column point): u = x_i - c, v = y_j - c, rounded to T. Then, in log2 units,
//   t_ij = h_j*log2e/eps - kappa*|u - v|^2 = r_i + b_j + a_i.v,   kappa = log2e/(eps*s),
//   b_j = h_j*log2e/eps - kappa*|v|^2   (per column, float64 then rounded to T),
//   a_i = 2*kappa*u                      (per row, rounded to T),
//   r_i = -kappa*|u|^2                   (per row, float64, added after the reduction: the LSE
//                                         is shift-equivariant).
// An entry is D FMAs, t'_ij = b_j + a_i.v, and the float32 cancellation is bounded by the clouds'
// spread around c instead of their distance from the origin.
//
// Optimistic exponent. A row keeps a reference `ref` (a value of T) and a float64 sum with the
// meaning sum * 2^ref. A chunk adds sum_j exp2(t'_j - ref) with no per-entry max; the chunk is
// accepted when that sum is <= 2^64 (NaN and +inf fail the test), otherwise the row's cold path
// recomputes the chunk's exponents, takes their max (NaN wins) and merges the chunk with
// lse_merge, which moves ref to the larger max. The accepted sum is exact up to the exp2 and
// summation rounding, as the per-chunk max form is: no term exceeds 2^64, and a term below
// 2^(ref - 126) is flushed to 0 against a sum that is >= 1 once anything was merged. The initial
// reference -max(T) makes the empty state (-max, 0) a valid state of that meaning (every finite
// exponent above -max + 64 takes the cold path the first time), so no separate empty flag exists.
#include <cmath>
#include <cstring>
#include <limits>

#include "otcal/detail/exp2.hpp"
#include "otcal/detail/hd.hpp"
#include "otcal/detail/lse_math.hpp"

namespace otcal::detail {

inline constexpr int kLseFastMaxD = 8;                  // fast path for d = 1..8
inline constexpr double kLseFastAcceptMax = 0x1p64;      // largest accepted chunk sum

// kappa and the potential's scale, in float64.
struct LseFastScales {
  double kappa;    // log2e / (eps * s)
  double h_scale;  // log2e / eps
};

OTCAL_HD OTCAL_INLINE LseFastScales lse_fast_scales(double eps, double inv_scale) {
  return {kLog2e / eps * inv_scale, kLog2e / eps};
}

// b_j from the column's potential h and its centred coordinates v[0..d). A -inf potential gives
// -inf (a zero-weight column) and a NaN anywhere gives NaN, as in the CPU exponent; padding
// columns are staged as -inf directly.
template <class T>
OTCAL_HD OTCAL_INLINE T lse_fast_bias(T h, const T* v, int d, const LseFastScales& k) {
  double q = 0.0;
  for (int c = 0; c < d; ++c) q += static_cast<double>(v[c]) * static_cast<double>(v[c]);
  return static_cast<T>(static_cast<double>(h) * k.h_scale - k.kappa * q);
}

// The row's slopes a = 2*kappa*u (rounded to T) and its constant r = -kappa*|u|^2 (float64).
template <class T>
OTCAL_HD OTCAL_INLINE double lse_fast_row(const T* u, int d, const LseFastScales& k, T* a) {
  double q = 0.0;
  for (int c = 0; c < d; ++c) {
    a[c] = static_cast<T>(2.0 * k.kappa * static_cast<double>(u[c]));
    q += static_cast<double>(u[c]) * static_cast<double>(u[c]);
  }
  return -k.kappa * q;
}

// t'_ij = b_j + a.v: D FMAs in coordinate order (the kernel's hot loop and its cold path use
// this one expression, so the two see the same bits).
template <int D, class T>
OTCAL_HD OTCAL_INLINE T lse_fast_exponent(T b, const T* a, const T* v) {
  T t = b;
#pragma unroll
  for (int c = 0; c < D; ++c) {
    if constexpr (sizeof(T) == sizeof(float)) t = OTCAL_FMAF(a[c], v[c], t);
    else t = OTCAL_FMA(a[c], v[c], t);
  }
  return t;
}

// exp2 of the hot loop. float32: the MUFU ex2 with flush-to-zero (ex2.approx.ftz.f32; relative
// error about 2^-22, results below 2^-126 are 0). On the host (the emulation) std::exp2 rounded
// to float and flushed the same way. float64: the library exp2 on both sides.
OTCAL_HD OTCAL_INLINE float lse_fast_exp2(float x) {
#if defined(__CUDA_ARCH__)
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
#else
  const float y = static_cast<float>(std::exp2(static_cast<double>(x)));
  return y < 0x1p-126f ? 0.0f : y;  // ftz; NaN fails the test and stays NaN
#endif
}

OTCAL_HD OTCAL_INLINE double lse_fast_exp2(double x) { return ::exp2(x); }

// One row's state within a column part: sum * 2^ref.
template <class T>
struct LseFastState {
  T ref;
  double sum;
};

template <class T>
OTCAL_HD OTCAL_INLINE LseFastState<T> lse_fast_empty() {
  return {-std::numeric_limits<T>::max(), 0.0};
}

// The hot path's end of a chunk: accept the chunk sum (sum_j exp2(t'_j - ref), ascending j, in T)
// or report that the row must take the cold path for this chunk.
template <class T>
OTCAL_HD OTCAL_INLINE bool lse_fast_accept(LseFastState<T>& st, T chunk_sum) {
  if (!(chunk_sum <= static_cast<T>(kLseFastAcceptMax))) return false;
  st.sum += static_cast<double>(chunk_sum);
  return true;
}

// The cold path, from the chunk's maximum: the running max in T (NaN wins) ...
template <class T>
OTCAL_HD OTCAL_INLINE T lse_fast_max(T mx, T t) {
  return (t > mx || t != t) ? t : mx;
}

// ... then sum_j exp2(t'_j - mx) (the caller's second sweep, `s`) merged with lse_merge; ref
// becomes the merged max, which is one of the two inputs and so a value of T. An all -inf chunk
// adds nothing; a NaN max merges as a NaN term (absorbing, lse_math.hpp).
template <class T>
OTCAL_HD OTCAL_INLINE void lse_fast_merge(LseFastState<T>& st, T mx, T s) {
  if (!(mx > -std::numeric_limits<T>::infinity()) && mx == mx) return;
  LseState acc{static_cast<double>(st.ref), st.sum};
  lse_merge(acc, static_cast<double>(mx), mx == mx ? static_cast<double>(s) : 1.0);
  st.ref = static_cast<T>(acc.max);
  st.sum = acc.sum;
}

// A part's partial in lse_merge form, the row constant folded into the max: both paths merge
// these in part order, so the shift is applied identically on both.
template <class T>
OTCAL_HD OTCAL_INLINE LseState lse_fast_partial(const LseFastState<T>& st, double r) {
  return {r + static_cast<double>(st.ref), st.sum};
}

}  // namespace otcal::detail
