// otcal-bench-sinkhorn: fixed-length online Sinkhorn on seeded Gaussian clouds, one configuration
// per process; prints one `OTCAL_BENCH {json}` line (docs/host-layer.md §7).
//
// Fixed length: min_iterations = max_iterations = inner_iterations = --iterations, so every run does
// exactly that many f/g iterations plus one marginal-error evaluation and the reg_ot_cost pass at
// the end. Explicit epsilon and scale 1, so no cost-statistics pass is timed.
#include <fstream>
#include <iostream>

#include "ceilings.hpp"
#include "cli/processes.hpp"
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
  bench::add_cloud_options(app, n, m, d);
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

    bench::BenchClouds clouds(n, m, d, common.seed, precision);
    PointCloud& geom = clouds.geometry;
    geom.options.cost = Cost::parse(cost);

    SinkhornOptions so = bench::fixed_length_sinkhorn(epsilon, iterations, precision);
    so.batch_size = common.batch_size;
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
    // The context-wide allocator peak covers the resident problem too: compare it with both.
    r.planned_peak_bytes = last.plan.resident + last.memory.planned_peak_bytes;
    r.device_delta_bytes = delta;
    r.dense_equivalent_bytes = static_cast<std::size_t>(entries) * dtype_size(precision);
    r.exp_per_run = 2.0 * entries * static_cast<double>(last.n_iters);
    r.extra["epsilon"] = epsilon;
    r.extra["cost"] = geom.options.cost.name();
    r.extra["time_per_iter_s"] = last.n_iters > 0 ? t.median_s / static_cast<double>(last.n_iters) : 0.0;
    r.extra["n_tiles"] = last.plan.n_tiles;
    r.extra["reg_ot_cost"] = last.reg_ot_cost;
    r.extra["diverged"] = last.diverged;
    // Several ranks: rank 0's timing, the time its collectives took (waits included), every peak.
    r.extra["distributed"] = cli::ranks_json(last.memory.peak_bytes);
    r.extra["communication_s_per_run"] = last.communication_s;
    if (!dump_dir.empty()) {
      auto dump = [&](const std::string& name, const std::vector<double>& v) {
        std::ofstream out(dump_dir + "/" + name, std::ios::binary);
        out.write(reinterpret_cast<const char*>(v.data()), static_cast<std::streamsize>(v.size() * sizeof(double)));
        if (!out) throw InvalidArgument("--dump-clouds: cannot write " + dump_dir + "/" + name);
      };
      dump("x.f64", clouds.x_f64());
      dump("y.f64", clouds.y_f64());
      dump("f.f64", last.f);
    }
    // The ceiling of a pass over the n x m cost entries; every iteration makes two (f and g). The
    // final marginal error and reg_ot_cost passes are not counted as work, so the fraction is a
    // little low for few iterations.
    const bench::Machine machine = bench::measure_machine(ctx, false, common.cpu_vector_ops);
    std::string why;
    const auto ceilings = bench::cost_entry_ceilings(machine, precision, d, &why);
    if (geom.options.cost.name() != "sqeuclidean") why += " (the ceilings assume the sqeuclidean cost's d FMAs)";
    nlohmann::json j = bench::to_json(r, common, ctx, warnings);
    j["ceiling"] = bench::ceiling_json(j["throughput"].get<double>(), r.throughput_unit, ceilings, why, machine);
    if (cli::writes_outputs()) std::cerr << bench::ceiling_text("otcal-bench-sinkhorn", j["ceiling"]) << std::endl;
    bench::print_record(j);
    return last.diverged ? 3 : 0;
  });
}
