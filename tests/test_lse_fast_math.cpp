// The fast squared-Euclidean row LSE (cuda/lse_fast.cuh) emulated on the CPU with the same
// OTCAL_HD functions (include/otcal/detail/lse_fast_math.hpp): per row the bias form centred on
// y_0, the chunk sums against a stale reference with the cold path, parts of whole chunks merged in
// part order, fused or split into tiles. The float32 exp2 stand-in is std::exp2 rounded to float
// and flushed below 2^-126 (the device's ex2.approx.ftz is within 2^-22 of it).
//
// Compared with a float64 dense reference ln sum_j exp(h_j/eps - |x_i - y_j|^2/(eps s)) on fresh
// random clouds (d = 1, 3, 8; near the origin and offset by 1e3; eps from 1e-3 to 1 of the mean
// cost; -inf columns), and for NaN, all -inf and rising (cold path) inputs.
//
// Error bound, per row, in natural-log units (eps_T = 2^-24 float32, 2^-53 float64). In log2 units
// each exponent t'_ij of the emulation differs from the exact one by at most
//   eps_T * [ 2 kappa sum_k |u_k - v_k| (|u_k| + |v_k|)     rounding of u = x - c, v = y - c
//           + (D + 1) (|b_j| + sum_k |a_k v_k|)              rounding of b, a and the D FMAs
//           + 200 ]                                          t' - ref (|t' - ref| <= 190 for any
//                                                            term above the flush threshold)
// and the LSE of perturbed exponents moves by at most the largest perturbation (a weighted mean).
// The sum adds a relative eps_T * (32 + 4) (32-term chunk sums in T, exp2 within 4 ulp), and the
// result is rounded to T once (eps_T |out|). The assertion allows twice that sum (the float64
// reference has rounding errors of the same order as the float64 emulation).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "otcal/detail/lse_fast_math.hpp"
#include "support/process.hpp"

namespace {

using namespace otcal::detail;

constexpr int kChunk = 32;  // the kernel's chunk (cuda/row_engine.cuh kChunk)
constexpr double kInf = std::numeric_limits<double>::infinity();

using testsupport::fresh_seed;  // OTCAL_TEST_SEED replays a reported seed

template <class T>
constexpr double unit_roundoff() {
  return std::is_same_v<T, float> ? 0x1p-24 : 0x1p-53;
}

// A problem in the kernel's input precision T: x [n, d], y [m, d] row-major, h [m].
template <class T>
struct Problem {
  int d = 0;
  std::int64_t n = 0, m = 0;
  std::vector<T> x, y, h;
  double eps = 1, inv_scale = 1;
};

struct Emulated {
  std::vector<double> out;  // as T, widened
  std::int64_t cold = 0;    // chunks that took the cold path (all rows)
};

// The kernel's per-row algorithm. `chunks_per_part` fixes the column parts (a function of m only
// in the backend); `tile` rows share one pass; `split` stores each part's partial and merges the
// parts after the tile, in part order, as lse_merge_parts_kernel does.
template <int D, class T>
Emulated emulate(const Problem<T>& p, std::int64_t chunks_per_part, std::int64_t tile, bool split) {
  const LseFastScales k = lse_fast_scales(p.eps, p.inv_scale);
  const std::int64_t chunks = (p.m + kChunk - 1) / kChunk;
  const std::int64_t parts = std::max<std::int64_t>(1, (chunks + chunks_per_part - 1) / chunks_per_part);
  T c[D];
  for (int q = 0; q < D; ++q) c[q] = p.y[q];
  // Staged columns: v then b; padding v = 0, b = -inf.
  const std::int64_t padded = chunks * kChunk;
  std::vector<T> col(static_cast<std::size_t>(padded * (D + 1)), T(0));
  for (std::int64_t j = 0; j < padded; ++j) {
    T* v = &col[static_cast<std::size_t>(j * (D + 1))];
    if (j < p.m) {
      for (int q = 0; q < D; ++q) v[q] = T(p.y[static_cast<std::size_t>(j * D + q)] - c[q]);
      v[D] = lse_fast_bias(p.h[static_cast<std::size_t>(j)], v, D, k);
    } else {
      v[D] = -std::numeric_limits<T>::infinity();
    }
  }
  Emulated e;
  e.out.assign(static_cast<std::size_t>(p.n), 0.0);
  std::vector<LseState> state;
  for (std::int64_t t0 = 0; t0 < p.n; t0 += tile) {
    const std::int64_t count = std::min(tile, p.n - t0);
    state.assign(static_cast<std::size_t>(parts * count), LseState{});
    for (std::int64_t r = 0; r < count; ++r) {
      const std::int64_t i = t0 + r;
      T u[D], a[D];
      for (int q = 0; q < D; ++q) u[q] = T(p.x[static_cast<std::size_t>(i * D + q)] - c[q]);
      const double row_const = lse_fast_row(u, D, k, a);
      LseState total = lse_empty();
      for (std::int64_t part = 0; part < parts; ++part) {
        LseFastState<T> st = lse_fast_empty<T>();
        for (std::int64_t ch = part * chunks_per_part; ch < std::min(chunks, (part + 1) * chunks_per_part); ++ch) {
          const T* chunk = &col[static_cast<std::size_t>(ch * kChunk * (D + 1))];
          T s = T(0);
          for (int jj = 0; jj < kChunk; ++jj) {
            const T* v = chunk + jj * (D + 1);
            s += lse_fast_exp2(T(lse_fast_exponent<D>(v[D], a, v) - st.ref));
          }
          if (lse_fast_accept(st, s)) continue;
          ++e.cold;
          T mx = -std::numeric_limits<T>::infinity();
          for (int jj = 0; jj < kChunk; ++jj) {
            const T* v = chunk + jj * (D + 1);
            mx = lse_fast_max(mx, lse_fast_exponent<D>(v[D], a, v));
          }
          T cs = T(0);
          if (mx > -std::numeric_limits<T>::infinity())
            for (int jj = 0; jj < kChunk; ++jj) {
              const T* v = chunk + jj * (D + 1);
              cs += lse_fast_exp2(T(lse_fast_exponent<D>(v[D], a, v) - mx));
            }
          lse_fast_merge(st, mx, cs);
        }
        const LseState partial = lse_fast_partial(st, row_const);
        if (split) state[static_cast<std::size_t>(part * count + r)] = partial;
        else lse_merge(total, partial.max, partial.sum);
      }
      if (!split) e.out[static_cast<std::size_t>(i)] = static_cast<double>(static_cast<T>(lse_natural(total)));
    }
    if (split)
      for (std::int64_t r = 0; r < count; ++r) {
        LseState total = lse_empty();
        for (std::int64_t part = 0; part < parts; ++part) {
          const LseState& s = state[static_cast<std::size_t>(part * count + r)];
          lse_merge(total, s.max, s.sum);
        }
        e.out[static_cast<std::size_t>(t0 + r)] = static_cast<double>(static_cast<T>(lse_natural(total)));
      }
  }
  return e;
}

template <class T>
Emulated emulate_d(const Problem<T>& p, std::int64_t chunks_per_part, std::int64_t tile, bool split) {
  switch (p.d) {
    case 1: return emulate<1>(p, chunks_per_part, tile, split);
    case 3: return emulate<3>(p, chunks_per_part, tile, split);
    default: return emulate<8>(p, chunks_per_part, tile, split);
  }
}

// ln sum_j exp(h_j/eps - |x_i - y_j|^2/(eps s)) in float64 from the T inputs.
template <class T>
std::vector<double> reference(const Problem<T>& p) {
  std::vector<double> out(static_cast<std::size_t>(p.n));
  std::vector<double> z(static_cast<std::size_t>(p.m));
  for (std::int64_t i = 0; i < p.n; ++i) {
    double mx = -kInf;
    bool nan = false;
    for (std::int64_t j = 0; j < p.m; ++j) {
      double cost = 0;
      for (int q = 0; q < p.d; ++q) {
        const double diff = static_cast<double>(p.x[static_cast<std::size_t>(i * p.d + q)]) -
                            static_cast<double>(p.y[static_cast<std::size_t>(j * p.d + q)]);
        cost += diff * diff;
      }
      z[static_cast<std::size_t>(j)] = static_cast<double>(p.h[static_cast<std::size_t>(j)]) / p.eps - cost * p.inv_scale / p.eps;
      nan = nan || std::isnan(z[static_cast<std::size_t>(j)]);
      mx = std::max(mx, z[static_cast<std::size_t>(j)]);
    }
    if (nan) {
      out[static_cast<std::size_t>(i)] = std::numeric_limits<double>::quiet_NaN();
      continue;
    }
    if (mx == -kInf) {
      out[static_cast<std::size_t>(i)] = -kInf;
      continue;
    }
    double s = 0;
    for (std::int64_t j = 0; j < p.m; ++j) s += std::exp(z[static_cast<std::size_t>(j)] - mx);
    out[static_cast<std::size_t>(i)] = mx + std::log(s);
  }
  return out;
}

// The error bound of the file comment for row i.
template <class T>
double bound(const Problem<T>& p, std::int64_t i, double out) {
  const double kappa = kLog2e / p.eps * p.inv_scale, ut = unit_roundoff<T>();
  double worst = 0;
  for (std::int64_t j = 0; j < p.m; ++j) {
    const double hj = static_cast<double>(p.h[static_cast<std::size_t>(j)]);
    if (hj == -kInf) continue;
    double centring = 0, dot = 0, v2 = 0;
    for (int q = 0; q < p.d; ++q) {
      const double c = static_cast<double>(p.y[static_cast<std::size_t>(q)]);
      const double u = static_cast<double>(p.x[static_cast<std::size_t>(i * p.d + q)]) - c;
      const double v = static_cast<double>(p.y[static_cast<std::size_t>(j * p.d + q)]) - c;
      centring += std::fabs(u - v) * (std::fabs(u) + std::fabs(v));
      dot += 2 * kappa * std::fabs(u * v);
      v2 += v * v;
    }
    const double b = std::fabs(hj * kLog2e / p.eps - kappa * v2);
    worst = std::max(worst, 2 * kappa * centring + (p.d + 1) * (b + dot) + 200);
  }
  return 2 * (kLn2 * ut * worst + ut * 36 + ut * std::fabs(out));
}

template <class T>
Problem<T> random_problem(std::mt19937_64& rng, int d, std::int64_t n, std::int64_t m, double offset, double eps_rel,
                          double neg_inf_fraction) {
  Problem<T> p;
  p.d = d;
  p.n = n;
  p.m = m;
  std::normal_distribution<double> g(0.0, 1.0);
  std::uniform_real_distribution<double> u01(0.0, 1.0);
  p.x.resize(static_cast<std::size_t>(n * d));
  p.y.resize(static_cast<std::size_t>(m * d));
  for (auto& v : p.x) v = static_cast<T>(offset + g(rng));
  for (auto& v : p.y) v = static_cast<T>(offset + 0.5 + 0.7 * g(rng));
  const double mean_cost = 2.0 * d;  // about E|x - y|^2
  p.inv_scale = 1.0 / (0.5 + u01(rng));
  p.eps = eps_rel * mean_cost * p.inv_scale;
  p.h.resize(static_cast<std::size_t>(m));
  for (auto& v : p.h)
    v = u01(rng) < neg_inf_fraction ? -std::numeric_limits<T>::infinity()
                                    : static_cast<T>(0.3 * mean_cost * p.inv_scale * g(rng));
  return p;
}

template <class T>
class LseFastMath : public ::testing::Test {};

using Types = ::testing::Types<float, double>;
TYPED_TEST_SUITE(LseFastMath, Types);

// Random clouds against the float64 dense reference, within the bound, and the same bits for
// every tile size and for the fused and split paths.
TYPED_TEST(LseFastMath, MatchesDenseReferenceWithinBoundAndBatchInvariant) {
  using T = TypeParam;
  const std::uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  double worst_ratio = 0, worst_err = 0, worst_far = 0;
  for (const int d : {1, 3, 8})
    for (const double offset : {0.0, 1e3})
      for (const double eps_rel : {1e-3, 1e-2, 0.1, 1.0}) {
        SCOPED_TRACE("d " + std::to_string(d) + " offset " + std::to_string(offset) + " eps_rel " +
                     std::to_string(eps_rel));
        const std::int64_t n = 37, m = 333;  // 11 chunks, the last one partial; 3 parts of 4 chunks
        const Problem<T> p = random_problem<T>(rng, d, n, m, offset, eps_rel, 0.1);
        const std::vector<double> want = reference(p);
        const Emulated fused = emulate_d(p, 4, n, false);
        for (std::int64_t i = 0; i < n; ++i) {
          ASSERT_TRUE(std::isfinite(want[static_cast<std::size_t>(i)]));
          const double err = std::fabs(fused.out[static_cast<std::size_t>(i)] - want[static_cast<std::size_t>(i)]);
          const double tol = bound(p, i, want[static_cast<std::size_t>(i)]);
          EXPECT_LE(err, tol) << "row " << i;
          worst_ratio = std::max(worst_ratio, err / tol);
          if (offset == 0.0 && eps_rel == 1.0) worst_err = std::max(worst_err, err);
          if (offset != 0.0 && eps_rel == 1.0) worst_far = std::max(worst_far, err);
        }
        for (const std::int64_t tile : {std::int64_t{1}, std::int64_t{7}, n})
          for (const bool split : {false, true}) {
            const Emulated e = emulate_d(p, 4, tile, split);
            EXPECT_EQ(0, std::memcmp(e.out.data(), fused.out.data(), fused.out.size() * sizeof(double)))
                << "tile " << tile << (split ? " split" : " fused");
          }
      }
  std::printf("worst error / bound %.3g; worst error at eps = mean cost: %.3g (offset 0), %.3g (offset 1e3)\n",
              worst_ratio, worst_err, worst_far);
}

// Exponents that rise by more than 64 from chunk to chunk send every chunk through the cold path;
// the result still matches the reference.
TYPED_TEST(LseFastMath, RisingChunksTakeTheColdPathAndStayExact) {
  using T = TypeParam;
  const std::uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  for (const int d : {1, 3, 8}) {
    Problem<T> p = random_problem<T>(rng, d, 9, 200, 0.0, 0.1, 0.0);
    // h_j / eps rises by 3 (nats) per column: about 138 in log2 units per chunk of 32.
    for (std::int64_t j = 0; j < p.m; ++j) p.h[static_cast<std::size_t>(j)] += static_cast<T>(3.0 * p.eps * j);
    const Emulated e = emulate_d(p, 4, p.n, false);
    EXPECT_GE(e.cold, p.n * (p.m / kChunk)) << "every full chunk of every row should be cold";
    const std::vector<double> want = reference(p);
    for (std::int64_t i = 0; i < p.n; ++i)
      EXPECT_LE(std::fabs(e.out[static_cast<std::size_t>(i)] - want[static_cast<std::size_t>(i)]),
                bound(p, i, want[static_cast<std::size_t>(i)]))
          << "row " << i;
  }
}

// NaN coordinates poison their row, a NaN potential every row (in any chunk or part); all -inf
// potentials give -inf; -inf columns and padding add nothing.
TYPED_TEST(LseFastMath, NanAndNegativeInfinity) {
  using T = TypeParam;
  const std::uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  const T nan = std::numeric_limits<T>::quiet_NaN();
  for (const int d : {1, 3, 8}) {
    SCOPED_TRACE("d " + std::to_string(d));
    const Problem<T> base = random_problem<T>(rng, d, 11, 300, 0.0, 0.1, 0.1);

    Problem<T> row_nan = base;
    row_nan.x[static_cast<std::size_t>(4 * d + d - 1)] = nan;
    const Emulated e1 = emulate_d(row_nan, 4, row_nan.n, false);
    for (std::int64_t i = 0; i < base.n; ++i)
      EXPECT_EQ(std::isnan(e1.out[static_cast<std::size_t>(i)]), i == 4) << "row " << i;

    for (const std::int64_t j : {std::int64_t{0}, std::int64_t{31}, std::int64_t{128}, std::int64_t{299}}) {
      Problem<T> col_nan = base;
      col_nan.h[static_cast<std::size_t>(j)] = nan;
      for (const bool split : {false, true}) {
        const Emulated e2 = emulate_d(col_nan, 4, 3, split);
        for (std::int64_t i = 0; i < base.n; ++i)
          EXPECT_TRUE(std::isnan(e2.out[static_cast<std::size_t>(i)])) << "column " << j << " row " << i;
      }
    }

    Problem<T> empty = base;
    for (auto& h : empty.h) h = -std::numeric_limits<T>::infinity();
    const Emulated e3 = emulate_d(empty, 4, empty.n, false);
    for (std::int64_t i = 0; i < base.n; ++i) EXPECT_EQ(e3.out[static_cast<std::size_t>(i)], -kInf) << "row " << i;

    // A single live column, in the last (partial) chunk: exactly its exponent up to the bound.
    Problem<T> one = empty;
    one.h[static_cast<std::size_t>(one.m - 1)] = T(0.25);
    const Emulated e4 = emulate_d(one, 4, one.n, true);
    const std::vector<double> want = reference(one);
    for (std::int64_t i = 0; i < base.n; ++i)
      EXPECT_LE(std::fabs(e4.out[static_cast<std::size_t>(i)] - want[static_cast<std::size_t>(i)]),
                bound(one, i, want[static_cast<std::size_t>(i)]))
          << "row " << i;
  }
}

}  // namespace
