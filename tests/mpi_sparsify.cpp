// Sparsify sharded over MPI ranks (run by ctest with 1 to 4 ranks) against the same call in one
// process on every rank: each rank's CSR rows are the corresponding rows of the one-process CSR
// bit for bit, in every mode, float32 and float64, shards that do not divide evenly; the .npz the
// ranks stream to rank 0, and the per-rank pieces once merged, are byte-identical to the
// one-process file; an error on one rank stops every rank with the same message.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>

#include "io/npz.hpp"
#include "otcal/otcal.hpp"
#include "support/mpi_support.hpp"
#include "support/process.hpp"
#include "support/reference.hpp"

namespace {

using namespace otcal;
using testsupport::distributed_cpu;
using testsupport::one_process_cpu;
using testsupport::world;



// Random clouds and potentials (a few rows massless: f = -inf).
struct Inputs {
  ref::Clouds clouds;
  SinkhornResult r;
  PointCloud geom() const {
    PointCloud g;
    g.x = ConstMatrix::of(clouds.x.data(), clouds.n, clouds.d);
    g.y = ConstMatrix::of(clouds.y.data(), clouds.m, clouds.d);
    return g;
  }
};

Inputs random_inputs(index_t n, index_t m, DType precision, std::uint64_t seed) {
  Inputs in;
  in.clouds = ref::random_clouds(n, m, 3, seed);
  std::mt19937_64 rng(seed + 1);
  std::normal_distribution<double> N(0.0, 0.3);
  SinkhornResult& r = in.r;
  r.n = n;
  r.m = m;
  r.d = 3;
  r.f.resize(static_cast<std::size_t>(n));
  r.g.resize(static_cast<std::size_t>(m));
  for (double& v : r.f) v = N(rng);
  for (double& v : r.g) v = N(rng);
  for (int k = 0; k < 3; ++k) r.f[static_cast<std::size_t>(rng() % static_cast<std::uint64_t>(n))] = -HUGE_VAL;
  r.epsilon = 0.4;
  r.scale = 2.5;
  r.reg_ot_cost = 0.75;
  r.converged = true;
  r.precision = precision;
  if (precision == DType::float32) {  // potentials a float32 solve could have returned
    for (double& v : r.f) v = static_cast<float>(v);
    for (double& v : r.g) v = static_cast<float>(v);
  }
  return in;
}

// Rows [begin, begin + rows) of a CSR matrix as a CSR matrix of their own.
CsrMatrix rows_of(const CsrMatrix& a, index_t begin, index_t rows) {
  CsrMatrix s;
  s.rows = rows;
  s.cols = a.cols;
  s.dtype = a.dtype;
  const std::int64_t base = a.indptr[static_cast<std::size_t>(begin)];
  for (index_t r = 0; r <= rows; ++r) s.indptr.push_back(a.indptr[static_cast<std::size_t>(begin + r)] - base);
  const std::int64_t end = a.indptr[static_cast<std::size_t>(begin + rows)];
  s.indices32.assign(a.indices32.begin() + base, a.indices32.begin() + end);
  s.values.assign(a.values.begin() + base, a.values.begin() + end);
  return s;
}

void expect_same_csr(const CsrMatrix& got, const CsrMatrix& want) {
  EXPECT_EQ(got.rows, want.rows);
  EXPECT_EQ(got.cols, want.cols);
  EXPECT_EQ(got.dtype, want.dtype);
  EXPECT_EQ(got.indptr, want.indptr);
  EXPECT_EQ(got.indices32, want.indices32);
  EXPECT_TRUE(testsupport::bitwise_equal(got.values, want.values)) << "values differ";
}

struct Case {
  const char* name;
  SparsifyMode mode;
  std::optional<double> value;
  PercentileMethod method = PercentileMethod::sampled;
  std::optional<index_t> max_k;
  DType precision = DType::float64;
};

class ShardedSparsify : public ::testing::TestWithParam<Case> {};

// The rank's rows equal the one-process rows bitwise; threshold, counts and warnings agree.
TEST_P(ShardedSparsify, RowsEqualOneProcessBitwise) {
  const Case c = GetParam();
  const std::uint64_t seed = testsupport::shared_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  const index_t n = 1000, m = 300;  // 1000 rows do not split evenly over 3 or 4 ranks
  const Inputs in = random_inputs(n, m, c.precision, seed);
  SparsifyOptions o;
  o.mode = c.mode;
  o.value = c.value;
  o.percentile_method = c.method;
  o.max_k = c.max_k;
  o.seed = seed;
  o.n_samples = 200;  // sampled rows fall on every rank
  if (c.method == PercentileMethod::exact) o.n_samples.reset();
  o.batch_size = 37;  // several blocks per shard, another tiling than the one-process run's

  const Context dctx = distributed_cpu();
  const Problem dp = Problem::upload(dctx, in.geom(), {}, {}, c.precision);
  const SparsifyResult d = sparsify(dp, in.r, o);
  o.batch_size.reset();
  const SparsifyResult one = sparsify(one_process_cpu(), in.geom(), in.r, o);

  const Shard own = shard_rows(n, world()->rank(), world()->size());
  EXPECT_EQ(d.row_offset, own.begin);
  EXPECT_EQ(d.rows_total, n);
  EXPECT_EQ(d.nnz_total, one.csr.nnz());
  EXPECT_GT(one.csr.nnz(), 0);
  EXPECT_LT(one.csr.nnz(), n * m);
  EXPECT_EQ(std::memcmp(&d.threshold, &one.threshold, sizeof(double)), 0) << d.threshold << " vs " << one.threshold;
  EXPECT_EQ(d.n_massless_rows, one.n_massless_rows);
  EXPECT_EQ(d.warnings, one.warnings);
  expect_same_csr(d.csr, rows_of(one.csr, own.begin, own.size()));
  EXPECT_LE(d.memory.peak_bytes, d.memory.planned_peak_bytes);
}

INSTANTIATE_TEST_SUITE_P(
    Modes, ShardedSparsify,
    ::testing::Values(Case{"threshold64", SparsifyMode::threshold, 1e-3},
                      Case{"threshold32", SparsifyMode::threshold, 1e-3, {}, {}, DType::float32},
                      Case{"min_row64", SparsifyMode::min_row, {}},
                      Case{"min_row32", SparsifyMode::min_row, {}, {}, {}, DType::float32},
                      Case{"sampled64", SparsifyMode::percentile, 90.0},
                      Case{"sampled32", SparsifyMode::percentile, 75.0, {}, {}, DType::float32},
                      Case{"exact64", SparsifyMode::percentile, 90.0, PercentileMethod::exact},
                      Case{"exact32", SparsifyMode::percentile, 60.0, PercentileMethod::exact, {}, DType::float32},
                      Case{"mass64", SparsifyMode::mass, 0.9, {}, index_t{40}},
                      Case{"mass32", SparsifyMode::mass, 0.5, {}, {}, DType::float32}),
    [](const ::testing::TestParamInfo<Case>& i) { return std::string(i.param.name); });

// A sink on a rank sees its own rows, numbered globally, in order.
TEST(ShardedSparsifySink, PiecesCarryGlobalRows) {
  const std::uint64_t seed = testsupport::shared_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  const index_t n = 701, m = 90;
  const Inputs in = random_inputs(n, m, DType::float64, seed);
  SparsifyOptions o;
  o.mode = SparsifyMode::percentile;
  o.value = 80.0;
  o.percentile_method = PercentileMethod::exact;
  o.batch_size = 50;
  const SparsifyResult one = sparsify(one_process_cpu(), in.geom(), in.r, o);
  const Shard own = shard_rows(n, world()->rank(), world()->size());
  index_t next = own.begin;
  const Problem dp = Problem::upload(distributed_cpu(), in.geom());
  o.sink = [&](const CsrPiece& p) {
    ASSERT_EQ(p.row_offset, next);
    const CsrMatrix want = rows_of(one.csr, p.row_offset, p.rows);
    ASSERT_EQ(p.nnz, want.nnz());
    EXPECT_EQ(std::vector<std::int64_t>(p.indptr, p.indptr + p.rows + 1), want.indptr);
    EXPECT_EQ(std::vector<std::int32_t>(p.indices32, p.indices32 + p.nnz), want.indices32);
    EXPECT_TRUE(testsupport::bitwise_equal(std::vector<double>(p.values, p.values + p.nnz), want.values));
    next += p.rows;
  };
  const SparsifyResult d = sparsify(dp, in.r, o);
  EXPECT_EQ(next, own.end);
  EXPECT_EQ(d.nnz_total, one.csr.nnz());
}

// The .npz streamed to rank 0 (in small messages) and the merged per-rank pieces are the bytes of
// the one-process file.
TEST(ShardedSparsifyFiles, OneFileAndMergedPiecesEqualOneProcessBytes) {
  const std::uint64_t seed = testsupport::shared_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  const index_t n = 1000, m = 257;
  for (DType precision : {DType::float64, DType::float32}) {
    const Inputs in = random_inputs(n, m, precision, seed);
    SparsifyOptions o;
    o.mode = SparsifyMode::threshold;
    o.value = 2e-3;
    const SparsifyResult one = sparsify(one_process_cpu(), in.geom(), in.r, o);
    const SparsifyResult d = sparsify(Problem::upload(distributed_cpu(), in.geom(), {}, {}, precision), in.r, o);

    // Rank 0's folder, known to every rank (one machine: a shared filesystem).
    std::optional<testsupport::TempDir> tmp;
    std::string dir;
    if (world()->rank() == 0) {
      tmp.emplace("otcal_mpi_sparsify");
      dir = tmp->path.string();
    }
    world()->broadcast(dir, 0);
    const std::string single = dir + "/one.npz";
    if (world()->rank() == 0) io::write_npz_csr(single, one.csr);
    // 1000 bytes: messages that split values, several per rank.
    io::write_npz_csr_sharded(dir + "/sharded.npz", d.csr, d.row_offset, *world(), 1000);
    io::write_npz_csr_pieces(dir, "plan", d.csr, d.row_offset, *world());
    world()->barrier();
    if (world()->rank() == 0) {
      io::merge_npz_pieces(dir + "/plan.manifest.json", dir + "/merged.npz", "--manifest", 1000);
      const std::string want = testsupport::slurp(single);
      EXPECT_FALSE(want.empty());
      EXPECT_TRUE(testsupport::slurp(dir + "/sharded.npz") == want) << "streamed .npz differs";
      EXPECT_TRUE(testsupport::slurp(dir + "/merged.npz") == want) << "merged .npz differs";
    }
    world()->barrier();
  }
}

// NaN potentials in rows only the last rank owns: every rank raises that rank's error.
TEST(ShardedSparsifyErrors, NanOnOneRankStopsEveryRank) {
  const int P = world()->size();
  const std::uint64_t seed = testsupport::shared_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  const index_t n = 1000, m = 200;
  Inputs in = random_inputs(n, m, DType::float64, seed);
  const Shard last = shard_rows(n, P - 1, P);
  in.r.f[static_cast<std::size_t>(last.begin + static_cast<index_t>(seed % static_cast<std::uint64_t>(last.size())))] =
      std::numeric_limits<double>::quiet_NaN();
  for (SparsifyMode mode : {SparsifyMode::threshold, SparsifyMode::min_row, SparsifyMode::percentile}) {
    SparsifyOptions o;
    o.mode = mode;
    if (mode != SparsifyMode::min_row) o.value = 50.0;
    o.percentile_method = PercentileMethod::exact;
    std::string message;
    try {
      (void)sparsify(Problem::upload(distributed_cpu(), in.geom()), in.r, o);
      ADD_FAILURE() << "no error";
    } catch (const NumericalError& e) {
      message = e.what();
    }
    EXPECT_NE(message.find("NaN"), std::string::npos) << message;
    if (P > 1) EXPECT_EQ(message.rfind("rank " + std::to_string(P - 1) + ": ", 0), 0u) << message;
    EXPECT_TRUE(testsupport::same_on_every_rank(message));
  }
}

}  // namespace
