// The TF32 rounding and 3xTF32 split of include/otcal/detail/tf32_split.hpp (the operands of the
// tensor-core row LSE, cuda/lse_tensor_core.cuh), on the host:
//  * tf32_round against a definition written from the values: the two TF32 neighbours of |v|
//    (10 explicit mantissa bits) and the nearer one, ties away from zero, overflow to inf; over
//    every mantissa of the smallest (subnormal), a middle and the largest binade, and random bits.
//  * tf32_split: both parts TF32, remainder below 2^-22 |v|.
//  * The 3xTF32 dot product of the device, emulated with the same functions (each product of two
//    TF32 values is exact in float32 and float64), against a float64 dot product on fresh random
//    vectors (d = 8, 64, 256, with offsets that make the coordinates large against their spread):
//    within the bounds derived below, while 1xTF32 (hi only) is far outside them, so the test
//    fails if the split is lost.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "otcal/detail/tf32_split.hpp"
#include "support/process.hpp"

namespace {

using otcal::detail::tf32_round;
using otcal::detail::tf32_split;

std::uint32_t bits_of(float v) {
  std::uint32_t b;
  std::memcpy(&b, &v, sizeof b);
  return b;
}
float float_of(std::uint32_t b) {
  float v;
  std::memcpy(&v, &b, sizeof v);
  return v;
}

// The value of a float bit pattern as a double, the pattern of +inf read as 2^128 (the first
// value past the largest finite one, where rounding overflows).
double magnitude_value(std::uint32_t mag) {
  return mag == 0x7f800000u ? std::ldexp(1.0, 128) : static_cast<double>(float_of(mag));
}

// Round to nearest TF32, ties away from zero, defined by distances: the TF32 values are the floats
// whose 13 low mantissa bits are zero; below and above |v| lie `down` and the next one, `up`.
float tf32_reference(float v) {
  const std::uint32_t b = bits_of(v);
  const std::uint32_t sign = b & 0x80000000u, mag = b & 0x7fffffffu;
  if (mag >= 0x7f800000u) return v;  // inf, NaN
  const std::uint32_t down = mag & ~0x1fffu, up = down + 0x2000u;
  const double x = static_cast<double>(std::fabs(v));
  const double below = x - magnitude_value(down), above = magnitude_value(up) - x;  // exact
  const std::uint32_t pick = above <= below ? up : down;  // a tie goes up: away from zero
  return float_of(sign | pick);
}

bool same_bits(float a, float b) { return bits_of(a) == bits_of(b); }

TEST(Tf32Split, RoundingMatchesTheDefinitionOnEveryMantissaOfThreeBinadesAndRandomBits) {
  const std::uint64_t seed = testsupport::fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::int64_t mismatches = 0;
  std::uint32_t first_bad = 0;
  auto check = [&](std::uint32_t b) {
    const float v = float_of(b);
    if (!same_bits(tf32_round(v), tf32_reference(v)) && mismatches++ == 0) first_bad = b;
  };
  for (const std::uint32_t exponent : {0u, 127u, 254u})  // subnormals, [1, 2), the top binade
    for (std::uint32_t mant = 0; mant < (1u << 23); ++mant)
      for (const std::uint32_t sign : {0u, 0x80000000u}) check(sign | (exponent << 23) | mant);
  std::mt19937 rng(static_cast<std::uint32_t>(seed));
  for (int s = 0; s < (1 << 22); ++s) check(rng());
  EXPECT_EQ(mismatches, 0) << "first at bits 0x" << std::hex << first_bad << ": got "
                           << tf32_round(float_of(first_bad)) << ", want " << tf32_reference(float_of(first_bad));

  // The cases the definition turns on, spelled out: a tie rounds away from zero on both signs,
  // one below the tie rounds down, the largest float overflows, NaN and inf pass through.
  EXPECT_EQ(tf32_round(1.0f + std::ldexp(1.0f, -11)), 1.0f + std::ldexp(1.0f, -10));
  EXPECT_EQ(tf32_round(-1.0f - std::ldexp(1.0f, -11)), -1.0f - std::ldexp(1.0f, -10));
  EXPECT_EQ(tf32_round(std::nextafter(1.0f + std::ldexp(1.0f, -11), 0.0f)), 1.0f);
  EXPECT_EQ(tf32_round(std::numeric_limits<float>::max()), std::numeric_limits<float>::infinity());
  EXPECT_TRUE(std::isnan(tf32_round(std::numeric_limits<float>::quiet_NaN())));
  EXPECT_EQ(tf32_round(-std::numeric_limits<float>::infinity()), -std::numeric_limits<float>::infinity());
}

TEST(Tf32Split, PartsAreTf32AndTheRemainderIsBelow2ToMinus22) {
  const std::uint64_t seed = testsupport::fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937 rng(static_cast<std::uint32_t>(seed));
  double worst = 0;
  for (int s = 0; s < (1 << 20); ++s) {
    // Normal values whose remainder is normal too (2^-87 .. 2^73): the bound is relative.
    const std::uint32_t exponent = 40u + rng() % 161u;
    const float v = float_of((rng() & 0x807fffffu) | (exponent << 23));
    const auto p = tf32_split(v);
    ASSERT_EQ(bits_of(p.hi) & 0x1fffu, 0u) << v;
    ASSERT_EQ(bits_of(p.lo) & 0x1fffu, 0u) << v;
    const double rest = static_cast<double>(v) - static_cast<double>(p.hi) - static_cast<double>(p.lo);  // exact
    worst = std::max(worst, std::fabs(rest) / std::fabs(static_cast<double>(v)));
  }
  // |v - hi| <= 2^-11 |v| (nearest with 11 significant bits), and lo rounds that to 11 bits again.
  EXPECT_LE(worst, std::ldexp(1.0, -22));
  EXPECT_GT(worst, std::ldexp(1.0, -24)) << "the remainder bound is not attained anywhere near: is lo rounded?";
}

// sum_k a_k b_k as the device forms it: per k, lo_a*hi_b, hi_a*lo_b, hi_a*hi_b (the order of the
// three mma.sync in cuda/lse_tensor_core.cuh) added to one accumulator, in float32 or float64.
// Each product of two TF32 values (11-bit significands) is exact in float32.
template <class Acc>
Acc dot_3xtf32(const std::vector<float>& a, const std::vector<float>& b) {
  Acc acc = 0;
  for (std::size_t k = 0; k < a.size(); ++k) {
    const auto x = tf32_split(a[k]), y = tf32_split(b[k]);
    acc += static_cast<Acc>(x.lo * y.hi);
    acc += static_cast<Acc>(x.hi * y.lo);
    acc += static_cast<Acc>(x.hi * y.hi);
  }
  return acc;
}
template <class Acc>
Acc dot_1xtf32(const std::vector<float>& a, const std::vector<float>& b) {
  Acc acc = 0;
  for (std::size_t k = 0; k < a.size(); ++k) acc += static_cast<Acc>(tf32_round(a[k]) * tf32_round(b[k]));
  return acc;
}

// Bounds (u = 2^-24, with a = hi_a + lo_a + e_a, |lo_a| <= 2^-11 (1 + 2^-11) |a|, |e_a| <= 2^-22
// |a|, the same for b):
//   ab - (lo_a hi_b + hi_a lo_b + hi_a hi_b) = hi_a e_b + lo_a lo_b + lo_a e_b + e_a b,
// at most kSplit |ab| with kSplit = 3.01 * 2^-22. Accumulating the 3d exact products:
//   float64: |error| <= (kSplit + 3d 2^-53 (1.01)) sum |a_k b_k|   (about 2^-20.4 sum |a_k b_k|)
//   float32: |error| <= (kSplit + gamma_3d) sum |a_k b_k|,   gamma_n = n u / (1 - n u)
// (sum |terms| <= (1 + 2^-10) sum |a_k b_k|, absorbed in the 3.01 and 1.01).
constexpr double kSplit = 3.01 * 0x1p-22;
double gamma(int n) { return n * 0x1p-24 / (1 - n * 0x1p-24); }

TEST(Tf32Split, ThreeProductDotIsWithinTheDerivedBoundAndOneProductIsNot) {
  const std::uint64_t seed = testsupport::fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  for (const int d : {8, 64, 256}) {
    // offset 0: zero-mean coordinates; offsets 3 and -50: coordinates far from their spread, as
    // uncentred points are; the row operand carries a kappa-like scale.
    for (const double offset : {0.0, 3.0, -50.0}) {
      SCOPED_TRACE("d " + std::to_string(d) + ", offset " + std::to_string(offset));
      std::normal_distribution<double> noise(0.0, 1.0);
      std::uniform_real_distribution<double> scale_draw(-3.0, 3.0);
      double worst3_64 = 0, worst1_64 = 0, worst3_32 = 0, worst1_32 = 0;
      const int trials = 300;
      for (int t = 0; t < trials; ++t) {
        const double scale = std::pow(10.0, scale_draw(rng));
        std::vector<float> a(static_cast<std::size_t>(d)), b(static_cast<std::size_t>(d));
        for (int k = 0; k < d; ++k) {
          a[k] = static_cast<float>(scale * (offset + noise(rng)));
          b[k] = static_cast<float>(offset + noise(rng));
        }
        double exact = 0, mass = 0;  // float64 dot of the float inputs, and sum |a_k b_k|
        for (int k = 0; k < d; ++k) {
          exact += static_cast<double>(a[k]) * static_cast<double>(b[k]);
          mass += std::fabs(static_cast<double>(a[k]) * static_cast<double>(b[k]));
        }
        // The float64 reference's own error is below 2^-53 d mass: negligible against the bounds.
        const double e3_64 = std::fabs(dot_3xtf32<double>(a, b) - exact) / mass;
        const double e3_32 = std::fabs(static_cast<double>(dot_3xtf32<float>(a, b)) - exact) / mass;
        ASSERT_LE(e3_64, kSplit + 3 * d * 0x1p-53 * 1.01) << "trial " << t << ": the split products";
        ASSERT_LE(e3_32, kSplit + gamma(3 * d)) << "trial " << t << ": float32 accumulation";
        worst3_64 = std::max(worst3_64, e3_64);
        worst3_32 = std::max(worst3_32, e3_32);
        worst1_64 = std::max(worst1_64, std::fabs(dot_1xtf32<double>(a, b) - exact) / mass);
        worst1_32 = std::max(worst1_32, std::fabs(static_cast<double>(dot_1xtf32<float>(a, b)) - exact) / mass);
      }
      // 1xTF32: each product is off by up to 2^-10 relative, so over 300 draws the worst error
      // is far above the split's bound (about 2^-12 / sqrt(d) against 2^-20.4; 9x at d = 256, the
      // closest): the bound detects a lost lo.
      EXPECT_GT(worst1_64, 4 * (kSplit + 3 * d * 0x1p-53 * 1.01)) << "1xTF32 is not clearly worse";
      EXPECT_GT(worst1_32, 8 * worst3_32) << "1xTF32 is not clearly worse in float32 either";
      std::printf("d %3d offset %5.1f: max error / sum|ab|  3xTF32 f64-acc %.2e  f32-acc %.2e  |  1xTF32 f64-acc "
                  "%.2e  f32-acc %.2e\n",
                  d, offset, worst3_64, worst3_32, worst1_64, worst1_32);
    }
  }
}

}  // namespace
