// The CUDA calibration passes (cuda/calibration.cu) against the CPU backend (the reference, itself
// tested against dense float64 references in the cpu suite): builder on a CUDA context equal to
// the CPU build; raking, linear (bounded and GREG) and logit exact calibrators on Context::cuda(0)
// vs Context::cpu() to 1e-9; the gradient calibrator (with dropout, and with L0 gates) for batch
// sizes 1, 7 and n to 1e-6 relative in float64; peak device workspace <= planned <= budget; the
// device plan is the declared workspace (src/calibration/workspace_layouts.hpp), refused one byte
// below the minimum it names, and run at exactly that minimum.
// Label gpu: the binary exits 77 (skipped) where no CUDA device works (tests/support/test_main.cpp).
//
// What "equal" means across backends: the same float64 formulas, but the device exp/log may differ
// from glibc's in the last ulp and S = A w is reduced per warp on the device (granules on the
// CPU), so results agree to rounding, amplified by the Newton iterations / Adam epochs.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "calibration/workspace_layouts.hpp"
#include "otcal/calibration.hpp"
#include "otcal/errors.hpp"

namespace {

using otcal::index_t;

otcal::ContextOptions quiet(std::size_t budget = std::size_t{256} << 20) {
  otcal::ContextOptions o;
  o.memory_budget = budget;
  o.on_warning = [](const std::string&) {};
  return o;
}

std::uint64_t fresh_seed() { return (static_cast<std::uint64_t>(std::random_device{}()) << 20) ^ std::random_device{}(); }

double max_rel_diff(const std::vector<double>& a, const std::vector<double>& b) {
  EXPECT_EQ(a.size(), b.size());
  double worst = 0;
  for (std::size_t i = 0; i < a.size() && i < b.size(); ++i)
    worst = std::max(worst, std::fabs(a[i] - b[i]) / std::max(1.0, std::fabs(b[i])));
  return worst;
}

struct Survey {
  otcal::SyntheticSurvey s;
  otcal::ConstraintSystem cpu_sys;
};

Survey survey(index_t n, std::uint64_t seed) {
  Survey v;
  v.s = otcal::make_synthetic_survey(n, 3, 5, 2, seed);
  v.cpu_sys = otcal::build_constraints(otcal::Context::cpu(quiet()), v.s.table, v.s.spec);
  return v;
}

TEST(GpuCalibration, BuilderOnCudaContextEqualsCpuBuild) {
  const std::uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  const Survey v = survey(3001, seed);
  const auto gpu = otcal::build_constraints(otcal::Context::cuda(0, quiet()), v.s.table, v.s.spec);
  EXPECT_EQ(gpu.A.rows, v.cpu_sys.A.rows);
  EXPECT_EQ(gpu.A.cols, v.cpu_sys.A.cols);
  EXPECT_EQ(gpu.A.indptr, v.cpu_sys.A.indptr);
  EXPECT_EQ(gpu.A.indices32, v.cpu_sys.A.indices32);
  EXPECT_EQ(gpu.A.values, v.cpu_sys.A.values);
  EXPECT_EQ(gpu.targets, v.cpu_sys.targets);
  EXPECT_EQ(gpu.names, v.cpu_sys.names);
  EXPECT_EQ(gpu.design_weights, v.cpu_sys.design_weights);
}

TEST(GpuCalibration, ExactCalibratorsMatchCpu) {
  const std::uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  const Survey v = survey(4000, seed);
  const std::size_t budget = std::size_t{256} << 20;
  struct Case {
    otcal::CalFun f;
    double lo, hi;
    const char* name;
  };
  const Case cases[] = {{otcal::CalFun::raking, -INFINITY, INFINITY, "raking"},
                        {otcal::CalFun::raking, 0.3, 3.0, "raking bounded"},
                        {otcal::CalFun::linear, -INFINITY, INFINITY, "linear GREG"},
                        {otcal::CalFun::linear, 0.2, 4.0, "linear bounded"},
                        {otcal::CalFun::logit, 0.2, 4.0, "logit"}};
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    otcal::ExactOptions o;
    o.calfun = c.f;
    o.lower = c.lo;
    o.upper = c.hi;
    o.epsilon = 1e-10;
    const auto cpu = otcal::calibrate_exact(otcal::Context::cpu(quiet(budget)), v.cpu_sys, o);
    otcal::Context gctx = otcal::Context::cuda(0, quiet(budget));
    gctx.statistics().push_scope();
    const auto gpu = otcal::calibrate_exact(gctx, v.cpu_sys, o);
    const auto peak = gctx.statistics().pop_scope();
    EXPECT_TRUE(gpu.converged);
    EXPECT_EQ(gpu.converged, cpu.converged);
    EXPECT_LE(max_rel_diff(gpu.weights, cpu.weights), 1e-9);
    EXPECT_LE(max_rel_diff(gpu.g, cpu.g), 1e-9);
    // the targets are met on the device too (independent of the CPU result)
    for (index_t r = 0; r < v.cpu_sys.A.rows; ++r) {
      double s = 0;
      for (std::int64_t p = v.cpu_sys.A.indptr[r]; p < v.cpu_sys.A.indptr[r + 1]; ++p)
        s += v.cpu_sys.A.values[p] * gpu.weights[v.cpu_sys.A.index(p)];
      EXPECT_NEAR(s, v.cpu_sys.targets[r], 1e-7 * (1 + std::fabs(v.cpu_sys.targets[r])));
    }
    EXPECT_GT(peak.peak, 0);
    EXPECT_LE(static_cast<std::size_t>(peak.peak), gpu.plan.planned_peak);
    EXPECT_LE(gpu.plan.planned_peak, budget);
  }
}

TEST(GpuCalibration, ExactWithPerConstraintVarianceMatchesCpu) {
  const std::uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  const Survey v = survey(2500, seed);
  otcal::ExactOptions o;
  o.calfun = otcal::CalFun::raking;
  o.epsilon = 1e-10;
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> U(0.5, 2.0);
  o.variance.resize(static_cast<std::size_t>(v.cpu_sys.A.rows));
  for (double& x : o.variance) x = U(rng);
  const auto cpu = otcal::calibrate_exact(otcal::Context::cpu(quiet()), v.cpu_sys, o);
  const auto gpu = otcal::calibrate_exact(otcal::Context::cuda(0, quiet()), v.cpu_sys, o);
  EXPECT_LE(max_rel_diff(gpu.weights, cpu.weights), 1e-9);
}

TEST(GpuCalibration, GradientMatchesCpuForEveryBatchSize) {
  const std::uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  const index_t n = 1500;
  const Survey v = survey(n, seed);
  const std::size_t budget = std::size_t{256} << 20;
  for (bool l0 : {false, true}) {
    SCOPED_TRACE(l0 ? "l0" : "dense");
    otcal::GradientOptions o;
    o.epochs = 12;
    o.learning_rate = 0.05;
    o.dropout_rate = 0.2;
    o.seed = seed;
    o.regularize_with_l0 = l0;
    o.normalization_factor.assign(static_cast<std::size_t>(v.cpu_sys.A.rows), 1.0);
    const auto cpu = otcal::calibrate_gradient(otcal::Context::cpu(quiet(budget)), v.cpu_sys, o);
    for (index_t b : {index_t{1}, index_t{7}, n}) {
      SCOPED_TRACE("batch " + std::to_string(b));
      o.batch_size = b;
      otcal::Context gctx = otcal::Context::cuda(0, quiet(budget));
      gctx.statistics().push_scope();
      const auto gpu = otcal::calibrate_gradient(gctx, v.cpu_sys, o);
      const auto peak = gctx.statistics().pop_scope();
      EXPECT_LE(max_rel_diff(gpu.weights, cpu.weights), 1e-6);
      ASSERT_EQ(gpu.history.size(), cpu.history.size());
      for (std::size_t h = 0; h < cpu.history.size(); ++h) {
        EXPECT_NEAR(gpu.history[h].loss, cpu.history[h].loss, 1e-6 * std::max(1.0, std::fabs(cpu.history[h].loss)));
        EXPECT_LE(max_rel_diff(gpu.history[h].estimates, cpu.history[h].estimates), 1e-6);
      }
      EXPECT_GT(peak.peak, 0);
      EXPECT_LE(static_cast<std::size_t>(peak.peak), gpu.plan.planned_peak);
      EXPECT_LE(gpu.plan.planned_peak, budget);
    }
  }
}

TEST(GpuCalibration, TooSmallBudgetIsRefusedBeforeAnyWork) {
  const Survey v = survey(2000, fresh_seed());
  otcal::ExactOptions o;
  EXPECT_THROW(otcal::calibrate_exact(otcal::Context::cuda(0, quiet(64 << 10)), v.cpu_sys, o), otcal::BudgetTooSmall);
  otcal::GradientOptions g;
  EXPECT_THROW(otcal::calibrate_gradient(otcal::Context::cuda(0, quiet(64 << 10)), v.cpu_sys, g), otcal::BudgetTooSmall);
}

// The device plan is the operation's declaration; the minimum it names is exact.
TEST(GpuCalibration, DevicePlanIsTheDeclarationAndTheMinimumIsExact) {
  const std::uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  const Survey v = survey(2500, seed);
  struct Run {
    std::vector<double> weights;
    otcal::TilePlan plan;
    otcal::MemoryReport memory;
  };
  struct Case {
    std::string name;
    std::function<otcal::WorkspaceDecl(const otcal::Context&)> decl;
    std::function<Run(const otcal::Context&)> run;
  };
  otcal::ExactOptions logit{.calfun = otcal::CalFun::logit, .lower = 0.5, .upper = 2.0};
  logit.variance.assign(static_cast<std::size_t>(v.cpu_sys.A.rows), 1.0);
  otcal::GradientOptions dense;
  dense.epochs = 4;
  dense.dropout_rate = 0.1;
  dense.seed = seed;
  dense.excluded_log_initial = true;
  dense.excluded_targets = {v.cpu_sys.names[0]};
  otcal::GradientOptions l0 = dense;
  l0.regularize_with_l0 = true;
  std::vector<Case> cases;
  const otcal::ConstraintSystem& sys = v.cpu_sys;
  auto exact_case = [&](const std::string& name, const otcal::ExactOptions& eo) {
    cases.push_back({"exact " + name, [&sys, eo](const otcal::Context& c) { return otcal::calib::exact_layout(c, sys, eo).decl; },
                     [&sys, eo](const otcal::Context& c) {
                       const auto r = otcal::calibrate_exact(c, sys, eo);
                       return Run{r.weights, r.plan, r.memory};
                     }});
  };
  auto gradient_case = [&](const std::string& name, const otcal::GradientOptions& go) {
    cases.push_back({"gradient " + name,
                     [&sys, go](const otcal::Context& c) { return otcal::calib::gradient_layout(c, sys, go).decl; },
                     [&sys, go](const otcal::Context& c) {
                       const auto r = otcal::calibrate_gradient(c, sys, go);
                       return Run{r.weights, r.plan, r.memory};
                     }});
  };
  exact_case("linear", {});
  exact_case("logit", logit);
  gradient_case("dense", dense);
  gradient_case("l0", l0);
  for (const Case& k : cases) {
    SCOPED_TRACE(k.name);
    const std::size_t budget = std::size_t{256} << 20;
    otcal::Context ample = otcal::Context::cuda(0, quiet(budget));
    const Run ref = k.run(ample);
    const otcal::WorkspaceDecl decl = k.decl(ample);
    EXPECT_EQ(ref.plan.planned_peak, decl.bytes(ref.plan.rows));
    EXPECT_GT(ref.memory.peak_bytes, 0u);
    EXPECT_LE(ref.memory.peak_bytes, ref.plan.planned_peak);
    EXPECT_LE(ref.plan.planned_peak, budget);
    std::size_t minimum = 0;
    try {
      k.run(otcal::Context::cuda(0, quiet(4096)));
      ADD_FAILURE() << "a 4 KiB budget was accepted";
    } catch (const otcal::BudgetTooSmall& e) {
      minimum = e.required_bytes();
    }
    ASSERT_GT(minimum, 4096u);
    otcal::Context short_ctx = otcal::Context::cuda(0, quiet(minimum - 1));
    EXPECT_THROW(k.run(short_ctx), otcal::BudgetTooSmall);
    EXPECT_EQ(short_ctx.statistics().allocations().total, 0);
    Run at_min;
    ASSERT_NO_THROW(at_min = k.run(otcal::Context::cuda(0, quiet(minimum))));
    EXPECT_EQ(at_min.weights, ref.weights);  // same device, same kernels: deterministic
  }
}

// Quirk 1 at dropout 0 hands back exp(θ) after the last step, as without the quirk (§3.8).
TEST(GpuCalibration, LastDropoutDrawWithoutDropoutIsThePostStepWeights) {
  const std::uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  const Survey v = survey(1200, seed);
  otcal::GradientOptions o;
  o.epochs = 3;
  o.learning_rate = 0.05;
  o.seed = seed;
  o.dropout_rate = 0;
  otcal::Context gctx = otcal::Context::cuda(0, quiet());
  const auto post_step = otcal::calibrate_gradient(gctx, v.cpu_sys, o);
  o.final_weights_last_dropout_draw = true;
  EXPECT_EQ(otcal::calibrate_gradient(gctx, v.cpu_sys, o).weights, post_step.weights);
}

}  // namespace
