// Sinkhorn sharded over MPI ranks (run by ctest with 1 to 4 ranks) against the same solve in one
// process on every rank: potentials, errors, iteration counts and reg_ot_cost bitwise equal, for
// balanced and unbalanced problems, float32 and float64, shards that do not divide evenly.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <random>

#include "otcal/otcal.hpp"
#include "support/mpi_support.hpp"
#include "support/process.hpp"
#include "support/reference.hpp"

namespace {

using namespace otcal;
using testsupport::bitwise_equal;
using testsupport::distributed_cpu;
using testsupport::one_process_cpu;
using testsupport::world;

struct Case {
  const char* name;
  index_t n, m;
  DType precision;
  double tau;
  std::string cost;
  bool parallel = false;
};



class ShardedSinkhorn : public ::testing::TestWithParam<Case> {};

TEST_P(ShardedSinkhorn, EqualsOneProcessBitwise) {
  const Case c = GetParam();
  const std::uint64_t seed = testsupport::shared_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  const ref::Clouds cl = ref::random_clouds(c.n, c.m, 3, seed);
  const std::vector<double> a = ref::random_weights(c.n, seed + 1, 0.05);
  const std::vector<double> b = ref::random_weights(c.m, seed + 2);
  PointCloud geom;
  geom.x = ConstMatrix::of(cl.x.data(), c.n, 3);
  geom.y = ConstMatrix::of(cl.y.data(), c.m, 3);
  geom.options.cost = Cost::parse(c.cost);
  geom.options.scale.kind = ScaleCost::Kind::mean;
  SinkhornOptions o;
  o.epsilon = 0.05;
  o.tau_a = c.tau;
  o.tau_b = c.tau;
  o.threshold = 1e-4;
  o.max_iterations = 400;
  o.parallel_dual_updates = c.parallel;
  o.batch_size = 97;  // several tiles per shard, and a different tiling than the one-process run's

  const Context dctx = distributed_cpu();
  const Problem dp = Problem::upload(dctx, geom, ConstVector::of(a.data(), c.n), ConstVector::of(b.data(), c.m),
                                     c.precision);
  const SinkhornResult d = sinkhorn(dp, o);
  o.batch_size.reset();
  const SinkhornResult one = sinkhorn(one_process_cpu(), geom, ConstVector::of(a.data(), c.n),
                                      ConstVector::of(b.data(), c.m), [&] {
                                        SinkhornOptions p = o;
                                        p.precision = c.precision;
                                        return p;
                                      }());
  EXPECT_EQ(d.ranks, world()->size());
  EXPECT_GE(one.n_iters, 10);  // at least one block of iterations, each one gathered
  EXPECT_EQ(d.n_iters, one.n_iters);
  EXPECT_EQ(d.converged, one.converged);
  EXPECT_TRUE(bitwise_equal(d.f, one.f)) << "f differs from the one-process solve";
  EXPECT_TRUE(bitwise_equal(d.g, one.g)) << "g differs from the one-process solve";
  EXPECT_TRUE(bitwise_equal(d.errors, one.errors)) << "marginal errors differ";
  EXPECT_EQ(std::memcmp(&d.reg_ot_cost, &one.reg_ot_cost, sizeof(double)), 0)
      << d.reg_ot_cost << " vs " << one.reg_ot_cost;
  // apply and marginals of the distributed problem: each rank computes its rows, then every rank
  // holds all of them, equal to one process's.
  const Problem op = Problem::upload(one_process_cpu(), geom, ConstVector::of(a.data(), c.n),
                                     ConstVector::of(b.data(), c.m), c.precision);
  std::mt19937_64 rng(seed + 3);
  std::normal_distribution<double> z;
  for (int axis : {0, 1}) {
    const index_t cols = axis == 1 ? c.m : c.n;
    std::vector<double> v(static_cast<std::size_t>(cols * 2));
    for (double& e : v) e = z(rng);
    const ConstMatrix vm = ConstMatrix::of(v.data(), cols, 2);
    EXPECT_TRUE(bitwise_equal(apply_transport(dp, d, vm, axis, 53), apply_transport(op, one, vm, axis)))
        << "apply, axis " << axis;
    EXPECT_TRUE(bitwise_equal(marginal(dp, d, axis, 53), marginal(op, one, axis))) << "marginal, axis " << axis;
  }
  // Measured peak <= planned <= budget on this rank.
  EXPECT_LE(d.memory.peak_bytes, d.memory.planned_peak_bytes);
  EXPECT_LE(d.memory.planned_peak_bytes, d.memory.budget_bytes);
}

// n, m: 4 and 4 granules of 256 rows with ragged tails, so 3 ranks own 2 + 1 + 1 granules and 4
// ranks one each; 600 rows leave the fourth rank without rows of y.
INSTANTIATE_TEST_SUITE_P(
    Shards, ShardedSinkhorn,
    ::testing::Values(Case{"balanced_f64", 1000, 777, DType::float64, 1.0, "sqeuclidean"},
                      Case{"balanced_f32", 1000, 777, DType::float32, 1.0, "sqeuclidean"},
                      Case{"unbalanced_f64", 900, 600, DType::float64, 0.8, "sqeuclidean"},
                      Case{"unbalanced_f32", 900, 600, DType::float32, 0.8, "euclidean"},
                      Case{"cosine_f64", 800, 1100, DType::float64, 1.0, "cosine"},
                      Case{"parallel_unbalanced_f64", 700, 1100, DType::float64, 0.9, "sqeuclidean", true}),
    [](const auto& info) { return std::string(info.param.name); });

// The same clouds on both sides (y = x): one shard serves both potentials.
TEST(ShardedSinkhornSelf, SameCloudsEqualOneProcess) {
  const std::uint64_t seed = testsupport::shared_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  const ref::Clouds cl = ref::random_clouds(1030, 1030, 2, seed);
  PointCloud geom;
  geom.x = ConstMatrix::of(cl.x.data(), 1030, 2);
  SinkhornOptions o;
  o.relative_epsilon = RelativeEpsilon::mean;
  o.epsilon = 0.1;
  const SinkhornResult d = sinkhorn(distributed_cpu(), geom, {}, {}, o);
  const SinkhornResult one = sinkhorn(one_process_cpu(), geom, {}, {}, o);
  EXPECT_EQ(d.n_iters, one.n_iters);
  EXPECT_TRUE(bitwise_equal(d.f, one.f));
  EXPECT_TRUE(bitwise_equal(d.g, one.g));
}

// The one-off passes over all n*m costs are sharded as well: moments folded in rank order, the
// exact quantile's histograms all-summed. Statistics, quantiles and a median-scaled solve equal
// one process bit for bit.
TEST(ShardedCostStatistics, MomentsQuantilesAndMedianScaleEqualOneProcess) {
  const std::uint64_t seed = testsupport::shared_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  const ref::Clouds cl = ref::random_clouds(800, 550, 4, seed);
  for (DType precision : {DType::float32, DType::float64}) {
    SCOPED_TRACE(dtype_name(precision));
    PointCloud geom;
    geom.x = ConstMatrix::of(cl.x.data(), 800, 4);
    geom.y = ConstMatrix::of(cl.y.data(), 550, 4);
    geom.options.cost = Cost::parse("pnorm:1.5");
    const Problem dp = Problem::upload(distributed_cpu(), geom, {}, {}, precision);
    const Problem op = Problem::upload(one_process_cpu(), geom, {}, {}, precision);
    const CostStatistics ds = cost_statistics(dp), os = cost_statistics(op);
    EXPECT_EQ(std::memcmp(&ds, &os, sizeof(CostStatistics)), 0)
        << ds.mean << " " << os.mean << " / " << ds.std << " " << os.std << " / " << ds.max_abs << " " << os.max_abs;
    const double q = static_cast<double>(seed % 1000) / 10.0;
    const double dq = exact_cost_quantile(dp, q), oq = exact_cost_quantile(op, q);
    EXPECT_EQ(std::memcmp(&dq, &oq, sizeof(double)), 0) << "q " << q << ": " << dq << " vs " << oq;
    geom.options.scale.kind = ScaleCost::Kind::median;
    SinkhornOptions o;
    o.relative_epsilon = RelativeEpsilon::mean;
    o.epsilon = 0.05;
    o.max_iterations = 60;
    o.precision = precision;
    const SinkhornResult d = sinkhorn(distributed_cpu(), geom, {}, {}, o);
    const SinkhornResult one = sinkhorn(one_process_cpu(), geom, {}, {}, o);
    EXPECT_EQ(std::memcmp(&d.scale, &one.scale, sizeof(double)), 0);
    EXPECT_EQ(std::memcmp(&d.epsilon, &one.epsilon, sizeof(double)), 0);
    EXPECT_TRUE(bitwise_equal(d.f, one.f));
    EXPECT_TRUE(bitwise_equal(d.g, one.g));
  }
}

// A NaN in rows that only the last rank owns: every rank raises the same error, naming that rank
// and the row, before any iteration (the owned-rows check at upload).
TEST(ShardedSinkhornValidity, NanInOneShardStopsEveryRank) {
  const int P = world()->size();
  const std::uint64_t seed = testsupport::shared_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  ref::Clouds cl = ref::random_clouds(1000, 700, 3, seed);
  const int bad_rank = P - 1;
  const Shard owned = shard_rows(1000, bad_rank, P);
  const index_t bad_row = owned.begin + static_cast<index_t>(seed % static_cast<std::uint64_t>(owned.size()));
  cl.x[static_cast<std::size_t>(bad_row * 3 + 1)] = std::numeric_limits<double>::quiet_NaN();
  PointCloud geom;
  geom.x = ConstMatrix::of(cl.x.data(), 1000, 3);
  geom.y = ConstMatrix::of(cl.y.data(), 700, 3);
  std::string message;
  try {
    (void)Problem::upload(distributed_cpu(), geom);
    ADD_FAILURE() << "no error";
  } catch (const InvalidArgument& e) {
    message = e.what();
  }
  const std::string where = "x holds nan at row " + std::to_string(bad_row) + ", column 1";
  EXPECT_NE(message.find(where), std::string::npos) << message;
  if (P > 1) EXPECT_EQ(message.rfind("rank " + std::to_string(bad_rank) + ": ", 0), 0u) << message;
  EXPECT_TRUE(testsupport::same_on_every_rank(message));
}

// A rank whose own input is rejected (here: weights that only that rank was given wrong) does not
// leave the others waiting: all of them raise its error.
TEST(ShardedSinkhornValidity, OneRankRejectingItsInputStopsEveryRank) {
  const int P = world()->size();
  const std::uint64_t seed = testsupport::shared_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  const ref::Clouds cl = ref::random_clouds(500, 400, 2, seed);
  std::vector<double> a = ref::random_weights(500, seed + 1);
  if (world()->rank() == P - 1) a[7] = -1.0;
  PointCloud geom;
  geom.x = ConstMatrix::of(cl.x.data(), 500, 2);
  geom.y = ConstMatrix::of(cl.y.data(), 400, 2);
  std::string message;
  try {
    (void)sinkhorn(distributed_cpu(), geom, ConstVector::of(a.data(), 500), {}, {});
    ADD_FAILURE() << "no error";
  } catch (const InvalidArgument& e) {
    message = e.what();
  }
  EXPECT_NE(message.find("a[7]"), std::string::npos) << message;
  EXPECT_TRUE(testsupport::same_on_every_rank(message));
}

// Each rank's workspace is planned for the rows it owns, and the validity checks (one flag word
// per rank) allocate nothing beyond it: under a tight budget the measured peak of every rank stays
// within its plan, which is no larger than the one-process plan.
TEST(ShardedSinkhornBudget, PeakStaysWithinTheShardPlan) {
  const std::uint64_t seed = testsupport::shared_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  const index_t n = 3000, m = 2600;
  const ref::Clouds cl = ref::random_clouds(n, m, 3, seed);
  PointCloud geom;
  geom.x = ConstMatrix::of(cl.x.data(), n, 3);
  geom.y = ConstMatrix::of(cl.y.data(), m, 3);
  SinkhornOptions o;
  o.epsilon = 0.1;
  o.max_iterations = 60;
  const std::size_t budget = std::size_t{1} << 20;
  const Context ctx = distributed_cpu(budget);
  const SinkhornResult d = sinkhorn(ctx, geom, {}, {}, o);
  EXPECT_LE(d.memory.peak_bytes, d.memory.planned_peak_bytes);
  EXPECT_LE(d.memory.planned_peak_bytes, budget);
  EXPECT_GT(d.memory.peak_bytes, 0u);
  const SinkhornResult one = sinkhorn(one_process_cpu(budget), geom, {}, {}, o);
  EXPECT_LE(d.memory.planned_peak_bytes, one.memory.planned_peak_bytes);
  EXPECT_TRUE(bitwise_equal(d.f, one.f));
}

}  // namespace
