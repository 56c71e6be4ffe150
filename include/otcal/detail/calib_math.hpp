#pragma once
// Element math of calibration shared by the CPU passes (src/calibration) and the CUDA passes
// (cuda/calibration.cu), written once (OTCAL_HD): R survey's distance functions F and F' (§4.2),
// the gradient calibrator's dropped-out weight, hard-concrete gates and Adam step (§3).
// Operations are spelled exactly as the CPU code always computed them so the CPU results stay
// bitwise unchanged; the device's exp/log may differ from glibc's in the last ulp.
#include <cmath>
#include <cstdint>

#include "otcal/detail/hd.hpp"
#include "otcal/detail/philox.hpp"

namespace otcal::detail {

// std::clamp's definition, usable on the device.
OTCAL_HD OTCAL_INLINE double clamp_value(double v, double lo, double hi) { return v < lo ? lo : (hi < v ? hi : v); }

enum class CalFunCode : int { linear = 0, raking = 1, logit = 2 };

// Deville-Sarndal distance: g = F(u), F'(u), bounds L <= g <= U; logit_a = (U - L)/((U - 1)(1 - L)).
struct DistanceMath {
  CalFunCode calfun = CalFunCode::linear;
  double L = 0, U = 0, logit_a = 0;

  OTCAL_HD OTCAL_INLINE double F(double u) const {
    switch (calfun) {
      case CalFunCode::linear: return clamp_value(1 + u, L, U);
      case CalFunCode::raking: return clamp_value(exp(u), L, U);
      case CalFunCode::logit: {
        const double e = exp(logit_a * u);
        return (L * (U - 1) + U * (1 - L) * e) / ((U - 1) + (1 - L) * e);
      }
    }
    return 0;
  }
  // R tests u (not F(u)) against the bounds for linear and raking: reproduced (§4.2).
  OTCAL_HD OTCAL_INLINE double dF(double u) const {
    switch (calfun) {
      case CalFunCode::linear: return (L - 1 < u && u < U - 1) ? 1.0 : 0.0;
      case CalFunCode::raking: return (L - 1 < u && u < U - 1) ? exp(u) : 0.0;
      case CalFunCode::logit: {
        const double e = exp(logit_a * u);
        const double den = (U - 1) + (1 - L) * e;
        return logit_a * e * (U - 1) * (1 - L) * (U - L) / (den * den);
      }
    }
    return 0;
  }
};

// ---- gradient calibrator (§3) ------------------------------------------------------------------
inline constexpr double kHardConcreteGamma = -0.1, kHardConcreteZeta = 1.1, kLogAlphaClamp = 20.0;

OTCAL_HD OTCAL_INLINE double calib_sigmoid(double x) { return 1.0 / (1.0 + exp(-x)); }

// Dropped-out weight exp(θ'_i) of epoch `epoch` (0 for a dropped record): inverted log-space dropout.
OTCAL_HD OTCAL_INLINE double dropout_weight(std::uint64_t seed, double p, std::int64_t i, double theta,
                                            std::uint32_t epoch) {
  if (p == 0) return exp(theta);
  if (p == 1) return 0.0;
  const double u = philox_uniform(seed, static_cast<std::uint64_t>(i), RandomPurpose::dropout_mask, epoch);
  return u < p ? 0.0 : exp(theta - log1p(-p));
}

struct HardConcreteGate {
  double z = 1, dz = 0;  // training gate and ∂z/∂logα
};
OTCAL_HD OTCAL_INLINE HardConcreteGate training_gate(std::uint64_t seed, double beta, std::int64_t i, double log_alpha,
                                                     std::uint32_t step) {
  HardConcreteGate gt;
  if (fabs(log_alpha) > kLogAlphaClamp) log_alpha = clamp_value(log_alpha, -kLogAlphaClamp, kLogAlphaClamp);
  double u = philox_uniform(seed, static_cast<std::uint64_t>(i), RandomPurpose::l0_gate, step);
  u = 1e-6 + (1 - 2e-6) * u;  // U(1e-6, 1 - 1e-6)
  const double s = calib_sigmoid((log(u) - log1p(-u) + log_alpha) / beta);
  const double stretched = s * (kHardConcreteZeta - kHardConcreteGamma) + kHardConcreteGamma;
  gt.z = clamp_value(stretched, 0.0, 1.0);
  gt.dz = (stretched > 0 && stretched < 1) ? (kHardConcreteZeta - kHardConcreteGamma) * s * (1 - s) / beta : 0.0;
  return gt;
}
OTCAL_HD OTCAL_INLINE double eval_gate(double log_alpha, double temperature, bool legacy) {
  const double la = clamp_value(log_alpha, -kLogAlphaClamp, kLogAlphaClamp);
  const double s = legacy ? calib_sigmoid(la) : calib_sigmoid(la / temperature);
  return clamp_value(s * (kHardConcreteZeta - kHardConcreteGamma) + kHardConcreteGamma, 0.0, 1.0);
}
OTCAL_HD OTCAL_INLINE double penalty_prob(double log_alpha, double temperature) {
  return calib_sigmoid(clamp_value(log_alpha, -kLogAlphaClamp, kLogAlphaClamp) -
                       temperature * log(-kHardConcreteGamma / kHardConcreteZeta));
}

// PyTorch Adam element update (beta1 0.9, beta2 0.999, eps 1e-8); bc1/bc2 are the bias corrections.
OTCAL_HD OTCAL_INLINE void adam_element(double& x, double& m, double& v, double grad, double lr, double bc1,
                                        double bc2) {
  m = 0.9 * m + (1 - 0.9) * grad;
  v = 0.999 * v + (1 - 0.999) * grad * grad;
  x -= lr * (m / bc1) / (sqrt(v / bc2) + 1e-8);
}

}  // namespace otcal::detail
