// One workspace plan per calibration operation (docs/host-layer.md §3): for every operation the
// plan is the operation's own declaration (src/calibration/workspace_layouts.hpp) at the planned
// rows, the measured peak stays within it and the budget, a budget one byte short of the minimum
// the planner names is refused before anything is allocated, and exactly that minimum runs and
// gives the weights of an ample budget, bitwise.
#include <gtest/gtest.h>

#include <cctype>
#include <cmath>
#include <cstdint>
#include <functional>
#include <iostream>
#include <optional>
#include <string>
#include <vector>

#include "calibration/workspace_layouts.hpp"
#include "otcal/calibration.hpp"
#include "otcal/context.hpp"
#include "otcal/errors.hpp"
#include "support/process.hpp"

namespace {

using otcal::index_t;

otcal::Context cpu_ctx(std::size_t budget) {
  return otcal::Context::cpu({.memory_budget = budget, .on_warning = [](const std::string&) {}});
}
constexpr std::size_t kAmple = std::size_t{256} << 20;

struct Fixture {
  std::uint64_t seed = 0;
  otcal::SyntheticSurvey survey;
  otcal::ConstraintSystem sys;
};

// What a run hands back, in the same shape for every operation.
struct Outcome {
  std::vector<double> weights;  // the build: A's values; gradient_loss: the gradient
  otcal::TilePlan plan;
  otcal::MemoryReport memory;
};

struct Op {
  std::string name;
  // The declaration the operation plans with, from the function the operation itself calls.
  std::function<otcal::WorkspaceDecl(const otcal::Context&, const Fixture&)> decl;
  std::function<Outcome(const otcal::Context&, const Fixture&)> run;
};

Outcome from(const otcal::CalibrationResult& r) { return {r.weights, r.plan, r.memory}; }

Op build_op() {
  return {"build_constraints",
          [](const otcal::Context& ctx, const Fixture& f) {
            return otcal::calib::build_layout(ctx, f.survey.table, f.survey.spec).decl;
          },
          [](const otcal::Context& ctx, const Fixture& f) {
            const otcal::ConstraintSystem sys = otcal::build_constraints(ctx, f.survey.table, f.survey.spec);
            Outcome o;
            o.weights = sys.A.values;
            for (std::int64_t p = 0; p < sys.A.nnz(); ++p) o.weights.push_back(static_cast<double>(sys.A.index(p)));
            // The build is one piece of n rows; its report carries the planned peak.
            o.plan.rows = sys.n_records();
            o.plan.planned_peak = sys.planned_peak_bytes;
            o.memory = sys.memory;
            return o;
          }};
}

Op exact_op(std::string name, otcal::ExactOptions opt) {
  return {"calibrate_exact_" + name,
          [opt](const otcal::Context& ctx, const Fixture& f) { return otcal::calib::exact_layout(ctx, f.sys, opt).decl; },
          [opt](const otcal::Context& ctx, const Fixture& f) { return from(otcal::calibrate_exact(ctx, f.sys, opt)); }};
}

Op rake_op() {
  return {"rake", [](const otcal::Context& ctx, const Fixture& f) { return otcal::calib::rake_layout(ctx, f.sys).decl; },
          [](const otcal::Context& ctx, const Fixture& f) {
            return from(otcal::rake(ctx, f.sys, {.max_sweeps = 50, .epsilon = 1e-9}));
          }};
}

otcal::GradientOptions gradient_options(bool l0, std::optional<index_t> batch, std::uint64_t seed) {
  otcal::GradientOptions o;
  o.epochs = 6;
  o.learning_rate = 0.05;
  o.dropout_rate = 0.1;
  o.seed = seed;
  o.batch_size = batch;
  o.regularize_with_l0 = l0;
  return o;
}

Op gradient_op(std::string name, bool l0, std::optional<index_t> batch) {
  return {"calibrate_gradient_" + name,
          [=](const otcal::Context& ctx, const Fixture& f) {
            return otcal::calib::gradient_layout(ctx, f.sys, gradient_options(l0, batch, f.seed)).decl;
          },
          [=](const otcal::Context& ctx, const Fixture& f) {
            return from(otcal::calibrate_gradient(ctx, f.sys, gradient_options(l0, batch, f.seed)));
          }};
}

Op loss_op(std::string name, std::optional<index_t> batch) {
  return {"gradient_loss_" + name,
          [](const otcal::Context& ctx, const Fixture& f) { return otcal::calib::gradient_loss_layout(ctx, f.sys).decl; },
          [=](const otcal::Context& ctx, const Fixture& f) {
            std::vector<double> theta(f.sys.design_weights.size());
            for (std::size_t i = 0; i < theta.size(); ++i) theta[i] = std::log(f.sys.design_weights[i]) + 0.01 * (i % 7);
            const otcal::LossAndGradient r = otcal::gradient_loss(ctx, f.sys, theta, gradient_options(false, batch, f.seed), 3);
            Outcome o{r.gradient, r.plan, r.memory};
            o.weights.push_back(r.loss);
            return o;
          }};
}

std::vector<Op> all_ops() {
  using otcal::CalFun;
  return {
      build_op(),
      exact_op("linear_greg", {.calfun = CalFun::linear}),
      exact_op("linear_variance", {.calfun = CalFun::linear, .variance = {}}),  // variance filled per fixture below
      exact_op("raking", {.calfun = CalFun::raking}),
      exact_op("logit", {.calfun = CalFun::logit, .lower = 0.5, .upper = 2.0}),
      exact_op("truncated_linear_trim", {.calfun = CalFun::linear, .lower = 0.7, .upper = 1.4, .trim = {{0.75, 1.35}}}),
      rake_op(),
      gradient_op("planned_batch", false, std::nullopt),
      gradient_op("batch_1", false, 1),
      gradient_op("batch_37", false, 37),
      gradient_op("l0_batch_64", true, 64),
      gradient_op("l0_planned_batch", true, std::nullopt),
      loss_op("batch_13", 13),
      loss_op("planned_batch", std::nullopt),
  };
}

Fixture make_fixture() {
  Fixture f;
  f.seed = testsupport::fresh_seed();
  const index_t n = 300 + static_cast<index_t>(f.seed % 1700);
  const int margins = 1 + static_cast<int>((f.seed >> 12) % 3), cats = 2 + static_cast<int>((f.seed >> 20) % 5);
  const int continuous = static_cast<int>((f.seed >> 28) % 3);
  std::cout << "[ seed     ] " << f.seed << " (n " << n << ", " << margins << " margins x " << cats << ", "
            << continuous << " continuous)\n";
  f.survey = otcal::make_synthetic_survey(n, margins, cats, continuous, f.seed);
  auto ctx = cpu_ctx(kAmple);
  f.sys = otcal::build_constraints(ctx, f.survey.table, f.survey.spec);
  return f;
}

class CalibrationWorkspacePlan : public ::testing::TestWithParam<std::size_t> {};

TEST_P(CalibrationWorkspacePlan, PlanIsTheDeclarationAndTheMinimumIsExact) {
  std::vector<Op> ops = all_ops();
  Op op = ops.at(GetParam());
  const Fixture f = make_fixture();
  SCOPED_TRACE(op.name + ", seed " + std::to_string(f.seed));
  if (op.name == "calibrate_exact_linear_variance") {  // σ² = x_iᵀ v with v = 1 per constraint (§4.1)
    otcal::ExactOptions opt{.calfun = otcal::CalFun::linear};
    opt.variance.assign(static_cast<std::size_t>(f.sys.n_constraints()), 1.0);
    op = exact_op("linear_variance", opt);
  }

  // (a) + (b): the plan is the declaration at the planned rows; measured <= planned <= budget.
  auto ample = cpu_ctx(kAmple);
  const Outcome ref = op.run(ample, f);
  const otcal::WorkspaceDecl decl = op.decl(ample, f);
  EXPECT_EQ(ref.plan.planned_peak, decl.bytes(ref.plan.rows));
  EXPECT_EQ(ref.memory.planned_peak_bytes, ref.plan.planned_peak);
  EXPECT_EQ(ref.memory.budget_bytes, kAmple);
  EXPECT_GT(ref.memory.peak_bytes, 0u);
  EXPECT_LE(ref.memory.peak_bytes, ref.plan.planned_peak);
  EXPECT_LE(ref.plan.planned_peak, kAmple);
  // Nothing but the declared buffers is allocated: the measured peak is their unaligned sum.
  std::size_t raw = 0;
  for (const otcal::BufferDecl& b : decl.buffers) raw += b.count(ref.plan.rows) * b.element_size;
  EXPECT_EQ(ref.memory.peak_bytes, raw);
  EXPECT_EQ(ample.limiter().allocated_bytes(), 0u);

  // (c): the minimum the planner names for a tiny budget ...
  std::size_t minimum = 0;
  try {
    op.run(cpu_ctx(1), f);
    ADD_FAILURE() << "a 1-byte budget was accepted";
  } catch (const otcal::BudgetTooSmall& e) {
    minimum = e.required_bytes();
  }
  ASSERT_GT(minimum, 1u);
  // ... is refused one byte below, before anything is allocated ...
  auto short_ctx = cpu_ctx(minimum - 1);
  EXPECT_THROW(op.run(short_ctx, f), otcal::BudgetTooSmall);
  EXPECT_EQ(short_ctx.statistics().allocations().total, 0);
  // ... and runs at exactly the minimum, with the ample budget's results.
  auto exact_ctx = cpu_ctx(minimum);
  Outcome at_min;
  ASSERT_NO_THROW(at_min = op.run(exact_ctx, f));
  EXPECT_LE(at_min.memory.peak_bytes, at_min.plan.planned_peak);
  EXPECT_LE(at_min.plan.planned_peak, minimum);
  EXPECT_EQ(at_min.plan.planned_peak, decl.bytes(at_min.plan.rows));
  ASSERT_EQ(at_min.weights.size(), ref.weights.size());
  for (std::size_t i = 0; i < ref.weights.size(); ++i)
    ASSERT_EQ(at_min.weights[i], ref.weights[i]) << "entry " << i << " differs at the minimum budget";
}

INSTANTIATE_TEST_SUITE_P(AllOperations, CalibrationWorkspacePlan, ::testing::Range<std::size_t>(0, all_ops().size()),
                         [](const ::testing::TestParamInfo<std::size_t>& info) {
                           std::string name = all_ops().at(info.param).name;
                           for (char& c : name)
                             if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
                           return name;
                         });

// An explicit batch is never shrunk: its minimum is the declaration at that batch.
TEST(CalibrationWorkspacePlan, ExplicitBatchMinimumIsAtThatBatch) {
  const Fixture f = make_fixture();
  SCOPED_TRACE("seed " + std::to_string(f.seed));
  for (index_t batch : {index_t{1}, index_t{50}, f.sys.n_records()}) {
    const otcal::GradientOptions o = gradient_options(true, batch, f.seed);
    auto ctx = cpu_ctx(kAmple);
    const otcal::WorkspaceDecl decl = otcal::calib::gradient_layout(ctx, f.sys, o).decl;
    EXPECT_GT(decl.bytes_per_row(), 0u);
    try {
      otcal::calibrate_gradient(cpu_ctx(1), f.sys, o);
      ADD_FAILURE() << "a 1-byte budget was accepted";
    } catch (const otcal::BudgetTooSmall& e) {
      EXPECT_EQ(e.required_bytes(), otcal::minimum_budget(decl, batch));
    }
  }
}

}  // namespace
