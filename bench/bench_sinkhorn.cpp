// otcal-bench-sinkhorn: fixed-length online Sinkhorn on seeded Gaussian clouds, one configuration
// per process; prints one `OTCAL_BENCH {json}` line (host-layer.md §7).
//
// Fixed length: min_iterations = max_iterations = inner_iterations = --iterations, so every run does
// exactly that many f/g iterations plus one marginal-error evaluation and the reg_ot_cost pass at
// the end. Explicit epsilon and scale 1, so no cost-statistics pass is timed.
#include <fstream>
#include <iostream>

#include "common.hpp"
#include "otcal/errors.hpp"
#include "otcal/sinkhorn.hpp"

int main(int argc, char** argv) {
  using namespace otcal;
  CLI::App app{"otcal-bench-sinkhorn: time and peak memory of fixed-length online Sinkhorn"};
  app.name("otcal-bench-sinkhorn");
  bench::CommonOptions common;
  index_t n = 10000, m = 0, d = 3, iterations = 10;
  double epsilon = 0.5;
  std::string cost = "sqeuclidean";
  std::string dump_dir;
  bench::add_common_options(app, common);
  app.add_option("--n", n, "points in x")->check(CLI::PositiveNumber)->capture_default_str();
  app.add_option("--m", m, "points in y (default: n)")->check(CLI::NonNegativeNumber);
  app.add_option("--d", d, "dimension")->check(CLI::PositiveNumber)->capture_default_str();
  app.add_option("--iterations", iterations, "Sinkhorn iterations per run")->check(CLI::PositiveNumber)->capture_default_str();
  app.add_option("--epsilon", epsilon, "absolute epsilon (cost scale 1)")->check(CLI::PositiveNumber)->capture_default_str();
  app.add_option("--cost", cost, "ground cost")->capture_default_str();
  app.add_option("--dump-clouds", dump_dir,
                 "write x.f64, y.f64 (row-major) and f.f64 (final potentials), raw little-endian float64, to "
                 "this existing folder, for bench/dense_numpy_sinkhorn.py to run on the same inputs");

  return bench::guarded_main(app, argc, argv, [&]() -> int {
    if (m == 0) m = n;
    std::vector<std::string> warnings;
    const DType precision = bench::parse_precision(common.precision);
    Context ctx = bench::make_context(common, warnings);
    bench::DeviceMemorySampler sampler(ctx);  // baseline right after context creation

    // Two clouds with different means, so the plan is not the identity.
    std::vector<double> x64, y64;
    std::vector<float> x32, y32;
    PointCloud geom;
    if (precision == DType::float64) {
      x64 = bench::gaussian_cloud<double>(n, d, common.seed, 0.0);
      y64 = bench::gaussian_cloud<double>(m, d, common.seed + 1, 0.5);
      geom.x = ConstMatrix::of(x64.data(), n, d);
      geom.y = ConstMatrix::of(y64.data(), m, d);
    } else {
      x32 = bench::gaussian_cloud<float>(n, d, common.seed, 0.0);
      y32 = bench::gaussian_cloud<float>(m, d, common.seed + 1, 0.5);
      geom.x = ConstMatrix::of(x32.data(), n, d);
      geom.y = ConstMatrix::of(y32.data(), m, d);
    }
    geom.options.cost = Cost::parse(cost);
    geom.options.scale = ScaleCost{ScaleCost::Kind::value, 1.0};

    SinkhornOptions so;
    so.epsilon = epsilon;
    so.min_iterations = so.max_iterations = so.inner_iterations = iterations;
    so.threshold = 0;
    so.batch_size = common.batch_size;
    so.precision = precision;
    so.on_divergence = OnDivergence::return_result;

    SinkhornResult last;
    const bench::Timing t = bench::time_repeats(common.warmup, common.repeats, [&] {
      last = sinkhorn(ctx, geom, {}, {}, so);
      ctx.synchronize();
    });
    const auto delta = sampler.stop();

    bench::Record r;
    r.bench = "sinkhorn";
    r.n = n;
    r.m = m;
    r.d = d;
    r.batch_size = common.batch_size.value_or(0);
    r.tile_rows = last.batch_size;
    r.iterations = last.n_iters;
    r.timing = t;
    const double entries = static_cast<double>(n) * static_cast<double>(m);
    r.work_per_run = static_cast<double>(last.n_iters) * 2.0 * entries;
    r.throughput_unit = "cost entries/s";
    r.alloc_peak_bytes = static_cast<std::size_t>(ctx.statistics().bytes().peak);
    r.workspace_peak_bytes = last.memory.peak_bytes;
    r.output_bytes = 0;  // potentials are returned in host std::vectors, outside the budget
    r.planned_peak_bytes = last.memory.planned_peak_bytes;
    r.device_delta_bytes = delta;
    r.dense_equivalent_bytes = static_cast<std::size_t>(entries) * dtype_size(precision);
    r.exp_per_run = 2.0 * entries * static_cast<double>(last.n_iters);
    r.extra["epsilon"] = epsilon;
    r.extra["cost"] = geom.options.cost.name();
    r.extra["time_per_iter_s"] = last.n_iters > 0 ? t.median_s / static_cast<double>(last.n_iters) : 0.0;
    r.extra["n_tiles"] = last.plan.n_tiles;
    r.extra["reg_ot_cost"] = last.reg_ot_cost;
    r.extra["diverged"] = last.diverged;
    if (!dump_dir.empty()) {
      auto dump = [&](const std::string& name, const std::vector<double>& v) {
        std::ofstream out(dump_dir + "/" + name, std::ios::binary);
        out.write(reinterpret_cast<const char*>(v.data()), static_cast<std::streamsize>(v.size() * sizeof(double)));
        if (!out) throw InvalidArgument("--dump-clouds: cannot write " + dump_dir + "/" + name);
      };
      auto widen = [](const auto& v64, const auto& v32) {
        return !v64.empty() ? v64 : std::vector<double>(v32.begin(), v32.end());
      };
      dump("x.f64", widen(x64, x32));
      dump("y.f64", widen(y64, y32));
      dump("f.f64", last.f);
    }
    bench::print_record(bench::to_json(r, common, ctx, warnings));
    return last.diverged ? 3 : 0;
  });
}
