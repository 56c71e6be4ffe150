// Calibration sharded over MPI ranks (run by ctest with 1 to 4 ranks; docs/calibration.md §8).
// Every rank builds its slice of a fresh synthetic survey on a distributed context and the whole
// survey on a one-process context, and compares: the gradient calibrator bitwise (weights,
// history, loss), the exact calibrators to 1e-12 relative (the Newton matrix is folded in rank
// order, §8), builder warnings and diagnostics equal, and a bad record on one rank raised on every
// rank with the same message.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <string>

#include "otcal/otcal.hpp"
#include "support/mpi_support.hpp"

namespace {

using namespace otcal;
using testsupport::bitwise_equal;
using testsupport::distributed_cpu;
using testsupport::one_process_cpu;
using testsupport::world;



std::vector<double> slice(const std::vector<double>& v, Shard s) {
  return {v.begin() + s.begin, v.begin() + s.end};
}

double max_rel_diff(const std::vector<double>& a, const std::vector<double>& b) {
  double worst = a.size() == b.size() ? 0.0 : INFINITY;
  for (std::size_t i = 0; i < a.size() && i < b.size(); ++i)
    worst = std::max(worst, std::fabs(a[i] - b[i]) / std::max(std::fabs(b[i]), 1e-300));
  return worst;
}

// A whole survey and this rank's slice of it, built both ways. n is not a multiple of 256 x P,
// so shards are uneven and the last one ragged; with 4 ranks and n <= 768 the last owns nothing.
struct Built {
  SyntheticSurvey survey;
  Shard shard;
  ConstraintSystem whole, part;
};

Built build_both(const Context& dctx, index_t n, std::uint64_t seed, bool with_linear) {
  Built b;
  b.survey = make_synthetic_survey(n, 3, 4, 2, seed);
  if (with_linear) {  // a linear constraint exercises slice_spec (gradient only: no feasibility needed)
    std::mt19937_64 rng(seed + 7);
    std::uniform_real_distribution<double> u(-1, 2);
    LinearConstraint lc{"lin", std::vector<double>(static_cast<std::size_t>(n)), 0};
    for (double& c : lc.coefficients) lc.target += (c = u(rng) < 0 ? 0.0 : u(rng));
    b.survey.spec.linear.push_back(lc);
  }
  b.shard = record_shard(dctx, n);
  b.whole = build_constraints(one_process_cpu(), b.survey.table, b.survey.spec);
  b.part = build_constraints(dctx, slice_records(b.survey.table, b.shard), slice_spec(b.survey.spec, b.shard));
  return b;
}

// 1000..2999 records, or 520..768 (three granules at most: with 4 ranks the last owns no record,
// which must still take part in every collective).
index_t random_n(std::uint64_t seed, bool leave_a_rank_empty = false) {
  return leave_a_rank_empty ? 520 + static_cast<index_t>(seed % 249) : 1000 + static_cast<index_t>(seed % 2000);
}

TEST(ShardedCalibration, BuilderSlicesAndWarningsEqualOneProcess) {
  const std::uint64_t seed = testsupport::shared_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  const Context dctx = distributed_cpu();
  const index_t n = random_n(seed);
  const Built b = build_both(dctx, n, seed, true);
  EXPECT_EQ(b.part.record_offset, b.shard.begin);
  EXPECT_EQ(b.part.total_records, n);
  EXPECT_EQ(b.part.n_records(), b.shard.size());
  EXPECT_EQ(b.part.names, b.whole.names);
  EXPECT_TRUE(bitwise_equal(b.part.targets, b.whole.targets));
  EXPECT_EQ(b.part.warnings, b.whole.warnings);
  EXPECT_TRUE(bitwise_equal(b.part.design_weights, slice(b.whole.design_weights, b.shard)));
  // Row r of the part is row r of the whole restricted to the shard, re-indexed from 0.
  for (index_t r = 0; r < b.whole.A.rows; ++r) {
    std::vector<std::pair<std::int64_t, double>> want, got;
    for (std::int64_t p = b.whole.A.indptr[r]; p < b.whole.A.indptr[r + 1]; ++p)
      if (b.whole.A.index(p) >= b.shard.begin && b.whole.A.index(p) < b.shard.end)
        want.emplace_back(b.whole.A.index(p) - b.shard.begin, b.whole.A.values[p]);
    for (std::int64_t p = b.part.A.indptr[r]; p < b.part.A.indptr[r + 1]; ++p)
      got.emplace_back(b.part.A.index(p), b.part.A.values[p]);
    ASSERT_EQ(got, want) << "row " << r;
  }
}

struct GradientCase {
  const char* name;
  double dropout;
  bool l0;
  bool excluded_log_initial;
  bool few_records = false;  // random_n's empty-rank range
};

class ShardedGradient : public ::testing::TestWithParam<GradientCase> {};

TEST_P(ShardedGradient, EqualsOneProcessBitwise) {
  const GradientCase c = GetParam();
  const std::uint64_t seed = testsupport::shared_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  const Context dctx = distributed_cpu();
  const index_t n = random_n(seed, c.few_records);
  const Built b = build_both(dctx, n, seed, true);
  GradientOptions o;
  o.epochs = c.l0 ? 12 : 40;
  o.learning_rate = 0.05;
  o.seed = seed;
  o.dropout_rate = c.dropout;
  o.regularize_with_l0 = c.l0;
  o.l0_penalty_per_record = c.l0;
  o.excluded_log_initial = c.excluded_log_initial;
  if (c.excluded_log_initial) o.excluded_targets = {b.whole.names[1]};
  const CalibrationResult one = calibrate_gradient(one_process_cpu(), b.whole, o);
  o.batch_size = 97;  // a different batching than the one-process run: results never depend on it
  const CalibrationResult d = calibrate_gradient(dctx, b.part, o);
  EXPECT_EQ(d.record_offset, b.shard.begin);
  EXPECT_EQ(d.total_records, n);
  EXPECT_EQ(d.n_iterations, one.n_iterations);
  EXPECT_TRUE(bitwise_equal(d.weights, slice(one.weights, b.shard))) << "max rel diff "
                                                                     << max_rel_diff(d.weights, slice(one.weights, b.shard));
  EXPECT_TRUE(bitwise_equal(d.dense_weights, c.l0 ? slice(one.dense_weights, b.shard) : std::vector<double>{}));
  EXPECT_TRUE(bitwise_equal(d.g, slice(one.g, b.shard)));
  ASSERT_EQ(d.history.size(), one.history.size());
  for (std::size_t h = 0; h < d.history.size(); ++h) {
    EXPECT_EQ(std::memcmp(&d.history[h].loss, &one.history[h].loss, sizeof(double)), 0) << "history row " << h;
    EXPECT_TRUE(bitwise_equal(d.history[h].estimates, one.history[h].estimates)) << "history row " << h;
  }
  EXPECT_EQ(std::memcmp(&d.diagnostics.loss, &one.diagnostics.loss, sizeof(double)), 0);
  for (std::size_t j = 0; j < one.diagnostics.targets.size(); ++j)
    EXPECT_EQ(std::memcmp(&d.diagnostics.targets[j].estimate, &one.diagnostics.targets[j].estimate, sizeof(double)), 0);
  EXPECT_EQ(std::memcmp(&d.diagnostics.weights, &one.diagnostics.weights, sizeof(WeightStatistics)), 0)
      << "weight statistics differ";
  EXPECT_EQ(d.diagnostics.warnings, one.diagnostics.warnings);

  // gradient_loss at an arbitrary θ: loss and estimates bitwise, the gradient per record.
  std::vector<double> theta(static_cast<std::size_t>(n));
  std::mt19937_64 rng(seed + 3);
  std::normal_distribution<double> z(0.5, 0.3);
  for (double& t : theta) t = z(rng);
  GradientOptions lo = o;
  lo.regularize_with_l0 = false;
  lo.batch_size.reset();
  const LossAndGradient lg1 = gradient_loss(one_process_cpu(), b.whole, theta, lo, 3);
  const LossAndGradient lgd = gradient_loss(dctx, b.part, slice(theta, b.shard), lo, 3);
  EXPECT_EQ(std::memcmp(&lgd.loss, &lg1.loss, sizeof(double)), 0);
  EXPECT_TRUE(bitwise_equal(lgd.estimates, lg1.estimates));
  EXPECT_TRUE(bitwise_equal(lgd.gradient, slice(lg1.gradient, b.shard)));
}

INSTANTIATE_TEST_SUITE_P(Shards, ShardedGradient,
                         ::testing::Values(GradientCase{"dense", 0.0, false, false},
                                           GradientCase{"dense_few_records", 0.0, false, false, true},
                                           GradientCase{"dropout", 0.1, false, true},
                                           GradientCase{"dropout_l0", 0.05, true, false}),
                         [](const auto& info) { return std::string(info.param.name); });

struct ExactCase {
  const char* name;
  CalFun calfun;
  double lower, upper;
  bool trim;
};

class ShardedExact : public ::testing::TestWithParam<ExactCase> {};

TEST_P(ShardedExact, EqualsOneProcessTo1e12) {
  const ExactCase c = GetParam();
  const std::uint64_t seed = testsupport::shared_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  const Context dctx = distributed_cpu();
  const index_t n = random_n(seed);
  const Built b = build_both(dctx, n, seed, false);
  ExactOptions o;
  o.calfun = c.calfun;
  o.lower = c.lower;
  o.upper = c.upper;
  o.epsilon = 1e-10;
  if (c.trim) o.trim = std::make_pair(0.95, 1.05);
  const CalibrationResult one = calibrate_exact(one_process_cpu(), b.whole, o);
  const CalibrationResult d = calibrate_exact(dctx, b.part, o);
  ASSERT_TRUE(one.converged);
  EXPECT_EQ(d.converged, one.converged);
  EXPECT_EQ(d.n_iterations, one.n_iterations);
  EXPECT_EQ(d.record_offset, b.shard.begin);
  const std::vector<double> want = slice(one.weights, b.shard);
  const double rel = max_rel_diff(d.weights, want);
  // Bitwise on one rank; across ranks T regroups its record sums at the rank boundaries (§8).
  if (world()->size() == 1) EXPECT_TRUE(bitwise_equal(d.weights, want));
  EXPECT_LE(rel, 1e-12) << "weights";
  EXPECT_LE(max_rel_diff(d.g, slice(one.g, b.shard)), 1e-12) << "g";
  // Global results: the same on every rank, and as one process's to the same tolerance.
  std::string estimates;
  for (const auto& t : d.diagnostics.targets) {
    estimates += std::to_string(t.estimate) + ",";
    const auto& w = one.diagnostics.targets[static_cast<std::size_t>(&t - d.diagnostics.targets.data())];
    EXPECT_LE(std::fabs(t.estimate - w.estimate), 1e-12 * std::max(1.0, std::fabs(w.estimate))) << t.name;
  }
  EXPECT_TRUE(testsupport::same_on_every_rank(estimates));
  EXPECT_EQ(d.diagnostics.weights.n_at_lower + d.diagnostics.weights.n_at_upper,
            one.diagnostics.weights.n_at_lower + one.diagnostics.weights.n_at_upper);
  std::printf("[rank %d/%d] %s: %d Newton steps, max relative weight difference %.3g\n", world()->rank(),
              world()->size(), c.name, d.n_iterations, rel);
}

INSTANTIATE_TEST_SUITE_P(Shards, ShardedExact,
                         ::testing::Values(ExactCase{"greg", CalFun::linear, -INFINITY, INFINITY, false},
                                           ExactCase{"linear_bounded", CalFun::linear, 0.5, 2.0, false},
                                           ExactCase{"raking", CalFun::raking, -INFINITY, INFINITY, false},
                                           ExactCase{"raking_trimmed", CalFun::raking, -INFINITY, INFINITY, true},
                                           ExactCase{"logit", CalFun::logit, 0.5, 2.0, false}),
                         [](const auto& info) { return std::string(info.param.name); });

// A bad record on the last rank holding records: every rank raises the same error, naming it.
TEST(ShardedCalibrationErrors, BadRecordOnOneRankRaisedEverywhere) {
  const std::uint64_t seed = testsupport::shared_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  const Context dctx = distributed_cpu();
  const index_t n = random_n(seed);
  const SyntheticSurvey s = make_synthetic_survey(n, 2, 3, 1, seed);
  const Shard shard = record_shard(dctx, n);
  int bad_rank = 0;
  for (int r = 0; r < world()->size(); ++r)
    if (shard_rows(n, r, world()->size()).size() > 0) bad_rank = r;
  RecordTable mine = slice_records(s.table, shard);
  const bool is_bad = world()->rank() == bad_rank;
  for (auto& col : mine.columns)
    if (col.name == "weight" && is_bad) col.numbers[col.numbers.size() / 2] = std::nan("");

  auto message_of = [](auto&& op) -> std::string {
    try {
      op();
    } catch (const InvalidArgument& e) {
      return e.what();
    } catch (const std::exception& e) {
      return std::string("wrong type: ") + e.what();
    }
    return "no error";
  };
  const std::string build_error = message_of([&] { build_constraints(dctx, mine, s.spec); });
  EXPECT_NE(build_error.find("non-finite value at record"), std::string::npos) << build_error;
  if (world()->size() > 1)
    EXPECT_EQ(build_error.rfind("rank " + std::to_string(bad_rank) + ": ", 0), 0u) << build_error;
  EXPECT_TRUE(testsupport::same_on_every_rank(build_error)) << build_error;

  // A good system, then a calibrator input that is wrong on one rank only.
  ConstraintSystem part = build_constraints(dctx, slice_records(s.table, shard), s.spec);
  ConstraintSystem broken = part;
  if (is_bad) broken.design_weights[broken.design_weights.size() / 2] = std::nan("");
  const std::string gradient_error = message_of([&] {
    GradientOptions o;
    o.epochs = 3;
    calibrate_gradient(dctx, broken, o);
  });
  EXPECT_NE(gradient_error.find("is not finite"), std::string::npos) << gradient_error;
  EXPECT_TRUE(testsupport::same_on_every_rank(gradient_error)) << gradient_error;

  if (is_bad) broken.design_weights.pop_back();
  const std::string exact_error = message_of([&] { calibrate_exact(dctx, broken, ExactOptions{}); });
  EXPECT_NE(exact_error.find("design_weights"), std::string::npos) << exact_error;
  EXPECT_TRUE(testsupport::same_on_every_rank(exact_error)) << exact_error;

  // A progress hook that interrupts on one rank stops every rank.
  const std::string hook_error = message_of([&] {
    GradientOptions o;
    o.epochs = 5;
    o.progress = [&](const CalibrationProgress& p) {
      if (is_bad && p.step == 2) throw InvalidArgument("interrupted");
    };
    calibrate_gradient(dctx, part, o);
  });
  EXPECT_NE(hook_error.find("interrupted"), std::string::npos) << hook_error;
  EXPECT_TRUE(testsupport::same_on_every_rank(hook_error)) << hook_error;

  // Everyone is still in step: a collective operation afterwards succeeds everywhere.
  EXPECT_NO_THROW(calibrate_exact(dctx, part, ExactOptions{}));
}

}  // namespace
