// The optimal-transport half of otcal._otcal: resident point-cloud problems (otcal::Problem), their
// Sinkhorn solves, transports, marginals and sparsified or dense plans, and potentials from other
// solvers (OTT-JAX, moscot). The OTT-shaped API around it is python/otcal/ot.py.
//
// Every call releases the GIL around library work. A solve calls back into Python at each error
// evaluation (python_calls.hpp): pending signal handlers run there, so Ctrl-C stops a solve within
// one block of inner_iterations, and the exception unwinds through the library's RAII.
#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/pair.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/vector.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "arrays.hpp"
#include "context_handle.hpp"
#include "otcal/errors.hpp"
#include "otcal/problem.hpp"
#include "otcal/sinkhorn.hpp"
#include "otcal/sparsify.hpp"
#include "python_calls.hpp"

namespace otcal::py {

namespace {

// A resident problem and the context it lives in. The mutex makes "set the weights, then solve"
// one step when several Python threads share a problem (the GIL is released meanwhile).
struct ProblemHandle {
  ProblemHandle(ContextHandle c, Problem p) : context(std::move(c)), problem(std::move(p)) {}
  ContextHandle context;
  Problem problem;
  std::mutex solve_mutex;
};

DType parse_precision(const std::string& text) {
  if (text == "float32") return DType::float32;
  if (text == "float64") return DType::float64;
  throw InvalidArgument("precision: expected 'float32' or 'float64', got '" + text + "'");
}

RelativeEpsilon parse_relative_epsilon(const std::string& text) {
  if (text.empty() || text == "none") return RelativeEpsilon::none;
  if (text == "mean") return RelativeEpsilon::mean;
  if (text == "std") return RelativeEpsilon::std;
  throw InvalidArgument("relative_epsilon: expected None, 'mean' or 'std', got '" + text + "'");
}

OnDivergence parse_on_divergence(const std::string& text) {
  if (text == "error") return OnDivergence::error;
  if (text == "return") return OnDivergence::return_result;
  throw InvalidArgument("on_divergence: expected 'error' or 'return', got '" + text + "'");
}

PercentileMethod parse_percentile_method(const std::string& text) {
  if (text == "sampled") return PercentileMethod::sampled;
  if (text == "exact") return PercentileMethod::exact;
  throw InvalidArgument("percentile_method: expected 'sampled' or 'exact', got '" + text + "'");
}

// scale_cost as a number or one of the names ScaleCost::parse knows. A number is taken as is (no
// round trip through text, so an OTT-resolved scale arrives bit for bit).
ScaleCost scale_of(const nb::handle& scale) {
  if (nb::isinstance<nb::str>(scale)) return ScaleCost::parse(nb::cast<std::string>(scale));
  const double v = nb::cast<double>(scale);
  if (!(v > 0) || !std::isfinite(v))
    throw InvalidArgument("scale_cost: " + std::to_string(v) + " must be a finite number > 0");
  return {ScaleCost::Kind::value, v};
}

// Host copies handed to numpy without a further copy (the array owns the vector).
nb::object owned(nb::ndarray<nb::numpy, double> a) { return nb::cast(std::move(a), nb::rv_policy::reference); }
nb::object owned(nb::ndarray<nb::numpy, float> a) { return nb::cast(std::move(a), nb::rv_policy::reference); }
nb::object owned(nb::ndarray<nb::numpy, std::int64_t> a) { return nb::cast(std::move(a), nb::rv_policy::reference); }
nb::object owned(nb::ndarray<nb::numpy, std::int32_t> a) { return nb::cast(std::move(a), nb::rv_policy::reference); }

// Values of the library (float64 on the host) as a numpy array of the run's precision.
nb::object values_out(const std::vector<double>& values, DType precision, std::initializer_list<std::size_t> shape) {
  if (precision == DType::float32) return owned(to_numpy<float>(std::vector<float>(values.begin(), values.end()), shape));
  return owned(to_numpy<double>(std::vector<double>(values), shape));
}
nb::object values_out(const std::vector<double>& values, DType precision) {
  return values_out(values, precision, {values.size()});
}

// A host 1-D array widened to float64 (potentials from another solver).
std::vector<double> host_vector(const AnyArray& a, const std::string& name) {
  const ConstVector v = vector_view(a, name);
  if (v.location != Location::host)
    throw InvalidArgument(name + ": potentials must be host arrays; pass numpy.asarray(" + name + ")");
  std::vector<double> out(static_cast<std::size_t>(v.size));
  for (index_t i = 0; i < v.size; ++i) out[static_cast<std::size_t>(i)] = v.at(i);
  return out;
}

nb::dict memory_dict(const MemoryReport& report, const TilePlan& plan) {
  nb::dict d;
  d["budget_bytes"] = report.budget_bytes;
  d["peak_bytes"] = report.peak_bytes;
  d["planned_peak_bytes"] = report.planned_peak_bytes;
  d["resident_bytes"] = plan.resident;
  d["tile_rows"] = plan.rows;
  d["n_tiles"] = plan.n_tiles;
  return d;
}

ConstVector optional_vector(const nb::handle& w, std::optional<AnyArray>& keep, const char* name, index_t length) {
  if (w.is_none()) return {};
  keep = nb::cast<AnyArray>(w);
  return vector_view(*keep, name, length);
}

// The clouds of a call (y None: y = x) with their cost and scale; `y_array` keeps y's view alive.
PointCloud cloud_of(const AnyArray& x, const nb::handle& y, std::optional<AnyArray>& y_array, const std::string& cost,
                    const nb::handle& scale) {
  PointCloud geom;
  geom.x = matrix_view(x, "x");
  if (!y.is_none()) {
    y_array = nb::cast<AnyArray>(y);
    geom.y = matrix_view(*y_array, "y");
  }
  geom.options.cost = Cost::parse(cost);
  geom.options.scale = scale_of(scale);
  return geom;
}

// ---------------------------------------------------------------------------------------------
// Problem

void problem_init(ProblemHandle* self, const ContextHandle& context, const AnyArray& x, const nb::handle& y,
                  const std::string& cost, const nb::handle& scale, const std::string& precision) {
  std::optional<AnyArray> y_array;
  const PointCloud geom = cloud_of(x, y, y_array, cost, scale);
  const DType dtype = parse_precision(precision);
  std::optional<Problem> problem;
  {
    nb::gil_scoped_release release;
    problem.emplace(Problem::upload(context.ctx, geom, {}, {}, dtype));
  }
  new (self) ProblemHandle(context, std::move(*problem));
}

// The keyword options of a solve, as the Python layer passes them.
struct SolveArgs {
  std::optional<double> epsilon;
  std::string relative_epsilon;
  double epsilon_init, epsilon_decay, tau_a, tau_b, threshold, norm_error;
  index_t inner_iterations, min_iterations, max_iterations;
  bool parallel_dual_updates;
  std::string on_divergence;
  std::optional<index_t> batch_size;
};

SinkhornOptions options_of(const SolveArgs& s, const nb::object& progress) {
  SinkhornOptions o;
  o.epsilon = s.epsilon;
  o.relative_epsilon = parse_relative_epsilon(s.relative_epsilon);
  o.epsilon_init = s.epsilon_init;
  o.epsilon_decay = s.epsilon_decay;
  o.tau_a = s.tau_a;
  o.tau_b = s.tau_b;
  o.threshold = s.threshold;
  o.norm_error = s.norm_error;
  o.inner_iterations = s.inner_iterations;
  o.min_iterations = s.min_iterations;
  o.max_iterations = s.max_iterations;
  o.parallel_dual_updates = s.parallel_dual_updates;
  o.on_divergence = parse_on_divergence(s.on_divergence);
  o.batch_size = s.batch_size;
  // Always installed, also without a progress sink: it is where Ctrl-C is noticed. Called from the
  // host loop between blocks, never from inside a parallel region.
  o.progress = [&progress](const SinkhornProgress& p) { call_back_into_python(progress, p.iteration, p.error); };
  return o;
}

// Momentum, Anderson and the initializer, as the Python layer passes them (otcal/ot.py turns
// otcal's and OTT-JAX's objects into these values).
struct AccelerationArgs {
  index_t momentum_start = 0;
  double momentum_error_threshold = std::numeric_limits<double>::infinity();
  double momentum_value = 1.0;
  std::optional<index_t> anderson_memory;
  index_t anderson_refresh_every = 1;
  double anderson_ridge = 1e-2;
  std::string initializer = "default";
};

Initializer parse_initializer(const std::string& text) {
  if (text == "default" || text == "zeros") return Initializer::zeros;
  if (text == "gaussian") return Initializer::gaussian;
  throw InvalidArgument("initializer: expected 'default' or 'gaussian', got '" + text + "'");
}

void set_acceleration(SinkhornOptions& o, const AccelerationArgs& acc) {
  o.momentum.start = acc.momentum_start;
  o.momentum.error_threshold = acc.momentum_error_threshold;
  o.momentum.value = acc.momentum_value;
  if (acc.anderson_memory)
    o.anderson = AndersonAcceleration{*acc.anderson_memory, acc.anderson_refresh_every, acc.anderson_ridge};
  o.initializer = parse_initializer(acc.initializer);
}

nb::tuple problem_sinkhorn(ProblemHandle& h, const nb::handle& a, const nb::handle& b, std::optional<double> epsilon,
                           const std::string& relative_epsilon, double epsilon_init, double epsilon_decay,
                           double tau_a, double tau_b, double threshold, double norm_error, index_t inner_iterations,
                           index_t min_iterations, index_t max_iterations, bool parallel_dual_updates,
                           const std::string& on_divergence, std::optional<index_t> batch_size,
                           const nb::object& progress, index_t momentum_start, double momentum_error_threshold,
                           double momentum_value, std::optional<index_t> anderson_memory,
                           index_t anderson_refresh_every, double anderson_ridge, const std::string& initializer) {
  SinkhornOptions o = options_of({epsilon, relative_epsilon, epsilon_init, epsilon_decay, tau_a, tau_b, threshold,
                                  norm_error, inner_iterations, min_iterations, max_iterations, parallel_dual_updates,
                                  on_divergence, batch_size},
                                 progress);
  set_acceleration(o, {momentum_start, momentum_error_threshold, momentum_value, anderson_memory,
                       anderson_refresh_every, anderson_ridge, initializer});

  std::optional<AnyArray> a_array, b_array;
  const ConstVector av = optional_vector(a, a_array, "a", h.problem.n());
  const ConstVector bv = optional_vector(b, b_array, "b", h.problem.m());
  SinkhornResult res;
  std::vector<double> weights_a, weights_b;
  {
    nb::gil_scoped_release release;
    std::lock_guard lock(h.solve_mutex);
    h.problem.set_weights(av, bv);
    weights_a = h.problem.a();
    weights_b = h.problem.b();
    res = sinkhorn(h.problem, o);
  }

  nb::dict report;
  report["f"] = values_out(res.f, res.precision);
  report["g"] = values_out(res.g, res.precision);
  report["a"] = owned(to_numpy<double>(std::move(weights_a)));
  report["b"] = owned(to_numpy<double>(std::move(weights_b)));
  report["errors"] = owned(to_numpy<double>(std::vector<double>(res.errors)));
  report["converged"] = res.converged;
  report["diverged"] = res.diverged;
  report["n_iters"] = res.n_iters;
  report["reg_ot_cost"] = res.reg_ot_cost;
  report["epsilon"] = res.epsilon;
  report["scale"] = res.scale;
  report["threshold"] = res.threshold;
  report["inner_iterations"] = res.inner_iterations;
  report["tau_a"] = res.tau_a;
  report["tau_b"] = res.tau_b;
  report["batch_size"] = res.batch_size;
  report["initializer"] = res.initializer == Initializer::gaussian ? "gaussian" : "default";
  report["momentum"] = nb::make_tuple(res.momentum.start, res.momentum.error_threshold, res.momentum.value);
  if (res.anderson)
    report["anderson"] = nb::make_tuple(res.anderson->memory, res.anderson->refresh_every, res.anderson->ridge_identity);
  else
    report["anderson"] = nb::none();
  report["memory"] = memory_dict(res.memory, res.plan);
  report["device"] = res.device;
  report["elapsed_s"] = res.elapsed_s;
  Potentials potentials = std::move(static_cast<Potentials&>(res));
  return nb::make_tuple(nb::cast(std::move(potentials)), report);
}

// The starting potentials of a solve with these weights and initializer (what iteration 0 sees).
nb::tuple problem_initial_potentials(ProblemHandle& h, const nb::handle& a, const nb::handle& b,
                                     std::optional<double> epsilon, const std::string& relative_epsilon,
                                     const std::string& initializer) {
  SinkhornOptions o;
  o.epsilon = epsilon;
  o.relative_epsilon = parse_relative_epsilon(relative_epsilon);
  o.initializer = parse_initializer(initializer);
  std::optional<AnyArray> a_array, b_array;
  const ConstVector av = optional_vector(a, a_array, "a", h.problem.n());
  const ConstVector bv = optional_vector(b, b_array, "b", h.problem.m());
  Potentials p;
  {
    nb::gil_scoped_release release;
    std::lock_guard lock(h.solve_mutex);
    h.problem.set_weights(av, bv);
    p = initial_potentials(h.problem, o);
  }
  return nb::make_tuple(values_out(p.f, p.precision), values_out(p.g, p.precision));
}

std::pair<double, double> problem_resolve(ProblemHandle& h, std::optional<double> epsilon,
                                          const std::string& relative_epsilon, std::optional<index_t> batch_size) {
  SinkhornOptions o;
  o.epsilon = epsilon;
  o.relative_epsilon = parse_relative_epsilon(relative_epsilon);
  o.batch_size = batch_size;
  nb::gil_scoped_release release;
  const ResolvedGeometry r = resolve_geometry(h.problem, o);
  return {r.scale, r.epsilon};
}

nb::object problem_apply(ProblemHandle& h, const Potentials& potentials, const AnyArray& v, int axis,
                         std::optional<index_t> batch_size) {
  const ConstMatrix view = matrix_view(v, "v");
  if (view.location != Location::host)
    throw InvalidArgument("v: expected a host array; pass numpy.asarray(v)");
  const index_t out_rows = axis == 1 ? h.problem.n() : h.problem.m();
  std::vector<double> out;
  {
    nb::gil_scoped_release release;
    out = apply_transport(h.problem, potentials, view, axis, batch_size);
  }
  return values_out(out, h.problem.precision(),
                    {static_cast<std::size_t>(out_rows), static_cast<std::size_t>(view.cols)});
}

nb::object problem_marginal(ProblemHandle& h, const Potentials& potentials, int axis,
                            std::optional<index_t> batch_size) {
  std::vector<double> out;
  {
    nb::gil_scoped_release release;
    out = marginal(h.problem, potentials, axis, batch_size);
  }
  return values_out(out, h.problem.precision());
}

nb::dict sparsify_dict(SparsifyResult& res) {
  CsrMatrix& csr = res.csr;
  nb::dict d;
  d["shape"] = nb::make_tuple(csr.rows, csr.cols);
  d["indptr"] = owned(to_numpy<std::int64_t>(std::move(csr.indptr)));
  if (csr.wide_indices()) d["indices"] = owned(to_numpy<std::int64_t>(std::move(csr.indices64)));
  else d["indices"] = owned(to_numpy<std::int32_t>(std::move(csr.indices32)));
  if (csr.dtype == DType::float32) {
    d["data"] = owned(to_numpy<float>(std::vector<float>(csr.values.begin(), csr.values.end())));
  } else {
    d["data"] = owned(to_numpy<double>(std::move(csr.values)));
  }
  d["threshold"] = res.threshold;
  d["n_massless_rows"] = res.n_massless_rows;
  d["batch_size"] = res.batch_size;
  d["memory"] = memory_dict(res.memory, res.plan);
  d["elapsed_s"] = res.elapsed_s;
  return d;
}

SparsifyOptions sparsify_options(const std::string& mode, std::optional<double> value, std::optional<index_t> max_k,
                                 std::optional<index_t> batch_size, std::optional<index_t> n_samples,
                                 std::uint64_t seed, const std::string& percentile_method) {
  SparsifyOptions o;
  o.mode = parse_sparsify_mode(mode);
  o.value = value;
  o.max_k = max_k;
  o.batch_size = batch_size;
  o.n_samples = n_samples;
  o.seed = seed;
  o.percentile_method = parse_percentile_method(percentile_method);
  return o;
}

nb::dict problem_sparsify(ProblemHandle& h, const Potentials& potentials, const std::string& mode,
                          std::optional<double> value, std::optional<index_t> max_k, std::optional<index_t> batch_size,
                          std::optional<index_t> n_samples, std::uint64_t seed, const std::string& percentile_method) {
  const SparsifyOptions o = sparsify_options(mode, value, max_k, batch_size, n_samples, seed, percentile_method);
  SparsifyResult res;
  {
    nb::gil_scoped_release release;
    res = sparsify(h.problem, potentials, o);
  }
  return sparsify_dict(res);
}

// The dense plan, produced by the sparsifier (threshold 0 keeps every positive entry) with each
// finished block written straight into the [n, m] output, which is counted against the budget
// (SparsifyOptions::reserved_bytes): the refusal names the budget the whole call needs.
template <class T>
nb::object dense_plan(ProblemHandle& h, const Potentials& potentials, std::optional<index_t> batch_size) {
  const auto n = static_cast<std::size_t>(h.problem.n()), m = static_cast<std::size_t>(h.problem.m());
  std::size_t dense_bytes = 0;
  if (__builtin_mul_overflow(n, m, &dense_bytes) || __builtin_mul_overflow(dense_bytes, sizeof(T), &dense_bytes))
    throw BudgetTooSmall("transport_matrix: a dense " + std::to_string(n) + " x " + std::to_string(m) +
                             " plan does not fit in memory; use sparsify() for a sparse plan",
                         std::numeric_limits<std::size_t>::max());
  SparsifyOptions o;
  o.mode = SparsifyMode::threshold;
  o.value = 0.0;
  o.batch_size = batch_size;
  o.reserved_bytes = dense_bytes;
  std::vector<T> dense;
  o.sink = [&](const CsrPiece& piece) {
    if (dense.empty()) dense.assign(n * m, T(0));  // only once the plan is known to fit
    for (index_t r = 0; r < piece.rows; ++r) {
      T* row = dense.data() + static_cast<std::size_t>(piece.row_offset + r) * m;
      for (std::int64_t k = piece.indptr[r]; k < piece.indptr[r + 1]; ++k) {
        const std::int64_t col = piece.indices32 ? piece.indices32[k] : piece.indices64[k];
        row[col] = static_cast<T>(piece.values[k]);
      }
    }
  };
  try {
    nb::gil_scoped_release release;
    sparsify(h.problem, potentials, o);
  } catch (const BudgetTooSmall& e) {
    throw BudgetTooSmall("transport_matrix: a dense " + std::to_string(n) + " x " + std::to_string(m) + " plan (" +
                             std::to_string(dense_bytes) + " bytes), the resident clouds and one block of rows need a "
                             "memory budget of at least " + std::to_string(e.required_bytes()) +
                             " bytes; the context has " + std::to_string(h.context.ctx.memory_budget()) +
                             ". Raise memory_budget, or use sparsify() for a sparse plan",
                         e.required_bytes());
  }
  if (dense.empty()) dense.assign(n * m, T(0));
  return owned(to_numpy<T>(std::move(dense), {n, m}));
}

nb::object problem_dense_plan(ProblemHandle& h, const Potentials& potentials, std::optional<index_t> batch_size) {
  return h.problem.precision() == DType::float32 ? dense_plan<float>(h, potentials, batch_size)
                                                 : dense_plan<double>(h, potentials, batch_size);
}

// ---------------------------------------------------------------------------------------------
// One-call operations: the library prepares the problem, plans the operation counting the resident
// copies still to be uploaded, then uploads and runs, so BudgetTooSmall names the minimum of the
// whole call. Used for foreign potentials, and to name that minimum when a first upload does not fit.

void sinkhorn_once(const ContextHandle& context, const AnyArray& x, const nb::handle& y, const std::string& cost,
                   const nb::handle& scale, const std::string& precision, const nb::handle& a, const nb::handle& b,
                   std::optional<double> epsilon, const std::string& relative_epsilon, double epsilon_init,
                   double epsilon_decay, double tau_a, double tau_b, double threshold, double norm_error,
                   index_t inner_iterations, index_t min_iterations, index_t max_iterations,
                   bool parallel_dual_updates, const std::string& on_divergence, std::optional<index_t> batch_size,
                   const nb::object& progress, index_t momentum_start, double momentum_error_threshold,
                   double momentum_value, std::optional<index_t> anderson_memory, index_t anderson_refresh_every,
                   double anderson_ridge, const std::string& initializer) {
  std::optional<AnyArray> y_array, a_array, b_array;
  const PointCloud geom = cloud_of(x, y, y_array, cost, scale);
  SinkhornOptions o = options_of({epsilon, relative_epsilon, epsilon_init, epsilon_decay, tau_a, tau_b, threshold,
                                  norm_error, inner_iterations, min_iterations, max_iterations, parallel_dual_updates,
                                  on_divergence, batch_size},
                                 progress);
  set_acceleration(o, {momentum_start, momentum_error_threshold, momentum_value, anderson_memory,
                       anderson_refresh_every, anderson_ridge, initializer});
  o.precision = parse_precision(precision);
  const ConstVector av = optional_vector(a, a_array, "a", geom.x.rows);
  const ConstVector bv = optional_vector(b, b_array, "b", geom.y_or_x().rows);
  nb::gil_scoped_release release;
  sinkhorn(context.ctx, geom, av, bv, o);
}

nb::dict sparsify_once(const ContextHandle& context, const AnyArray& x, const nb::handle& y, const std::string& cost,
                       const nb::handle& scale, const Potentials& potentials, const std::string& mode,
                       std::optional<double> value, std::optional<index_t> max_k, std::optional<index_t> batch_size,
                       std::optional<index_t> n_samples, std::uint64_t seed, const std::string& percentile_method) {
  std::optional<AnyArray> y_array;
  const PointCloud geom = cloud_of(x, y, y_array, cost, scale);
  const SparsifyOptions o = sparsify_options(mode, value, max_k, batch_size, n_samples, seed, percentile_method);
  SparsifyResult res;
  {
    nb::gil_scoped_release release;
    res = sparsify(context.ctx, geom, potentials, o);
  }
  return sparsify_dict(res);
}

// ---------------------------------------------------------------------------------------------
// Potentials

void potentials_init(Potentials* self, const AnyArray& f, const AnyArray& g, double epsilon, double scale,
                     const std::string& cost, const std::string& precision, double reg_ot_cost, bool converged) {
  Potentials p;
  p.f = host_vector(f, "f");
  p.g = host_vector(g, "g");
  if (!(epsilon > 0) || !std::isfinite(epsilon))
    throw InvalidArgument("epsilon: " + std::to_string(epsilon) +
                          " must be a finite number > 0 (the epsilon of the scaled cost the potentials solve)");
  if (!(scale > 0) || !std::isfinite(scale))
    throw InvalidArgument("scale_cost: " + std::to_string(scale) + " must be a finite number > 0");
  p.epsilon = epsilon;
  p.scale = scale;
  p.cost = Cost::parse(cost);
  p.precision = parse_precision(precision);
  p.reg_ot_cost = reg_ot_cost;
  p.converged = converged;
  new (self) Potentials(std::move(p));
}

}  // namespace

void bind_ot(nb::module_& m) {
  m.def("cost_name", [](const std::string& text) { return Cost::parse(text).name(); }, nb::arg("text"),
        "The canonical name of a cost ('sq_euclidean' -> 'sqeuclidean', 'pnorm_1.5' -> 'pnorm:1.5'); "
        "InvalidArgument for an unknown one.");
  m.def("sinkhorn_once", &sinkhorn_once, nb::arg("context"), nb::arg("x"), nb::arg("y").none(), nb::arg("cost"),
        nb::arg("scale"), nb::arg("precision"), nb::arg("a").none(), nb::arg("b").none(), nb::arg("epsilon").none(),
        nb::arg("relative_epsilon"), nb::arg("epsilon_init"), nb::arg("epsilon_decay"), nb::arg("tau_a"),
        nb::arg("tau_b"), nb::arg("threshold"), nb::arg("norm_error"), nb::arg("inner_iterations"),
        nb::arg("min_iterations"), nb::arg("max_iterations"), nb::arg("parallel_dual_updates"),
        nb::arg("on_divergence"), nb::arg("batch_size").none(), nb::arg("progress").none(),
        nb::arg("momentum_start"), nb::arg("momentum_error_threshold"), nb::arg("momentum_value"),
        nb::arg("anderson_memory").none(), nb::arg("anderson_refresh_every"), nb::arg("anderson_ridge"),
        nb::arg("initializer"),
        "A solve that uploads, solves and releases in one call (its BudgetTooSmall names the minimum of the "
        "whole call); the result is not kept.");
  m.def("sparsify_once", &sparsify_once, nb::arg("context"), nb::arg("x"), nb::arg("y").none(), nb::arg("cost"),
        nb::arg("scale"), nb::arg("potentials"), nb::arg("mode"), nb::arg("value").none(), nb::arg("max_k").none(),
        nb::arg("batch_size").none(), nb::arg("n_samples").none(), nb::arg("seed"), nb::arg("percentile_method"),
        "Sparsify potentials on clouds uploaded for this call only (planned before the upload).");
  m.def("scale_name", [](const std::string& text) { return ScaleCost::parse(text).name(); }, nb::arg("text"),
        "The canonical spelling of a scale_cost given as text; InvalidArgument for an unknown one.");

  nb::class_<Potentials>(m, "Potentials",
                         "Dual potentials and the geometry they solve: T_ij = exp((f_i + g_j - c_ij / scale) / "
                         "epsilon). From a solve, or filled in from another solver's (OTT-JAX, moscot) output.")
      .def("__init__", &potentials_init, nb::arg("f"), nb::arg("g"), nb::arg("epsilon"), nb::arg("scale"),
           nb::arg("cost"), nb::arg("precision") = "float64",
           nb::arg("reg_ot_cost") = std::numeric_limits<double>::quiet_NaN(), nb::arg("converged") = false,
           "f, g: host 1-D arrays (widened to float64). epsilon: of the scaled cost. scale: C = c / scale. cost: "
           "a cost name. precision: the precision of the problem they will be used on.")
      .def_prop_ro("f", [](const Potentials& p) { return values_out(p.f, p.precision); })
      .def_prop_ro("g", [](const Potentials& p) { return values_out(p.g, p.precision); })
      .def_prop_ro("epsilon", [](const Potentials& p) { return p.epsilon; })
      .def_prop_ro("scale", [](const Potentials& p) { return p.scale; })
      .def_prop_ro("cost", [](const Potentials& p) { return p.cost.name(); })
      .def_prop_ro("precision", [](const Potentials& p) { return std::string(dtype_name(p.precision)); })
      .def_prop_ro("reg_ot_cost", [](const Potentials& p) { return p.reg_ot_cost; })
      .def_prop_ro("converged", [](const Potentials& p) { return p.converged; });

  nb::class_<ProblemHandle>(m, "Problem",
                            "A resident point-cloud problem: the clouds uploaded once to the context's device, in "
                            "one precision; solves, transports, marginals and sparsify run on it any number of "
                            "times, with any weights and batch sizes.")
      .def("__init__", &problem_init, nb::arg("context"), nb::arg("x"), nb::arg("y").none(), nb::arg("cost"),
           nb::arg("scale"), nb::arg("precision"),
           "Uploads and checks x [n, d] and y [m, d] (None: y = x). cost: a cost name; scale: a number or "
           "mean, max_cost, max_norm, max_bound, median; precision: 'float32' or 'float64'.")
      .def_prop_ro("n", [](const ProblemHandle& h) { return h.problem.n(); })
      .def_prop_ro("m", [](const ProblemHandle& h) { return h.problem.m(); })
      .def_prop_ro("d", [](const ProblemHandle& h) { return h.problem.d(); })
      .def_prop_ro("precision", [](const ProblemHandle& h) { return std::string(dtype_name(h.problem.precision())); })
      .def_prop_ro("cost", [](const ProblemHandle& h) { return h.problem.geometry().cost.name(); })
      .def_prop_ro("scale_cost", [](const ProblemHandle& h) { return h.problem.geometry().scale.name(); })
      .def_prop_ro("same_clouds", [](const ProblemHandle& h) { return h.problem.same_clouds(); })
      .def_prop_ro("resident_bytes", [](const ProblemHandle& h) { return h.problem.resident_bytes(); },
                   "Bytes of the resident copies, charged to the context's budget while the problem lives.")
      .def("sinkhorn", &problem_sinkhorn, nb::arg("a").none(), nb::arg("b").none(), nb::arg("epsilon").none(),
           nb::arg("relative_epsilon"), nb::arg("epsilon_init"), nb::arg("epsilon_decay"), nb::arg("tau_a"),
           nb::arg("tau_b"), nb::arg("threshold"), nb::arg("norm_error"), nb::arg("inner_iterations"),
           nb::arg("min_iterations"), nb::arg("max_iterations"), nb::arg("parallel_dual_updates"),
           nb::arg("on_divergence"), nb::arg("batch_size").none(), nb::arg("progress").none(),
           nb::arg("momentum_start"), nb::arg("momentum_error_threshold"), nb::arg("momentum_value"),
           nb::arg("anderson_memory").none(), nb::arg("anderson_refresh_every"), nb::arg("anderson_ridge"),
           nb::arg("initializer"),
           "Solves with weights a, b (None: uniform); returns (Potentials, report dict). progress(iteration, "
           "error) is called at every error evaluation, after pending signal handlers have run.")
      .def("initial_potentials", &problem_initial_potentials, nb::arg("a").none(), nb::arg("b").none(),
           nb::arg("epsilon").none(), nb::arg("relative_epsilon"), nb::arg("initializer"),
           "(f, g) a solve with these weights and initializer starts from.")
      .def("resolve", &problem_resolve, nb::arg("epsilon").none(), nb::arg("relative_epsilon"),
           nb::arg("batch_size").none(), "The resolved (scale, epsilon) of a solve with these options.")
      .def("apply", &problem_apply, nb::arg("potentials"), nb::arg("v"), nb::arg("axis"),
           nb::arg("batch_size").none(),
           "axis 0: v [n, k] -> P^T v [m, k]; axis 1: v [m, k] -> P v [n, k]. v must be a host array.")
      .def("marginal", &problem_marginal, nb::arg("potentials"), nb::arg("axis"), nb::arg("batch_size").none(),
           "axis 0: P^T 1 (length m); axis 1: P 1 (length n).")
      .def("sparsify", &problem_sparsify, nb::arg("potentials"), nb::arg("mode"), nb::arg("value").none(),
           nb::arg("max_k").none(), nb::arg("batch_size").none(), nb::arg("n_samples").none(), nb::arg("seed"),
           nb::arg("percentile_method"),
           "The sparsified plan as a dict of CSR arrays (indptr int64, indices int32/int64, data in the "
           "problem's precision) and the run report.")
      .def("dense_plan", &problem_dense_plan, nb::arg("potentials"), nb::arg("batch_size").none(),
           "The dense [n, m] plan; BudgetTooSmall when it does not fit the context's budget.");
}

}  // namespace otcal::py
