// Calibration bindings: the constraint builder, the exact calibrators (calibrate_exact, rake), the
// gradient calibrator and diagnostics. The microplex-, microcalibrate- and survey-shaped API is
// Python (otcal/calibration.py); this layer moves arrays across and runs the library with the GIL
// released.
//
// Constraint systems cross as plain arrays: the library's CSR (k x n) is handed to numpy without a
// copy when it is built, and copied once into an otcal::ConstraintSystem for each calibration (the
// library's CsrMatrix owns its vectors). Every calibrator gets a progress hook that comes back into
// Python once per epoch, Newton step or sweep, so Ctrl-C and progress callbacks work mid-run.
#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/pair.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/tuple.h>
#include <nanobind/stl/vector.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "arrays.hpp"
#include "context_handle.hpp"
#include "otcal/calibration.hpp"
#include "otcal/errors.hpp"
#include "python_calls.hpp"

namespace otcal::py {

namespace {

template <class T>
using HostVector = nb::ndarray<const T, nb::ndim<1>, nb::c_contig, nb::device::cpu>;

template <class T>
std::vector<T> to_vector(const HostVector<T>& a) {
  const T* p = a.data();
  return std::vector<T>(p, p + a.shape(0));
}

// An entry of a dict the Python layer prepared; a missing key or a wrong type is a bug there, so
// the message names the key for whoever maintains otcal/calibration.py.
template <class T>
T entry(const nb::dict& d, const char* key) {
  if (!d.contains(key)) throw InvalidArgument(std::string("internal: constraint system without '") + key + "'");
  try {
    return nb::cast<T>(d[key]);
  } catch (const nb::cast_error&) {
    throw InvalidArgument(std::string("internal: constraint system entry '") + key + "' has the wrong type");
  }
}

// The arrays of otcal/calibration.py's ConstraintSystem -> otcal::ConstraintSystem (one copy).
ConstraintSystem system_from(const nb::dict& d) {
  ConstraintSystem sys;
  const auto shape = entry<std::pair<std::int64_t, std::int64_t>>(d, "shape");
  CsrMatrix& A = sys.A;
  A.rows = shape.first;
  A.cols = shape.second;
  A.dtype = DType::float64;
  A.indptr = to_vector(entry<HostVector<std::int64_t>>(d, "indptr"));
  if (A.wide_indices())
    A.indices64 = to_vector(entry<HostVector<std::int64_t>>(d, "indices"));
  else
    A.indices32 = to_vector(entry<HostVector<std::int32_t>>(d, "indices"));
  A.values = to_vector(entry<HostVector<double>>(d, "values"));
  sys.targets = to_vector(entry<HostVector<double>>(d, "targets"));
  sys.names = entry<std::vector<std::string>>(d, "names");
  sys.design_weights = to_vector(entry<HostVector<double>>(d, "design_weights"));
  sys.n_categorical = entry<index_t>(d, "n_categorical");
  sys.margin_offsets = entry<std::vector<index_t>>(d, "margin_offsets");
  const auto nnz = static_cast<std::size_t>(A.nnz());
  if (static_cast<index_t>(A.indptr.size()) != A.rows + 1 || A.values.size() != nnz ||
      (A.wide_indices() ? A.indices64.size() : A.indices32.size()) != nnz)
    throw InvalidArgument("internal: inconsistent CSR arrays for the constraint system");
  if (static_cast<index_t>(sys.targets.size()) != A.rows || static_cast<index_t>(sys.names.size()) != A.rows ||
      static_cast<index_t>(sys.design_weights.size()) != A.cols)
    throw InvalidArgument("internal: constraint system arrays disagree with its shape");
  return sys;
}

nb::dict diagnostics_to_dict(const Diagnostics& dg) {
  const std::size_t k = dg.targets.size();
  std::vector<std::string> names(k);
  std::vector<double> target(k), estimate(k), error(k), abs_error(k), rel_error(k), rel_abs_error(k), support_fraction(k);
  std::vector<std::uint8_t> within_tol(k), excluded(k);
  std::vector<std::int64_t> support(k);
  for (std::size_t j = 0; j < k; ++j) {
    const TargetDiagnostic& t = dg.targets[j];
    names[j] = t.name;
    target[j] = t.target;
    estimate[j] = t.estimate;
    error[j] = t.error;
    abs_error[j] = t.abs_error;
    rel_error[j] = t.rel_error;
    rel_abs_error[j] = t.rel_abs_error;
    within_tol[j] = t.within_tol;
    excluded[j] = t.excluded;
    support[j] = t.support;
    support_fraction[j] = t.support_fraction;
  }
  nb::dict table;
  table["name"] = names;
  table["target"] = to_numpy(std::move(target));
  table["estimate"] = to_numpy(std::move(estimate));
  table["error"] = to_numpy(std::move(error));
  table["abs_error"] = to_numpy(std::move(abs_error));
  table["rel_error"] = to_numpy(std::move(rel_error));
  table["rel_abs_error"] = to_numpy(std::move(rel_abs_error));
  table["within_tol"] = to_numpy(std::move(within_tol));
  table["excluded"] = to_numpy(std::move(excluded));
  table["support"] = to_numpy(std::move(support));
  table["support_fraction"] = to_numpy(std::move(support_fraction));

  const WeightStatistics& s = dg.weights;
  nb::dict stats;
  stats["min"] = s.min;
  stats["max"] = s.max;
  stats["mean"] = s.mean;
  stats["std"] = s.std;
  stats["cv"] = s.cv;
  stats["sum"] = s.sum;
  stats["n_zero"] = s.n_zero;
  stats["n_negative"] = s.n_negative;
  stats["n_eff"] = s.n_eff;
  stats["efficiency"] = s.efficiency;
  stats["deff"] = s.deff;
  stats["g_min"] = s.g_min;
  stats["g_max"] = s.g_max;
  stats["n_at_lower"] = s.n_at_lower;
  stats["n_at_upper"] = s.n_at_upper;
  stats["design_efficiency"] = s.design_efficiency;

  nb::dict out;
  out["targets"] = table;
  out["weights"] = stats;
  out["loss"] = dg.loss;
  out["pct_close"] = dg.pct_close;
  out["pct_within_10"] = dg.pct_within_10;
  out["max_error"] = dg.max_error;
  out["mean_error"] = dg.mean_error;
  out["rmse"] = dg.rmse;
  out["warnings"] = dg.warnings;
  return out;
}

nb::dict result_to_dict(CalibrationResult&& r) {
  nb::dict out;
  out["weights"] = to_numpy(std::move(r.weights));
  out["g"] = to_numpy(std::move(r.g));
  if (!r.dense_weights.empty()) out["dense_weights"] = to_numpy(std::move(r.dense_weights));
  out["converged"] = r.converged;
  out["n_iterations"] = r.n_iterations;
  out["max_ratio"] = r.max_ratio;
  out["worst_targets"] = r.worst_targets;
  out["dropped_constraints"] = r.dropped_constraints;
  nb::list history;
  for (HistoryRow& row : r.history) {
    nb::dict h;
    h["epoch"] = row.epoch;
    h["stage"] = row.stage;
    h["loss"] = row.loss;
    h["estimates"] = to_numpy(std::move(row.estimates));
    history.append(h);
  }
  out["history"] = history;
  out["diagnostics"] = diagnostics_to_dict(r.diagnostics);
  out["batch_size"] = r.plan.rows;
  out["planned_peak_bytes"] = r.plan.planned_peak;
  out["peak_bytes"] = r.memory.peak_bytes;
  out["budget_bytes"] = r.memory.budget_bytes;
  return out;
}

// The hook every calibrator gets: back into Python once per step (pending signals first, so
// Ctrl-C raises KeyboardInterrupt there, then the caller's progress callback, which may be None).
ProgressHook progress_hook(const nb::object& callback) {
  return [&callback](const CalibrationProgress& p) {
    call_back_into_python(callback, std::string(p.stage), p.step, p.total, p.loss);
  };
}

CalFun calfun_from(const std::string& name) {
  if (name == "linear") return CalFun::linear;
  if (name == "raking") return CalFun::raking;
  if (name == "logit") return CalFun::logit;
  throw InvalidArgument("calfun: expected 'linear', 'raking' or 'logit', got '" + name + "'");
}

nb::dict build(ContextHandle& h, const std::vector<std::pair<std::string, HostVector<double>>>& numeric_columns,
               const std::vector<std::pair<std::string, std::vector<std::string>>>& string_columns,
               const std::vector<std::pair<std::string, std::vector<std::pair<std::string, double>>>>& marginal,
               const std::vector<std::pair<std::string, double>>& continuous,
               const std::vector<std::tuple<std::string, HostVector<double>, double>>& linear,
               std::optional<double> total, const std::string& weight_column, std::int64_t n_records) {
  RecordTable table;
  table.n_records = n_records;  // a table without columns still has its records (all-default weights)
  for (const auto& [name, values] : numeric_columns) table.add_numeric(name, to_vector(values));
  for (const auto& [name, values] : string_columns) table.add_strings(name, values);
  if (!table.columns.empty() && table.n_records != n_records)
    throw InvalidArgument("internal: record table length disagrees with the data");
  ConstraintSpec spec;
  spec.marginal = marginal;
  spec.continuous = continuous;
  for (const auto& [name, coefficients, target] : linear)
    spec.linear.push_back(LinearConstraint{name, to_vector(coefficients), target});
  spec.total = total;
  spec.weight_column = weight_column;
  ConstraintSystem sys;
  {
    nb::gil_scoped_release release;
    sys = build_constraints(h.ctx, std::move(table), spec);  // frees the copied columns as it goes
  }
  nb::dict out;
  out["shape"] = nb::make_tuple(sys.A.rows, sys.A.cols);
  out["indptr"] = to_numpy(std::move(sys.A.indptr));
  if (sys.A.wide_indices())
    out["indices"] = to_numpy(std::move(sys.A.indices64));
  else
    out["indices"] = to_numpy(std::move(sys.A.indices32));
  out["values"] = to_numpy(std::move(sys.A.values));
  out["targets"] = to_numpy(std::move(sys.targets));
  out["names"] = sys.names;
  out["n_categorical"] = sys.n_categorical;
  out["margin_offsets"] = sys.margin_offsets;
  out["design_weights"] = to_numpy(std::move(sys.design_weights));
  out["warnings"] = sys.warnings;
  out["planned_peak_bytes"] = sys.planned_peak_bytes;
  return out;
}

nb::dict exact(ContextHandle& h, const nb::dict& system, const std::string& calfun, double lower, double upper,
               int max_iterations, double epsilon, bool force, const std::optional<HostVector<double>>& variance,
               std::optional<std::pair<double, double>> trim, const nb::object& progress) {
  const ConstraintSystem sys = system_from(system);
  ExactOptions o;
  o.calfun = calfun_from(calfun);
  o.lower = lower;
  o.upper = upper;
  o.max_iterations = max_iterations;
  o.epsilon = epsilon;
  o.force = force;
  if (variance) o.variance = to_vector(*variance);
  o.trim = trim;
  o.progress = progress_hook(progress);
  CalibrationResult r;
  {
    nb::gil_scoped_release release;
    r = calibrate_exact(h.ctx, sys, o);
  }
  return result_to_dict(std::move(r));
}

nb::dict rake_margins(ContextHandle& h, const nb::dict& system, int max_sweeps, double epsilon,
                      const nb::object& progress) {
  const ConstraintSystem sys = system_from(system);
  RakeOptions o;
  o.max_sweeps = max_sweeps;
  o.epsilon = epsilon;
  o.progress = progress_hook(progress);
  CalibrationResult r;
  {
    nb::gil_scoped_release release;
    r = rake(h.ctx, sys, o);
  }
  return result_to_dict(std::move(r));
}

template <class T>
T option(const nb::dict& d, const char* key, T fallback) {
  if (!d.contains(key) || d[key].is_none()) return fallback;
  try {
    return nb::cast<T>(d[key]);
  } catch (const nb::cast_error&) {
    throw InvalidArgument(std::string(key) + ": has the wrong type");
  }
}

nb::dict gradient(ContextHandle& h, const nb::dict& system, const nb::dict& options, const nb::object& progress) {
  const ConstraintSystem sys = system_from(system);
  GradientOptions o;
  o.epochs = option<int>(options, "epochs", o.epochs);
  o.learning_rate = option<double>(options, "learning_rate", o.learning_rate);
  o.noise_level = option<double>(options, "noise_level", o.noise_level);
  o.dropout_rate = option<double>(options, "dropout_rate", o.dropout_rate);
  o.seed = option<std::uint64_t>(options, "seed", o.seed);
  if (options.contains("batch_size") && !options["batch_size"].is_none())
    o.batch_size = nb::cast<index_t>(options["batch_size"]);
  if (options.contains("normalization_factor") && !options["normalization_factor"].is_none())
    o.normalization_factor = to_vector(nb::cast<HostVector<double>>(options["normalization_factor"]));
  o.excluded_targets = option<std::vector<std::string>>(options, "excluded_targets", {});
  o.regularize_with_l0 = option<bool>(options, "regularize_with_l0", o.regularize_with_l0);
  o.l0_lambda = option<double>(options, "l0_lambda", o.l0_lambda);
  o.init_mean = option<double>(options, "init_mean", o.init_mean);
  o.temperature = option<double>(options, "temperature", o.temperature);
  o.sparse_learning_rate = option<double>(options, "sparse_learning_rate", o.sparse_learning_rate);
  o.final_weights_last_dropout_draw = option<bool>(options, "final_weights_last_dropout_draw", false);
  o.loss_relative = option<bool>(options, "loss_relative", false);
  o.l0_init_dense_result = option<bool>(options, "l0_init_dense_result", false);
  o.l0_penalty_per_record = option<bool>(options, "l0_penalty_per_record", false);
  o.excluded_log_initial = option<bool>(options, "excluded_log_initial", false);
  o.legacy_eval_gate = option<bool>(options, "legacy_eval_gate", false);
  const std::string precision = option<std::string>(options, "precision", "float64");
  if (precision != "float32" && precision != "float64")
    throw InvalidArgument("precision: expected 'float32' or 'float64', got '" + precision + "'");
  o.precision = precision == "float32" ? DType::float32 : DType::float64;
  o.progress = progress_hook(progress);
  CalibrationResult r;
  {
    nb::gil_scoped_release release;
    r = calibrate_gradient(h.ctx, sys, o);
  }
  return result_to_dict(std::move(r));
}

nb::dict diagnose_weights(const nb::dict& system, const HostVector<double>& weights,
                          const std::vector<std::string>& excluded, double lower, double upper) {
  const ConstraintSystem sys = system_from(system);
  const std::vector<double> w = to_vector(weights);
  Diagnostics dg;
  {
    nb::gil_scoped_release release;
    dg = diagnose(sys, w, excluded, lower, upper);
  }
  return diagnostics_to_dict(dg);
}

}  // namespace

void bind_calibration(nb::module_& m) {
  m.def("build_constraints", &build, nb::arg("context"), nb::arg("numeric_columns"), nb::arg("string_columns"),
        nb::arg("marginal"), nb::arg("continuous"), nb::arg("linear"), nb::arg("total").none(),
        nb::arg("weight_column"), nb::arg("n_records"),
        "The k x n CSR constraint system of docs/calibration.md §1-2 as numpy arrays (no copy of the "
        "library's result).");
  m.def("calibrate_exact", &exact, nb::arg("context"), nb::arg("system"), nb::arg("calfun"), nb::arg("lower"),
        nb::arg("upper"), nb::arg("max_iterations"), nb::arg("epsilon"), nb::arg("force"),
        nb::arg("variance").none(), nb::arg("trim").none(), nb::arg("progress").none(),
        "Deville-Sarndal calibration (R survey's calibrate/grake), docs/calibration.md §4. progress(stage, "
        "step, total, loss) is called once per Newton step.");
  m.def("rake", &rake_margins, nb::arg("context"), nb::arg("system"), nb::arg("max_sweeps"), nb::arg("epsilon"),
        nb::arg("progress").none(), "Iterative raking with R's rake() semantics over the marginal rows (§4.6).");
  m.def("calibrate_gradient", &gradient, nb::arg("context"), nb::arg("system"), nb::arg("options"),
        nb::arg("progress").none(),
        "microcalibrate's gradient calibration (§3); options is a dict of GradientOptions fields. "
        "progress(stage, step, total, loss) is called once per epoch and per L0 step.");
  m.def("diagnose", &diagnose_weights, nb::arg("system"), nb::arg("weights"), nb::arg("excluded"),
        nb::arg("lower") = -std::numeric_limits<double>::infinity(),
        nb::arg("upper") = std::numeric_limits<double>::infinity(), "Diagnostics of weights (§5).");
  m.def(
      "initial_log_weights",
      [](const HostVector<double>& w0, std::uint64_t seed, double noise_level) {
        return to_numpy(initial_log_weights(to_vector(w0), seed, noise_level));
      },
      nb::arg("weights"), nb::arg("seed"), nb::arg("noise_level"),
      "The starting log-weights the gradient calibrator draws (§3.2, Philox).");
  m.def("normalization_from_groups", &normalization_from_groups, nb::arg("groups"),
        "nf_j = 1/|group of j| rescaled to mean 1 (§3.6).");
}

}  // namespace otcal::py
