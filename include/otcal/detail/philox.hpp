#pragma once
// Philox4x32-10 (Salmon et al., SC'11), counter-based: a draw is a pure function of the key
// (the seed) and a 128-bit counter, so it never depends on tiling, sharding or thread count
// (docs/host-layer.md §6). Counter words: (global index low 32 bits, purpose | index high bits << 16,
// epoch, draw). Shared by the CPU and CUDA backends (OTCAL_HD).
#include <cstdint>

#include "otcal/detail/hd.hpp"

namespace otcal::detail {

// What a draw is for; part of the counter so streams never overlap.
enum class RandomPurpose : std::uint32_t {
  init_noise = 1,
  dropout_mask = 2,
  l0_gate = 3,
  subsample_init = 4,
  sparsify_rows = 5,
};

struct Philox4x32 {
  std::uint32_t v[4];
};

OTCAL_HD OTCAL_INLINE void philox_mulhilo(std::uint32_t a, std::uint32_t b, std::uint32_t& hi, std::uint32_t& lo) {
  const std::uint64_t p = static_cast<std::uint64_t>(a) * static_cast<std::uint64_t>(b);
  hi = static_cast<std::uint32_t>(p >> 32);
  lo = static_cast<std::uint32_t>(p);
}

// The raw block function: 10 rounds, key schedule bumped between rounds (Random123's philox4x32_R).
OTCAL_HD OTCAL_INLINE Philox4x32 philox4x32_10(Philox4x32 ctr, std::uint32_t k0, std::uint32_t k1) {
  constexpr std::uint32_t M0 = 0xD2511F53u, M1 = 0xCD9E8D57u;
  constexpr std::uint32_t W0 = 0x9E3779B9u, W1 = 0xBB67AE85u;
  for (int round = 0; round < 10; ++round) {
    if (round > 0) {
      k0 += W0;
      k1 += W1;
    }
    std::uint32_t hi0, lo0, hi1, lo1;
    philox_mulhilo(M0, ctr.v[0], hi0, lo0);
    philox_mulhilo(M1, ctr.v[2], hi1, lo1);
    ctr = Philox4x32{{hi1 ^ ctr.v[1] ^ k0, lo1, hi0 ^ ctr.v[3] ^ k1, lo0}};
  }
  return ctr;
}

// key = seed; counter = (global index, purpose, epoch, draw).
OTCAL_HD OTCAL_INLINE Philox4x32 philox_draw(std::uint64_t seed, std::uint64_t global_index, RandomPurpose purpose,
                                             std::uint32_t epoch, std::uint32_t draw = 0) {
  const Philox4x32 ctr{{static_cast<std::uint32_t>(global_index),
                        static_cast<std::uint32_t>(purpose) | (static_cast<std::uint32_t>(global_index >> 32) << 16),
                        epoch, draw}};
  return philox4x32_10(ctr, static_cast<std::uint32_t>(seed), static_cast<std::uint32_t>(seed >> 32));
}

// Uniform in [0, 1) from the top 24 bits of the first word.
OTCAL_HD OTCAL_INLINE float uniform_float(const Philox4x32& r) {
  return static_cast<float>(r.v[0] >> 8) * (1.0f / 16777216.0f);
}

// Uniform in [0, 1) from the top 53 bits of the first two words.
OTCAL_HD OTCAL_INLINE double uniform_double(const Philox4x32& r) {
  const std::uint64_t bits = (static_cast<std::uint64_t>(r.v[0]) << 32) | r.v[1];
  return static_cast<double>(bits >> 11) * (1.0 / 9007199254740992.0);
}

OTCAL_HD OTCAL_INLINE double philox_uniform(std::uint64_t seed, std::uint64_t global_index, RandomPurpose purpose,
                                            std::uint32_t epoch, std::uint32_t draw = 0) {
  return uniform_double(philox_draw(seed, global_index, purpose, epoch, draw));
}

}  // namespace otcal::detail
