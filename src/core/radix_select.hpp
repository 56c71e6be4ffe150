#pragma once
// Exact order statistics of a multiset of floats in bounded memory by histogram refinement on the
// IEEE bit patterns (docs/sparsify.md §7.1). The values are never stored or sorted: each pass
// sweeps them again and counts the next 16 key bits of the entries that still match the candidate
// prefix. Counts are integers, so the answer does not depend on how the sweep is blocked.
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <limits>
#include <type_traits>

#include "otcal/detail/hd.hpp"
#include "core/block_backend.hpp"

namespace otcal::detail {

template <class T>
using KeyOf = std::conditional_t<sizeof(T) == 4, std::uint32_t, std::uint64_t>;

// Order-preserving key: for non-negative values the raw bits with the sign bit set, for negative
// values the complement. key(a) < key(b) iff a < b (with -0 < +0, which compare equal as values).
template <class T>
OTCAL_HD OTCAL_INLINE KeyOf<T> float_key(T v) {
  using K = KeyOf<T>;
  K bits;
  std::memcpy(&bits, &v, sizeof(T));
  constexpr K sign = K{1} << (8 * sizeof(T) - 1);
  return (bits & sign) ? static_cast<K>(~bits) : static_cast<K>(bits | sign);
}

template <class T>
inline T key_value(KeyOf<T> key) {
  using K = KeyOf<T>;
  constexpr K sign = K{1} << (8 * sizeof(T) - 1);
  const K bits = (key & sign) ? static_cast<K>(key & ~sign) : static_cast<K>(~key);
  T v;
  std::memcpy(&v, &bits, sizeof(T));
  return v;
}

// numpy's two-sided linear interpolation (docs/sparsify.md §4.5), in float64.
inline double lerp_numpy(double a, double b, double t) {
  return t < 0.5 ? a + (b - a) * t : b - (b - a) * (1 - t);
}

// Ranks (0-based) and weight of numpy's linear percentile of N values.
struct PercentileRanks {
  std::uint64_t lo = 0, hi = 0;
  double t = 0;
};
inline PercentileRanks percentile_ranks(std::uint64_t N, double value) {
  const double h = value / 100.0 * static_cast<double>(N - 1);
  PercentileRanks r;
  r.lo = static_cast<std::uint64_t>(std::floor(h));
  if (r.lo > N - 1) r.lo = N - 1;
  r.hi = r.lo + 1 < N ? r.lo + 1 : N - 1;
  r.t = h - static_cast<double>(r.lo);
  return r;
}

// A sweep calls `visit(query, bins)` for every pass; the caller runs key_histogram over all its
// blocks with that query. `bins` holds 2 * kHistogramBins counters (workspace).
using HistogramSweep = std::function<void(const KeyHistogramQuery&, std::uint64_t* bins)>;

// numpy's linear percentile (value in [0, 100]) of the swept values; +inf when there are none.
// Pass 1 histograms the top 16 key bits of every value and gives N; each further pass refines the
// (at most two) candidate prefixes of the order statistics lo and hi by the next 16 bits.
template <class T>
double exact_percentile(double value, std::uint64_t* bins, const HistogramSweep& sweep) {
  using K = KeyOf<T>;
  constexpr int total_bits = 8 * sizeof(T);
  constexpr int passes = total_bits / kHistogramBits;
  std::uint64_t rank[2] = {0, 0};
  std::uint64_t prefix[2] = {0, 0};
  double t = 0;
  for (int p = 0; p < passes; ++p) {
    KeyHistogramQuery q;
    q.shift = total_bits - kHistogramBits * (p + 1);
    int slot[2] = {0, 0};
    if (p > 0) {
      q.n_prefixes = 1;
      q.prefix[0] = prefix[0];
      if (prefix[1] != prefix[0]) {
        q.n_prefixes = 2;
        q.prefix[1] = prefix[1];
        slot[1] = 1;
      }
    }
    std::memset(bins, 0, 2 * kHistogramBins * sizeof(std::uint64_t));
    sweep(q, bins);
    if (p == 0) {
      std::uint64_t N = 0;
      for (std::size_t b = 0; b < kHistogramBins; ++b) N += bins[b];
      if (N == 0) return std::numeric_limits<double>::infinity();
      const PercentileRanks r = percentile_ranks(N, value);
      rank[0] = r.lo;
      rank[1] = r.hi;
      t = r.t;
    }
    for (int s = 0; s < 2; ++s) {
      const std::uint64_t* h = bins + static_cast<std::size_t>(slot[s]) * kHistogramBins;
      std::uint64_t cum = 0;
      std::size_t b = 0;
      for (; b < kHistogramBins - 1; ++b) {
        if (cum + h[b] > rank[s]) break;
        cum += h[b];
      }
      rank[s] -= cum;
      prefix[s] = (prefix[s] << kHistogramBits) | b;
    }
  }
  const double lo = static_cast<double>(key_value<T>(static_cast<K>(prefix[0])));
  const double hi = static_cast<double>(key_value<T>(static_cast<K>(prefix[1])));
  return lerp_numpy(lo, hi, t);
}

}  // namespace otcal::detail
