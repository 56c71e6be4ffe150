// otcal-bench-sparsify: block-wise sparsification of the implicit transport plan of a fixed-length
// Sinkhorn solve on seeded Gaussian clouds, one configuration per process; prints one
// `OTCAL_BENCH {json}` line (docs/host-layer.md §7).
//
// The problem is uploaded and solved once, untimed; the timed region is sparsify() alone on the
// resident problem, and its allocator peak is
// measured in its own statistics scope so the solve's peak does not mix in.
#include <algorithm>
#include <iostream>

#include "ceilings.hpp"
#include "cli/processes.hpp"
#include "common.hpp"
#include "otcal/errors.hpp"
#include "otcal/sparsify.hpp"

int main(int argc, char** argv) {
  using namespace otcal;
  CLI::App app{"otcal-bench-sparsify: time and peak memory of the block-wise plan sparsifier"};
  app.name("otcal-bench-sparsify");
  bench::CommonOptions common;
  index_t n = 10000, m = 0, d = 3, iterations = 20, max_k = 50;
  double epsilon = 0.5, value = 0.95;
  std::string mode = "mass";
  bench::add_common_options(app, common);
  bench::add_cloud_options(app, n, m, d);
  app.add_option("--iterations", iterations, "Sinkhorn iterations of the (untimed) solve")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_option("--epsilon", epsilon, "absolute epsilon (cost scale 1)")->check(CLI::PositiveNumber)->capture_default_str();
  app.add_option("--mode", mode, "threshold, percentile, min_row or mass")->capture_default_str();
  app.add_option("--value", value, "the mode's value (mass fraction, threshold, percentile)")->capture_default_str();
  app.add_option("--max-k", max_k, "mass mode: most entries kept per row")->check(CLI::PositiveNumber)->capture_default_str();

  return bench::guarded_main(app, argc, argv, [&]() -> int {
    if (m == 0) m = n;
    std::vector<std::string> warnings;
    const DType precision = bench::parse_precision(common.precision);
    Context ctx = bench::make_context(common, warnings);
    bench::DeviceMemorySampler sampler(ctx);

    const bench::BenchClouds clouds(n, m, d, common.seed, precision);
    const PointCloud& geom = clouds.geometry;
    // One resident problem: the solve and every timed sparsify run on it, nothing is uploaded again.
    const Problem problem = Problem::upload(ctx, geom, {}, {}, precision);
    const SinkhornResult solved = sinkhorn(problem, bench::fixed_length_sinkhorn(epsilon, iterations, precision));

    SparsifyOptions sp;
    sp.mode = parse_sparsify_mode(mode);
    sp.value = value;
    sp.batch_size = common.batch_size;
    if (sp.mode == SparsifyMode::mass) sp.max_k = max_k;

    StatisticsAdaptor& stats = ctx.statistics();
    stats.push_scope();
    SparsifyResult last;
    bench::Timing t;
    try {
      t = bench::time_repeats(common.warmup, common.repeats, [&] {
        last = sparsify(problem, solved, sp);
        ctx.synchronize();
      });
    } catch (...) {
      stats.pop_scope();
      throw;
    }
    const StatisticsAdaptor::Counter scoped = stats.pop_scope();
    const auto delta = sampler.stop();

    const auto nnz = static_cast<std::size_t>(last.csr.nnz());
    const double entries = static_cast<double>(n) * static_cast<double>(m);
    bench::Record r;
    r.bench = "sparsify";
    r.n = n;
    r.m = m;
    r.d = d;
    if (sp.mode == SparsifyMode::mass) r.k = max_k;
    r.batch_size = common.batch_size.value_or(0);
    r.tile_rows = last.batch_size;
    r.iterations = 1;
    r.timing = t;
    r.work_per_run = entries;
    r.throughput_unit = "plan entries/s";
    r.alloc_peak_bytes = static_cast<std::size_t>(scoped.peak);
    r.workspace_peak_bytes = last.memory.peak_bytes;
    r.output_bytes = (static_cast<std::size_t>(n) + 1) * 8 + nnz * (last.csr.wide_indices() ? 8 : 4) +
                     nnz * dtype_size(precision);
    r.planned_peak_bytes = last.memory.planned_peak_bytes;
    r.device_delta_bytes = delta;
    r.dense_equivalent_bytes = static_cast<std::size_t>(entries) * dtype_size(precision);
    r.extra["mode"] = mode;
    r.extra["value"] = value;
    r.extra["nnz"] = nnz;
    r.extra["nnz_per_s"] = t.median_s > 0 ? static_cast<double>(nnz) / t.median_s : 0.0;
    r.extra["solve_iterations"] = solved.n_iters;
    r.extra["solve_planned_peak_bytes"] = solved.memory.planned_peak_bytes;
    r.extra["n_tiles"] = last.plan.n_tiles;
    // Sweeps over the plan per run (docs/sparsify.md §8), each building every entry (its cost and
    // one exp) again: threshold and mass 1, min_row 2, percentile P (2 float32, 4 float64)
    // histogram passes (over the sampled rows only when sampled) + 1.
    const double radix_passes = precision == DType::float32 ? 2.0 : 4.0;
    double sweeps = 1.0;
    if (sp.mode == SparsifyMode::min_row) sweeps = 2.0;
    if (sp.mode == SparsifyMode::percentile)
      sweeps = 1.0 + (sp.percentile_method == PercentileMethod::exact
                          ? radix_passes
                          : radix_passes * static_cast<double>(std::min<index_t>(sp.n_samples.value_or(1024), n)) /
                                static_cast<double>(n));
    const bench::Machine machine = bench::measure_machine(ctx, false, common.cpu_vector_ops);
    std::string why;
    const auto ceilings = bench::per_passes(bench::cost_entry_ceilings(machine, precision, d, &why), sweeps,
                                            "sweeps over the plan (docs/sparsify.md §8)");
    r.extra["sweeps"] = sweeps;
    nlohmann::json j = bench::to_json(r, common, ctx, warnings);
    j["ceiling"] = bench::ceiling_json(j["throughput"].get<double>(), r.throughput_unit, ceilings,
                                       why + "; each sweep rebuilds the plan's entries", machine);
    if (cli::writes_outputs()) std::cerr << bench::ceiling_text("otcal-bench-sparsify", j["ceiling"]) << std::endl;
    bench::print_record(j);
    return 0;
  });
}
