// The exact calibrator's Newton solve on the device (cuda/newton_device.cu: cuSOLVER potrf while T
// is positive definite by the host's pivot test, the syevd pseudo-inverse otherwise) against the
// CPU backend, whose host solve drops dependent constraints (src/calibration/newton_solve.hpp):
//  * linear (GREG and bounded), raking and logit on fresh surveys with three exhaustive margins
//    (T singular: two dependent rows, the pinv path) and with one margin (T positive definite: the
//    potrf path), continuous columns in both, ragged record counts: weights equal to 1e-10;
//  * margins that disagree on the total (inconsistent targets): CalibrationFailed on both, and
//    with force the same best ratio;
//  * the solve's buffers are declared (cuSOLVER workspace, eigenvalues, ka-vectors, info): a budget
//    one byte below the minimum the planner names raises BudgetTooSmall before any allocation, and
//    that minimum runs, with the same weights.
// Label gpu: the binary exits 77 (skipped) where no CUDA device works (tests/support/test_main.cpp).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "calibration/workspace_layouts.hpp"
#include "otcal/calibration.hpp"
#include "otcal/errors.hpp"
#include "support/calibration_fixtures.hpp"
#include "support/process.hpp"

namespace {

using otcal::index_t;

otcal::ContextOptions quiet(std::size_t budget = std::size_t{256} << 20) { return testsupport::quiet_options(budget); }

using testsupport::fresh_seed;
using testsupport::max_rel_diff;

otcal::ConstraintSystem build(index_t n, int margins, int categories, int continuous, std::uint64_t seed) {
  const auto s = otcal::make_synthetic_survey(n, margins, categories, continuous, seed);
  return otcal::build_constraints(otcal::Context::cpu(quiet()), s.table, s.spec);
}

struct Case {
  otcal::CalFun f;
  double lo, hi;
  const char* name;
};
const Case kCases[] = {{otcal::CalFun::linear, -INFINITY, INFINITY, "linear GREG"},
                       {otcal::CalFun::linear, 0.2, 4.0, "linear bounded"},
                       {otcal::CalFun::raking, -INFINITY, INFINITY, "raking"},
                       {otcal::CalFun::logit, 0.2, 4.0, "logit"}};

void expect_same_as_cpu(const otcal::ConstraintSystem& sys) {
  for (const Case& c : kCases) {
    SCOPED_TRACE(c.name);
    otcal::ExactOptions o;
    o.calfun = c.f;
    o.lower = c.lo;
    o.upper = c.hi;
    o.epsilon = 1e-11;
    const auto cpu = otcal::calibrate_exact(otcal::Context::cpu(quiet()), sys, o);
    const auto gpu = otcal::calibrate_exact(otcal::Context::cuda(0, quiet()), sys, o);
    ASSERT_TRUE(cpu.converged);
    EXPECT_TRUE(gpu.converged);
    EXPECT_LE(max_rel_diff(gpu.weights, cpu.weights), 1e-10);
    // the targets are met on the device by its own weights (independent of the CPU result)
    for (index_t r = 0; r < sys.A.rows; ++r) {
      double s = 0;
      for (std::int64_t p = sys.A.indptr[r]; p < sys.A.indptr[r + 1]; ++p) s += sys.A.values[p] * gpu.weights[sys.A.index(p)];
      EXPECT_NEAR(s, sys.targets[r], 1e-9 * (1 + std::fabs(sys.targets[r]))) << sys.names[r];
    }
  }
}

// Three exhaustive margins: their indicator rows share the all-ones sum, so T has two dependent
// rows in every step; potrf fails and the device takes the pseudo-inverse step.
TEST(GpuNewtonSolve, DependentMarginsMatchCpu) {
  const std::uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  const index_t n = 2000 + static_cast<index_t>(rng() % 1500);  // ragged
  SCOPED_TRACE("n " + std::to_string(n));
  const auto sys = build(n, 3, 4 + static_cast<int>(rng() % 4), 2, seed);
  ASSERT_GE(sys.margin_offsets.size(), 4u);  // three margins
  expect_same_as_cpu(sys);
}

// One margin and continuous columns: T is positive definite, the potrf / potrs path.
TEST(GpuNewtonSolve, PositiveDefiniteMatchesCpu) {
  const std::uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  const index_t n = 1500 + static_cast<index_t>(rng() % 1500);
  SCOPED_TRACE("n " + std::to_string(n));
  expect_same_as_cpu(build(n, 1, 5 + static_cast<int>(rng() % 5), 3, seed));
}

// The second margin's targets scaled by 1.05: the margins disagree on the total, T Δ = b has no
// solution, both backends take pinv's least-squares step and fail the same way.
TEST(GpuNewtonSolve, InconsistentTargetsFailAsOnCpu) {
  const std::uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  const index_t n = 1800 + static_cast<index_t>(rng() % 900);
  auto sys = build(n, 2, 5, 1, seed);
  ASSERT_GE(sys.margin_offsets.size(), 3u);
  for (index_t r = sys.margin_offsets[1]; r < sys.margin_offsets[2]; ++r) sys.targets[r] *= 1.05;
  for (otcal::CalFun f : {otcal::CalFun::linear, otcal::CalFun::raking}) {
    SCOPED_TRACE(f == otcal::CalFun::linear ? "linear" : "raking");
    otcal::ExactOptions o;
    o.calfun = f;
    o.max_iterations = 20;
    std::string cpu_what, gpu_what;
    try {
      otcal::calibrate_exact(otcal::Context::cpu(quiet()), sys, o);
      ADD_FAILURE() << "the CPU accepted inconsistent targets";
    } catch (const otcal::CalibrationFailed& e) {
      cpu_what = e.what();
    }
    try {
      otcal::calibrate_exact(otcal::Context::cuda(0, quiet()), sys, o);
      ADD_FAILURE() << "the device accepted inconsistent targets";
    } catch (const otcal::CalibrationFailed& e) {
      gpu_what = e.what();
    }
    const std::string head = "Calibration failed: eps=";
    EXPECT_EQ(cpu_what.rfind(head, 0), 0u) << cpu_what;
    EXPECT_EQ(gpu_what.rfind(head, 0), 0u) << gpu_what;
    o.force = true;
    const auto cpu = otcal::calibrate_exact(otcal::Context::cpu(quiet()), sys, o);
    const auto gpu = otcal::calibrate_exact(otcal::Context::cuda(0, quiet()), sys, o);
    EXPECT_FALSE(cpu.converged);
    EXPECT_FALSE(gpu.converged);
    EXPECT_EQ(gpu.n_iterations, cpu.n_iterations);
    EXPECT_NEAR(gpu.max_ratio, cpu.max_ratio, 1e-6 * cpu.max_ratio);
  }
}

TEST(GpuNewtonSolve, SolveBuffersAreBudgeted) {
  const std::uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  const index_t n = 1200 + static_cast<index_t>(rng() % 800);
  const auto sys = build(n, 3, 5, 2, seed);
  otcal::ExactOptions o;
  o.calfun = otcal::CalFun::raking;
  otcal::Context ample = otcal::Context::cuda(0, quiet());
  const otcal::WorkspaceDecl decl = otcal::calib::exact_layout(ample, sys, o).decl;
  const auto ka = static_cast<std::size_t>(otcal::calib::active_row_count(sys.A));
  auto declared = [&](const std::string& name) -> const otcal::BufferDecl* {
    for (const auto& b : decl.buffers)
      if (b.name == name) return &b;
    ADD_FAILURE() << name << " is not declared";
    return nullptr;
  };
  if (const auto* w = declared("newton.cusolver_work")) EXPECT_GT(w->fixed_count, 0u);  // syevd needs some
  for (const char* name : {"newton.eigenvalues", "newton.rhs", "newton.projection", "newton.diagonal"})
    if (const auto* b = declared(name)) EXPECT_EQ(b->fixed_count * b->element_size, ka * sizeof(double)) << name;
  if (const auto* info = declared("newton.info")) EXPECT_EQ(info->fixed_count, 1u);

  const auto ref = otcal::calibrate_exact(ample, sys, o);
  ASSERT_TRUE(ref.converged);
  EXPECT_EQ(ref.plan.planned_peak, decl.bytes(ref.plan.rows));
  std::size_t minimum = 0;
  try {
    otcal::calibrate_exact(otcal::Context::cuda(0, quiet(4096)), sys, o);
    ADD_FAILURE() << "a 4 KiB budget was accepted";
  } catch (const otcal::BudgetTooSmall& e) {
    minimum = e.required_bytes();
  }
  ASSERT_GT(minimum, 4096u);
  otcal::Context short_ctx = otcal::Context::cuda(0, quiet(minimum - 1));
  EXPECT_THROW(otcal::calibrate_exact(short_ctx, sys, o), otcal::BudgetTooSmall);
  EXPECT_EQ(short_ctx.statistics().allocations().total, 0);
  otcal::Context at_min_ctx = otcal::Context::cuda(0, quiet(minimum));
  otcal::CalibrationResult at_min;
  ASSERT_NO_THROW(at_min = otcal::calibrate_exact(at_min_ctx, sys, o));
  EXPECT_LE(at_min.memory.peak_bytes, at_min.plan.planned_peak);
  EXPECT_EQ(at_min.weights, ref.weights);  // same device, deterministic kernels and cuSOLVER mode
}

}  // namespace
