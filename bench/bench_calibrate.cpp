// otcal-bench-calibrate: survey-weight calibration on a synthetic survey (make_synthetic_survey),
// one configuration per process; prints one `OTCAL_BENCH {json}` line (docs/host-layer.md §7).
//
// The constraint system (targets x records CSR, O(nnz)) is built once, untimed except for its own
// build_time_s; the timed region is the calibrator. Throughput is nnz x iterations per second:
// every Newton iteration or gradient epoch streams the whole CSR at least once.
//
// Under mpirun (docs/calibration.md §8) every rank generates the same survey from --seed and
// calibrates its shard of the records; rank 0 prints the record (its own timing and sizes) with
// every rank's record count and peak under "distributed".
#include <algorithm>
#include <chrono>
#include <iostream>

#include "ceilings.hpp"
#include "cli/processes.hpp"
#include "common.hpp"
#include "otcal/calibration.hpp"
#include "otcal/errors.hpp"

int main(int argc, char** argv) {
  using namespace otcal;
  CLI::App app{"otcal-bench-calibrate: time and peak memory of survey calibration"};
  app.name("otcal-bench-calibrate");
  bench::CommonOptions common;
  common.precision = "float64";
  index_t records = 100000;
  int targets = 400, categories = 100, continuous = 0, epochs = 32;
  std::string method = "raking";
  bench::add_common_options(app, common);
  app.add_option("--records", records, "survey records")->check(CLI::PositiveNumber)->capture_default_str();
  app.add_option("--targets", targets, "calibration targets (categorical margins of --categories each, plus --continuous)")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_option("--categories", categories, "categories per margin column")->check(CLI::PositiveNumber)->capture_default_str();
  app.add_option("--continuous", continuous, "continuous (total) targets")->check(CLI::NonNegativeNumber)->capture_default_str();
  app.add_option("--method", method, "linear, raking, logit (exact Newton) or gradient")
      ->check(CLI::IsMember({"linear", "raking", "logit", "gradient"}))
      ->capture_default_str();
  app.add_option("--epochs", epochs, "gradient epochs")->check(CLI::PositiveNumber)->capture_default_str();
  double epsilon = 1e-7;
  app.add_option("--epsilon", epsilon, "exact methods: max |t - est| / (1 + |t|) to reach")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();

  return bench::guarded_main(app, argc, argv, [&]() -> int {
    if (targets <= continuous)
      throw InvalidArgument("--targets (" + std::to_string(targets) + ") must exceed --continuous (" +
                            std::to_string(continuous) + ")");
    const int margin_columns = std::max(1, (targets - continuous) / categories);
    std::vector<std::string> warnings;
    Context ctx = bench::make_context(common, warnings);
    bench::DeviceMemorySampler sampler(ctx);

    // The whole survey on every rank (identical: it depends on the seed alone), then this rank's
    // records only; the whole table is freed before the build.
    SyntheticSurvey survey = make_synthetic_survey(records, margin_columns, categories, continuous, common.seed);
    const Shard shard = record_shard(ctx, records);
    if (shard.size() != records)
      survey = SyntheticSurvey{slice_records(survey.table, shard), slice_spec(survey.spec, shard)};
    const auto b0 = std::chrono::steady_clock::now();
    const ConstraintSystem sys = build_constraints(ctx, survey.table, survey.spec);
    const double build_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - b0).count();
    // Host memory of the build: the process peak so far (data generation included) against the
    // data table plus the CSR it produced.
    const std::size_t rss_after_build = bench::host_peak_rss_bytes();
    std::size_t data_bytes = 0;
    for (const auto& c : survey.table.columns) {
      data_bytes += c.numbers.size() * sizeof(double);
      for (const auto& str : c.strings) data_bytes += sizeof(std::string) + (str.size() > 15 ? str.size() + 1 : 0);
    }
    const std::size_t csr_bytes = sys.A.indptr.size() * 8 + sys.A.indices32.size() * 4 + sys.A.indices64.size() * 8 +
                                  sys.A.values.size() * 8;

    CalibrationResult last;
    auto run = [&] {
      if (method == "gradient") {
        GradientOptions go;
        go.epochs = epochs;
        go.batch_size = common.batch_size;
        last = calibrate_gradient(ctx, sys, go);
      } else {
        ExactOptions eo;
        eo.calfun = method == "linear" ? CalFun::linear : method == "logit" ? CalFun::logit : CalFun::raking;
        eo.epsilon = epsilon;
        if (method == "logit") {
          eo.lower = 0.5;
          eo.upper = 2.0;
        }
        last = calibrate_exact(ctx, sys, eo);
      }
      ctx.synchronize();
    };
    const bench::Timing t = bench::time_repeats(common.warmup, common.repeats, run);
    const auto delta = sampler.stop();

    // Work over all records: every rank streams its shard's non-zeros (one process: all of them).
    std::uint64_t nnz_all = static_cast<std::uint64_t>(sys.A.nnz());
    ctx.communicator().all_sum(&nnz_all, 1);
    const auto nnz = static_cast<double>(nnz_all);
    bench::Record r;
    r.bench = "calibrate";
    r.n = records;
    r.m = sys.n_constraints();
    r.d = 0;
    r.k = sys.n_constraints();
    r.batch_size = common.batch_size.value_or(0);
    r.tile_rows = last.plan.rows;
    r.iterations = last.n_iterations;
    r.timing = t;
    r.work_per_run = nnz * std::max(1, last.n_iterations);
    r.throughput_unit = "nnz x iterations/s";
    r.alloc_peak_bytes = static_cast<std::size_t>(ctx.statistics().bytes().peak);
    r.workspace_peak_bytes = r.alloc_peak_bytes;  // the calibrators report no separate peak
    r.output_bytes = last.weights.size() * sizeof(double);
    r.planned_peak_bytes = std::max(sys.planned_peak_bytes, last.plan.planned_peak);
    r.device_delta_bytes = delta;
    r.dense_equivalent_bytes = static_cast<std::size_t>(sys.n_constraints()) * static_cast<std::size_t>(records) * 8;
    r.extra["method"] = method;
    r.extra["targets"] = sys.n_constraints();
    r.extra["records"] = records;
    r.extra["nnz"] = nnz_all;
    r.extra["build_time_s"] = build_s;
    r.extra["build_planned_peak_bytes"] = sys.planned_peak_bytes;
    r.extra["calibrate_planned_peak_bytes"] = last.plan.planned_peak;
    r.extra["converged"] = last.converged;
    r.extra["max_ratio"] = last.max_ratio;
    r.extra["nnz_per_s_build"] = build_s > 0 ? static_cast<double>(sys.A.nnz()) / build_s : 0.0;  // this rank's
    r.extra["epsilon"] = epsilon;
    r.extra["data_bytes"] = data_bytes;
    r.extra["csr_bytes"] = csr_bytes;
    r.extra["host_peak_rss_after_build_bytes"] = rss_after_build;
    r.extra["host_peak_after_build_over_data_plus_csr"] =
        static_cast<double>(rss_after_build) / static_cast<double>(data_bytes + csr_bytes);
    // Several ranks: rank 0's timing and sizes (data and CSR bytes, output and build rate are its shard's), and
    // every rank's records and peak (the larger of the build's and the calibrator's). Collective.
    r.extra["distributed"] = cli::ranks_json(std::max(sys.memory.peak_bytes, last.memory.peak_bytes));
    r.extra["distributed"]["records_per_rank"] =
        ctx.communicator().all_gather_word(static_cast<std::uint64_t>(sys.n_records()));
    r.extra["time_per_iteration_s"] = t.median_s / std::max(1, last.n_iterations);
    // Every Newton iteration or gradient epoch streams the CSR at least once: the bandwidth ceiling
    // of one pass (a Newton iteration makes more: the fraction is a lower bound of the pass rate).
    const double bytes_per_nnz = 8.0 + (sys.A.indices32.empty() ? 8.0 : 4.0);
    const bench::Machine machine = bench::measure_machine(ctx, true, common.cpu_vector_ops);
    std::string why;
    const auto ceilings = bench::csr_pass_ceilings(machine, bytes_per_nnz, &why);
    r.extra["bytes_per_nnz"] = bytes_per_nnz;
    nlohmann::json j = bench::to_json(r, common, ctx, warnings);
    j["ceiling"] = bench::ceiling_json(j["throughput"].get<double>(), r.throughput_unit, ceilings, why, machine);
    if (cli::writes_outputs()) std::cerr << bench::ceiling_text("otcal-bench-calibrate", j["ceiling"]) << std::endl;
    bench::print_record(j);
    return 0;
  });
}
