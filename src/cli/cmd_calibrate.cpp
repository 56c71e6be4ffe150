// `otcal calibrate`: reweight the records of a CSV so weighted totals meet the targets of a JSON
// spec (docs/calibration.md), writing weights.npy, weights.csv and report.json into --out
// atomically (all of it or nothing).
//
// SPEC.json: {"total": N?, "marginal": {"col": {"cat": target, ...}, ...},
//             "continuous": {"col": total, ...},
//             "linear": [{"name": ..., "column": "col" | "coefficients": "file.npy", "target": t}, ...]}
// Relative .npy paths are resolved against the spec file's folder.
// Under mpirun the records are sharded by rank and rank 0 writes --out (docs/calibration.md §8).
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <exception>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <optional>
#include <sstream>

#include "cli/command.hpp"
#include "cli/common.hpp"
#include "cli/processes.hpp"
#include "core/collective.hpp"
#include "io/csv.hpp"
#include "io/npy.hpp"
#include "io/output.hpp"
#include "io/spec_json.hpp"
#include "otcal/calibration.hpp"

namespace otcal::cli {
namespace {

struct CalibrateArgs {
  std::string data, spec, out;
  std::string weights_column = "weight";
  std::string method = "linear";
  double lower = -INFINITY, upper = INFINITY;
  double epsilon = 1e-7;
  int max_iterations = 50;
  bool force = false;
  int epochs = 32;
  double learning_rate = 1e-3, dropout = 0.0, noise_level = 10.0;
  std::uint64_t seed = 42;
  std::optional<index_t> batch_size;
  std::optional<double> l0_lambda;
  CommonOptions common;
};

nlohmann::json num(double v) { return finite_or_null(v); }

nlohmann::json report_json(const CalibrateArgs& a, const ConstraintSystem& sys, const CalibrationResult& r,
                           const Context& ctx, double seconds) {
  nlohmann::json targets = nlohmann::json::array();
  for (const auto& t : r.diagnostics.targets)
    targets.push_back({{"name", t.name}, {"target", num(t.target)}, {"estimate", num(t.estimate)},
                       {"error", num(t.error)}, {"abs_error", num(t.abs_error)}, {"rel_error", num(t.rel_error)},
                       {"rel_abs_error", num(t.rel_abs_error)}, {"within_tol", t.within_tol}, {"excluded", t.excluded},
                       {"support", t.support}, {"support_fraction", num(t.support_fraction)}});
  const auto& w = r.diagnostics.weights;
  nlohmann::json history = nlohmann::json::array();
  for (const auto& h : r.history) history.push_back({{"stage", h.stage}, {"epoch", h.epoch}, {"loss", num(h.loss)}});
  std::vector<std::string> warnings = sys.warnings;
  for (const auto& s : r.diagnostics.warnings) warnings.push_back(s);
  return {{"command", "calibrate"},
          {"data", a.data},
          {"spec", a.spec},
          {"method", a.method},
          {"n_records", sys.n_records()},
          {"n_constraints", sys.n_constraints()},
          {"nnz", sys.A.nnz()},
          {"converged", r.converged},
          {"n_iterations", r.n_iterations},
          {"max_ratio", num(r.max_ratio)},
          {"worst_targets", r.worst_targets},
          {"dropped_constraints", r.dropped_constraints},
          {"loss", num(r.diagnostics.loss)},
          {"pct_close", num(r.diagnostics.pct_close)},
          {"max_error", num(r.diagnostics.max_error)},
          {"mean_error", num(r.diagnostics.mean_error)},
          {"rmse", num(r.diagnostics.rmse)},
          {"pct_within_10", num(r.diagnostics.pct_within_10)},
          {"weights",
           {{"min", num(w.min)}, {"max", num(w.max)}, {"mean", num(w.mean)}, {"std", num(w.std)}, {"cv", num(w.cv)},
            {"sum", num(w.sum)}, {"n_zero", w.n_zero}, {"n_negative", w.n_negative}, {"n_eff", num(w.n_eff)},
            {"efficiency", num(w.efficiency)}, {"deff", num(w.deff)}, {"g_min", num(w.g_min)}, {"g_max", num(w.g_max)},
            {"n_at_lower", w.n_at_lower}, {"n_at_upper", w.n_at_upper}, {"design_efficiency", num(w.design_efficiency)}}},
          {"targets", targets},
          {"history", history},
          {"warnings", warnings},
          {"options",
           {{"lower", num(a.lower)}, {"upper", num(a.upper)}, {"epsilon", a.epsilon}, {"max_iterations", a.max_iterations},
            {"force", a.force}, {"epochs", a.epochs}, {"learning_rate", a.learning_rate}, {"dropout", a.dropout},
            {"noise_level", a.noise_level}, {"seed", a.seed},
            {"batch_size", a.batch_size ? nlohmann::json(*a.batch_size) : nlohmann::json(nullptr)},
            {"l0_lambda", a.l0_lambda ? nlohmann::json(*a.l0_lambda) : nlohmann::json(nullptr)}}},
          {"plan", to_json(r.plan)},
          {"context", to_json(ctx)},
          {"seconds", seconds}};
}

// Option checks, before any file is read (the same on every rank, so every rank fails alike).
void check_options(const CalibrateArgs& a) {
  if (!(a.method == "linear" || a.method == "raking" || a.method == "logit" || a.method == "gradient"))
    throw InvalidArgument("--method '" + a.method + "' is not one of linear, raking, logit, gradient");
  if (!(a.epsilon > 0)) throw InvalidArgument("--epsilon must be > 0");
  if (a.max_iterations < 1) throw InvalidArgument("--max-iterations must be >= 1");
  if (!(a.lower <= 1 && 1 <= a.upper)) throw InvalidArgument("--lower/--upper must satisfy lower <= 1 <= upper");
  if (a.batch_size && *a.batch_size < 1) throw InvalidArgument("--batch-size must be a positive number of records");
  if (!(a.dropout >= 0 && a.dropout <= 1)) throw InvalidArgument("--dropout must lie in [0, 1]");
  if (a.epochs < 0) throw InvalidArgument("--epochs must be >= 0");
}

// This rank's records of --data and the spec restricted to them (docs/calibration.md §8).
struct RecordSlice {
  RecordTable table;
  ConstraintSpec spec;
  index_t total_records = 0;
};

// Every rank reads --data and --spec whole and keeps its shard: the CSV reader types a column
// from all of its values, so a rank reading only its rows could type a column differently from
// one process (and the CSV has no row index to seek by). The whole table is freed on return.
RecordSlice read_slice(const CalibrateArgs& a, const Context& ctx) {
  RecordTable table = io::read_csv(a.data, "--data");
  ConstraintSpec spec = io::read_spec_json(a.spec, table, a.weights_column);
  const index_t n = table.n_records;
  // Checked here on the whole: a slice of too long a vector would hide the mismatch.
  for (const LinearConstraint& lc : spec.linear)
    if (static_cast<index_t>(lc.coefficients.size()) != n)
      throw InvalidArgument("--spec/--data: LinearConstraint '" + lc.name + "' has " +
                            std::to_string(lc.coefficients.size()) + " coefficients, expected one per record (" +
                            std::to_string(n) + ")");
  const Shard shard = record_shard(ctx, n);
  if (shard.begin == 0 && shard.end == n) return {std::move(table), std::move(spec), n};  // one process: no copy
  return {slice_records(table, shard), slice_spec(spec, shard), n};
}

CalibrationResult calibrate(const CalibrateArgs& a, const Context& ctx, const ConstraintSystem& sys) {
  if (a.method == "gradient") {
    GradientOptions o;
    o.epochs = a.epochs;
    o.learning_rate = a.learning_rate;
    o.dropout_rate = a.dropout;
    o.noise_level = a.noise_level;
    o.seed = a.seed;
    o.batch_size = a.batch_size;
    if (a.l0_lambda) {
      o.regularize_with_l0 = true;
      o.l0_lambda = *a.l0_lambda;
    }
    return calibrate_gradient(ctx, sys, o);
  }
  ExactOptions o;
  o.calfun = a.method == "raking" ? CalFun::raking : a.method == "logit" ? CalFun::logit : CalFun::linear;
  o.lower = a.lower;
  o.upper = a.upper;
  o.epsilon = a.epsilon;
  o.max_iterations = a.max_iterations;
  o.force = a.force;
  return with_flag("--method " + a.method, [&] { return calibrate_exact(ctx, sys, o); });
}

// Values per message when a rank sends its weights to rank 0 (512 KiB): rank 0 holds one such
// chunk of another rank's weights at a time, never all n.
constexpr std::size_t kWeightsChunk = std::size_t{1} << 16;

// weights.npy and weights.csv, written by rank 0 as each chunk of weights arrives.
class WeightFiles {
 public:
  WeightFiles(const io::AtomicOutputDir& out, std::uint64_t total)
      : npy_path_(out.file("weights.npy")), csv_path_(out.file("weights.csv")),
        npy_(npy_path_, std::ios::binary | std::ios::trunc), csv_(csv_path_, std::ios::binary | std::ios::trunc) {
    if (!npy_) throw InvalidArgument("--out: cannot create '" + npy_path_ + "'");
    if (!csv_) throw InvalidArgument("--out: cannot create '" + csv_path_ + "'");
    // The header io::write_npy writes for a float64 vector of `total`: same bytes as one process.
    const std::string header = io::detail::npy_header("<f8", {static_cast<index_t>(total)});
    npy_.write(header.data(), static_cast<std::streamsize>(header.size()));
    csv_ << "weight\n";
  }
  void append(const double* w, std::size_t count) {
    npy_.write(reinterpret_cast<const char*>(w), static_cast<std::streamsize>(count * sizeof(double)));
    char buf[64];
    for (std::size_t i = 0; i < count; ++i) {
      const int len = std::snprintf(buf, sizeof buf, "%.17g\n", w[i]);
      csv_.write(buf, len);
    }
  }
  void finish() {
    npy_.flush();
    csv_.flush();
    if (!npy_) throw InvalidArgument("--out: writing '" + npy_path_ + "' failed (disk full?)");
    if (!csv_) throw InvalidArgument("--out: writing '" + csv_path_ + "' failed (disk full?)");
  }

 private:
  std::string npy_path_, csv_path_;
  std::ofstream npy_, csv_;
};

// The weights of all records in data order, into `out` on rank 0 (null elsewhere): rank 0 writes
// its slice, then receives every other rank's in rank order, in chunks of kWeightsChunk values.
// Collective. A write failure on rank 0 still drains every message (no rank is left in a send)
// and is then raised on every rank.
void write_weights(Communicator& comm, const std::vector<double>& mine, const io::AtomicOutputDir* out) {
  const std::vector<std::uint64_t> counts = comm.all_gather_word(mine.size());
  if (comm.rank() != 0) {
    for (std::size_t off = 0; off < mine.size(); off += kWeightsChunk)
      comm.send(mine.data() + off, std::min(kWeightsChunk, mine.size() - off) * sizeof(double), 0);
    detail::agree(comm, nullptr);
    return;
  }
  std::uint64_t total = 0;
  for (std::uint64_t c : counts) total += c;
  std::exception_ptr failure;
  std::optional<WeightFiles> files;
  auto guarded = [&](auto&& step) {
    if (failure) return;
    try {
      step();
    } catch (...) {
      failure = std::current_exception();
    }
  };
  guarded([&] {
    files.emplace(*out, total);
    files->append(mine.data(), mine.size());
  });
  std::vector<double> buf(comm.size() > 1 ? kWeightsChunk : 0);
  for (int r = 1; r < comm.size(); ++r)
    for (std::uint64_t left = counts[static_cast<std::size_t>(r)]; left > 0;) {
      const std::size_t count = static_cast<std::size_t>(std::min<std::uint64_t>(left, kWeightsChunk));
      comm.receive(buf.data(), count * sizeof(double), r);
      guarded([&] { files->append(buf.data(), count); });
      left -= count;
    }
  guarded([&] { files->finish(); });
  detail::agree(comm, failure);
}

// Under mpirun every rank reads the inputs, builds and calibrates its shard of the records; rank 0
// writes --out (docs/calibration.md §8). Any rank's failure stops every rank with that rank's
// message, and --out is committed only once every rank's weights are written.
int run_calibrate(const CalibrateArgs& a) {
  Stopwatch clock;
  Communicator& ranks = *processes();
  const bool writer = writes_outputs();
  const bool talk = writer && !a.common.quiet;
  check_options(a);
  detail::agreed(ranks, [&] {
    if (writer) io::check_output_dir(a.out, "--out");
  });
  // auto means the CPU here (bitwise reproducible); --device cuda[:N] runs the CUDA passes (the
  // constraint build stays on the host and is uploaded once).
  CommonOptions common = a.common;
  if (common.device == "auto") common.device = "cpu";
  Context ctx = common.make_context();

  const RecordSlice slice = detail::agreed(ranks, [&] { return read_slice(a, ctx); });
  // Collective: a bad record on one rank is raised on every rank ("rank R: ...").
  const ConstraintSystem sys =
      with_flag("--spec/--data", [&] { return build_constraints(ctx, slice.table, slice.spec); });
  std::uint64_t nnz = static_cast<std::uint64_t>(sys.A.nnz());
  ranks.all_sum(&nnz, 1);
  if (talk)
    std::cerr << "calibrate: " << slice.total_records << " records"
              << (ranks.size() > 1 ? " on " + std::to_string(ranks.size()) + " ranks" : "") << ", "
              << sys.n_constraints() << " constraints, " << nnz << " non-zeros\n";

  const CalibrationResult res = calibrate(a, ctx, sys);

  std::optional<io::AtomicOutputDir> out;
  detail::agreed(ranks, [&] {
    if (writer) out.emplace(a.out, "--out");
  });
  write_weights(ranks, res.weights, out ? &*out : nullptr);
  nlohmann::json report = report_json(a, sys, res, ctx, clock.seconds());
  report["n_records"] = slice.total_records;
  report["nnz"] = nnz;
  // Collective: every rank's record count and peak (the larger of the build's and the calibrator's).
  report["distributed"] = ranks_json(std::max(sys.memory.peak_bytes, res.memory.peak_bytes));
  report["distributed"]["records_per_rank"] = ranks.all_gather_word(static_cast<std::uint64_t>(sys.n_records()));
  detail::agreed(ranks, [&] {
    if (!writer) return;
    write_json(out->file("report.json"), report);
    out->commit();
  });
  if (talk)
    std::cerr << "calibrate: " << (res.converged ? "converged" : "NOT converged") << " after " << res.n_iterations
              << " iteration(s); max relative error " << res.diagnostics.max_error << "; wrote " << a.out << "\n";
  return 0;
}

CommandRun setup(CLI::App& app) {
  auto args = std::make_shared<CalibrateArgs>();
  auto* sub = app.add_subcommand("calibrate", "Reweight survey records so weighted totals meet targets (exact or gradient)");
  sub->add_option("--data", args->data, "Records as CSV with a header row")->required();
  sub->add_option("--spec", args->spec, "Targets as JSON: total, marginal, continuous, linear")->required();
  sub->add_option("--out", args->out, "Output folder: weights.npy, weights.csv, report.json")->required();
  sub->add_option("--weights-column", args->weights_column, "Initial (design) weights column; all 1 if absent")->capture_default_str();
  sub->add_option("--method", args->method, "linear (truncated with finite bounds), raking, logit or gradient")->capture_default_str();
  sub->add_option("--lower", args->lower, "Lower bound on g = w/d (exact methods)");
  sub->add_option("--upper", args->upper, "Upper bound on g = w/d (exact methods)");
  sub->add_option("--epsilon", args->epsilon, "Convergence: max |t - est|/(1 + |t|)")->capture_default_str();
  sub->add_option("--max-iterations", args->max_iterations, "Newton iterations")->capture_default_str();
  sub->add_flag("--force", args->force, "Return the best weights (converged=false) instead of failing");
  sub->add_option("--epochs", args->epochs, "Gradient: epochs")->capture_default_str();
  sub->add_option("--learning-rate", args->learning_rate, "Gradient: Adam learning rate")->capture_default_str();
  sub->add_option("--dropout", args->dropout, "Gradient: dropout rate in [0, 1]")->capture_default_str();
  sub->add_option("--noise-level", args->noise_level, "Gradient: additive initial noise")->capture_default_str();
  sub->add_option("--seed", args->seed, "Gradient: Philox seed")->capture_default_str();
  sub->add_option("--batch-size", args->batch_size, "Gradient: records per batch (memory only; results identical)");
  sub->add_option("--l0-lambda", args->l0_lambda, "Gradient: run the L0 stage with this penalty");
  args->common.add_to(*sub);
  return [args, sub]() -> int {
    if (!sub->parsed()) return 0;
    return run_calibrate(*args);
  };
}

const RegisterCommand reg(40, "calibrate", setup);

}  // namespace
}  // namespace otcal::cli
