// `otcal calibrate`: reweight the records of a CSV so weighted totals meet the targets of a JSON
// spec (docs/calibration.md), writing weights.npy, weights.csv and report.json into --out
// atomically (all of it or nothing).
//
// SPEC.json: {"total": N?, "marginal": {"col": {"cat": target, ...}, ...},
//             "continuous": {"col": total, ...},
//             "linear": [{"name": ..., "column": "col" | "coefficients": "file.npy", "target": t}, ...]}
// Relative .npy paths are resolved against the spec file's folder.
//
// Or, instead of --spec, an arbitrary estimate matrix: --matrix M.npz (scipy.sparse.save_npz of a
// records x targets CSR or CSC matrix, microcalibrate's estimate_matrix orientation) and --targets
// T.csv|T.json (one name and value per matrix column, in column order); design weights from
// --data's weight column or --weights W.npy, else 1. One process only.
// Under mpirun the records are sharded by rank and rank 0 writes --out (docs/calibration.md §8).
#include <algorithm>
#include <climits>
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
#include "io/npz_read.hpp"
#include "io/output.hpp"
#include "io/spec_json.hpp"
#include "otcal/calibration.hpp"

namespace otcal::cli {
namespace {

struct CalibrateArgs {
  std::string data, spec, out;
  std::string matrix, targets, weights;  // the estimate-matrix inputs (instead of --spec)
  std::string weights_column = "weight";
  bool weights_column_given = false;  // named on the command line: then it must exist
  std::string method = "linear";
  double lower = -INFINITY, upper = INFINITY;
  double epsilon = 1e-7;
  index_t max_iterations = 50;  // index_t: read strictly, then range-checked against the library's int
  bool force = false;
  index_t epochs = 32;
  double learning_rate = 1e-3, dropout = 0.0, noise_level = 10.0;
  std::uint64_t seed = 42;
  std::optional<index_t> batch_size;
  std::optional<double> l0_lambda;
  std::string precision = "float64";
  CommonOptions common;
};

nlohmann::json num(double v) { return finite_or_null(v); }

std::string fmt(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", v);
  return buf;
}

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
          {"matrix", a.matrix},
          {"targets_file", a.targets},
          {"weights_file", a.weights},
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
            {"noise_level", a.noise_level}, {"seed", a.seed}, {"precision", a.precision},
            {"batch_size", a.batch_size ? nlohmann::json(*a.batch_size) : nlohmann::json(nullptr)},
            {"l0_lambda", a.l0_lambda ? nlohmann::json(*a.l0_lambda) : nlohmann::json(nullptr)}}},
          {"plan", to_json(r.plan)},
          {"memory", to_json(r.memory)},  // the calibrator's measured peak against its plan and budget
          {"context", to_json(ctx)},
          {"seconds", seconds}};
}

// Option checks, before any file is read (the same on every rank, so every rank fails alike).
void check_options(const CalibrateArgs& a) {
  if (a.matrix.empty()) {
    if (a.data.empty() || a.spec.empty())
      throw InvalidArgument("give --data and --spec (a record table and its targets), or --matrix and --targets "
                            "(an estimate matrix .npz and one target per column)");
    if (!a.targets.empty() || !a.weights.empty())
      throw InvalidArgument(std::string(a.targets.empty() ? "--weights" : "--targets") +
                            " goes with --matrix; with --spec the targets are in the spec and the design weights in "
                            "--data's --weights-column");
  } else {
    if (!a.spec.empty())
      throw InvalidArgument("--spec and --matrix are exclusive: with --matrix the matrix's columns are the targets, "
                            "named and valued by --targets");
    if (a.targets.empty()) throw InvalidArgument("--matrix needs --targets (a CSV 'name,value' or a JSON of the targets)");
    if (!a.weights.empty() && !a.data.empty())
      throw InvalidArgument("--weights and --data both give design weights with --matrix: keep one");
  }
  if (a.precision != "float64" && a.precision != "float32")
    throw InvalidArgument("--precision '" + a.precision + "' is not one of float32, float64");
  if (a.precision == "float32" && a.method != "gradient")
    throw InvalidArgument("--precision float32 applies to --method gradient only (the exact methods solve in float64)");
  if (!(a.method == "linear" || a.method == "raking" || a.method == "logit" || a.method == "gradient"))
    throw InvalidArgument("--method '" + a.method + "' is not one of linear, raking, logit, gradient");
  if (!(a.epsilon > 0 && std::isfinite(a.epsilon)))
    throw InvalidArgument("--epsilon must be a finite number > 0, got " + fmt(a.epsilon));
  if (a.max_iterations < 1 || a.max_iterations > INT_MAX)
    throw InvalidArgument("--max-iterations " + std::to_string(a.max_iterations) + " must be in [1, " +
                          std::to_string(INT_MAX) + "]");
  if (!(a.lower <= 1 && 1 <= a.upper)) throw InvalidArgument("--lower/--upper must satisfy lower <= 1 <= upper");
  if (a.batch_size && *a.batch_size < 1) throw InvalidArgument("--batch-size must be a positive number of records");
  if (!(a.dropout >= 0 && a.dropout <= 1)) throw InvalidArgument("--dropout must lie in [0, 1]");
  if (a.epochs < 0 || a.epochs > INT_MAX)
    throw InvalidArgument("--epochs " + std::to_string(a.epochs) + " must be in [0, " + std::to_string(INT_MAX) + "]");
  // The gradient calibrator refuses these too, in its option names; here they name the flag.
  if (!(a.learning_rate > 0 && std::isfinite(a.learning_rate)))
    throw InvalidArgument("--learning-rate must be a finite number > 0, got " + fmt(a.learning_rate));
  if (!(a.noise_level >= 0 && std::isfinite(a.noise_level)))
    throw InvalidArgument("--noise-level must be a finite number >= 0, got " + fmt(a.noise_level));
  if (a.l0_lambda && !(*a.l0_lambda >= 0 && std::isfinite(*a.l0_lambda)))
    throw InvalidArgument("--l0-lambda must be a finite number >= 0, got " + fmt(*a.l0_lambda));
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
  if (table.n_records == 0)
    throw InvalidArgument("--data '" + a.data + "' has a header row but no records: there is nothing to calibrate");
  // The default column may be absent (design weights 1); a column the user named must exist.
  if (a.weights_column_given && table.find(a.weights_column) == nullptr)
    throw InvalidArgument("--weights-column '" + a.weights_column + "' is not a column of --data '" + a.data +
                          "'; omit the flag for design weights of 1");
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

// --targets: a CSV with columns name and value, or a JSON object {"name": value, ...} or list
// [{"name": ..., "value": ...}, ...], one target per matrix column in column order.
void read_targets(const std::string& path, std::vector<std::string>& names, std::vector<double>& values) {
  const std::string flag = "--targets '" + path + "'";
  const std::string ext = std::filesystem::path(path).extension().string();
  if (ext == ".json") {
    std::ifstream in(path);
    if (!in) throw InvalidArgument(flag + ": cannot open it");
    nlohmann::ordered_json j;
    try {
      j = nlohmann::ordered_json::parse(in);
      if (j.is_object()) {
        for (const auto& [name, value] : j.items()) {
          names.push_back(name);
          values.push_back(value.get<double>());
        }
      } else {
        for (const auto& t : j) {
          names.push_back(t.at("name").get<std::string>());
          values.push_back(t.at("value").get<double>());
        }
      }
    } catch (const nlohmann::json::exception& e) {
      throw InvalidArgument(flag + " is not a JSON object {\"name\": value, ...} or list of {\"name\", \"value\"} (" +
                            e.what() + ")");
    }
  } else {
    const RecordTable t = io::read_csv(path, "--targets");
    const TableColumn *name = t.find("name"), *value = t.find("value");
    if (!name || !value || !value->numeric)
      throw InvalidArgument(flag + " needs a header 'name,value' and a number in every value field");
    for (index_t r = 0; r < t.n_records; ++r) {
      names.push_back(name->numeric ? fmt(name->numbers[r]) : name->strings[r]);
      values.push_back(value->numbers[r]);
    }
  }
  for (std::size_t j = 0; j < values.size(); ++j)
    if (!std::isfinite(values[j]))
      throw InvalidArgument(flag + ": target '" + names[j] + "' has no finite value");
}

// --matrix/--targets/--weights (or --data's weight column) as the constraint system: the matrix
// is read straight into A (targets x records), nothing dense and no table of records is built.
ConstraintSystem read_matrix_system(const CalibrateArgs& a, const Context& ctx) {
  if (ctx.communicator().size() > 1)
    throw InvalidArgument("--matrix runs in one process for now; run without mpirun, or give --data and --spec");
  ConstraintSystem sys;
  sys.A = io::read_estimate_matrix_npz(a.matrix, "--matrix");
  const index_t n = sys.A.cols, k = sys.A.rows;
  read_targets(a.targets, sys.names, sys.targets);
  if (static_cast<index_t>(sys.targets.size()) != k)
    throw InvalidArgument("--targets '" + a.targets + "' has " + std::to_string(sys.targets.size()) +
                          " targets, but --matrix '" + a.matrix + "' has " + std::to_string(k) +
                          " columns (records x targets): give one target per column, in column order");
  std::vector<std::string> sorted = sys.names;
  std::sort(sorted.begin(), sorted.end());
  if (auto d = std::adjacent_find(sorted.begin(), sorted.end()); d != sorted.end())
    throw InvalidArgument("--targets '" + a.targets + "' names target '" + *d + "' twice; names must be unique");
  sys.margin_offsets = {0};
  sys.design_weights.assign(static_cast<std::size_t>(n), 1.0);
  if (!a.weights.empty()) {
    const io::NpyArray w = io::read_npy(a.weights, "--weights");
    if (w.shape.size() != 1 || w.dim(0) != n)
      throw InvalidArgument("--weights '" + a.weights + "' must be a 1-D array of one design weight per record (" +
                            std::to_string(n) + ", the rows of --matrix)");
    sys.design_weights = w.values();
  } else if (!a.data.empty()) {
    const RecordTable t = io::read_csv(a.data, "--data");
    const TableColumn* c = t.find(a.weights_column);
    if (!c && a.weights_column_given)
      throw InvalidArgument("--weights-column '" + a.weights_column + "' is not a column of --data '" + a.data + "'");
    if (c) {
      if (t.n_records != n)
        throw InvalidArgument("--data '" + a.data + "' has " + std::to_string(t.n_records) + " records, but --matrix '" +
                              a.matrix + "' has " + std::to_string(n) + " rows (records)");
      if (!c->numeric) throw InvalidArgument("--weights-column '" + a.weights_column + "' of --data is not numeric");
      sys.design_weights = c->numbers;
    }
  }
  for (index_t i = 0; i < n; ++i)
    if (!std::isfinite(sys.design_weights[i]))
      throw InvalidArgument(std::string(a.weights.empty() ? "--data" : "--weights") + ": the design weight of record " +
                            std::to_string(i) + " is not finite");
  sys.record_offset = 0;
  sys.total_records = n;
  return sys;
}

// Negative design weights (docs/calibration.md §1): the exact methods refuse them (the
// Deville-Sarndal distances are defined for d >= 0; the Newton matrix is then not PSD), naming
// the first such record; the gradient method floors them as microcalibrate does, and the tool says
// so: the returned warning (empty when there are none) goes to stderr and report.json. Collective.
std::string check_design_weights(const CalibrateArgs& a, Communicator& ranks, const ConstraintSystem& sys) {
  const std::vector<double>& d = sys.design_weights;
  const auto first_local = std::find_if(d.begin(), d.end(), [](double v) { return v < 0; });
  const std::string column = a.weights.empty() ? "--weights-column '" + a.weights_column + "' of --data '" + a.data + "'"
                                               : "--weights '" + a.weights + "'";
  if (a.method != "gradient") {
    std::uint64_t positive = static_cast<std::uint64_t>(std::count_if(d.begin(), d.end(), [](double v) { return v > 0; }));
    ranks.all_sum(&positive, 1);
    detail::agreed(ranks, [&] {
      if (first_local != d.end()) {
        const index_t record = sys.record_offset + static_cast<index_t>(first_local - d.begin()) + 1;
        throw InvalidArgument(column + ": record " + std::to_string(record) + " has a negative design weight (" +
                              fmt(*first_local) + "); --method " + a.method +
                              " needs design weights >= 0: fix the weights, or use --method gradient, which floors "
                              "them (docs/calibration.md §1)");
      }
      // Every rank knows the sum; rank 0 alone raises, agreed() makes the others raise it too.
      if (positive == 0 && ranks.rank() == 0)
        throw InvalidArgument(column + ": no record has a positive design weight; --method " + a.method +
                              " scales the design weights, so all-zero weights cannot meet any target");
    });
    return {};
  }
  std::uint64_t count = static_cast<std::uint64_t>(std::count_if(d.begin(), d.end(), [](double v) { return v < 0; }));
  ranks.all_sum(&count, 1);
  if (count == 0) return {};
  const double mine = first_local == d.end() ? INFINITY
                                             : static_cast<double>(sys.record_offset + (first_local - d.begin()) + 1);
  const double first = ranks.all_min(mine);
  const double value = ranks.all_min(mine == first ? *first_local : INFINITY);
  return column + ": " + std::to_string(count) + " negative design weight(s), the first at record " +
         std::to_string(static_cast<std::uint64_t>(first)) + " (" + fmt(value) + "); --method gradient starts their log-weights from max(d + noise, 1e-12)";
}

CalibrationResult calibrate(const CalibrateArgs& a, const Context& ctx, const ConstraintSystem& sys) {
  if (a.method == "gradient") {
    GradientOptions o;
    o.epochs = static_cast<int>(a.epochs);  // in range: check_options
    o.learning_rate = a.learning_rate;
    o.dropout_rate = a.dropout;
    o.noise_level = a.noise_level;
    o.seed = a.seed;
    o.batch_size = a.batch_size;
    o.precision = a.precision == "float32" ? DType::float32 : DType::float64;
    if (a.l0_lambda) {
      o.regularize_with_l0 = true;
      o.l0_lambda = *a.l0_lambda;
    }
    try {
      return calibrate_gradient(ctx, sys, o);
    } catch (const BudgetTooSmall&) {
      throw;
    } catch (const InvalidArgument& e) {
      throw InvalidArgument(flagify(e.what(), {{"learning_rate", "--learning-rate"},
                                               {"l0_lambda", "--l0-lambda"},
                                               {"dropout_rate", "--dropout"},
                                               {"noise_level", "--noise-level"},
                                               {"epochs", "--epochs"},
                                               {"batch_size", "--batch-size"}}));
    }
  }
  ExactOptions o;
  o.calfun = a.method == "raking" ? CalFun::raking : a.method == "logit" ? CalFun::logit : CalFun::linear;
  o.lower = a.lower;
  o.upper = a.upper;
  o.epsilon = a.epsilon;
  o.max_iterations = static_cast<int>(a.max_iterations);
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

  // The record table lives only while A is built: the calibration holds A, not the CSV's columns.
  index_t total_records = 0;
  const ConstraintSystem sys = a.matrix.empty() ? [&] {
    RecordSlice slice = detail::agreed(ranks, [&] { return read_slice(a, ctx); });
    total_records = slice.total_records;
    // Collective: a bad record on one rank is raised on every rank ("rank R: ..."). The table is
    // given up: its columns are freed as A's rows are built from them.
    return with_flag("--spec/--data", [&] { return build_constraints(ctx, std::move(slice.table), slice.spec); });
  }() : read_matrix_system(a, ctx);
  if (!a.matrix.empty()) total_records = sys.total_records;
  std::uint64_t nnz = static_cast<std::uint64_t>(sys.A.nnz());
  ranks.all_sum(&nnz, 1);
  if (talk)
    std::cerr << "calibrate: " << total_records << " records"
              << (ranks.size() > 1 ? " on " + std::to_string(ranks.size()) + " ranks" : "") << ", "
              << sys.n_constraints() << " constraints, " << nnz << " non-zeros\n";

  const std::string weights_warning = check_design_weights(a, ranks, sys);
  if (talk && !weights_warning.empty()) std::cerr << "otcal: warning: " << weights_warning << "\n";
  const CalibrationResult res = calibrate(a, ctx, sys);

  std::optional<io::AtomicOutputDir> out;
  detail::agreed(ranks, [&] {
    if (writer) out.emplace(a.out, "--out");
  });
  write_weights(ranks, res.weights, out ? &*out : nullptr);
  nlohmann::json report = report_json(a, sys, res, ctx, clock.seconds());
  report["n_records"] = total_records;
  report["nnz"] = nnz;
  if (!weights_warning.empty()) report["warnings"].insert(report["warnings"].begin(), weights_warning);
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
  sub->add_option("--data", args->data, "Records as CSV with a header row (with --matrix: only its weights column)");
  sub->add_option("--spec", args->spec, "Targets as JSON: total, marginal, continuous, linear (needs --data)");
  sub->add_option("--matrix", args->matrix,
                  "Instead of --spec: estimate matrix, records x targets (microcalibrate's estimate_matrix), "
                  "as scipy.sparse.save_npz CSR or CSC");
  sub->add_option("--targets", args->targets, "With --matrix: one target per matrix column, CSV 'name,value' or JSON");
  sub->add_option("--weights", args->weights, "With --matrix: design weights as a 1-D .npy (else --data's column, else 1)");
  sub->add_option("--out", args->out, "Output folder: weights.npy, weights.csv, report.json")->required();
  CLI::Option* weights_column =
      sub->add_option("--weights-column", args->weights_column, "Initial (design) weights column; all 1 if the default column is absent")
          ->capture_default_str();
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
  sub->add_option("--precision", args->precision, "Gradient: float64, or float32 as microcalibrate (weights and Adam state)")
      ->capture_default_str();
  args->common.add_to(*sub);
  return [args, sub, weights_column]() -> int {
    if (!sub->parsed()) return 0;
    args->weights_column_given = weights_column->count() > 0;
    return run_calibrate(*args);
  };
}

const RegisterCommand reg(40, "calibrate", setup);

}  // namespace
}  // namespace otcal::cli
