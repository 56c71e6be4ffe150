#pragma once
// TF32 rounding and the 3xTF32 split of a float32 operand, for the tensor-core inner products of
// the float32 row LSE (cuda/lse_tensor_core.cuh). TF32 is float32 with 10 explicit mantissa bits
// (the low 13 bits zero); mma.sync reads only those bits of each .tf32 operand, so an operand is
// rounded first and a float32 value v is carried as v = hi + lo (+ a remainder below 2^-22 |v|):
//   hi = tf32(v), lo = tf32(v - hi)   (v - hi is exact in float32)
// and a product as hi_a*hi_b + hi_a*lo_b + lo_a*hi_b (the lo_a*lo_b term is below 2^-22 |ab|).
// Each of the three products of 11-bit significands is exact in float32; what remains is the
// float32 accumulation, as for a plain float32 dot product.
//
// On the device the rounding is cvt.rna.tf32.f32 (round to nearest, ties away from zero); on the
// host the same rounding on the bits, so that tests can emulate the device's products exactly.
#include <cstdint>

#include "otcal/detail/exp2.hpp"  // bit_cast_hd
#include "otcal/detail/hd.hpp"

namespace otcal::detail {

inline constexpr std::uint32_t kTf32DroppedBits = 13;  // float32 has 23 explicit mantissa bits, TF32 10

// v rounded to TF32: nearest, ties away from zero, in float32's exponent range (the largest
// floats round up to inf, as the conversion does). NaN and inf pass through.
OTCAL_HD OTCAL_INLINE float tf32_round(float v) {
#if defined(__CUDA_ARCH__)
  std::uint32_t bits;
  asm("cvt.rna.tf32.f32 %0, %1;" : "=r"(bits) : "f"(v));
  return __uint_as_float(bits);
#else
  const std::uint32_t bits = bit_cast_hd<std::uint32_t>(v);
  if ((bits & 0x7f800000u) == 0x7f800000u) return v;  // inf, NaN
  // Sign and magnitude: adding half of the dropped range to the magnitude bits and truncating
  // rounds the magnitude to nearest with ties up, i.e. away from zero; a carry out of the
  // mantissa bumps the exponent, which is the correctly rounded result (up to inf).
  constexpr std::uint32_t kHalf = 1u << (kTf32DroppedBits - 1);
  constexpr std::uint32_t kKeep = ~((1u << kTf32DroppedBits) - 1u);
  return bit_cast_hd<float>((bits + kHalf) & kKeep);
#endif
}

// v = hi + lo + r with hi, lo TF32 values and |r| <= 2^-22 |v| (for finite v whose hi does not
// overflow). A NaN or inf v gives hi = v and lo = NaN, so every product carrying it is NaN or
// inf as in float32 arithmetic (a NaN coordinate must reach the LSE).
struct Tf32Pair {
  float hi;
  float lo;
};

OTCAL_HD OTCAL_INLINE Tf32Pair tf32_split(float v) {
  const float hi = tf32_round(v);
  return {hi, tf32_round(v - hi)};
}

}  // namespace otcal::detail
