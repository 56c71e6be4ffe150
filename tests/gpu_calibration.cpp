// The CUDA calibration passes (cuda/calibration.cu) against the CPU backend (the reference, itself
// tested against dense float64 references in the cpu suite): builder on a CUDA context equal to
// the CPU build; raking, linear (bounded and GREG) and logit exact calibrators on Context::cuda(0)
// vs Context::cpu() to 1e-9; the gradient calibrator (with dropout, and with L0 gates) for batch
// sizes 1, 7 and n to 1e-6 relative in float64; peak device workspace <= planned <= budget; the
// device plan is the declared workspace (src/calibration/workspace_layouts.hpp), refused one byte
// below the minimum it names, and run at exactly that minimum. The device passes themselves: S = A w
// bitwise the CPU's RowAccumulator and the Newton matrix's upper triangle bitwise the CPU's
// accumulate_newton_matrix (mirrored, so exactly symmetric), on ragged random systems; the
// gradient calibrator's weights after a few epochs with dropout to 1e-12.
// Label gpu: the binary exits 77 (skipped) where no CUDA device works (tests/support/test_main.cpp).
//
// What "equal" means across backends: the same float64 formulas, but the device exp/log may differ
// from glibc's in the last ulp (S = A w and T are bitwise the CPU's for the same w and v), so
// results agree to rounding, amplified by the Newton iterations / Adam epochs.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "calibration/kernels.hpp"
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

// ---- the device passes against the CPU's, bit for bit ------------------------------------------

// A k x n constraint matrix with ragged rows: empty rows, rows with one entry, one dense row and
// sparse rows of varied density; values ±[0.25, 4) and exact 1s (indicator-like rows), so the
// sums round and their order shows.
otcal::CsrMatrix random_csr(std::mt19937_64& rng, index_t k, index_t n, double density) {
  otcal::CsrMatrix A;
  A.rows = k;
  A.cols = n;
  A.indptr.push_back(0);
  std::uniform_real_distribution<double> U(0, 1);
  for (index_t r = 0; r < k; ++r) {
    const int kind = static_cast<int>(r % 11);
    const bool indicator = r % 3 == 0;
    auto push = [&](index_t i) {
      A.indices32.push_back(static_cast<std::int32_t>(i));
      A.values.push_back(indicator ? 1.0 : (U(rng) < 0.5 ? -1 : 1) * std::exp2(4 * U(rng) - 2));
    };
    if (kind == 1) {
      push(static_cast<index_t>(U(rng) * static_cast<double>(n)) % n);
    } else if (kind != 0) {
      const double p = r == 2 ? 0.6 : std::min(1.0, density * (0.2 + 1.8 * U(rng)));
      std::geometric_distribution<index_t> skip(p);
      for (index_t i = skip(rng); i < n; i += 1 + skip(rng)) push(i);
    }
    A.indptr.push_back(static_cast<std::int64_t>(A.values.size()));
  }
  return A;
}

// The CPU backend's S = A w: its RowAccumulator over all records in one batch.
std::vector<double> cpu_estimate(const otcal::CsrMatrix& A, const std::vector<double>& w) {
  otcal::Context cpu = otcal::Context::cpu(quiet());
  otcal::WorkspaceDecl decl;
  decl.operation = "test cpu S";
  const otcal::calib::AccumulatorIds ids = otcal::calib::declare_accumulator(decl, A.rows);
  otcal::detail::Workspace ws(cpu.workspace(), decl, std::max<index_t>(A.cols, 1));
  otcal::calib::RowAccumulator acc(otcal::calib::csr_view(A), ws, ids);
  acc.add_batch(0, A.cols, w.data());
  std::vector<double> S(static_cast<std::size_t>(A.rows));
  acc.finish(S.data());
  return S;
}

// S = A d, S = A (d g) and T from the CUDA exact passes (linear distance, unbounded: F' = 1, so
// v = d / σ² exactly) against the CPU's passes on the same d, g and v.
void expect_device_passes_bitwise(const otcal::CsrMatrix& A, std::uint64_t seed) {
  std::mt19937_64 rng(seed ^ 0x5eed);
  std::uniform_real_distribution<double> U(0, 1);
  const index_t n = A.cols, k = A.rows;
  std::vector<double> design(static_cast<std::size_t>(n)), sigma2(static_cast<std::size_t>(n)),
      eta(static_cast<std::size_t>(k), 0.0);
  for (double& d : design) d = (U(rng) < 0.1 ? -1 : 1) * std::exp(3 * U(rng));
  for (double& x : sigma2) x = 0.5 + 2 * U(rng);
  std::vector<index_t> active_rows, active_of(static_cast<std::size_t>(k), -1);
  for (index_t r = 0; r < k; ++r)
    if (otcal::calib::row_is_active(A, r)) {
      active_of[static_cast<std::size_t>(r)] = static_cast<index_t>(active_rows.size());
      active_rows.push_back(r);
      eta[static_cast<std::size_t>(r)] = 0.2 * (U(rng) - 0.5);
    }
  const index_t ka = static_cast<index_t>(active_rows.size());
  const otcal::CsrMatrix At = otcal::transpose(A);

  otcal::Context ctx = otcal::Context::cuda(0, quiet(std::size_t{2} << 30));
  otcal::WorkspaceDecl decl;
  decl.operation = "test device passes";
  const otcal::calib::CudaExactIds ids = otcal::calib::declare_cuda_exact_workspace(decl, A, ka, true);
  const otcal::TilePlan plan = otcal::calib::plan_calibration(decl, ctx, n);
  otcal::detail::Workspace ws(ctx.workspace(), decl, plan.rows, ctx.compute_stream());
  otcal::detail::DistanceMath dist;
  dist.calfun = otcal::detail::CalFunCode::linear;
  dist.L = -INFINITY;
  dist.U = INFINITY;
  const std::unique_ptr<otcal::calib::ExactPasses> passes =
      otcal::calib::make_cuda_exact_passes(ctx, ws, ids, A, At, active_rows, design, sigma2, dist);

  std::vector<double> S(static_cast<std::size_t>(k), -1.0);
  passes->estimate_design(S.data());
  EXPECT_EQ(S, cpu_estimate(A, design)) << "S = A d";
  for (index_t r = 0; r < k; ++r)
    if (!otcal::calib::row_is_active(A, r)) EXPECT_EQ(S[static_cast<std::size_t>(r)], 0.0) << "empty row " << r;

  ASSERT_TRUE(passes->recompute(eta.data()));
  std::vector<double> g(static_cast<std::size_t>(n)), v(static_cast<std::size_t>(n));
  passes->download_g(g.data());
  for (index_t i = 0; i < n; ++i) v[i] = design[i] * g[i];  // the CPU's v = d * g
  std::fill(S.begin(), S.end(), -1.0);
  passes->estimate_weights(S.data());
  EXPECT_EQ(S, cpu_estimate(A, v)) << "S = A (d g)";

  if (ka == 0) return;
  const std::size_t t_count = static_cast<std::size_t>(ka) * static_cast<std::size_t>(ka);
  std::vector<double> T(t_count, -1.0), T_cpu(t_count, 0.0);
  passes->newton_matrix(T.data());
  for (index_t i = 0; i < n; ++i) v[i] = design[i] * 1.0 / sigma2[i];  // the CPU's d F' / σ², F' = 1
  otcal::calib::accumulate_newton_matrix(otcal::calib::csr_view(A), otcal::calib::csr_view(At), active_rows,
                                         active_of, v.data(), T_cpu.data());
  std::size_t upper_diff = 0, asymmetric = 0;
  for (index_t a = 0; a < ka; ++a)
    for (index_t b = a; b < ka; ++b) {
      upper_diff += T[a * ka + b] != T_cpu[a * ka + b];
      asymmetric += T[b * ka + a] != T[a * ka + b];
    }
  EXPECT_EQ(upper_diff, 0u) << "entries of T's upper triangle that differ from the CPU's, of " << ka * (ka + 1) / 2;
  EXPECT_EQ(asymmetric, 0u) << "entries of T that differ from their mirror";
}

TEST(GpuCalibration, DevicePassesEqualCpuBitwiseOnRaggedSystems) {
  const std::uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  struct Shape {
    index_t k, n;
    double density;
  };
  // n not a multiple of the 256-record granule; few long rows, many short ones, a tiny system
  for (const Shape sh : {Shape{10, 200000, 0.3}, Shape{2000, 50000, 0.01}, Shape{23, 1000 + 37, 0.05},
                         Shape{5, 255, 0.5}}) {
    SCOPED_TRACE(std::to_string(sh.k) + " rows x " + std::to_string(sh.n) + " records");
    const otcal::CsrMatrix A = random_csr(rng, sh.k, sh.n, sh.density);
    ASSERT_GT(A.nnz(), 0);
    expect_device_passes_bitwise(A, seed + static_cast<std::uint64_t>(sh.k));
  }
  SCOPED_TRACE("a survey's constraint system (categorical margins, continuous totals)");
  expect_device_passes_bitwise(survey(3001, seed).cpu_sys.A, seed);
}

// With S bitwise the CPU's, only the device exp/log (a last-ulp difference in w' and Adam) can
// separate the two backends over a few epochs.
TEST(GpuCalibration, GradientWeightsAfterFewEpochsWithDropoutMatchCpuClosely) {
  const std::uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  const Survey v = survey(2777, seed);
  for (bool l0 : {false, true}) {
    SCOPED_TRACE(l0 ? "l0" : "dense");
    otcal::GradientOptions o;
    o.epochs = 4;
    o.learning_rate = 0.02;
    o.dropout_rate = 0.3;
    o.seed = seed;
    o.regularize_with_l0 = l0;
    const auto cpu = otcal::calibrate_gradient(otcal::Context::cpu(quiet()), v.cpu_sys, o);
    const auto gpu = otcal::calibrate_gradient(otcal::Context::cuda(0, quiet()), v.cpu_sys, o);
    EXPECT_LE(max_rel_diff(gpu.weights, cpu.weights), 1e-12);
    ASSERT_EQ(gpu.history.size(), cpu.history.size());
    for (std::size_t h = 0; h < cpu.history.size(); ++h)
      EXPECT_LE(max_rel_diff(gpu.history[h].estimates, cpu.history[h].estimates), 1e-12) << "history row " << h;
  }
}

}  // namespace
