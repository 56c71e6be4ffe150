// Host layer: memory adaptors (limit, statistics, scopes), the tile planner, byte parsing, Context.
#include <gtest/gtest.h>

#include <limits>
#include <random>
#include <thread>
#include <vector>

#include "otcal/context.hpp"
#include "otcal/errors.hpp"
#include "otcal/memory.hpp"
#include "otcal/planner.hpp"
#include "otcal/sinkhorn.hpp"
#include "otcal/problem.hpp"
#include "support/process.hpp"
#include "support/reference.hpp"

#include <omp.h>

namespace {

TEST(LimitingAdaptor, RefusesPastTheLimitAndRollsBack) {
  otcal::HostResource host;
  otcal::StatisticsAdaptor stats(host);
  otcal::LimitingAdaptor limit(stats, 4096);
  void* a = limit.allocate(nullptr, 1000);  // charged 1024
  EXPECT_EQ(limit.allocated_bytes(), 1024u);
  void* b = limit.allocate(nullptr, 3072);
  EXPECT_EQ(limit.allocated_bytes(), 4096u);
  try {
    limit.allocate(nullptr, 1);
    FAIL() << "allocation past the limit succeeded";
  } catch (const otcal::OutOfBudget& e) {
    EXPECT_NE(std::string(e.what()).find("4096"), std::string::npos) << e.what();
  }
  EXPECT_EQ(limit.allocated_bytes(), 4096u) << "a refused allocation must be rolled back";
  EXPECT_EQ(stats.bytes().value, 1000 + 3072) << "the refused allocation never reached upstream";
  limit.deallocate(nullptr, a, 1000);
  limit.deallocate(nullptr, b, 3072);
  EXPECT_EQ(limit.allocated_bytes(), 0u);
  EXPECT_EQ(stats.bytes().value, 0);
}

TEST(StatisticsAdaptor, PeakAndNestedScopes) {
  otcal::HostResource host;
  otcal::StatisticsAdaptor stats(host);
  const std::uint64_t seed = testsupport::fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<std::size_t> size(1, 1 << 16);
  const std::size_t outer = size(rng);
  void* p = stats.allocate(nullptr, outer);
  stats.push_scope();
  std::vector<std::pair<void*, std::size_t>> live;
  std::int64_t cur = 0, peak = 0;
  for (int i = 0; i < 50; ++i) {
    if (!live.empty() && rng() % 3 == 0) {
      stats.deallocate(nullptr, live.back().first, live.back().second);
      cur -= static_cast<std::int64_t>(live.back().second);
      live.pop_back();
    } else {
      const std::size_t s = size(rng);
      live.emplace_back(stats.allocate(nullptr, s), s);
      cur += static_cast<std::int64_t>(s);
      peak = std::max(peak, cur);
    }
  }
  for (auto& [q, s] : live) stats.deallocate(nullptr, q, s);
  const auto inner = stats.pop_scope();
  EXPECT_EQ(inner.peak, peak);
  EXPECT_EQ(inner.value, 0);
  EXPECT_EQ(stats.bytes().peak, static_cast<std::int64_t>(outer) + peak)
      << "outer peak = max(outer peak, value at push + inner peak)";
  EXPECT_THROW(stats.reset(), otcal::InvalidArgument) << "reset needs no live bytes";
  stats.deallocate(nullptr, p, outer);
  stats.reset();
  EXPECT_EQ(stats.bytes().peak, 0);
}

TEST(StatisticsAdaptor, ThreadSafeCounts) {
  otcal::HostResource host;
  otcal::StatisticsAdaptor stats(host);
  otcal::LimitingAdaptor limit(stats, std::size_t{1} << 30);
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&] {
      for (int i = 0; i < 1000; ++i) {
        void* p = limit.allocate(nullptr, 512);
        limit.deallocate(nullptr, p, 512);
      }
    });
  for (auto& t : threads) t.join();
  EXPECT_EQ(stats.bytes().value, 0);
  EXPECT_EQ(stats.allocations().total, 4000);
  EXPECT_EQ(limit.allocated_bytes(), 0u);
}

namespace {
// A random declaration: 1-4 buffers of random element sizes, fixed and per-row counts.
otcal::WorkspaceDecl random_decl(std::mt19937_64& rng) {
  otcal::WorkspaceDecl d;
  d.operation = "op";
  const int buffers = 1 + static_cast<int>(rng() % 4);
  for (int b = 0; b < buffers; ++b)
    d.buffers.push_back({"b" + std::to_string(b), std::size_t{1} << (rng() % 4), rng() % 20000, rng() % 700});
  d.buffers[0].count_per_row += 1;  // at least one per-row byte
  d.resident_bytes = rng() % 100000;
  return d;
}

// The exact byte count at `rows`, computed here from the definition (256-byte granules).
std::size_t bytes_at(const otcal::WorkspaceDecl& d, otcal::index_t rows) {
  std::size_t total = 0;
  for (const auto& b : d.buffers) {
    const std::size_t raw = b.element_size * (b.fixed_count + b.count_per_row * static_cast<std::size_t>(rows));
    total += (raw + 255) / 256 * 256;
  }
  return total;
}
}  // namespace

TEST(Planner, FewestTilesEvenedOut) {
  const std::uint64_t seed = testsupport::fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  for (int trial = 0; trial < 200; ++trial) {
    const otcal::index_t n = 1 + static_cast<otcal::index_t>(rng() % 20000);
    const otcal::WorkspaceDecl d = random_decl(rng);
    const std::size_t budget = bytes_at(d, 1) + d.resident_bytes + (1 + rng() % 200) * d.bytes_per_row() +
                               rng() % (std::size_t{1} << 24);
    otcal::TilePlan p;
    try {
      p = otcal::plan_tiles(n, d, budget);
    } catch (const otcal::BudgetTooSmall& e) {
      EXPECT_GT(e.required_bytes(), budget);
      EXPECT_GT(d.resident_bytes + bytes_at(d, 1) + otcal::planner_headroom(budget), budget);
      continue;
    }
    // Largest row count that fits, by a plain scan.
    otcal::index_t fit = 1;
    while (fit < n && d.resident_bytes + bytes_at(d, fit + 1) + otcal::planner_headroom(budget) <= budget) ++fit;
    EXPECT_LE(p.rows, fit);
    EXPECT_EQ(p.planned_peak, bytes_at(d, p.rows)) << "the plan is the declared buffers";
    EXPECT_LE(d.resident_bytes + p.planned_peak + otcal::planner_headroom(budget), budget);
    EXPECT_EQ(p.n_tiles, (n + p.rows - 1) / p.rows);
    EXPECT_EQ(p.n_tiles, (n + fit - 1) / fit) << "fewest tiles that fit";
    EXPECT_LE(p.rows * p.n_tiles - n, p.n_tiles) << "tiles are evened out";
  }
}

TEST(Planner, BudgetTooSmallNamesTheMinimumAndItWorks) {
  const std::uint64_t seed = testsupport::fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  for (int trial = 0; trial < 100; ++trial) {
    otcal::WorkspaceDecl d = random_decl(rng);
    d.operation = "sinkhorn";
    const otcal::index_t rows = 1 + static_cast<otcal::index_t>(rng() % 1000);
    try {
      otcal::plan_fixed_batch(5000, d, 1000, rows);
      FAIL();
    } catch (const otcal::BudgetTooSmall& e) {
      EXPECT_NE(std::string(e.what()).find(std::to_string(e.required_bytes())), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find("sinkhorn"), std::string::npos);
      EXPECT_EQ(e.required_bytes(), otcal::minimum_budget(d, rows));
      EXPECT_NO_THROW(otcal::plan_fixed_batch(5000, d, e.required_bytes(), rows)) << "the named minimum is enough";
      EXPECT_THROW(otcal::plan_fixed_batch(5000, d, e.required_bytes() - 1, rows), otcal::BudgetTooSmall)
          << "and it is the minimum";
    }
  }
}

TEST(Planner, ExplicitBatchIsCheckedNeverShrunkAndClamped) {
  otcal::WorkspaceDecl d;
  d.operation = "op";
  d.add<char>("fixed", 1000);
  d.add<char>("rows", 0, 100);
  EXPECT_THROW(otcal::plan_fixed_batch(500, d, 1 << 20, 0), otcal::InvalidArgument);
  EXPECT_THROW(otcal::plan_fixed_batch(50000, d, 100000, 20000), otcal::BudgetTooSmall);
  const auto p = otcal::plan_fixed_batch(500, d, 1 << 20, 7);
  EXPECT_EQ(p.rows, 7);
  EXPECT_EQ(p.n_tiles, 72);
  EXPECT_EQ(p.planned_peak, std::size_t{1024 + 768});
  const auto q = otcal::plan_fixed_batch(500, d, 1 << 20, 9999);
  EXPECT_EQ(q.rows, 500);
  EXPECT_TRUE(q.clamped);
}

TEST(Planner, RowAlignmentKeepsGranules) {
  otcal::WorkspaceDecl d;
  d.operation = "op";
  d.add<double>("rows", 0, 1);
  d.row_align = 256;
  d.min_rows = 256;
  const auto p = otcal::plan_tiles(100000, d, 1 << 16);
  EXPECT_EQ(p.rows % 256, 0);
  EXPECT_GE(p.rows, 256);
}

TEST(ParseBytes, UnitsAndErrors) {
  EXPECT_EQ(otcal::parse_bytes("512MiB"), std::size_t{512} << 20);
  EXPECT_EQ(otcal::parse_bytes("8GiB"), std::size_t{8} << 30);
  EXPECT_EQ(otcal::parse_bytes("1000"), 1000u);
  EXPECT_EQ(otcal::parse_bytes("2GB"), 2'000'000'000u);
  EXPECT_EQ(otcal::parse_bytes("1.5KiB"), 1536u);
  EXPECT_THROW(otcal::parse_bytes("lots"), otcal::InvalidArgument);
  EXPECT_THROW(otcal::parse_bytes("12XB"), otcal::InvalidArgument);
  EXPECT_THROW(otcal::parse_bytes("-5MiB"), otcal::InvalidArgument);
  // Strict: no silent rounding to 0 (which meant "the default budget"), no undefined conversions.
  EXPECT_EQ(otcal::parse_bytes("18446744073709551615"), std::numeric_limits<std::size_t>::max());
  EXPECT_EQ(otcal::parse_bytes("9007199254740993"), std::size_t{9007199254740993u});  // > 2^53, exact
  EXPECT_EQ(otcal::parse_bytes("1e3"), 1000u);
  EXPECT_EQ(otcal::parse_bytes("0.5KiB"), 512u);
  for (const char* bad : {"0.5", "0.9B", "1e-300", "0", "0B", "1e99", "18446744073709551616", "16EiB", "nan",
                          "inf", "0x10", "+5", " 5", "1.2.3", ".", "e5", "1.5"}) {
    SCOPED_TRACE(bad);
    EXPECT_THROW(otcal::parse_bytes(bad, "--memory-budget"), otcal::InvalidArgument);
  }
  try {
    (void)otcal::parse_bytes("0.5", "--memory-budget");
  } catch (const otcal::InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("--memory-budget '0.5' is less than 1 byte"), std::string::npos) << e.what();
  }
}

TEST(Context, CpuBudgetStackAndAutomatic) {
  otcal::Context ctx = otcal::Context::cpu({.memory_budget = 1 << 20});
  EXPECT_EQ(ctx.kind(), otcal::DeviceKind::cpu);
  EXPECT_EQ(ctx.memory_budget(), std::size_t{1} << 20);
  {
    otcal::Buffer<double> b(ctx.workspace(), 1000);
    EXPECT_EQ(ctx.statistics().bytes().value, 8000);
    EXPECT_THROW(otcal::Buffer<double>(ctx.workspace(), 200000), otcal::OutOfBudget);
  }
  EXPECT_EQ(ctx.statistics().bytes().value, 0);
  otcal::Context a = otcal::Context::automatic({});
  EXPECT_FALSE(a.selection_note().empty());
  if (otcal::system_info().devices.empty()) {
    EXPECT_EQ(a.kind(), otcal::DeviceKind::cpu);
    EXPECT_NE(a.selection_note().find("cpu"), std::string::npos);
  }
  EXPECT_THROW(otcal::Context::from_string("tpu"), otcal::InvalidArgument);
  // A device id beyond int names the input instead of surfacing std::stoi's "stoi".
  try {
    (void)otcal::Context::from_string("cuda:99999999999999999999");
    ADD_FAILURE() << "no error";
  } catch (const otcal::InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("device 'cuda:99999999999999999999': the id is too large"), std::string::npos)
        << e.what();
  }
  EXPECT_GT(a.memory_budget(), 0u);
}

}  // namespace

// A context's thread count applies to its operations on the calling thread only: the process-wide
// OpenMP setting is the same before and after, and during the solve the context's count is in force.
TEST(Context, ThreadsApplyPerOperationNotProcessWide) {
  const int process = omp_get_max_threads();
  const int wanted = process == 1 ? 2 : 1;
  otcal::ContextOptions o;
  o.threads = wanted;
  o.memory_budget = std::size_t{64} << 20;
  const otcal::Context ctx = otcal::Context::cpu(o);
  EXPECT_EQ(omp_get_max_threads(), process) << "creating a context changes nothing";
  const std::uint64_t seed = testsupport::fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> N;
  std::vector<double> x(80 * 2), y(70 * 2);
  for (double& v : x) v = N(rng);
  for (double& v : y) v = N(rng);
  otcal::PointCloud geom{otcal::ConstMatrix::of(x.data(), 80, 2), otcal::ConstMatrix::of(y.data(), 70, 2), {}};
  otcal::SinkhornOptions so;
  so.epsilon = 0.1;
  int seen = -1;
  so.progress = [&](const otcal::SinkhornProgress&) { seen = omp_get_max_threads(); };
  const otcal::SinkhornResult r = otcal::sinkhorn(ctx, geom, {}, {}, so);
  EXPECT_EQ(seen, wanted) << "the context's count is in force during the operation";
  EXPECT_EQ(omp_get_max_threads(), process) << "and restored after it";
  // Same potentials with the process's default count (batch and thread invariance).
  const otcal::SinkhornResult r2 = otcal::sinkhorn(otcal::Context::cpu({.memory_budget = o.memory_budget}), geom, {}, {}, so);
  EXPECT_EQ(r.f, r2.f);
}

// The tool refuses clouds from their headers with Problem::minimum_budget_for before reading them:
// that figure must be the upload's own minimum, so that a budget of it uploads and one byte less
// is refused naming it (for each cost's resident layout, both precisions, y = x or not).
TEST(Problem, MinimumBudgetForIsTheUploadsMinimum) {
  const std::uint64_t seed = testsupport::fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  const otcal::index_t n = 50 + static_cast<otcal::index_t>(rng() % 400), m = 30 + static_cast<otcal::index_t>(rng() % 400);
  const otcal::index_t d = 1 + static_cast<otcal::index_t>(rng() % 6);
  const ref::Clouds c = ref::random_clouds(n, m, d, seed + 1);
  for (const char* cost : {"sqeuclidean", "cosine", "pnorm:1.5"}) {
    for (otcal::DType precision : {otcal::DType::float32, otcal::DType::float64}) {
      for (bool same : {false, true}) {
        SCOPED_TRACE(std::string(cost) + (precision == otcal::DType::float32 ? " float32" : " float64") +
                     (same ? " y = x" : ""));
        otcal::PointCloud geom;
        geom.x = otcal::ConstMatrix::of(c.x.data(), n, d);
        if (!same) geom.y = otcal::ConstMatrix::of(c.y.data(), m, d);
        geom.options.cost = otcal::Cost::parse(cost);
        const std::size_t minimum = otcal::Problem::minimum_budget_for(otcal::Context::cpu({.memory_budget = 1 << 30}), n, m,
                                                                       d, same, geom.options.cost, precision);
        const otcal::Problem p =
            otcal::Problem::upload(otcal::Context::cpu({.memory_budget = minimum}), geom, {}, {}, precision);
        EXPECT_EQ(p.resident_bytes(), otcal::Problem::resident_bytes_for(otcal::Context::cpu({.memory_budget = minimum}), n,
                                                                         m, d, same, geom.options.cost, precision));
        try {
          otcal::Problem::upload(otcal::Context::cpu({.memory_budget = minimum - 1}), geom, {}, {}, precision);
          ADD_FAILURE() << "uploaded with one byte less than the minimum " << minimum;
        } catch (const otcal::BudgetTooSmall& e) {
          EXPECT_EQ(e.required_bytes(), minimum) << e.what();
        }
      }
    }
  }
}
