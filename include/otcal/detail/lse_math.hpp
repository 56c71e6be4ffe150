#pragma once
// Online log-sum-exp (Milakov & Gimelshein) in base 2, and the Sinkhorn element updates of
// docs/sinkhorn.md §4-§6, shared by both backends.
#include <cmath>
#include <limits>

#include "otcal/detail/hd.hpp"

namespace otcal::detail {

inline constexpr double kLog2e = 1.4426950408889634;
inline constexpr double kLn2 = 0.69314718055994531;

// Running (max, sum) of 2^t in log2 units. The empty state (-inf, 0) is the merge identity.
// A NaN term makes the state NaN, and NaN is absorbing: a NaN anywhere in a row must reach its
// LSE, whatever chunk, granule or part held it, so that the marginal error and the transported
// mass come out NaN and the solver reports divergence (docs/sinkhorn.md §10).
struct LseState {
  double max;
  double sum;
};

OTCAL_HD OTCAL_INLINE LseState lse_empty() { return {-HUGE_VAL, 0.0}; }

// Merge a partial (m, s) into the running state without ever forming (-inf) - (-inf). Runs once
// per chunk, not per element. NaN is absorbing through `sum`: a NaN m or s gives a NaN sum in
// every branch (exp2(NaN) is NaN, and `m > NaN` is false, so the else branch takes it), and every
// branch but the first reads acc.sum, so once NaN it stays NaN; lse_natural turns it into NaN.
OTCAL_HD OTCAL_INLINE void lse_merge(LseState& acc, double m, double s) {
  if (s == 0.0) return;
  if (acc.sum == 0.0) {
    acc.max = m;
    acc.sum = s;
  } else if (m > acc.max) {
    acc.sum = acc.sum * ::exp2(acc.max - m) + s;
    acc.max = m;
  } else {
    acc.sum += s * ::exp2(m - acc.max);
  }
}

// ln(sum 2^t) = ln2 * (max + log2 sum); -inf for the empty state, NaN for a NaN state (a test of
// `sum > 0` would send a NaN sum to -inf, i.e. to zero mass).
OTCAL_HD OTCAL_INLINE double lse_natural(const LseState& s) {
  return s.sum == 0.0 ? -HUGE_VAL : kLn2 * (s.max + ::log2(s.sum));
}

// OTT's fin(): a non-finite value counts as 0.
template <class T>
OTCAL_HD OTCAL_INLINE T fin(T v) {
  return (v - v == T(0)) ? v : T(0);  // false for NaN and +-inf
}

// New potential from the LSE of the other side, docs/sinkhorn.md §4:
//   f_i = tau * (eps_t log a_i - fin(eps_t * LSE_j((g_j - C_ij)/eps_t)))
template <class T>
OTCAL_HD OTCAL_INLINE T potential_update(T lse, T log_w, T eps_t, T tau) {
  return tau * (eps_t * log_w - fin(eps_t * lse));
}

// Marginal from a potential and the LSE of the other side: exp(pot/eps + lse); 0 at pot = -inf.
template <class T>
OTCAL_HD OTCAL_INLINE double marginal_from_lse(T pot, T lse, double eps) {
  return ::exp(static_cast<double>(pot) / eps + static_cast<double>(lse));
}

// One plan entry P_ij = exp((f_i + g_j - c_ij / s) / eps) in float64 (docs/sinkhorn.md §6), the
// same expression for apply, sparsify and both backends: entries are pure functions of (i, j).
OTCAL_HD OTCAL_INLINE double plan_entry(double f_i, double g_j, double cost, double inv_scale, double inv_eps) {
  return ::exp((f_i + g_j - cost * inv_scale) * inv_eps);
}

// Target of the marginal error: w for tau = 1 (rho = inf), w exp(-pot/rho) otherwise, 0 where w = 0.
template <class T>
OTCAL_HD OTCAL_INLINE double marginal_target(T w, T pot, double rho) {
  if (w == T(0)) return 0.0;
  if (rho == HUGE_VAL) return static_cast<double>(w);
  return static_cast<double>(w) * ::exp(-static_cast<double>(pot) / rho);
}

// Validity flags (docs/host-layer.md §5), one bit each.
enum ValidityFlag : unsigned {
  kNanValue = 1u << 0,
  kPosInfValue = 1u << 1,
  kNegInfValue = 1u << 2,           // -inf in an input array
  kNegInfWithMass = 1u << 3,        // -inf potential where the weight is > 0
};

// Flags of one potential entry; -inf at zero weight is legal.
template <class T>
OTCAL_HD OTCAL_INLINE unsigned potential_flags(T pot, T w) {
  if (pot != pot) return kNanValue;
  if (pot == HUGE_VAL) return kPosInfValue;
  if (pot == -HUGE_VAL && w > T(0)) return kNegInfWithMass;
  return 0u;
}

template <class T>
OTCAL_HD OTCAL_INLINE unsigned value_flags(T v) {
  if (v != v) return kNanValue;
  if (v == HUGE_VAL) return kPosInfValue;
  if (v == -HUGE_VAL) return kNegInfValue;
  return 0u;
}

}  // namespace otcal::detail
