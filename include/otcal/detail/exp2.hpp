#pragma once
// exp2 for the online log-sum-exp. On the GPU the hardware exp2 (MUFU) is used; on the CPU a
// branch-free polynomial that the compiler vectorises (libm's exp does not vectorise without
// -ffast-math, which would break the -inf semantics the potentials rely on).
#include <cstdint>
#include <cstring>

#include "otcal/detail/hd.hpp"

namespace otcal::detail {

// Fused multiply-add where the target has it (the library is built with -ffp-contract=off on the
// host and -fmad=false on the device, so that every other expression rounds exactly as written,
// e.g. numpy's percentile interpolation). Every device has FMA; a host build without FMA (no
// -march=native, OTCAL_NATIVE=OFF) rounds the product first, so a value computed through
// OTCAL_FMA is only equal across backends on FMA hosts (docs/host-layer.md §6).
#if defined(__CUDA_ARCH__)
#define OTCAL_FMA(a, b, c) ::fma((a), (b), (c))
#define OTCAL_FMAF(a, b, c) ::fmaf((a), (b), (c))
#elif defined(__FMA__)
#define OTCAL_FMA(a, b, c) __builtin_fma((a), (b), (c))
#define OTCAL_FMAF(a, b, c) __builtin_fmaf((a), (b), (c))
#else
#define OTCAL_FMA(a, b, c) ((a) * (b) + (c))
#define OTCAL_FMAF(a, b, c) ((a) * (b) + (c))
#endif

template <class To, class From>
OTCAL_HD OTCAL_INLINE To bit_cast_hd(From v) {
  To out;
  std::memcpy(&out, &v, sizeof(To));
  return out;
}

// 2^x for x <= 0 (the argument is always value - running max). Returns exactly 0 below the
// normal range, including for -inf. Relative error about 2 ulp.
OTCAL_HD OTCAL_INLINE double exp2_nonpositive(double x) {
#if defined(__CUDA_ARCH__)
  return ::exp2(x);
#else
  // Round to nearest through the 1.5*2^52 shifter: the integer lands in the low mantissa bits,
  // so k and 2^k come from plain adds and shifts that vectorise on AVX2 too.
  constexpr double kShifter = 6755399441055744.0;
  const double xc = x < -1022.0 ? -1022.0 : x;
  const double shifted = xc + kShifter;
  const double k = shifted - kShifter;
  const double r = xc - k;  // [-0.5, 0.5]
  // Taylor coefficients of 2^r = e^(r ln 2) to degree 12: truncation < 2e-16 on [-0.5, 0.5].
  double p = 2.5678435993488196e-11;  // ln2^12/12!
  p = OTCAL_FMA(p, r, 4.4455382718708101e-10);
  p = OTCAL_FMA(p, r, 7.0549116208011209e-09);
  p = OTCAL_FMA(p, r, 1.0178086009239696e-07);
  p = OTCAL_FMA(p, r, 1.3215486790144305e-06);
  p = OTCAL_FMA(p, r, 1.5252733804059838e-05);
  p = OTCAL_FMA(p, r, 0.00015403530393381606);
  p = OTCAL_FMA(p, r, 0.0013333558146428441);
  p = OTCAL_FMA(p, r, 0.0096181291076284769);
  p = OTCAL_FMA(p, r, 0.055504108664821576);
  p = OTCAL_FMA(p, r, 0.24022650695910069);
  p = OTCAL_FMA(p, r, 0.69314718055994529);
  p = OTCAL_FMA(p, r, 1);
  const std::int64_t ki = bit_cast_hd<std::int64_t>(shifted) - bit_cast_hd<std::int64_t>(kShifter);
  const std::int64_t bits = (ki + 1023) << 52;
  const double scale = bit_cast_hd<double>(bits);
  return x < -1022.0 ? 0.0 : p * scale;
#endif
}

OTCAL_HD OTCAL_INLINE float exp2_nonpositive(float x) {
#if defined(__CUDA_ARCH__)
  return ::exp2f(x);
#else
  constexpr float kShifter = 12582912.0f;  // 1.5 * 2^23
  const float xc = x < -126.0f ? -126.0f : x;
  const float shifted = xc + kShifter;
  const float k = shifted - kShifter;
  const float r = xc - k;
  float p = 1.5252733804059840e-05f;  // ln2^7/7!
  p = OTCAL_FMAF(p, r, 1.5403530393381608e-04f);
  p = OTCAL_FMAF(p, r, 1.3333558146428443e-03f);
  p = OTCAL_FMAF(p, r, 9.6181291076284772e-03f);
  p = OTCAL_FMAF(p, r, 5.5504108664821580e-02f);
  p = OTCAL_FMAF(p, r, 2.4022650695910071e-01f);
  p = OTCAL_FMAF(p, r, 6.9314718055994531e-01f);
  p = OTCAL_FMAF(p, r, 1.0f);
  const std::int32_t ki = bit_cast_hd<std::int32_t>(shifted) - bit_cast_hd<std::int32_t>(kShifter);
  const std::int32_t bits = (ki + 127) << 23;
  const float scale = bit_cast_hd<float>(bits);
  return x < -126.0f ? 0.0f : p * scale;
#endif
}

}  // namespace otcal::detail
