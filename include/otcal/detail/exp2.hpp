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

// Always inlined into the host's vector loops: a call there makes the loop scalar, and GCC's
// inliner left the float64 one out of line in some builds (3x slower LSE).
#if defined(__CUDACC__) || !defined(__GNUC__)
#define OTCAL_EXP2_INLINE OTCAL_INLINE
#else
#define OTCAL_EXP2_INLINE inline __attribute__((always_inline))
#endif

template <class To, class From>
OTCAL_HD OTCAL_EXP2_INLINE To bit_cast_hd(From v) {
  To out;
  std::memcpy(&out, &v, sizeof(To));
  return out;
}

// 2^x for x <= 0 (the argument is always value - running max). Returns exactly 0 below the
// normal range, including for -inf. Relative error about 2 ulp.
OTCAL_HD OTCAL_EXP2_INLINE double exp2_nonpositive(double x) {
#if defined(__CUDA_ARCH__)
  return ::exp2(x);
#else
  // Round to nearest through the 1.5*2^52 shifter: the integer lands in the low mantissa bits,
  // so k and 2^k come from plain adds and shifts that vectorise on AVX2 too.
  constexpr double kShifter = 6755399441055744.0;
  // Below the normal range the argument goes to -1023, where 2^k has all-zero bits, so the
  // product below is exactly 0 with no second select. GCC still folds the constant argument into
  // a branch around the polynomial; it if-converts (vectorises) that only when FP operations may
  // be speculated, hence -fno-trapping-math on the library (CMakeLists.txt).
  const double xc = x < -1022.0 ? -1023.0 : x;
  const double shifted = xc + kShifter;
  const double k = shifted - kShifter;
  const double r = xc - k;  // [-0.5, 0.5]; 0 at the floor
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
  return p * scale;
#endif
}

// The float32 twin: the same reduction, a polynomial of float32 accuracy. Minimax (relative
// error) of degree 6 on [-0.5, 0.5] with p(0) = 1 exactly, coefficients rounded to float32:
// approximation error 2.0e-9 (0.03 ulp), so the error is the rounding of the FMA chain: at most
// 0.952 ulp against std::exp2 in long double over every float of [-126, 0] (checked once,
// exhaustively, on AVX2 + FMA), tested below 1.5 ulp (tests/test_cpu_exp2.cpp). Results below
// 2^-126 are flushed to 0 (no subnormals), -inf gives 0 and NaN gives NaN, as in float64.
OTCAL_HD OTCAL_EXP2_INLINE float exp2_nonpositive(float x) {
#if defined(__CUDA_ARCH__)
  return ::exp2f(x);
#else
  constexpr float kShifter = 12582912.0f;  // 1.5 * 2^23
  const float xc = x < -126.0f ? -127.0f : x;  // 2^-127 -> zero bits: see the float64 version
  const float shifted = xc + kShifter;
  const float k = shifted - kShifter;
  const float r = xc - k;  // [-0.5, 0.5]
  float p = 0x1.41fbbep-13f;
  p = OTCAL_FMAF(p, r, 0x1.5f3e54p-10f);
  p = OTCAL_FMAF(p, r, 0x1.3b2d4cp-7f);
  p = OTCAL_FMAF(p, r, 0x1.c6aee8p-5f);
  p = OTCAL_FMAF(p, r, 0x1.ebfbdcp-3f);
  p = OTCAL_FMAF(p, r, 0x1.62e430p-1f);
  p = OTCAL_FMAF(p, r, 1.0f);
  const std::int32_t ki = bit_cast_hd<std::int32_t>(shifted) - bit_cast_hd<std::int32_t>(kShifter);
  const std::int32_t bits = (ki + 127) << 23;
  const float scale = bit_cast_hd<float>(bits);
  return p * scale;
#endif
}

}  // namespace otcal::detail
