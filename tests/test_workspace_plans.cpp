// The memory contract of every point-cloud operation (docs/host-layer.md §3, §11), on fresh random
// problems: the planned peak is the declared buffers, the measured peak is exactly what was
// declared (nothing else allocates from the budget) and <= planned <= budget, a budget one byte
// below the named minimum fails before anything is allocated, and re-running with exactly the
// named minimum succeeds with the same result. Also: a resident problem is uploaded once.
#include <gtest/gtest.h>

#include <cctype>
#include <functional>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "otcal/errors.hpp"
#include "otcal/problem.hpp"
#include "otcal/sinkhorn.hpp"
#include "otcal/sparsify.hpp"
#include "support/process.hpp"
#include "support/reference.hpp"

namespace {

constexpr std::size_t kAmple = std::size_t{1} << 30;

otcal::Context ctx_with_budget(std::size_t budget, int threads = 0) {
  otcal::ContextOptions o;
  o.memory_budget = budget;
  o.threads = threads;
  o.on_warning = [](const std::string&) {};
  return otcal::Context::cpu(o);
}

struct Input {
  ref::Clouds c;
  std::vector<double> v;  // [m, 3] vectors for apply
  otcal::PointCloud geom(const std::string& cost) const {
    otcal::PointCloud g;
    g.x = otcal::ConstMatrix::of(c.x.data(), c.n, c.d);
    g.y = otcal::ConstMatrix::of(c.y.data(), c.m, c.d);
    g.options.cost = otcal::Cost::parse(cost);
    g.options.scale = otcal::ScaleCost::parse("mean");
    return g;
  }
};

// What an operation reports about its memory, and a value to compare runs by.
struct Outcome {
  otcal::TilePlan plan;
  std::size_t measured = 0;
  std::vector<double> value;
};

struct Operation {
  std::string name;
  std::string cost = "sqeuclidean";
  otcal::DType precision = otcal::DType::float64;
  std::optional<otcal::index_t> batch;
  // Runs the one-call form of the operation on `ctx` (it uploads, then runs).
  std::function<Outcome(const otcal::Context&, const Input&, const Operation&)> run;
};

otcal::SinkhornOptions solve_options(const Operation& op) {
  otcal::SinkhornOptions o;
  o.epsilon = 0.05;
  o.threshold = 1e-6;
  o.max_iterations = 200;
  o.precision = op.precision;
  o.batch_size = op.batch;
  return o;
}

// Potentials solved once with an ample budget (they are inputs of apply, marginal and sparsify).
otcal::Potentials potentials(const Input& in, const Operation& op) {
  otcal::SinkhornOptions o = solve_options(op);
  o.batch_size.reset();
  return otcal::sinkhorn(ctx_with_budget(kAmple), in.geom(op.cost), {}, {}, o).potentials();
}

Outcome sparsify_outcome(const otcal::SparsifyResult& r) {
  Outcome out{r.plan, r.memory.peak_bytes, {}};
  out.value.assign(r.csr.values.begin(), r.csr.values.end());
  for (auto i : r.csr.indices32) out.value.push_back(static_cast<double>(i));
  return out;
}

Operation sparsify_op(const std::string& name, otcal::SparsifyMode mode, double value,
                      otcal::PercentileMethod method = otcal::PercentileMethod::sampled) {
  Operation op;
  op.name = name;
  op.batch = 13;
  op.run = [mode, value, method](const otcal::Context& ctx, const Input& in, const Operation& self) {
    const otcal::Potentials p = potentials(in, self);
    otcal::SparsifyOptions o;
    o.mode = mode;
    o.value = value;
    o.percentile_method = method;
    o.batch_size = self.batch;
    if (mode == otcal::SparsifyMode::mass) o.max_k = 7;
    if (mode == otcal::SparsifyMode::min_row) o.value.reset();
    return sparsify_outcome(otcal::sparsify(ctx, in.geom(self.cost), p, o));
  };
  return op;
}

std::vector<Operation> operations() {
  std::vector<Operation> ops;
  for (const char* cost : {"sqeuclidean", "cosine"})
    for (otcal::DType precision : {otcal::DType::float64, otcal::DType::float32}) {
      Operation op;
      op.name = std::string("solve ") + cost + " " + otcal::dtype_name(precision);
      op.cost = cost;
      op.precision = precision;
      op.batch = 17;
      op.run = [](const otcal::Context& ctx, const Input& in, const Operation& self) {
        const otcal::SinkhornResult r = otcal::sinkhorn(ctx, in.geom(self.cost), {}, {}, solve_options(self));
        Outcome out{r.plan, r.memory.peak_bytes, r.f};
        out.value.insert(out.value.end(), r.g.begin(), r.g.end());
        return out;
      };
      ops.push_back(op);
    }
  {
    Operation op;
    op.name = "solve with scale_cost median (exact cost quantile in the solve)";
    op.run = [](const otcal::Context& ctx, const Input& in, const Operation& self) {
      otcal::PointCloud g = in.geom(self.cost);
      g.options.scale = otcal::ScaleCost::parse("median");
      const otcal::SinkhornResult r = otcal::sinkhorn(ctx, g, {}, {}, solve_options(self));
      Outcome out{r.plan, r.memory.peak_bytes, r.f};
      out.value.push_back(r.scale);
      return out;
    };
    ops.push_back(op);
  }
  {
    Operation op;
    op.name = "cost statistics (relative epsilon)";
    op.cost = "euclidean";
    op.run = [](const otcal::Context& ctx, const Input& in, const Operation& self) {
      otcal::SinkhornOptions o = solve_options(self);
      o.epsilon = 0.1;
      o.relative_epsilon = otcal::RelativeEpsilon::std;
      o.max_iterations = 10;
      const otcal::SinkhornResult r = otcal::sinkhorn(ctx, in.geom(self.cost), {}, {}, o);
      return Outcome{r.plan, r.memory.peak_bytes, {r.epsilon, r.scale}};
    };
    ops.push_back(op);
  }
  // apply and marginal: the one-call form for the budget runs; with the ample budget the
  // operation runs on a resident problem to report its plan, measured in its own scope.
  for (int axis : {0, 1})
    for (bool apply : {true, false}) {
      Operation op;
      op.name = std::string(apply ? "apply" : "marginal") + " axis " + std::to_string(axis);
      op.batch = 9;
      op.run = [axis, apply](const otcal::Context& ctx, const Input& in, const Operation& self) {
        const otcal::Potentials p = potentials(in, self);
        const otcal::index_t rows = axis == 1 ? in.c.m : in.c.n;
        const otcal::ConstMatrix v = otcal::ConstMatrix::of(in.v.data(), rows, 3);
        const otcal::PointCloud geom = in.geom(self.cost);
        Outcome out;
        if (ctx.memory_budget() < kAmple)
          out.value = apply ? otcal::apply_transport(ctx, geom, p, v, axis, self.batch)
                            : otcal::marginal(ctx, geom, p, axis, self.batch);
        else {
          const otcal::Problem problem = otcal::Problem::upload(ctx, geom, {}, {}, p.precision);
          ctx.statistics().push_scope();
          out.value = apply ? otcal::apply_transport(problem, p, v, axis, self.batch, &out.plan)
                            : otcal::marginal(problem, p, axis, self.batch, &out.plan);
          out.measured = static_cast<std::size_t>(ctx.statistics().pop_scope().peak);
        }
        return out;
      };
      ops.push_back(op);
    }
  {
    Operation op;
    op.name = "exact cost quantile";
    op.cost = "pnorm:1.5";
    op.run = [](const otcal::Context& ctx, const Input& in, const Operation& self) {
      return Outcome{{}, 0, {otcal::exact_cost_quantile(ctx, in.geom(self.cost), 37.0, self.precision)}};
    };
    ops.push_back(op);
  }
  ops.push_back(sparsify_op("sparsify threshold", otcal::SparsifyMode::threshold, 1e-5));
  ops.push_back(sparsify_op("sparsify sampled percentile", otcal::SparsifyMode::percentile, 90));
  ops.push_back(sparsify_op("sparsify exact percentile", otcal::SparsifyMode::percentile, 90,
                            otcal::PercentileMethod::exact));
  ops.push_back(sparsify_op("sparsify min_row", otcal::SparsifyMode::min_row, 0));
  ops.push_back(sparsify_op("sparsify mass", otcal::SparsifyMode::mass, 0.9));
  return ops;
}

Input fresh_input(std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  Input in;
  const std::int64_t n = 40 + static_cast<std::int64_t>(rng() % 60), m = 40 + static_cast<std::int64_t>(rng() % 60);
  in.c = ref::random_clouds(n, m, 3, seed);
  std::normal_distribution<double> N;
  in.v.resize(static_cast<std::size_t>(std::max(n, m) * 3));
  for (double& x : in.v) x = N(rng);
  return in;
}

std::size_t sum_requested(const otcal::TilePlan& p) {
  std::size_t s = 0;
  for (const auto& b : p.buffers) s += b.bytes;
  return s;
}
std::size_t sum_charged(const otcal::TilePlan& p) {
  std::size_t s = 0;
  for (const auto& b : p.buffers) s += b.bytes == 0 ? 0 : (b.bytes + 255) / 256 * 256;
  return s;
}

class WorkspacePlans : public ::testing::TestWithParam<int> {};

TEST_P(WorkspacePlans, DeclaredPlannedMeasuredAndTheNamedMinimumWorks) {
  const Operation op = operations()[static_cast<std::size_t>(GetParam())];
  const std::uint64_t seed = testsupport::fresh_seed();
  SCOPED_TRACE(op.name + ", seed " + std::to_string(seed));
  const Input in = fresh_input(seed);

  // Ample budget, on a resident problem where the operation has one: the contract in numbers.
  const std::size_t ample = kAmple;
  const Outcome big = op.run(ctx_with_budget(ample), in, op);
  if (!big.plan.buffers.empty()) {
    EXPECT_EQ(big.plan.planned_peak, sum_charged(big.plan)) << "planned peak = the declared buffers";
    EXPECT_EQ(big.measured, sum_requested(big.plan)) << "measured peak = exactly the declared buffers";
    EXPECT_LE(big.measured, big.plan.planned_peak);
    EXPECT_LE(big.plan.resident + big.plan.planned_peak + big.plan.headroom, ample);
  }

  // A budget too small for the whole call: refused before anything is allocated.
  const otcal::Context tiny = ctx_with_budget(2048);
  std::size_t required = 0;
  try {
    op.run(tiny, in, op);
    FAIL() << "a 2 KiB budget was accepted";
  } catch (const otcal::BudgetTooSmall& e) {
    required = e.required_bytes();
    EXPECT_NE(std::string(e.what()).find(std::to_string(required)), std::string::npos) << e.what();
  }
  EXPECT_EQ(tiny.statistics().allocations().total, 0) << "nothing allocated before the refusal";

  // One byte less than the named minimum fails too; exactly the minimum succeeds, same result.
  const otcal::Context below = ctx_with_budget(required - 1);
  EXPECT_THROW(op.run(below, in, op), otcal::BudgetTooSmall);
  EXPECT_EQ(below.statistics().allocations().total, 0);
  const otcal::Context exact = ctx_with_budget(required);
  Outcome at_min;
  ASSERT_NO_THROW(at_min = op.run(exact, in, op)) << "the named minimum " << required << " is enough";
  EXPECT_LE(static_cast<std::size_t>(exact.statistics().bytes().peak) + at_min.plan.headroom, required);
  ASSERT_EQ(at_min.value.size(), big.value.size());
  for (std::size_t i = 0; i < big.value.size(); ++i) ASSERT_EQ(at_min.value[i], big.value[i]) << "entry " << i;
}

INSTANTIATE_TEST_SUITE_P(EveryOperation, WorkspacePlans, ::testing::Range(0, static_cast<int>(operations().size())),
                         [](const ::testing::TestParamInfo<int>& info) {
                           std::string s = operations()[static_cast<std::size_t>(info.param)].name;
                           for (char& ch : s)
                             if (!std::isalnum(static_cast<unsigned char>(ch))) ch = '_';
                           return s;
                         });

// One upload per resident problem: solve, sparsify twice with different batch sizes, apply and a
// marginal, with the clouds uploaded once (x and y: two clouds; y = x: one).
TEST(ResidentProblem, UploadedOnceAcrossOperations) {
  const std::uint64_t seed = testsupport::fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  const Input in = fresh_input(seed);
  for (bool same : {false, true}) {
    const otcal::Context ctx = ctx_with_budget(std::size_t{1} << 28);
    otcal::PointCloud geom = in.geom("sqeuclidean");
    if (same) geom.y = {};
    const otcal::Problem problem = otcal::Problem::upload(ctx, geom);
    const std::uint64_t after_upload = ctx.cloud_uploads();
    EXPECT_EQ(after_upload, same ? 1u : 2u);
    otcal::SinkhornOptions so;
    so.epsilon = 0.05;
    const otcal::SinkhornResult r = otcal::sinkhorn(problem, so);
    otcal::SparsifyOptions o;
    o.mode = otcal::SparsifyMode::threshold;
    o.value = 1e-5;
    o.batch_size = 5;
    const otcal::SparsifyResult p5 = otcal::sparsify(problem, r, o);
    o.batch_size = 64;
    const otcal::SparsifyResult p64 = otcal::sparsify(problem, r, o);
    EXPECT_EQ(p5.csr.values, p64.csr.values) << "batch size is a memory knob only";
    EXPECT_EQ(p5.csr.indptr, p64.csr.indptr);
    const otcal::ConstMatrix v = otcal::ConstMatrix::of(in.v.data(), problem.m(), 3);
    const std::vector<double> pv = otcal::apply_transport(problem, r, v, 1, 11);
    const std::vector<double> row_sums = otcal::marginal(problem, r, 1);
    ASSERT_EQ(pv.size(), static_cast<std::size_t>(problem.n() * 3));
    EXPECT_EQ(ctx.cloud_uploads(), after_upload) << "no operation uploaded the clouds again";

    // The same sequence through the one-call overloads uploads every time: the counter counts.
    const std::uint64_t before = ctx.cloud_uploads();
    otcal::sparsify(ctx, geom, r, o);
    EXPECT_EQ(ctx.cloud_uploads(), before + after_upload);

    // The resident problem agrees with the one-call forms bitwise.
    const otcal::SinkhornResult r1 = otcal::sinkhorn(ctx, geom, {}, {}, so);
    EXPECT_EQ(r1.f, r.f);
    EXPECT_EQ(r1.g, r.g);
    EXPECT_EQ(otcal::apply_transport(ctx, geom, r, v, 1), pv);
  }
}

// Potentials from another solver (OTT-JAX or moscot, say) on a problem: a precision or shape that
// does not belong to the problem is named, not silently converted.
TEST(ResidentProblem, ForeignPotentialsAreChecked) {
  const std::uint64_t seed = testsupport::fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  const Input in = fresh_input(seed);
  const otcal::Context ctx = ctx_with_budget(std::size_t{1} << 26);
  const otcal::Problem problem = otcal::Problem::upload(ctx, in.geom("sqeuclidean"));
  otcal::Potentials p;
  p.f.assign(static_cast<std::size_t>(problem.n()), 0.0);
  p.g.assign(static_cast<std::size_t>(problem.m()), 0.0);
  p.epsilon = 0.1;
  p.scale = 1;
  otcal::SparsifyOptions o;
  o.value = 1e-9;
  EXPECT_NO_THROW(otcal::sparsify(problem, p, o));
  p.precision = otcal::DType::float32;
  EXPECT_THROW(otcal::sparsify(problem, p, o), otcal::InvalidArgument);
  p.precision = otcal::DType::float64;
  p.g.pop_back();
  EXPECT_THROW(otcal::marginal(problem, p, 0), otcal::InvalidArgument);
  otcal::SinkhornOptions so;
  so.precision = otcal::DType::float32;
  EXPECT_THROW(otcal::sinkhorn(problem, so), otcal::InvalidArgument) << "solve precision != upload precision";
}

// Device views need a device: on a CPU context they are named, not dereferenced.
TEST(ResidentProblem, DeviceViewsOnTheCpuAreRefused) {
  const std::uint64_t seed = testsupport::fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  const Input in = fresh_input(seed);
  const otcal::Context ctx = ctx_with_budget(std::size_t{1} << 26);
  otcal::PointCloud geom = in.geom("sqeuclidean");
  geom.x.location = otcal::Location::device;
  geom.y.location = otcal::Location::device;
  try {
    otcal::Problem::upload(ctx, geom);
    FAIL();
  } catch (const otcal::InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("x is a device array"), std::string::npos) << e.what();
  }
  geom = in.geom("sqeuclidean");
  std::vector<double> a(static_cast<std::size_t>(in.c.n), 1.0);
  otcal::ConstVector av = otcal::ConstVector::of(a.data(), in.c.n);
  av.location = otcal::Location::device;
  EXPECT_THROW(otcal::Problem::upload(ctx, geom, av), otcal::InvalidArgument);
  EXPECT_EQ(ctx.cloud_uploads(), 0u);
}

// New weights on a resident problem (the Python PointCloud solves with any a, b): the clouds are not
// uploaded again and the solve equals a fresh upload with those weights, bitwise. A bad weight
// vector is named and leaves the previous weights in place.
TEST(ResidentProblem, SetWeightsEqualsAFreshUpload) {
  const std::uint64_t seed = testsupport::fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  const Input in = fresh_input(seed);
  std::mt19937_64 gen(seed ^ 0x5eedULL);
  std::uniform_real_distribution<double> u(0.2, 1.0);
  std::vector<double> a(static_cast<std::size_t>(in.c.n)), b(static_cast<std::size_t>(in.c.m));
  for (double& v : a) v = u(gen);
  for (double& v : b) v = u(gen);
  const otcal::ConstVector av = otcal::ConstVector::of(a.data(), in.c.n);
  const otcal::ConstVector bv = otcal::ConstVector::of(b.data(), in.c.m);
  const otcal::Context ctx = ctx_with_budget(std::size_t{1} << 26);
  const otcal::PointCloud geom = in.geom("sqeuclidean");
  otcal::Problem problem = otcal::Problem::upload(ctx, geom);
  otcal::SinkhornOptions so;
  so.epsilon = 0.05;
  so.threshold = 1e-8;
  const otcal::SinkhornResult uniform = otcal::sinkhorn(problem, so);
  const std::uint64_t uploads = ctx.cloud_uploads();

  problem.set_weights(av, bv);
  const otcal::SinkhornResult weighted = otcal::sinkhorn(problem, so);
  EXPECT_EQ(ctx.cloud_uploads(), uploads);
  const otcal::SinkhornResult fresh = otcal::sinkhorn(ctx, geom, av, bv, so);
  EXPECT_EQ(weighted.f, fresh.f);
  EXPECT_EQ(weighted.g, fresh.g);
  EXPECT_EQ(weighted.reg_ot_cost, fresh.reg_ot_cost);
  EXPECT_NE(weighted.f, uniform.f) << "the new weights were used";

  std::vector<double> bad = b;
  bad[bad.size() / 2] = -bad[bad.size() / 2];
  try {
    problem.set_weights({}, otcal::ConstVector::of(bad.data(), in.c.m));
    FAIL() << "a negative weight was accepted";
  } catch (const otcal::InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("b"), std::string::npos) << e.what();
  }
  EXPECT_EQ(problem.a(), a) << "a failed set_weights changes nothing";
  EXPECT_EQ(otcal::sinkhorn(problem, so).f, weighted.f);

  problem.set_weights({}, {});
  EXPECT_EQ(otcal::sinkhorn(problem, so).f, uniform.f) << "empty weights are uniform again";
}

// Bytes the caller holds against the budget (Python's dense transport_matrix fills its array from
// the sparsify sink) are part of the plan: the named minimum grows by at least those bytes (the
// planner's headroom grows with the budget) and is exactly enough.
TEST(ResidentProblem, ReservedBytesAreCountedInTheSparsifyMinimum) {
  const std::uint64_t seed = testsupport::fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  const Input in = fresh_input(seed);
  const otcal::Context ample = ctx_with_budget(kAmple);
  const otcal::PointCloud geom = in.geom("sqeuclidean");
  otcal::SinkhornOptions so;
  so.epsilon = 0.05;
  const otcal::Potentials pot = otcal::sinkhorn(ample, geom, {}, {}, so).potentials();
  auto minimum = [&](std::size_t reserved) {
    otcal::SparsifyOptions o;
    o.value = 1e-9;
    o.reserved_bytes = reserved;
    try {
      otcal::sparsify(ctx_with_budget(1024), geom, pot, o);
    } catch (const otcal::BudgetTooSmall& e) {
      return e.required_bytes();
    }
    ADD_FAILURE() << "1 KiB was enough";
    return std::size_t{0};
  };
  const auto reserved = static_cast<std::size_t>(in.c.n * in.c.m * 8);
  const std::size_t base = minimum(0), with = minimum(reserved);
  EXPECT_GE(with, base + reserved);
  otcal::SparsifyOptions o;
  o.value = 1e-9;
  o.reserved_bytes = reserved;
  EXPECT_NO_THROW(otcal::sparsify(ctx_with_budget(with), geom, pot, o));
  EXPECT_THROW(otcal::sparsify(ctx_with_budget(with - 1), geom, pot, o), otcal::BudgetTooSmall);
}

}  // namespace
