// The CUDA sparsifier (cuda/sparsify.cu) against the CPU one (the reference backend, itself tested
// against dense float64 references in the cpu suite): every mode on Context::cuda(0) vs
// Context::cpu(), for the point-cloud source (potentials of a small Sinkhorn solve) and the dense
// source, batch sizes 1, 7 and n; the streamed output through small staging buffers (pieces of
// whole rows) and through a sink equals the one-piece output; the memory contract on CUDA. Dense
// plans shaped for the warp-level kernels (ragged m, more rows than a 32-row tile, order-sensitive
// float64 sums, rows all below the cut, NaN rows) in float32 and float64, uploaded through pinned
// chunks of one row and of the default size: bitwise the CPU's output; the dense upload's pinned
// buffers are charged to the pinned budget.
// Label gpu: the binary exits 77 (skipped) where no CUDA device works (tests/support/test_main.cpp).
//
// What "equal" means across backends: the entry formula is the same float64 expression and its
// cost rounds as on the CPU (CUDA is compiled with -fmad=false, the host with -ffp-contract=off),
// but the device exp may differ from glibc's in the last ulp. So point-cloud values are compared
// to 1e-15 relative (float64: 2 ulp; one float ulp for float32 plans, whose float64 entry may round
// to the neighbouring float) and the SELECTION (indptr, indices) exactly, except that an entry
// within 1 ulp of the threshold may be kept on one backend and not on the other (such entries are
// checked to lie at the threshold). A dense source involves no exp: bitwise equal to the CPU.
// Between two CUDA runs (streamed vs not, any batch size) everything is compared bitwise.
#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "otcal/errors.hpp"
#include "otcal/memory.hpp"
#include "otcal/sinkhorn.hpp"
#include "otcal/sparsify.hpp"
#include "support/reference.hpp"

namespace {

using otcal::SparsifyMode;
using otcal::SparsifyOptions;
using otcal::SparsifyResult;

otcal::ContextOptions quiet(std::size_t budget = std::size_t{256} << 20) {
  otcal::ContextOptions o;
  o.memory_budget = budget;
  o.on_warning = [](const std::string&) {};
  return o;
}

struct Problem {
  ref::Clouds c;
  otcal::SinkhornResult r;
  otcal::PointCloud geom() const {
    otcal::PointCloud g;
    g.x = otcal::ConstMatrix::of(c.x.data(), c.n, c.d);
    g.y = otcal::ConstMatrix::of(c.y.data(), c.m, c.d);
    return g;
  }
};

// Potentials from a real (small, CPU) Sinkhorn solve in the requested precision.
Problem solved_problem(std::int64_t n, std::int64_t m, std::uint64_t seed, otcal::DType precision) {
  Problem p;
  p.c = ref::random_clouds(n, m, 3, seed);
  const auto a = ref::random_weights(n, seed + 1);
  const auto b = ref::random_weights(m, seed + 2);
  otcal::SinkhornOptions so;
  so.epsilon = 0.05;
  so.precision = precision;
  so.max_iterations = 300;
  p.r = otcal::sinkhorn(otcal::Context::cpu(quiet()), p.geom(), otcal::ConstVector::of(a.data(), n),
                        otcal::ConstVector::of(b.data(), m), so);
  return p;
}

std::vector<SparsifyOptions> every_mode(std::int64_t n) {
  std::vector<SparsifyOptions> out;
  SparsifyOptions o;
  o.mode = SparsifyMode::threshold;
  o.value = 1e-4;
  out.push_back(o);
  o = {};
  o.mode = SparsifyMode::percentile;
  o.value = 70;
  o.n_samples = n;  // sampled, every row
  out.push_back(o);
  o.n_samples = 5;  // sampled subset
  o.seed = 11;
  out.push_back(o);
  o = {};
  o.mode = SparsifyMode::percentile;
  o.value = 35;
  o.percentile_method = otcal::PercentileMethod::exact;
  out.push_back(o);
  o = {};
  o.mode = SparsifyMode::min_row;
  out.push_back(o);
  o = {};
  o.mode = SparsifyMode::mass;
  o.value = 0.8;
  out.push_back(o);
  o.value = 1.0;
  o.max_k = 4;
  out.push_back(o);
  return out;
}

double ulp_tol(otcal::DType t) { return t == otcal::DType::float32 ? 2.5e-7 : 1e-15; }

std::map<std::int64_t, double> row_entries(const otcal::CsrMatrix& c, std::int64_t r) {
  std::map<std::int64_t, double> e;
  for (auto q = c.indptr[r]; q < c.indptr[r + 1]; ++q)
    e[c.wide_indices() ? c.indices64[q] : c.indices32[q]] = c.values[q];
  return e;
}

// CUDA vs CPU under the tolerance rules of the file comment.
void expect_backends_agree(const SparsifyResult& gpu, const SparsifyResult& cpu, otcal::DType t, bool has_thr,
                           const std::string& what) {
  SCOPED_TRACE(what);
  const double tol = ulp_tol(t);
  ASSERT_EQ(gpu.csr.rows, cpu.csr.rows);
  ASSERT_EQ(gpu.csr.cols, cpu.csr.cols);
  EXPECT_EQ(gpu.n_massless_rows, cpu.n_massless_rows);
  if (has_thr) EXPECT_NEAR(gpu.threshold, cpu.threshold, 4 * tol * std::fabs(cpu.threshold));
  else EXPECT_TRUE(std::isnan(gpu.threshold));
  const double thr = cpu.threshold;
  std::int64_t borderline = 0;
  for (std::int64_t r = 0; r < cpu.csr.rows; ++r) {
    const auto g = row_entries(gpu.csr, r), c = row_entries(cpu.csr, r);
    for (const auto& [j, v] : c) {
      const auto it = g.find(j);
      if (it == g.end()) {
        ++borderline;
        EXPECT_TRUE(has_thr && std::fabs(v - thr) <= 4 * tol * thr) << "row " << r << " col " << j << " value " << v
                                                                    << " kept on the CPU only (thr " << thr << ")";
        continue;
      }
      EXPECT_NEAR(it->second, v, 2 * tol * std::fabs(v)) << "row " << r << " col " << j;
    }
    for (const auto& [j, v] : g)
      if (!c.count(j)) {
        ++borderline;
        EXPECT_TRUE(has_thr && std::fabs(v - thr) <= 4 * tol * thr) << "row " << r << " col " << j << " value " << v
                                                                    << " kept on CUDA only (thr " << thr << ")";
      }
  }
  if (borderline == 0) {
    EXPECT_EQ(gpu.csr.indptr, cpu.csr.indptr);
    EXPECT_EQ(gpu.csr.indices32, cpu.csr.indices32);
  }
}

void expect_bitwise(const SparsifyResult& a, const SparsifyResult& b, const std::string& what) {
  SCOPED_TRACE(what);
  EXPECT_EQ(a.csr.indptr, b.csr.indptr);
  EXPECT_EQ(a.csr.indices32, b.csr.indices32);
  EXPECT_EQ(a.csr.indices64, b.csr.indices64);
  ASSERT_EQ(a.csr.values.size(), b.csr.values.size());
  for (std::size_t q = 0; q < a.csr.values.size(); ++q) ASSERT_EQ(a.csr.values[q], b.csr.values[q]) << "entry " << q;
  if (!std::isnan(a.threshold) || !std::isnan(b.threshold)) EXPECT_EQ(a.threshold, b.threshold);
}

void expect_within_plan(const SparsifyResult& res, std::size_t budget) {
  EXPECT_GT(res.memory.peak_bytes, 0u);
  EXPECT_LE(res.memory.peak_bytes, res.memory.planned_peak_bytes);
  EXPECT_LE(res.memory.planned_peak_bytes, budget);
}

TEST(GpuSparsify, CloudSourceEveryModeMatchesCpu) {
  const auto seed = std::random_device{}();
  SCOPED_TRACE("seed " + std::to_string(seed));
  const auto cpu = otcal::Context::cpu(quiet());
  const auto gpu = otcal::Context::cuda(0, quiet());
  for (const auto t : {otcal::DType::float64, otcal::DType::float32}) {
    const std::int64_t n = 41, m = 67;
    const Problem p = solved_problem(n, m, seed, t);
    for (const auto& base : every_mode(n)) {
      const std::string mode = otcal::sparsify_mode_name(base.mode);
      const SparsifyResult want = otcal::sparsify(cpu, p.geom(), p.r, base);
      SparsifyResult first;
      for (const std::int64_t bs : {std::int64_t{1}, std::int64_t{7}, n}) {
        SparsifyOptions o = base;
        o.batch_size = bs;
        const SparsifyResult got = otcal::sparsify(gpu, p.geom(), p.r, o);
        const std::string what = mode + (t == otcal::DType::float32 ? " float32" : " float64") + " bs " +
                                 std::to_string(bs);
        expect_backends_agree(got, want, t, base.mode != SparsifyMode::mass, what);
        expect_within_plan(got, gpu.memory_budget());
        if (bs == 1) first = got;
        else expect_bitwise(got, first, what + " vs bs 1 (batch invariance on CUDA)");
      }
    }
  }
}

TEST(GpuSparsify, DenseSourceEveryModeMatchesCpu) {
  const auto seed = std::random_device{}();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> U(0.0, 1.0);
  const std::int64_t n = 29, m = 53;
  std::vector<double> T(static_cast<std::size_t>(n * m));
  for (auto& v : T) v = U(rng) < 0.2 ? 0.0 : U(rng);
  for (std::int64_t j = 0; j < m; ++j) T[static_cast<std::size_t>(3 * m + j)] = 0.0;  // a massless row
  for (std::int64_t j = 0; j < m; ++j) T[static_cast<std::size_t>(5 * m + j)] = 0.25;  // ties
  const auto plan = otcal::ConstMatrix::of(T.data(), n, m);
  const auto cpu = otcal::Context::cpu(quiet());
  const auto gpu = otcal::Context::cuda(0, quiet());
  for (const auto& base : every_mode(n)) {
    const SparsifyResult want = otcal::sparsify(cpu, plan, base);
    for (const std::int64_t bs : {std::int64_t{1}, std::int64_t{7}, n}) {
      SparsifyOptions o = base;
      o.batch_size = bs;
      // A dense input needs no exp: every backend must agree bitwise.
      expect_bitwise(otcal::sparsify(gpu, plan, o), want,
                     std::string("dense ") + otcal::sparsify_mode_name(base.mode) + " bs " + std::to_string(bs));
    }
  }
}

// A dense plan shaped for the warp-level kernels of cuda/sparsify.cu (row totals through 32 x 32
// tiles, the mass cut a warp per row over 32-entry segments): more rows than one tile, magnitudes
// over 8 decades per row (float64 sums that depend on their order), a row all below the threshold,
// a massless row, a row of ties, a row whose only positive entry is its last column (the ragged
// segment), a half-zero row.
template <class V>
std::vector<V> ragged_plan(std::int64_t n, std::int64_t m, std::mt19937_64& rng) {
  std::uniform_real_distribution<double> U(0.0, 1.0);
  std::vector<V> t(static_cast<std::size_t>(n * m));
  for (std::int64_t i = 0; i < n; ++i) {
    const double scale = i == 1 ? 1e-9 : std::pow(10.0, -3.0 * U(rng));  // row 1: all below 1e-4
    for (std::int64_t j = 0; j < m; ++j) {
      double v = scale * std::pow(10.0, -8.0 * U(rng));
      if (i == 2) v = 0.25;
      if (i == 3 || (i == 4 && j != m - 1) || (i == 6 && U(rng) < 0.5)) v = 0.0;
      t[static_cast<std::size_t>(i * m + j)] = static_cast<V>(v);
    }
  }
  return t;
}

std::vector<SparsifyOptions> cut_modes(std::int64_t n) {
  std::vector<SparsifyOptions> out = every_mode(n);
  SparsifyOptions o;
  o.mode = SparsifyMode::mass;
  for (const double v : {0.5, 0.9, 0.999999}) {
    o.value = v;
    o.max_k.reset();
    out.push_back(o);
    o.max_k = 40;  // a cap past the first 32-entry segment
    out.push_back(o);
  }
  o = {};
  o.mode = SparsifyMode::threshold;
  o.value = 1e-6;
  out.push_back(o);
  return out;
}

template <class V>
void expect_ragged_dense_bitwise(std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  const auto cpu = otcal::Context::cpu(quiet());
  const auto gpu = otcal::Context::cuda(0, quiet());
  const std::int64_t n = 45;  // one full 32-row tile and a ragged one
  for (const std::int64_t m : {std::int64_t{5}, std::int64_t{32}, std::int64_t{77}, std::int64_t{300}}) {
    const std::vector<V> t = ragged_plan<V>(n, m, rng);
    const auto plan = otcal::ConstMatrix::of(t.data(), n, m);
    for (const auto& base : cut_modes(n)) {
      const SparsifyResult want = otcal::sparsify(cpu, plan, base);
      for (const std::int64_t bs : {std::int64_t{1}, std::int64_t{7}, n})
        for (const std::int64_t staging : {std::int64_t{0}, m}) {  // m: the rows go up one per pinned chunk
          SparsifyOptions o = base;
          o.batch_size = bs;
          o.staging_entries = staging;
          expect_bitwise(otcal::sparsify(gpu, plan, o), want,
                         std::string(sizeof(V) == 4 ? "float32" : "float64") + " m " + std::to_string(m) + " " +
                             otcal::sparsify_mode_name(base.mode) + " value " + std::to_string(o.value.value_or(-1)) +
                             " max_k " + std::to_string(o.max_k.value_or(0)) + " bs " + std::to_string(bs) + " staging " +
                             std::to_string(staging));
        }
    }
  }
}

TEST(GpuSparsify, DenseRaggedRowsEveryModeBitwiseCpu) {
  const auto seed = std::random_device{}();
  SCOPED_TRACE("seed " + std::to_string(seed));
  expect_ragged_dense_bitwise<double>(seed);
  expect_ragged_dense_bitwise<float>(seed + 1);
}

TEST(GpuSparsify, DenseNaNRowsRaiseAsOnCpu) {
  const auto seed = std::random_device{}();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  const std::int64_t n = 45, m = 77;
  std::vector<double> t = ragged_plan<double>(n, m, rng);
  t[static_cast<std::size_t>(40 * m + m - 1)] = std::nan("");  // second tile, ragged segment
  const auto plan = otcal::ConstMatrix::of(t.data(), n, m);
  const auto cpu = otcal::Context::cpu(quiet());
  const auto gpu = otcal::Context::cuda(0, quiet());
  for (auto o : cut_modes(n)) {
    SCOPED_TRACE(otcal::sparsify_mode_name(o.mode));
    EXPECT_THROW(otcal::sparsify(cpu, plan, o), otcal::NumericalError);
    o.batch_size = 7;
    EXPECT_THROW(otcal::sparsify(gpu, plan, o), otcal::NumericalError);
  }
}

// The dense input's two pinned upload buffers are declared in the pinned budget: a budget that
// holds the output's pinned pair but not them fails with BudgetTooSmall naming a sufficient
// budget, and that budget runs (equal to the CPU).
TEST(GpuSparsify, DensePinnedUploadBuffersInPinnedBudget) {
  const auto seed = std::random_device{}();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  const std::int64_t n = 45, m = 77;
  const std::vector<double> t = ragged_plan<double>(n, m, rng);
  const auto plan = otcal::ConstMatrix::of(t.data(), n, m);
  SparsifyOptions o;
  o.value = 1e-5;
  o.staging_entries = 3 * m;  // output pair 2 x 3m x (4 + 8) bytes, upload pair 2 x 3m x 8 bytes
  const std::size_t output_pair = 2 * otcal::align_up(static_cast<std::size_t>(3 * m) * 12);
  const std::size_t upload_pair = 2 * otcal::align_up(static_cast<std::size_t>(3 * m) * 8);
  auto with_pinned = [](std::size_t bytes) {
    otcal::ContextOptions c = quiet();
    c.pinned_budget = bytes;
    return otcal::Context::cuda(0, c);
  };
  const SparsifyResult want = otcal::sparsify(otcal::Context::cpu(quiet()), plan, o);
  try {
    otcal::sparsify(with_pinned(output_pair + upload_pair - 1), plan, o);
    ADD_FAILURE() << "expected BudgetTooSmall";
  } catch (const otcal::BudgetTooSmall& e) {
    EXPECT_NE(std::string(e.what()).find("dense"), std::string::npos) << e.what();
    EXPECT_GE(e.required_bytes(), output_pair + upload_pair);
    expect_bitwise(otcal::sparsify(with_pinned(e.required_bytes()), plan, o), want, "named pinned budget");
  }
}

TEST(GpuSparsify, StreamedPiecesEqualOnePieceOutput) {
  const auto seed = std::random_device{}();
  SCOPED_TRACE("seed " + std::to_string(seed));
  const std::int64_t n = 37, m = 59;
  const Problem p = solved_problem(n, m, seed, otcal::DType::float64);
  const auto gpu = otcal::Context::cuda(0, quiet());
  for (auto o : every_mode(n)) {
    const std::string mode = otcal::sparsify_mode_name(o.mode);
    o.batch_size = 9;
    o.staging_entries = n * m;  // every block leaves as one piece
    const SparsifyResult whole = otcal::sparsify(gpu, p.geom(), p.r, o);
    o.staging_entries = m;  // the minimum: pieces of whole rows, both staging buffers in turn
    const SparsifyResult pieces = otcal::sparsify(gpu, p.geom(), p.r, o);
    expect_bitwise(pieces, whole, mode + " cap = m");
    // Out of core: the pieces handed to a sink reassemble the in-memory result.
    SparsifyResult sunk_view = whole;
    sunk_view.csr.indices32.clear();
    sunk_view.csr.values.clear();
    std::int64_t next_row = 0;
    o.sink = [&](const otcal::CsrPiece& piece) {
      EXPECT_EQ(piece.row_offset, next_row);
      next_row += piece.rows;
      sunk_view.csr.indices32.insert(sunk_view.csr.indices32.end(), piece.indices32, piece.indices32 + piece.nnz);
      sunk_view.csr.values.insert(sunk_view.csr.values.end(), piece.values, piece.values + piece.nnz);
    };
    const SparsifyResult sunk = otcal::sparsify(gpu, p.geom(), p.r, o);
    EXPECT_EQ(next_row, n);
    EXPECT_EQ(sunk.csr.indptr, whole.csr.indptr);
    expect_bitwise(sunk_view, whole, mode + " sink");
  }
  SparsifyOptions bad;
  bad.value = 0.1;
  bad.staging_entries = m - 1;  // below one row
  EXPECT_THROW(otcal::sparsify(gpu, p.geom(), p.r, bad), otcal::InvalidArgument);
}

TEST(GpuSparsify, MemoryContractAndTooSmallBudget) {
  const auto seed = std::random_device{}();
  SCOPED_TRACE("seed " + std::to_string(seed));
  const std::int64_t n = 60, m = 3000;
  const Problem p = solved_problem(n, m, seed, otcal::DType::float64);
  for (auto o : every_mode(n)) {
    const std::size_t budget = std::size_t{48} << 20;
    const auto gpu = otcal::Context::cuda(0, quiet(budget));
    const SparsifyResult res = otcal::sparsify(gpu, p.geom(), p.r, o);
    expect_within_plan(res, budget);
    // Fewest tiles (host-layer.md §3): 60 rows of 3000 columns (a 1.4 MB block plus the staging
    // buffers and per-row state) fit 48 MiB at once, so the plan is one block of all n rows.
    EXPECT_EQ(res.batch_size, res.plan.rows);
    EXPECT_EQ(res.plan.n_tiles, 1);
    EXPECT_EQ(res.batch_size, n) << otcal::sparsify_mode_name(o.mode);
  }
  SparsifyOptions o;
  o.value = 1e-3;
  const std::size_t tiny = 100000;  // below the staging buffers and one row
  try {
    otcal::sparsify(otcal::Context::cuda(0, quiet(tiny)), p.geom(), p.r, o);
    ADD_FAILURE() << "expected BudgetTooSmall";
  } catch (const otcal::BudgetTooSmall& e) {
    EXPECT_GT(e.required_bytes(), tiny);
    EXPECT_NE(std::string(e.what()).find(std::to_string(e.required_bytes())), std::string::npos) << e.what();
    const auto enough = otcal::Context::cuda(0, quiet(e.required_bytes()));
    const SparsifyResult res = otcal::sparsify(enough, p.geom(), p.r, o);
    expect_within_plan(res, e.required_bytes());
    // The named minimum is the budget for one row (exactly: a second 3000-column row would not
    // fit the few bytes of slack), so the sweep runs one row per block.
    EXPECT_EQ(res.batch_size, 1);
    EXPECT_EQ(res.plan.n_tiles, n);
    // One byte less fails before anything is allocated.
    EXPECT_THROW(otcal::sparsify(otcal::Context::cuda(0, quiet(e.required_bytes() - 1)), p.geom(), p.r, o),
                 otcal::BudgetTooSmall);
  }
}

}  // namespace
